"""Tried, not shipped: learned channels for the global search's coarse pass (docs/RESULTS.md §1.10).

    python benchmarks/learned_coarse_features.py train --steps 1200 --batch 8 --out RUN/feat.pt
    python benchmarks/learned_coarse_features.py eval --weights RUN/feat.pt [--rescue-only]   # the 45 probe pairs
    python benchmarks/learned_coarse_features.py eval --baseline

The coarse pass scores every (rotation, scale, anisotropy) candidate by the FFT correlation of doubled-angle
orientation fields (``GlobalSearchRegistrar._score``). Here each image also gets C learned channels (a 4-layer CNN
per modality on the image standardised over its coverage, output scaled by a learned ``alpha`` from 0.1), and the
score is the same normalised correlation summed over the 2 orientation channels and the learned ones: with
``alpha`` = 0 it is the shipped score, bit for bit (checked on two pairs). Training imitates the search: a
``roadscene_raw`` *train* pair outside the probe set, the IR read through the ground truth's local linear map
perturbed within half a grid step, plus 8 wrong grid candidates; softmax cross-entropy over every shift of all 9
score maps (learned temperature), the target the true shift of the true candidate; gamma jitter on both images.
``eval`` runs the whole global search (``LearnedSearch``: the coarse pass with the learned score; with
``--rescue-only`` only in the rescue search at 128 px) on the 45 probe training pairs and prints the TRE.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw_failure_probe import _pair, _tre, PROBE  # noqa: E402

from alignfuse import io
from alignfuse import warp as warp_ops
from alignfuse.registration import GlobalSearchRegistrar
from alignfuse.registration.features import orientation_field
from alignfuse.pixel_grid import rescale_matrix, scale_matrix
from alignfuse.registration.global_search import ImagePyramid, _box_sums

torch.set_num_threads(1)


class Branch(nn.Module):
    def __init__(self, ch: int = 8, out: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, ch, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, padding=2, dilation=2), nn.ReLU(),
                                  nn.Conv2d(ch, ch, 3, padding=2, dilation=2), nn.ReLU(),
                                  nn.Conv2d(ch, out, 3, padding=1))

    def forward(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask
        n = m.sum((2, 3), keepdim=True).clamp_min(1)
        mean = (img * m).sum((2, 3), keepdim=True) / n
        std = (((img - mean) ** 2 * m).sum((2, 3), keepdim=True) / n).sqrt().clamp_min(1e-3)
        x = (img - mean) / std * m
        return self.body(x)


class CoarseFeatures(nn.Module):
    def __init__(self, out: int = 6, ch: int = 8) -> None:
        super().__init__()
        self.vis, self.ir = Branch(ch=ch, out=out), Branch(ch=ch, out=out)
        self.alpha = nn.Parameter(torch.tensor(0.1))

    def forward(self, img: torch.Tensor, mask: torch.Tensor, which: str) -> torch.Tensor:
        z = orientation_field(img, mask=mask)
        learned = (self.vis if which == "vis" else self.ir)(img, mask)
        learned = learned / (learned.pow(2).sum(1, keepdim=True).mean((2, 3), keepdim=True).sqrt() + 1e-6)
        return torch.cat([z.real[:, None], z.imag[:, None], self.alpha * learned], 1) * mask


def score_maps(feats: CoarseFeatures, fix: torch.Tensor, warped: torch.Tensor, inside: torch.Tensor,
               mh: int, mw: int, min_overlap: float = 0.5):
    """fix (1,1,h,w), warped/inside (N,1,ch,cw) -> score (N, 2mh+1, 2mw+1) in FFT shift order, dy, dx."""
    h, w = fix.shape[-2:]
    ch, cw = h + 2 * mh, w + 2 * mw
    f_fix = feats(fix, torch.ones_like(fix), "vis")[0]  # (C, h, w)
    canvas_fix = torch.zeros(f_fix.shape[0], ch, cw)
    canvas_fix[:, mh:mh + h, mw:mw + w] = f_fix
    f_mov = feats(warped, inside, "ir")  # (N, C, ch, cw)
    fh, fw = scipy.fft.next_fast_len(ch), scipy.fft.next_fast_len(cw)
    rows = torch.cat([torch.arange(mh + 1), torch.arange(fh - mh, fh)])
    cols = torch.cat([torch.arange(mw + 1), torch.arange(fw - mw, fw)])
    fz = torch.fft.rfft2(canvas_fix, s=(fh, fw))
    fm = torch.fft.rfft2(f_mov, s=(fh, fw))
    corr = torch.fft.irfft2((fz[None] * fm.conj()).sum(1), s=(fh, fw))[:, rows][:, :, cols]
    dy = torch.cat([torch.arange(mh + 1), torch.arange(-mh, 0)])
    dx = torch.cat([torch.arange(mw + 1), torch.arange(-mw, 0)])
    tops, lefts = mh - dy, mw - dx
    energy = _box_sums(f_mov.pow(2).sum(1), (h, w), (mh, mw))[:, tops][:, :, lefts]
    overlap = _box_sums(inside[:, 0], (h, w), (mh, mw))[:, tops][:, :, lefts]
    cover = overlap / float(h * w)
    score = corr / (canvas_fix.pow(2).sum() * energy.clamp_min(1e-6)).sqrt()
    valid = cover > min_overlap
    return score, valid, dy, dx


class LearnedSearch(GlobalSearchRegistrar):
    def __init__(self, feats: CoarseFeatures, **kw) -> None:
        super().__init__(**kw)
        self.feats = feats

    rescue_only = False

    @torch.no_grad()
    def _score(self, pyr, fixed, cands, search_size):
        if self.rescue_only and search_size not in (128, 256):
            return super()._score(pyr, fixed, cands, search_size)
        full = tuple(fixed.shape[-2:])
        (h, w), (mh, mw) = self.search_canvas(full, search_size)
        fix = warp_ops.resize_image(fixed.float(), (h, w))
        ch, cw = h + 2 * mh, w + 2 * mw
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        mats = np.zeros((len(cands), 3, 3))
        for i, (_, lin) in enumerate(cands):
            mats[i, :2, :2], mats[i, :2, 2], mats[i, 2, 2] = lin, centre - lin @ centre, 1.0
        out_scores = []
        for s in range(0, len(cands), 100):
            warped, inside = pyr.read(np.linalg.inv(scale_matrix(full, (h, w))) @ mats[s:s + 100], (ch, cw),
                                      origin=(-mw, -mh))
            score, valid, dy, dx = score_maps(self.feats, fix, warped, inside, mh, mw, self.min_overlap)
            out_scores.append(torch.where(valid, score, torch.full_like(score, -1.0)))
        score = torch.cat(out_scores)
        best, idx = score.flatten(1).max(1)
        out = []
        ncols = 2 * mw + 1
        for n in torch.argsort(best, descending=True).tolist():
            iy, ix = divmod(int(idx[n]), ncols)
            shift = np.eye(3)
            shift[:2, 2] = [-float(dx[ix]), -float(dy[iy])]
            out.append((float(best[n]), cands[n][0], cands[n][1], rescale_matrix(mats[n] @ shift, (h, w), full)))
        return out


# ------------------------------------------------------------------------------------------------ training

def load_set(names):
    data = []
    for nm in names:
        pair, points, truth, moving, fixed = _pair(nm)
        data.append((nm, ImagePyramid(moving), fixed, truth, pair, points))
    return data


def sample(item, g: GlobalSearchRegistrar, rng: random.Random, search_size: int, k_neg: int):
    nm, pyr, fixed, truth, pair, points = item
    full = tuple(fixed.shape[-2:])
    (h, w), (mh, mw) = g.search_canvas(full, search_size)
    fix = warp_ops.resize_image(fixed.float(), (h, w))
    ch, cw = h + 2 * mh, w + 2 * mw
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    m_true = rescale_matrix(truth, full, (h, w))
    # local affine of the truth at the centre
    c3 = np.array([*centre, 1.0])
    q = m_true @ c3
    qc = q[:2] / q[2]
    eps = 1.0
    jac = np.zeros((2, 2))
    for j in range(2):
        d = np.zeros(3)
        d[j] = eps
        qq = m_true @ (c3 + d)
        jac[:, j] = (qq[:2] / qq[2] - qc) / eps
    # the true candidate: linear part perturbed within half a grid step
    a = math.radians(rng.uniform(-2.5, 2.5))
    k = math.exp(rng.uniform(-1, 1) * 0.5 * math.log(g.scales[1] / g.scales[0]))
    r = math.exp(rng.uniform(-1, 1) * 0.5 * math.log(1.2))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lin_true = jac @ rot @ np.diag([k * math.sqrt(r), k / math.sqrt(r)])
    # shift d with M_c(c - d) = M_true(c): lin (-d) = qc - c
    d = -np.linalg.solve(lin_true, qc - centre)
    if abs(d[0]) > mw - 1 or abs(d[1]) > mh - 1:
        return None
    cands = g.candidates(g._anchor(full, pair.ir_size), wide=True)
    lins = [lin_true]
    s_true = math.sqrt(abs(np.linalg.det(jac)))
    while len(lins) < k_neg + 1:
        lab, lin = cands[rng.randrange(len(cands))]
        s = math.sqrt(abs(np.linalg.det(lin)))
        # angle difference
        rel = np.linalg.solve(jac, lin)
        ang = math.degrees(math.atan2(rel[1, 0] - rel[0, 1], rel[0, 0] + rel[1, 1]))
        if abs(math.log(s / s_true)) < 1.5 * math.log(g.scales[1] / g.scales[0]) and abs(ang) < 7.5:
            continue
        lins.append(lin)
    mats = np.zeros((len(lins), 3, 3))
    for i, lin in enumerate(lins):
        mats[i, :2, :2], mats[i, :2, 2], mats[i, 2, 2] = lin, centre - lin @ centre, 1.0
    warped, inside = pyr.read(np.linalg.inv(scale_matrix(full, (h, w))) @ mats, (ch, cw), origin=(-mw, -mh))
    # photometric jitter of both images (gamma), keeps the contrast sign
    gam_v, gam_i = math.exp(rng.uniform(-0.4, 0.4)), math.exp(rng.uniform(-0.4, 0.4))
    fix = fix.clamp_min(0).pow(gam_v)
    warped = warped.clamp_min(0).pow(gam_i)
    ix, iy = int(round(d[0])), int(round(d[1]))
    row = iy if iy >= 0 else 2 * mh + 1 + iy
    col = ix if ix >= 0 else 2 * mw + 1 + ix
    return fix, warped, inside, mh, mw, row, col


def cmd_train(args):
    probe = {n.rsplit(".", 1)[0] for n in io.read_split(PROBE)}
    names = [n.rsplit(".", 1)[0] for n in io.read_split(Path("/work/shared/data/roadscene/train.txt"))]
    names = [n for n in names if n not in probe]
    t0 = time.time()
    data = load_set(names)
    print(f"loaded {len(data)} pairs in {time.time() - t0:.0f}s", flush=True)
    g = GlobalSearchRegistrar()
    feats = CoarseFeatures(out=args.out_ch, ch=args.width)
    opt = torch.optim.Adam(feats.parameters(), lr=args.lr)
    log_tau = nn.Parameter(torch.tensor(math.log(0.05)))
    opt.add_param_group({"params": [log_tau]})
    rng = random.Random(0)
    torch.manual_seed(0)
    run_loss, run_acc, run_n = 0.0, 0.0, 0
    t0 = time.time()
    for step in range(1, args.steps + 1):
        loss = 0.0
        nb = 0
        for _ in range(args.batch):
            s = None
            while s is None:
                s = sample(data[rng.randrange(len(data))], g, rng, rng.choice([80, 128]), args.negatives)
            fix, warped, inside, mh, mw, row, col = s
            score, valid, _, _ = score_maps(feats, fix, warped, inside, mh, mw)
            logits = torch.where(valid, score, torch.full_like(score, -1.0)) / log_tau.exp()
            flat = logits.flatten()
            target = row * (2 * mw + 1) + col
            loss = loss + F.cross_entropy(flat[None], torch.tensor([target]))
            # accuracy: argmax within 1 px of target in the true candidate
            am = int(flat.argmax())
            n_i, rem = divmod(am, (2 * mh + 1) * (2 * mw + 1))
            r_i, c_i = divmod(rem, 2 * mw + 1)
            run_acc += float(n_i == 0 and abs(r_i - row) <= 1 and abs(c_i - col) <= 1)
            nb += 1
        loss = loss / nb
        opt.zero_grad()
        loss.backward()
        opt.step()
        run_loss += float(loss.detach())
        run_n += 1
        if step % 25 == 0:
            print(f"step {step} loss {run_loss / run_n:.3f} acc {run_acc / (run_n * args.batch):.3f} "
                  f"alpha {float(feats.alpha):.3f} tau {float(log_tau.exp()):.4f} {time.time() - t0:.0f}s", flush=True)
            run_loss, run_acc, run_n = 0.0, 0.0, 0
        if step % 100 == 0 or step == args.steps:
            tmp = args.out + ".tmp"
            torch.save(feats.state_dict(), tmp)
            Path(tmp).replace(args.out)


def cmd_eval(args):
    names = [n.rsplit(".", 1)[0] for n in io.read_split(PROBE)] if args.names == "probe" else args.names.split(",")
    if args.limit:
        names = names[: args.limit]
    regs = {}
    if args.baseline:
        regs["orient"] = GlobalSearchRegistrar()
    if args.weights:
        feats = CoarseFeatures()
        feats.load_state_dict(torch.load(args.weights))
        feats.eval()
        regs["learned"] = LearnedSearch(feats)
        regs["learned"].rescue_only = args.rescue_only
    res = {k: [] for k in regs}
    for nm in names:
        pair, points, truth, moving, fixed = _pair(nm)
        line = [nm]
        for k, g in regs.items():
            t = time.time()
            m, d = g.register_pair(moving, fixed, pair.ir_size)
            e = _tre(m, pair, points)
            res[k].append(e)
            line.append(f"{k} {e:7.2f} ({time.time() - t:.1f}s)")
        print(" ".join(line), flush=True)
    for k, v in res.items():
        v = np.array(v)
        print(f"{k}: mean {v.mean():.2f} median {np.median(v):.2f} <=5 {(v <= 5).sum()}/{len(v)} worst {v.max():.2f}")


def sample_acc(feats, names, per=6, seed=1, sizes=(80, 128)):
    data = load_set(names)
    g = GlobalSearchRegistrar()
    rng = random.Random(seed)
    hits, n, hits_by = 0, 0, {}
    with torch.no_grad():
        for item in data:
            for _ in range(per):
                s = None
                for _ in range(20):
                    s = sample(item, g, rng, rng.choice(list(sizes)), 8)
                    if s is not None:
                        break
                if s is None:
                    continue
                fix, warped, inside, mh, mw, row, col = s
                score, valid, _, _ = score_maps(feats, fix, warped, inside, mh, mw)
                flat = torch.where(valid, score, torch.full_like(score, -1.0)).flatten()
                am = int(flat.argmax())
                n_i, rem = divmod(am, (2 * mh + 1) * (2 * mw + 1))
                r_i, c_i = divmod(rem, 2 * mw + 1)
                h = float(n_i == 0 and abs(r_i - row) <= 1 and abs(c_i - col) <= 1)
                hits += h
                n += 1
                hits_by[item[0]] = hits_by.get(item[0], 0) + h
    return hits / n, hits_by


def cmd_acc(args):
    """Sampled ranking accuracy on the 45 probe pairs (6 samples each, seed 1): the true shift of the true candidate
    ranked first (within 1 px) among all shifts of it and 8 wrong candidates; the shipped score (alpha = 0) first."""
    names = [n.rsplit(".", 1)[0] for n in io.read_split(PROBE)]
    shipped = CoarseFeatures()
    with torch.no_grad():
        shipped.alpha.zero_()
    runs = [("orientation only", shipped)]
    for w in args.weights:
        feats = CoarseFeatures()
        feats.load_state_dict(torch.load(w))
        feats.eval()
        runs.append((w, feats))
    for label, feats in runs:
        acc, by = sample_acc(feats, names)
        failing = sum(by.get(n, 0) for n in names[:19]) / (19 * 6)
        print(f"{label}: accuracy {acc:.3f}, on the 19 failing probe pairs {failing:.3f}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--negatives", type=int, default=8)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--width", type=int, default=8)
    t.add_argument("--out-ch", type=int, default=6)
    t.add_argument("--out", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--weights")
    e.add_argument("--baseline", action="store_true")
    e.add_argument("--rescue-only", action="store_true")
    e.add_argument("--names", default="probe")
    e.add_argument("--limit", type=int, default=0)
    c = sub.add_parser("acc")
    c.add_argument("weights", nargs="*")
    a = p.parse_args()
    {"train": cmd_train, "eval": cmd_eval, "acc": cmd_acc}[a.cmd](a)

