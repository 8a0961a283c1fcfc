"""Wins / losses of PWF variants against the references, from ``fusion_wins.py --json`` tables.

    python benchmarks/pwf_compare.py RUN1/sel.json [RUN2/sel.json ...]

Each JSON holds ``identity+pwf`` (the variant, scored with ``--weights-dir``) and the reference fusers; prints one
line per variant: wins of VIFB's 13 against each reference, the metrics lost, CC/SSIM means and hot-target saliency.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignfuse.metrics import METRIC_INFO
from alignfuse.metrics.fusion import VIFB_METRIC_NAMES

REFS = ("identity+gff", "identity+laplacian", "identity+difn")
SHORT = {"Cross_entropy": "CE", "Spatial_frequency": "SF", "Avg_gradient": "AG", "Edge_intensity": "EI",
         "Entropy": "EN", "Variance": "SD", "Mutinf": "MI"}


def better(metric: str, a: float, b: float) -> bool:
    return a > b if METRIC_INFO[metric]["higher_is_better"] else a < b


def main(argv: list[str]) -> int:
    for path in argv:
        table = json.loads(Path(path).read_text())
        me = table["identity+pwf"]
        parts = []
        for ref in REFS:
            if ref not in table:
                continue
            lost = [SHORT.get(m, m) for m in VIFB_METRIC_NAMES if not better(m, me[m], table[ref][m])]
            parts.append(f"{13 - len(lost)} vs {ref.split('+')[1]} (lost {','.join(lost)})")
        print(f"{path}: " + "; ".join(parts) + f"; hot {me['hot_saliency']:.3f} CC {me['CC_mean']:.4f} "
              f"SSIM {me['SSIM_mean']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
