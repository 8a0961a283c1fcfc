"""Why the global search fails on some real pairs: experiments on ``roadscene_raw`` *training* names.

    python benchmarks/raw_failure_probe.py basin FLIR_07176 FLIR_06997 ...     # LK from the perturbed ground truth
    python benchmarks/raw_failure_probe.py gt FLIR_07176 ...                   # found vs ground-truth optimum
    python benchmarks/raw_failure_probe.py reference none|gamma|clahe          # probe-set TRE, transformed reference
    python benchmarks/raw_failure_probe.py jitter --top 3 --step 10 --dscale 0.04   # extra LK starts
    python benchmarks/raw_failure_probe.py rank --top 64 FLIR_07176 ...        # coarse candidates by criterion
    python benchmarks/raw_failure_probe.py measures                            # which measure prefers the truth
    python benchmarks/raw_failure_probe.py matches --top 2 --side 200          # the matched starts before refinement

``gt``: the registrar's solution against the refinement started from the ground truth (TRE, MIND distance,
orientation correlation of each). ``basin``: the refinement started from the ground truth moved by a scale change
(0 / 3 / 6 %) and an x translation (0 / 8 / 16 px): where it ends (TRE). ``reference``: ``global+average`` on the
probe names (``benchmarks/splits/raw_train_probe.txt``: the 19 train pairs the global stage misses by > 5 raw px,
then every 6th other train pair) with the visible luminance square-rooted (``gamma``) or contrast-equalised
(``clahe``, OpenCV, clip 2, 8x8 tiles) before registration. ``jitter``: the same with each of the ``--top`` best
coarse candidates also started shifted by ±``--step`` px in x and y and scaled by ±``--dscale``. ``rank``: the
``--top`` coarse candidates (after both passes) with their TRE, and where the best of them ranks by the coarse
orientation score, by the MIND distance at the first LK level as they stand, and by it after that level's LK.
``measures``: on every probe pair the search misses by > 5 raw px, its answer against the refinement started from the
ground truth, by four measures: the MIND distance and the orientation correlation (what the search uses), and the
intensity mutual information and the Sobel-magnitude correlation of ``aligned_check.py``, the last two over the pixels
both solutions cover at 384 px (12 px border left out); counts how often each prefers the truth's solution.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from alignfuse import io, load_pipeline
from alignfuse import warp as warp_ops
from alignfuse.api import _prepare
from alignfuse.metrics import target_registration_error
from alignfuse.registration import GlobalSearchRegistrar
from alignfuse.pixel_grid import rescale_matrix, scale_matrix
from alignfuse.registration.global_search import ImagePyramid, refine_matrix
from alignfuse.stages import luminance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roadscene_raw_tre import ROOT, score  # noqa: E402

PROBE = Path(__file__).resolve().parent / "splits" / "raw_train_probe.txt"
FAILING = 19  # the probe file lists the failing pairs first


def _pair(name: str):
    """-> (pair, check points, ground-truth sampling matrix on the visible grid, moving, fixed tensors)."""
    pair = io.load_pair(ROOT / "roadscene_raw" / "ir_raw" / f"{name}.png", ROOT / "roadscene" / "vi" / f"{name}.jpg")
    points = np.loadtxt(ROOT / "roadscene_raw" / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
    h_mat = np.loadtxt(ROOT / "roadscene_raw" / "homography" / f"{name}.txt")
    (iw, ih) = pair.ir_size
    truth = np.linalg.inv(scale_matrix(pair.vis.shape[:2], (ih, iw))) @ h_mat  # H maps visible -> raw IR pixels
    ir, _, _ = _prepare(pair.ir, pair.vis)
    moving = io.to_tensor(ir, "cpu").float()
    fixed = luminance(io.to_tensor(pair.vis, "cpu")).float()
    return pair, points, truth / truth[2, 2], moving, fixed


def _tre(matrix: np.ndarray, pair, points: np.ndarray) -> float:
    h, w = pair.vis.shape[:2]
    field = warp_ops.field_from_matrix(torch.from_numpy(np.asarray(matrix)[None]), h, w)[0].numpy()
    return target_registration_error(io.field_to_ir_coordinates(field, pair.ir_size), points)


def cmd_gt(args) -> None:
    g = GlobalSearchRegistrar()
    for name in args.names:
        pair, points, truth, moving, fixed = _pair(name)
        found, d = g.register_pair(moving, fixed, pair.ir_size)
        pyr = ImagePyramid(moving)
        from_truth, cost = refine_matrix(pyr, fixed, truth, g.sizes, g.iterations, g.models)
        o_found, o_truth = g.orientation_scores(pyr, fixed, [found, from_truth])
        print(f"{name}: found {_tre(found, pair, points):.2f} raw px (MIND {d['mind_after']:.4f}, orientation "
              f"{o_found:.3f}) | from the truth {_tre(from_truth, pair, points):.2f} raw px (MIND {cost:.4f}, "
              f"orientation {o_truth:.3f})", flush=True)


def cmd_basin(args) -> None:
    g = GlobalSearchRegistrar()
    for name in args.names:
        pair, points, truth, moving, fixed = _pair(name)
        pyr = ImagePyramid(moving)
        h, w = fixed.shape[-2:]
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        cells = []
        for ds in (0.0, 0.03, 0.06):
            for tx in (0, 8, 16):
                p = np.eye(3)
                p[:2, :2] *= 1 + ds
                p[:2, 2] = centre - (1 + ds) * centre + [tx, 0]
                end, _ = refine_matrix(pyr, fixed, truth @ p, g.sizes, g.iterations, g.models)
                cells.append(f"scale +{ds:.0%} x +{tx}: {_tre(truth @ p, pair, points):.0f} -> "
                             f"{_tre(end, pair, points):.1f}")
        print(f"{name}: " + "; ".join(cells), flush=True)


class _Reference:
    """The visible luminance as is (``none``), square-rooted (``gamma``) or CLAHE-equalised (``clahe``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, vis: torch.Tensor) -> torch.Tensor:
        y = luminance(vis)
        if self.mode == "none":
            return y
        if self.mode == "gamma":
            return y.clamp_min(0).sqrt()
        clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        out = [torch.from_numpy(clahe.apply((y[b, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)) / 255.0)
               for b in range(y.shape[0])]
        return torch.stack(out)[:, None].to(y.dtype)


def _probe_table(label: str, pipe) -> None:
    names = [n.rsplit(".", 1)[0] for n in io.read_split(PROBE)]
    rows = score(pipe, label, names, ROOT)["pairs"]
    t = np.array([r["tre_raw_px"] for r in rows])
    fail, other = t[:FAILING], t[FAILING:]
    print(f"| {label} | {t.mean():.2f} | {np.median(t):.2f} | {(t <= 5).sum()}/{len(t)} | {fail.mean():.2f} | "
          f"{(fail <= 5).sum()}/{len(fail)} | {other.mean():.2f} | "
          f"{np.mean([r['seconds'] for r in rows]):.2f} |", flush=True)


def cmd_reference(args) -> None:
    pipe = load_pipeline("global+average")
    pipe.translator = _Reference(args.mode)
    _probe_table(f"reference {args.mode}", pipe)


def cmd_jitter(args) -> None:
    coarse = GlobalSearchRegistrar.coarse

    def jittered(self, moving, fixed, ir_size=None):
        top = coarse(self, moving, fixed, ir_size)
        h, w = fixed.shape[-2:]
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        extra = []
        for sc, label, m in top[: args.top]:
            for tag, ds, tx, ty in (("_x+", 0, args.step, 0), ("_x-", 0, -args.step, 0), ("_y+", 0, 0, args.step),
                                    ("_y-", 0, 0, -args.step), ("_z+", args.dscale, 0, 0),
                                    ("_z-", -args.dscale, 0, 0)):
                p = np.eye(3)
                p[:2, :2] *= 1 + ds
                p[:2, 2] = centre - (1 + ds) * centre + [tx, ty]
                extra.append((sc, label + tag, m @ p))
        return top + extra

    GlobalSearchRegistrar.coarse = jittered
    _probe_table(f"jitter top {args.top}, {args.step} px, {args.dscale:.0%}", load_pipeline("global+average"))


def cmd_rank(args) -> None:
    g = GlobalSearchRegistrar(top_k=args.top)
    size, its, model = g.sizes[0], g.iterations[0], g.models[0]
    for name in args.names:
        pair, points, truth, moving, fixed = _pair(name)
        pyr = ImagePyramid(moving)
        cands = g.coarse(pyr, fixed, pair.ir_size)
        tre = np.array([_tre(m, pair, points) for _, _, m in cands])
        as_is = np.array([refine_matrix(pyr, fixed, m, (size,), (0,), (model,))[1] for _, _, m in cands])
        refined = [refine_matrix(pyr, fixed, m, (size,), (its,), (model,)) for _, _, m in cands]
        after = np.array([c for _, c in refined])
        tre_after = np.array([_tre(m, pair, points) for m, _ in refined])
        best = int(np.argmin(tre))

        def rank(values: np.ndarray) -> int:  # 1 = first
            return int((values < values[best]).sum()) + 1

        print(f"{name}: {len(cands)} candidates, best {tre[best]:.1f} raw px (coarse rank {best + 1}; MIND rank "
              f"{rank(as_is)}; after LK at {size} px: {tre_after[best]:.1f} px, MIND rank {rank(after)}); "
              f"{int((tre <= 15).sum())} within 15 px; after LK {int((tre_after <= 5).sum())} within 5 px, the "
              f"lowest-MIND one at {tre_after[int(np.argmin(after))]:.1f} px", flush=True)


def cmd_measures(args) -> None:
    from aligned_check import gradient_ncc, mutual_information  # noqa: PLC0415

    g = GlobalSearchRegistrar()
    names = [n.rsplit(".", 1)[0] for n in io.read_split(PROBE)]
    prefers = {"MIND": 0, "orientation": 0, "MI": 0, "gradient NCC": 0}
    failing = 0
    for name in names:
        pair, points, truth, moving, fixed = _pair(name)
        found, _ = g.register_pair(moving, fixed, pair.ir_size)
        err = _tre(found, pair, points)
        if err <= 5:
            continue
        failing += 1
        pyr = ImagePyramid(moving)
        from_truth, _ = refine_matrix(pyr, fixed, truth, g.sizes, g.iterations, g.models)
        mind = [refine_matrix(pyr, fixed, m, g.sizes[-1:], (0,), g.models[-1:])[1] for m in (found, from_truth)]
        orient = g.orientation_scores(pyr, fixed, [found, from_truth])
        full = tuple(fixed.shape[-2:])
        f = g.sizes[-1] / max(full)
        size = (round(full[0] * f), round(full[1] * f))
        mats = np.stack([rescale_matrix(m, full, size) for m in (found, from_truth)])
        moved, inside = pyr.read(np.linalg.inv(scale_matrix(full, size)) @ mats, size, padding_mode="border")
        fix = warp_ops.resize_image(fixed.float(), size)[0, 0].numpy()
        both = (inside[0, 0] * inside[1, 0]).numpy() > 0.5
        both[:12], both[-12:], both[:, :12], both[:, -12:] = False, False, False, False
        mi = [mutual_information(moved[i, 0].numpy()[both], fix[both]) for i in range(2)]
        gn = [gradient_ncc(np.where(both, moved[i, 0].numpy(), moved[i, 0].numpy()[both].mean()),
                           np.where(both, fix, fix[both].mean())) for i in range(2)]
        prefers["MIND"] += mind[1] < mind[0]
        prefers["orientation"] += orient[1] > orient[0]
        prefers["MI"] += mi[1] > mi[0]
        prefers["gradient NCC"] += gn[1] > gn[0]
        print(f"{name}: found {err:.1f} raw px, from the truth {_tre(from_truth, pair, points):.1f} | MIND "
              f"{mind[0]:.4f} / {mind[1]:.4f} | orientation {orient[0]:.3f} / {orient[1]:.3f} | MI {mi[0]:.3f} / "
              f"{mi[1]:.3f} | gradient NCC {gn[0]:.3f} / {gn[1]:.3f}", flush=True)
    print(f"{failing} pairs beyond 5 raw px; the solution refined from the truth preferred by: "
          + ", ".join(f"{k} {v}/{failing}" for k, v in prefers.items()))


def cmd_matches(args) -> None:
    """Each matched start on its own (before any refinement): its TRE and inliers, per candidate, against the
    search's answer, on the failing probe pairs."""
    g = GlobalSearchRegistrar(match_starts=(args.top, args.side))
    names = [n.rsplit(".", 1)[0] for n in io.read_split(PROBE)][:FAILING]
    near = 0
    for name in names:
        pair, points, truth, moving, fixed = _pair(name)
        pyr = ImagePyramid(moving)
        coarse = [(label, m) for _, label, m in g.coarse(pyr, fixed, pair.ir_size)]
        starts = g._matched(pyr, fixed, coarse)
        found, _ = g.register_pair(moving, fixed, pair.ir_size)
        tres = [(label.rsplit("_match", 1)[1], _tre(m, pair, points)) for label, m in starts]
        near += any(t <= 5 for _, t in tres)
        print(f"{name}: search {_tre(found, pair, points):.2f} raw px | coarse "
              f"{', '.join(f'{_tre(m, pair, points):.1f}' for _, m in coarse[:args.top])} | matched starts "
              f"(inliers: TRE) {', '.join(f'{n}: {t:.1f}' for n, t in tres) or 'none'}", flush=True)
    print(f"{near} of {len(names)} failing pairs get a matched start within 5 raw px")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("gt", "basin"):
        sub.add_parser(name).add_argument("names", nargs="+")
    sub.add_parser("reference").add_argument("mode", choices=("none", "gamma", "clahe"))
    rk = sub.add_parser("rank")
    rk.add_argument("names", nargs="+")
    rk.add_argument("--top", type=int, default=64)
    jit = sub.add_parser("jitter")
    jit.add_argument("--top", type=int, default=3)
    jit.add_argument("--step", type=float, default=10.0)
    jit.add_argument("--dscale", type=float, default=0.04)
    sub.add_parser("measures")
    mt = sub.add_parser("matches")
    mt.add_argument("--top", type=int, default=2)
    mt.add_argument("--side", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cmd in ("reference", "jitter"):
        print("| variant | mean TRE (raw px) | median | within 5 px | failing 19: mean | within 5 px | other 26: mean "
              "| s / pair |\n|---|---|---|---|---|---|---|---|")
    {"gt": cmd_gt, "basin": cmd_basin, "reference": cmd_reference, "jitter": cmd_jitter, "rank": cmd_rank,
     "measures": cmd_measures, "matches": cmd_matches}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
