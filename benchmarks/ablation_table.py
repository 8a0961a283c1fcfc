"""Markdown table of the RFVIF paper's 8 metrics for one model across several `evaluate --json` files.

Usage::

    python benchmarks/ablation_table.py [--model rfvif] "full=A.json" "w/o DKG=B.json" ...

Each argument is LABEL=PATH; the row shows the mean of CE, MI, Qabf, Qcb, Qcv, SD, SSIM, EN of ``--model``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from merge_eval import RFVIF_METRICS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rfvif")
    ap.add_argument("rows", nargs="+", help="LABEL=PATH")
    args = ap.parse_args()
    print("| variant | CE ↓ | MI | Qabf | Qcb | Qcv ↓ | SD | SSIM | EN |\n|---|" + "--:|" * len(RFVIF_METRICS))
    for row in args.rows:
        label, sep, path = row.rpartition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=PATH, got {row!r}")
        s = json.loads(Path(path).read_text())["summary"][args.model]
        cells = [f"{s[m]['mean']:.0f}" if m == "Qcv" else f"{s[m]['mean']:.4g}" for m in RFVIF_METRICS]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
