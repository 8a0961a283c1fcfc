"""One compact table across shifts from merged `shift:N` results (``merge_eval.py --json`` outputs).

Usage::

    python benchmarks/shift_summary.py METRIC MERGED_DIR/roadscene_shift*.json [--wins MODEL --against A,B]

Prints a markdown table with one row per model and one column per shift holding METRIC's mean, and with
``--wins`` a second table: for each shift, how many of the RFVIF paper's 8 metrics MODEL beats each of
``--against`` on (``merge_eval.wins``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from merge_eval import wins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metric")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--wins")
    ap.add_argument("--against", default="")
    args = ap.parse_args()
    runs = sorted((json.loads(p.read_text()) for p in args.files), key=lambda d: int(d["preset"].split(":")[1]))
    shifts = [d["preset"].split(":")[1] for d in runs]
    models = list(runs[0]["summary"])
    print(f"{args.metric} (mean) by shift (px)\n")
    print("| model | " + " | ".join(shifts) + " |")
    print("|---|" + "--:|" * len(shifts))
    for m in models:
        cells = [f"{d['summary'][m][args.metric]['mean']:.4g}" if m in d["summary"] else "–" for d in runs]
        print(f"| {m} | " + " | ".join(cells) + " |")
    if args.wins:
        print(f"\n{args.wins}: metrics won of 8 (CE, MI, Qabf, Qcb, Qcv, SD, SSIM, EN) by shift (px)\n")
        print("| against | " + " | ".join(shifts) + " |")
        print("|---|" + "--:|" * len(shifts))
        for other in filter(None, args.against.split(",")):
            print(f"| {other} | " + " | ".join(str(len(wins(d["summary"], args.wins, other))) for d in runs) + " |")


if __name__ == "__main__":
    main()
