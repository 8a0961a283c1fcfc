"""Is an "aligned" pair really aligned? Where a pipeline moves an aligned pair, two measures that the
registration does not optimise judge the move: intensity mutual information and the correlation of gradient
magnitudes between the IR and the visible luminance.

    python benchmarks/aligned_check.py --dataset tno [--model default] [--figure docs/images/tno_aligned_check.png]

Per pair: the pipeline's field on the pair as delivered (mean |field|, px), and MI (32-bin joint histogram,
nats) and gradient-magnitude NCC (Sobel) of the IR against the visible image, with a 24 px border left out,
for four IR images:

* ``input``: as delivered (the dataset's alignment);
* ``blur``: the input read 0.5 px off in x and y (the bilinear interpolation that any move costs, and
  nothing else: a move that only smooths the IR scores like this);
* ``registered``: the input warped by the pipeline's field;
* ``mirror``: warped by the negated field (the same amount of motion, the other way).

A move is *confirmed* when both measures rate ``registered`` above ``input`` and ``blur``, and ``mirror`` below
``input``: the dataset's alignment is then off by about the field, in the registration's direction. Neither
measure is what the default pipeline optimises (MIND descriptors, gradient orientations), so they are
independent witnesses, though not proof: a text overlay in one image, for instance, can fool all of them.

``--figure``: the IR edges (Canny, red) on the visible image, as delivered | registered, for up to three moved
pairs (zoomed crops).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch

from alignfuse import io, load_pipeline
from alignfuse import warp as warp_ops
from alignfuse.api import register_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registration_presets import pairs_of  # noqa: E402

BORDER = 24


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """(H, W) float images in [0, 1] -> MI of their joint intensity histogram (nats)."""
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins, range=[[0, 1], [0, 1]])
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / np.outer(px, py)[nz])).sum())


def gradient_ncc(a: np.ndarray, b: np.ndarray) -> float:
    """(H, W) float images -> Pearson correlation of their Sobel gradient magnitudes."""
    def mag(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        return np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))

    ga, gb = mag(a), mag(b)
    ga, gb = ga - ga.mean(), gb - gb.mean()
    return float((ga * gb).sum() / max(np.sqrt((ga * ga).sum() * (gb * gb).sum()), 1e-12))


def _warped(ir: np.ndarray, field: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None]
    return warp_ops.warp(t, torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None])[0, 0].numpy()


def judge(ir: np.ndarray, vis_y: np.ndarray, field: np.ndarray) -> dict[str, dict[str, float]]:
    """IR, visible luminance (H, W), field (2, H, W) -> {image: {"mi", "gradient_ncc"}} for the module's four."""
    half = np.full_like(field, 0.5)
    images = {"input": ir, "blur": _warped(ir, half), "registered": _warped(ir, field), "mirror": _warped(ir, -field)}
    b = BORDER
    v = vis_y[b:-b, b:-b]
    return {k: {"mi": mutual_information(np.clip(x[b:-b, b:-b], 0, 1), np.clip(v, 0, 1)),
                "gradient_ncc": gradient_ncc(x[b:-b, b:-b], v)} for k, x in images.items()}


def confirmed(scores: dict[str, dict[str, float]]) -> bool:
    return all(scores["registered"][m] > max(scores["input"][m], scores["blur"][m])
               and scores["mirror"][m] < scores["input"][m] for m in ("mi", "gradient_ncc"))


def edge_overlay(ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
    """IR Canny edges in red on the (dimmed) visible luminance -> (H, W, 3) uint8 RGB."""
    edges = cv2.Canny((np.clip(ir, 0, 1) * 255).astype(np.uint8), 40, 100) > 0
    out = np.repeat(vis_y[..., None] * 0.8, 3, axis=2)
    out[edges] = (1.0, 0.1, 0.1)
    return (out * 255).astype(np.uint8)


def figure(cases: list[tuple], path: Path, crop: int = 200) -> None:
    """(name, IR, registered IR, visible[, weight]) per pair -> rows of zoomed crops (as delivered | registered; or
    any two readings of the IR), centred on the crop with the most edges of the second IR, each edge weighted by
    ``weight`` (H, W) where given (e.g. how far the two readings disagree there)."""
    rows = []
    for _, ir, reg, vis, *weight in cases:
        h, w = vis.shape
        ch, cw = min(crop, h), min(int(crop * 1.4), w)
        edges = cv2.Canny((np.clip(reg, 0, 1) * 255).astype(np.uint8), 40, 100).astype(np.float32)
        if weight:
            edges = edges * weight[0].astype(np.float32)
        density = cv2.boxFilter(edges, -1, (cw, ch), normalize=False)[ch // 2 : h - ch // 2, cw // 2 : w - cw // 2]
        y, x = np.unravel_index(int(np.argmax(density)), density.shape)
        panels = [edge_overlay(img, vis)[y : y + ch, x : x + cw] for img in (ir, reg)]
        gap = np.full((ch, 6, 3), 255, np.uint8)
        rows.append(cv2.resize(np.concatenate([panels[0], gap, panels[1]], 1), None, fx=1.5, fy=1.5,
                               interpolation=cv2.INTER_NEAREST))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, 0)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="tno")
    ap.add_argument("--split", help="split name or names file (default: all pairs)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--min-shift", type=float, default=0.5, help="mean |field| (px) from which a pair counts as moved")
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    rows, cases = [], []
    print(f"# {args.dataset} as delivered, `{args.model}`; {date.today()}; {platform.processor() or platform.machine()}")
    print("# command: python benchmarks/aligned_check.py " + " ".join(sys.argv[1:] if argv is None else argv) + "\n")
    print("| pair | mean \\|field\\| (px) | MI input / blur / registered / mirror | gradient NCC input / blur / "
          "registered / mirror | confirmed |\n|---|---|---|---|---|")
    for pair in pairs_of(args.dataset, args.split):
        p = io.load_pair(pair.ir, pair.vis)
        vis_y = io.rgb_to_ycbcr(p.vis)[0] if p.vis.ndim == 3 else p.vis
        result = register_arrays(p.ir, p.vis, pipe, warn=False)
        field = result.field
        shift = float(np.hypot(field[0], field[1]).mean())
        row = {"name": pair.stem, "field_mean": shift}
        if shift >= args.min_shift:
            scores = judge(p.ir, vis_y, field)
            row.update(scores=scores, confirmed=confirmed(scores))
            cases.append((pair.stem, p.ir, result.aligned_ir, vis_y))
            cells = [" / ".join(f"{scores[k][m]:.3f}" for k in ("input", "blur", "registered", "mirror"))
                     for m in ("mi", "gradient_ncc")]
            print(f"| {pair.stem} | {shift:.2f} | {cells[0]} | {cells[1]} | {'yes' if row['confirmed'] else 'no'} |",
                  flush=True)
        rows.append(row)
    moved = [r for r in rows if "scores" in r]
    print(f"\n{len(moved)} of {len(rows)} pairs moved (mean |field| >= {args.min_shift} px), "
          f"{sum(r['confirmed'] for r in moved)} confirmed by both measures; mean |field| over all pairs "
          f"{np.mean([r['field_mean'] for r in rows]):.2f} px, over the unconfirmed ones "
          f"{np.sum([r['field_mean'] for r in moved if not r['confirmed']]) / max(len(rows), 1):.2f} px per pair")
    if args.figure and cases:
        by_shift = sorted(cases, key=lambda c: -next(r["field_mean"] for r in rows if r["name"] == c[0]))
        figure([c for c in by_shift if next(r for r in rows if r["name"] == c[0])["confirmed"]][:3], args.figure)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
