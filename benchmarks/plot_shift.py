"""Plot Qabf and Ssim against the shift (RFVIF paper Fig. 12 layout) from `evaluate --json` outputs.

Usage::

    python benchmarks/plot_shift.py OUT.png RUN_DIR/roadscene_shift0.json RUN_DIR/roadscene_shift5.json ...

Each JSON is one `alignfuse evaluate --preset shift:N --json` result (or a `merge_eval.py --json` merge);
every model in it becomes a line. With ``--ceiling MODEL`` (before OUT.png), MODEL's value at shift 0 (its
aligned input) is drawn as a dashed horizontal line labelled "ceiling".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, paths: list[str], ceiling: str | None = None) -> None:
    runs = sorted((json.loads(Path(p).read_text()) for p in paths), key=lambda d: int(d["preset"].split(":")[1]))
    shifts = [int(d["preset"].split(":")[1]) for d in runs]
    models = list(runs[0]["summary"])
    if ceiling is not None and (shifts[0] != 0 or ceiling not in runs[0]["summary"]):
        raise SystemExit(f"--ceiling {ceiling}: needs a shift:0 result that holds {ceiling}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("Qabf", "Ssim")):
        for m in models:
            ax.plot(shifts, [d["summary"][m][metric]["mean"] for d in runs], marker="o", label=m)
        if ceiling is not None:
            ax.axhline(runs[0]["summary"][ceiling][metric]["mean"], color="k", ls="--", lw=1,
                       label=f"ceiling ({ceiling}, aligned)")
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
    argv = sys.argv[1:]
    ceiling_model = None
    if argv[:1] == ["--ceiling"]:
        ceiling_model, argv = argv[1], argv[2:]
    main(argv[0], argv[1:], ceiling_model)
