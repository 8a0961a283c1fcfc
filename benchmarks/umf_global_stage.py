"""The paper's arrangement (`umf-cmgr`: CPSTN pseudo-IR + global stage + MRRN), or `mrrn+difn`, with each global stage.

Usage::

    python benchmarks/umf_global_stage.py --data ../shared/data/roadscene --split ../shared/data/roadscene/test.txt \
        --preset umf --global ecc --global phase [--global none] [--global-reference visible|reference] \
        [--threads 1] [--json OUT.json]

Registered IR against the ground-truth IR (MSE, NCC inside the valid region, EPE in px), the fraction of
pairs flagged suspect and Qabf of the DIFN fusion, as ``alignfuse evaluate`` scores them (same samples
for the same ``--preset`` and ``--seed``), with the shipped weights. ``--global none`` is the paper's
network-only registration.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from alignfuse.evaluation import evaluate, iter_samples
from alignfuse.registry import create_pipeline

COLUMNS = ("MSE", "NCC", "EPE_mean", "suspect", "Qabf", "seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path)
    parser.add_argument("--preset", default="umf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--global", dest="stages", action="append", choices=("ecc", "phase", "mind", "none"),
                        required=True)
    parser.add_argument("--global-reference", default="visible", choices=("reference", "visible"),
                        help="umf-cmgr: what the global stage registers against, the pseudo-IR or the visible luminance")
    parser.add_argument("--min-shift", type=float, help="umf-nocpstn+difn: keep the global field only when it moves "
                        "the image by at least this many px (working size); no second network pass")
    parser.add_argument("--model", default="umf-cmgr", choices=("umf-cmgr", "mrrn+difn", "umf-nocpstn+difn"),
                        help="mrrn+difn: no translator, the network runs from the global start and from the identity "
                             "and the better final MIND similarity wins")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    against = f", against the {args.global_reference}" if args.model == "umf-cmgr" else ""
    print(f"| {args.model} global stage ({args.data.name}, {args.preset}{against}) | "
          + " | ".join(COLUMNS) + " |")
    print("|---|" + "--:|" * len(COLUMNS))
    for stage in args.stages:
        kwargs = {"global_reference": args.global_reference} if args.model == "umf-cmgr" else {}
        if args.model == "umf-nocpstn+difn":
            kwargs = {"global_min_shift": args.min_shift}
        pipe = create_pipeline(args.model, global_stage=None if stage == "none" else stage, **kwargs)
        src = iter_samples(args.data, args.preset, args.seed, args.split)
        rows, failures = evaluate(pipe, src.samples, src.count, fusion_metrics=("Qabf",))
        if failures:
            raise SystemExit(f"{stage}: {len(failures)} pair(s) failed, e.g. {failures[0].name}: {failures[0].message}")
        mean = {k: statistics.mean(r[k] for r in rows) for k in COLUMNS}
        results[stage] = {"mean": mean, "rows": rows}
        print(f"| {stage} | " + " | ".join(f"{mean[k]:.4g}" for k in COLUMNS) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "preset": args.preset, "seed": args.seed,
                                         "model": args.model, "global_reference": args.global_reference,
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
