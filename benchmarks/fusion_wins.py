"""Fusers on aligned (or, with --preset, misaligned) input: VIFB's 13 metrics + CC/SSIM means, metrics won against references, hot-target saliency.

    python benchmarks/fusion_wins.py --data ../shared/data/roadscene --split ../shared/data/roadscene/test.txt \
        --model identity+pwf --model identity+gff --model identity+laplacian --model identity+difn \
        --against identity+gff --against identity+laplacian [--weights-dir W] [--limit N] [--json out.json]

Every pipeline fuses the ground-truth aligned pairs (preset ``none``; ``--preset shift:5`` misaligns the IR input
first, for registration-free fusers), scored as ``alignfuse evaluate`` scores them (8-bit luminance, VIFB
conventions, against the aligned IR). ``wins vs X``: of VIFB's 13 metrics, how many have a better mean than
X's (lower for Cross_entropy, Qcv, Rmse; higher otherwise).

Hot-target saliency (our measure, stated because no standard one exists): per pair, the hot mask is the IR
above its mean + 2 std (the warmest objects: people, engines), the background a 15 px ring around it; saliency
= (mean F in mask - mean F in ring) / (mean IR in mask - mean IR in ring). 1.0 keeps the targets as salient
against their surroundings as in the IR; pairs whose mask covers < 0.1 % or > 20 % of the image are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch

from alignfuse.api import fuse_arrays, load_pipeline
from alignfuse.evaluation import iter_samples, score_fusion
from alignfuse.losses.pwf import hot_regions as hot_regions_batch
from alignfuse.losses.pwf import hot_target_saliency as saliency_batch
from alignfuse.metrics import METRIC_INFO
from alignfuse.metrics.fusion import VIFB_METRIC_NAMES

METRICS = VIFB_METRIC_NAMES + ("CC_mean", "SSIM_mean")


def _batch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


def hot_regions(ir: np.ndarray, ring: int = 15) -> tuple[np.ndarray, np.ndarray] | None:
    """(H, W) IR -> (hot mask, the ring around it) as the module docstring defines them (``losses/pwf.py
    hot_regions``, the definition the training loss uses too), or None without a target."""
    mask, around, has = hot_regions_batch(_batch(ir), ring)
    return (mask[0, 0].numpy() > 0.5, around[0, 0].numpy() > 0.5) if bool(has[0]) else None


def hot_target_saliency(ir: np.ndarray, fused: np.ndarray, ring: int = 15) -> float | None:
    """(H, W) float images -> the saliency ratio of the module docstring, or None when there is no hot target."""
    saliency, valid = saliency_batch(_batch(fused), _batch(ir), ring)
    return float(saliency[0]) if bool(valid[0]) else None


def better(metric: str, a: float, b: float) -> bool:
    return a > b if METRIC_INFO[metric]["higher_is_better"] else a < b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--against", action="append", default=[])
    parser.add_argument("--weights-dir")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--preset", default="none", help="misalignment of the input (default none: aligned), e.g. "
                        "shift:5 for registration-free fusers; the metrics use the ground-truth aligned IR")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = iter_samples(args.data, args.preset, 0, args.split, args.limit)
    samples = list(source.samples)
    pipes = {m: load_pipeline(m, weights_dir=args.weights_dir) for m in args.model}
    table: dict[str, dict[str, float]] = {}
    for name, pipe in pipes.items():
        rows, saliency = [], []
        for s in samples:
            result = fuse_arrays(s.ir_warp, s.vis, pipe, warn=False)
            rows.append(score_fusion(s.vis, s.ir_gt, result.fused_y, METRICS))
            value = hot_target_saliency(s.ir_gt, result.fused_y)
            if value is not None:
                saliency.append(value)
        table[name] = {m: float(np.nanmean([r[m] for r in rows])) for m in METRICS}
        table[name]["hot_saliency"] = float(np.mean(saliency)) if saliency else float("nan")
        table[name]["hot_pairs"] = len(saliency)
    cpu = platform.processor() or platform.machine()
    print(f"# {args.data.name} ({len(samples)} pairs, preset {args.preset}); {date.today()}; {cpu}; "
          f"torch {torch.__version__}")
    print("# command: python benchmarks/fusion_wins.py " + " ".join(sys.argv[1:] if argv is None else argv) + "\n")
    short = {"Cross_entropy": "CE", "Spatial_frequency": "SF", "Avg_gradient": "AG", "Edge_intensity": "EI",
             "Entropy": "EN", "Variance": "SD", "Mutinf": "MI"}
    head = [short.get(m, m) for m in METRICS] + ["hot sal."] + [f"wins vs {a}" for a in args.against]
    print("| model | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for name, vals in table.items():
        wins = [sum(better(m, vals[m], table[a][m]) for m in VIFB_METRIC_NAMES) if a in table and a != name else "-"
                for a in args.against]
        cells = [f"{vals[m]:.4g}" for m in METRICS] + [f"{vals['hot_saliency']:.3f} ({vals['hot_pairs']})"]
        print(f"| {name} | " + " | ".join(cells + [str(w) for w in wins]) + " |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
