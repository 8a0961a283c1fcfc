"""Plot Qabf and Ssim against the shift (RFVIF paper Fig. 12 layout) from `evaluate --json` outputs.

Usage::

    python benchmarks/plot_shift.py OUT.png RUN_DIR/roadscene_shift0.json RUN_DIR/roadscene_shift5.json ...

Each JSON is one `alignfuse evaluate --preset shift:N --json` result; every model in it becomes a line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, paths: list[str]) -> None:
    runs = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda d: int(d["preset"].split(":")[1]))
    shifts = [int(d["preset"].split(":")[1]) for d in runs]
    models = list(runs[0]["summary"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("Qabf", "Ssim")):
        for m in models:
            ax.plot(shifts, [d["summary"][m][metric]["mean"] for d in runs], marker="o", label=m)
        ax.set_xlabel("shift (px, both axes)")
        ax.set_ylabel(f"{metric} (VIFB)")
        ax.set_xticks(shifts)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(runs[0]['data']).name}: fusion quality vs misalignment (vs aligned IR)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
