"""Ghosting of the default pipeline on synthetic misalignment, by an edge measure.

    python benchmarks/ghosting.py [--preset large] [--dataset roadscene --dataset tno] [--limit N]

For every pair misaligned with the preset (seed 0): F = the default pipeline's fusion of (misaligned IR, VIS);
F_aligned = the same fuser on the ground-truth aligned IR; F_none = the same fuser on the misaligned IR without
registration; F_oracle = the same fuser on the misaligned IR warped back with the **true** registration field
(bilinear, as the pipelines warp: the best any registrar can reach under this protocol), and the same with the true
field off by 1 px (diagonally): what a registration that is right to a pixel leaves. Edge difference G(F) = mean |grad F - grad F_aligned| / mean |grad F_aligned| (Sobel gradient
vectors of the fused luminance) over the valid region (pixels whose ground-truth IR content is in the misaligned
image at all; outside it no registration can restore the IR). Reported: mean G(F), mean G(F_none), mean G(F_oracle), mean G of the 1 px-off oracle and the reductions
1 - G / G(F_none) of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, load_pipeline, synth
from alignfuse.api import fuse_arrays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from umf_ceiling import oracle_ir  # noqa: E402  (the true-field warp, shared)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _grad(img: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.Sobel(img.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3),
                     cv2.Sobel(img.astype(np.float32), cv2.CV_32F, 0, 1, ksize=3)])


def edge_difference(fused: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> float:
    """G over ``valid`` pixels (where the misaligned IR holds the ground-truth content at all)."""
    g, r = _grad(fused), _grad(reference)
    m = np.ones(fused.shape, bool) if valid is None else valid.astype(bool)
    return float(np.sqrt(((g - r) ** 2).sum(0))[m].mean() / max(np.sqrt((r ** 2).sum(0))[m].mean(), 1e-12))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="large")
    ap.add_argument("--dataset", action="append")
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    pipe = load_pipeline(args.model)
    # the same fuser without registration
    from alignfuse.pipeline import Pipeline

    bare = Pipeline(fuser=pipe.fuser, name=f"identity+{args.model} fuser")
    spec = synth.parse_preset(args.preset)
    print("| dataset | pairs | G(default) | G(no registration) | G(true-field oracle) | G(oracle 1 px off) "
          "| reduction: default | reduction: oracle | reduction: oracle 1 px off |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset in args.dataset or ["roadscene", "tno"]:
        root = DATA / dataset
        names = io.read_split(root / "test.txt") if (root / "test.txt").exists() else None
        pairs = io.pair_folders(root / "ir", root / "vi", names=names)[0]
        pairs = pairs[: args.limit] if args.limit else pairs
        g_reg, g_none, g_oracle, g_off = [], [], [], []
        for stem, ir_path, vis_path in pairs:
            pair = io.load_pair(ir_path, vis_path)
            s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(0, stem))
            ref = fuse_arrays(s.ir_gt, s.vis, bare, warn=False).fused_y
            g_reg.append(edge_difference(fuse_arrays(s.ir_warp, s.vis, pipe, warn=False).fused_y, ref, s.valid))
            g_none.append(edge_difference(fuse_arrays(s.ir_warp, s.vis, bare, warn=False).fused_y, ref, s.valid))
            oracle = fuse_arrays(oracle_ir(s.ir_warp, s.field), s.vis, bare, warn=False).fused_y
            g_oracle.append(edge_difference(oracle, ref, s.valid))
            off = s.field + np.float32(np.sqrt(0.5))  # 1 px off along the diagonal
            g_off.append(edge_difference(fuse_arrays(oracle_ir(s.ir_warp, off), s.vis, bare, warn=False).fused_y,
                                         ref, s.valid))
        a, b, c, d = (float(np.mean(g)) for g in (g_reg, g_none, g_oracle, g_off))
        print(f"| {dataset} `{args.preset}` | {len(pairs)} | {a:.4f} | {b:.4f} | {c:.4f} | {d:.4f} "
              f"| {100 * (1 - a / b):.1f} % | {100 * (1 - c / b):.1f} % | {100 * (1 - d / b):.1f} % |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
