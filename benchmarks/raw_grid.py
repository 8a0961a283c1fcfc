"""Image grid of real rig pairs: visible | IR as delivered | IR registered by the default | fused.

    python benchmarks/raw_grid.py [--n 6] [-o docs/images/roadscene_raw_grid.png]

The first ``--n`` names of RoadScene ``test.txt`` from ``roadscene_raw`` (raw 640x512 thermal frames against the
visible crops); each row is titled with the pair's TRE (raw IR px) before and after registration.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, load_pipeline
from alignfuse.api import fuse_arrays
from alignfuse.demo import image_grid
from alignfuse.metrics import target_registration_error

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--model", default="default")
    ap.add_argument("-o", "--out", default="docs/images/roadscene_raw_grid.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    names = [n.rsplit(".", 1)[0] for n in io.read_split(DATA / "roadscene" / "test.txt")][: args.n]
    pipe = load_pipeline(args.model)
    raw = DATA / "roadscene_raw"
    rows = []
    for name in names:
        pair = io.load_pair(raw / "ir_raw" / f"{name}.png", DATA / "roadscene" / "vi" / f"{name}.jpg")
        res = fuse_arrays(pair.ir, pair.vis, pipe, ir_size=pair.ir_size, warn=False)
        points = np.loadtxt(raw / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        before = target_registration_error(io.field_to_ir_coordinates(np.zeros_like(res.field), pair.ir_size), points)
        after = target_registration_error(res.ir_coordinates(), points)
        images = [pair.vis, io.read_image(raw / "ir_raw" / f"{name}.png", kind="ir").data, res.aligned_ir, res.fused]
        rows.append((f"{name}\nTRE {before:.0f} -> {after:.1f} px", images))
    titles = ["visible", "infrared as delivered (640x512)", f"infrared registered ({args.model})", "fused"]
    image_grid(rows, Path(args.out), titles, dpi=55)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
