"""Side-by-side fusions of pairs with hot targets: visible | IR | fused by each model, aligned input.

    python benchmarks/fusion_grid.py [--per-dataset 3] [--model identity+gff --model identity+difn ...] \
        [--weights-dir W] [-o docs/images/fusion_grid.jpg]

Pairs: of RoadScene test and TNO, the ``--per-dataset`` pairs whose hot target (the IR above its mean + 2 std, the
mask of ``fusion_wins.hot_target_saliency``) stands out most against a 15 px ring around it; a display choice, not
a tuning one. Each row is titled with the pair and every fused image's hot-target saliency (1.0 = as salient as in
the IR).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from alignfuse.api import fuse_arrays, load_pipeline
from alignfuse.demo import image_grid
from alignfuse.evaluation import iter_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fusion_wins import hot_regions, hot_target_saliency  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = ["identity+gff", "identity+difn", "identity+pwf", "rfvif"]


def hot_contrast(ir: np.ndarray) -> float:
    """IR contrast of the hot mask against its ring (0 when the pair has no hot target by that mask)."""
    regions = hot_regions(ir)
    return 0.0 if regions is None else float(ir[regions[0]].mean() - ir[regions[1]].mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-dataset", type=int, default=3)
    ap.add_argument("--model", action="append", help=f"fusion pipelines (repeat); default {' '.join(MODELS)}")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-o", "--out", default="docs/images/fusion_grid.jpg")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = args.model or MODELS
    pipes = {m: load_pipeline(m, weights_dir=args.weights_dir) for m in models}
    rows = []
    for dataset, split in (("roadscene", DATA / "roadscene" / "test.txt"), ("tno", None)):
        samples = list(iter_samples(DATA / dataset, preset="none", seed=0, split=split).samples)
        samples.sort(key=lambda s: -hot_contrast(s.ir_gt))
        for s in samples[: args.per_dataset]:
            results = [fuse_arrays(s.ir_gt, s.vis, pipes[m], warn=False) for m in models]
            fused = [r.fused for r in results]
            sal = [hot_target_saliency(s.ir_gt, r.fused_y) for r in results]
            label = f"{dataset} {s.name}\nhot saliency " + " / ".join("-" if v is None else f"{v:.2f}" for v in sal)
            rows.append((label, [s.vis, s.ir_gt, *fused]))
            print(label.replace("\n", ": "), flush=True)
    image_grid(rows, Path(args.out), ["visible", "infrared", *models], dpi=60)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
