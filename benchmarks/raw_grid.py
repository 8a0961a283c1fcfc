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
from alignfuse.metrics import target_registration_error

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--model", default="default")
    ap.add_argument("-o", "--out", default="docs/images/roadscene_raw_grid.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    names = [n.rsplit(".", 1)[0] for n in io.read_split(DATA / "roadscene" / "test.txt")][: args.n]
    pipe = load_pipeline(args.model)
    fig, axes = plt.subplots(len(names), 4, figsize=(13, 2.3 * len(names)), squeeze=False)
    titles = ["visible", "infrared as delivered (640x512)", f"infrared registered ({args.model})", "fused"]
    for r, name in enumerate(names):
        raw = DATA / "roadscene_raw"
        pair = io.load_pair(raw / "ir_raw" / f"{name}.png", DATA / "roadscene" / "vi" / f"{name}.jpg")
        res = fuse_arrays(pair.ir, pair.vis, pipe, ir_size=pair.ir_size)
        points = np.loadtxt(raw / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        before = target_registration_error(io.field_to_ir_coordinates(np.zeros_like(res.field), pair.ir_size), points)
        after = target_registration_error(res.ir_coordinates(), points)
        images = [pair.vis, io.read_image(raw / "ir_raw" / f"{name}.png", kind="ir").data, res.aligned_ir, res.fused]
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(f"{name}\nTRE {before:.0f} -> {after:.1f} px", fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=55)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
