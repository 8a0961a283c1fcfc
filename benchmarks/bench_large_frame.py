"""The default registration on a drone-sized pair: a 4000x3000 visible frame against a 640x512 raw IR.

    python benchmarks/bench_large_frame.py [--threads 2] [--long-side 1024] [--size 4000x3000]

The three committed ``roadscene_raw`` sample pairs (``samples/raw``) with the visible crop upsampled (bicubic) to
``--size``: ``register_arrays`` with the ``default`` pipeline registering at full resolution
(``register_long_side=None``) and at its working size (``--long-side``, the shipped
``DEFAULT_REGISTER_LONG_SIDE``), alternated in one process; time per pair and TRE in raw IR pixels against the
samples' ground-truth check points (the visible points scaled to the upsampled frame).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import map_coordinates

from alignfuse import io, load_pipeline
from alignfuse.api import register_arrays
from alignfuse.model_pipelines import DEFAULT_REGISTER_LONG_SIDE

RAW = Path(__file__).resolve().parents[1] / "samples" / "raw"


def tre(result, pts: np.ndarray, size: tuple[int, int], vis_size: tuple[int, int]) -> float:
    """Mean distance (raw IR px) between where the field sends the check points and their ground truth."""
    (w, h), (vw, vh) = size, vis_size
    coords = result.ir_coordinates()
    xs, ys = (pts[:, 0] + 0.5) * w / vw - 0.5, (pts[:, 1] + 0.5) * h / vh - 0.5
    px = map_coordinates(coords[0], [ys, xs], order=1)
    py = map_coordinates(coords[1], [ys, xs], order=1)
    return float(np.hypot(px - pts[:, 2], py - pts[:, 3]).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long-side", type=int, default=DEFAULT_REGISTER_LONG_SIDE)
    ap.add_argument("--size", default="4000x3000")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    pipe = load_pipeline("default")
    rows = {None: [], args.long_side: []}
    print(f"| pair | working size | s | TRE (raw px) |\n|---|---|---|---|")
    for ir_path in sorted((RAW / "ir").glob("*.png")):
        name = ir_path.stem
        pair = io.load_pair(ir_path, RAW / "vi" / f"{name}.jpg")
        ir = io.read_image(ir_path, kind="ir").data
        vis = np.clip(cv2.resize(pair.vis, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
        pts = np.loadtxt(RAW / "points" / f"{name}.csv", delimiter=",", skiprows=1)
        for long_side in rows:
            pipe.register_long_side = long_side
            t0 = time.perf_counter()
            result = register_arrays(ir, vis, pipe, warn=False)
            seconds = time.perf_counter() - t0
            error = tre(result, pts, (w, h), (pair.vis.shape[1], pair.vis.shape[0]))
            rows[long_side].append((seconds, error))
            print(f"| {name} | {long_side or 'full'} | {seconds:.2f} | {error:.2f} |", flush=True)
    (ta, ea), (tb, eb) = (np.mean(rows[k], axis=0) for k in rows)
    print(f"\n{args.size}, {args.threads} threads: full resolution {ta:.2f} s / {ea:.2f} raw px, working size "
          f"{args.long_side} {tb:.2f} s / {eb:.2f} raw px: {ta / tb:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
