"""Merge `alignfuse evaluate --json` results of one preset into one table, and count metric wins.

Usage::

    python benchmarks/merge_eval.py [--drop MODEL ...] [--wins MODEL --against M1,M2] [--json OUT.json] A.json B.json ...

Rows come from every file in order; a model that appears in several files keeps its first occurrence
(so list the newest file first and use ``--drop`` for stale rows). All files must hold the same preset
and data. ``--wins`` prints, for MODEL against each model of ``--against``, how many of the RFVIF
paper's eight metrics (CE, MI, Qabf, Qcb, Qcv, SD, SSIM, EN; CE and Qcv lower-is-better) it beats.
``--json`` writes the merged summaries in the `evaluate --json` layout (without per-pair values), which
`plot_shift.py` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignfuse.evaluation import format_table

RFVIF_METRICS = ("Cross_entropy", "Mutinf", "Qabf", "Qcb", "Qcv", "Variance", "Ssim", "Entropy")
LOWER_IS_BETTER = {"Cross_entropy", "Qcv", "MSE", "EPE_mean", "EPE_p95"}
COLUMNS = [*RFVIF_METRICS, "CC_mean", "SSIM_mean", "VIFF", "seconds"]
REG_COLUMNS = ["MSE", "NCC", "MI", "EPE_mean", "EPE_p95", "seconds", "suspect"]


def wins(summary: dict, model: str, other: str, metrics=RFVIF_METRICS) -> list[str]:
    """Metrics on which ``model``'s mean beats ``other``'s (direction-aware)."""
    won = []
    for m in metrics:
        a, b = summary[model][m]["mean"], summary[other][m]["mean"]
        if (a < b) if m in LOWER_IS_BETTER else (a > b):
            won.append(m)
    return won


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--drop", nargs="*", default=[])
    ap.add_argument("--wins")
    ap.add_argument("--against", default="")
    ap.add_argument("--json", type=Path, help="write the merged summaries here")
    ap.add_argument("--registration", action="store_true", help="also print the registration table")
    args = ap.parse_args()
    merged: dict[str, dict] = {}
    key = None
    for path in args.files:
        data = json.loads(path.read_text())
        this = (Path(data["data"]).name, data["preset"], data["seed"])
        if key is not None and this != key:
            raise SystemExit(f"{path}: {this} differs from {key}")
        key = this
        for model, summary in data["summary"].items():
            if model not in merged and model not in args.drop:
                merged[model] = summary
    print(f"{key[0]}, preset {key[1]}, seed {key[2]}\n")
    if args.registration:
        print(format_table(merged, REG_COLUMNS))
        print()
    print(format_table(merged, COLUMNS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": data["data"], "preset": key[1], "seed": key[2], "summary": merged},
                                        indent=1))
    if args.wins:
        print()
        for other in filter(None, args.against.split(",")):
            won = wins(merged, args.wins, other)
            print(f"- {args.wins} beats {other} on {len(won)}/8: {', '.join(won)}")


if __name__ == "__main__":
    main()
