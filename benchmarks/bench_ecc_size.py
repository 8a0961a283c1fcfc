"""ECC on a large pair: full-size estimation vs ``max_size`` (estimate shrunk, lift the matrix back).

Usage::

    python benchmarks/bench_ecc_size.py [--size 2160 3840] [--max-size 1024] [--threads 2] [--repeat 3]

A smooth random texture is shifted by (7.3, -4.1) px with a 1 degree rotation; both settings register it
in the same run (median wall time of ``--repeat``) and report the largest field error away from the border.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from alignfuse import warp
from alignfuse.baselines import ECCRegistrar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(2160, 3840), metavar=("H", "W"))
    parser.add_argument("--max-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = args.size
    img = gaussian_filter(np.random.default_rng(0).random((h, w)), 6)
    img = ((img - img.min()) / (img.max() - img.min())).astype(np.float32)
    moving = torch.from_numpy(img)[None, None]
    th = math.radians(1.0)
    lin = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    t = c - lin @ c + np.array([7.3, -4.1])
    gt = warp.field_from_affine(torch.tensor(np.hstack([lin, t[:, None]]), dtype=torch.float32)[None], h, w)
    fixed = warp.warp(moving, gt)
    border = max(h, w) // 50
    times = {}
    for max_size in (None, args.max_size):
        reg = ECCRegistrar(max_size=max_size)
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = reg(moving, fixed)
            runs.append(time.perf_counter() - t0)
        err = float((res.field - gt)[..., border:-border, border:-border].pow(2).sum(1).sqrt().max())
        times[max_size] = statistics.median(runs)
        print(f"max_size {str(max_size):>5}: {times[max_size]:6.2f} s, estimated at "
              f"{res.diagnostics[0]['estimated_at']}, max field error {err:.3f} px", flush=True)
    print(f"{w}x{h}: x{times[None] / times[args.max_size]:.1f} faster with max_size {args.max_size} "
          f"({args.threads} threads)")


if __name__ == "__main__":
    main()
