"""EPE of an MRRN export on held-out RoadScene test crops, mono-modal vs cross-modal references.

Usage::

    python benchmarks/mrrn_crop_epe.py WEIGHTS_DIR [--data ../shared/data/roadscene] [--translator CPSTN] \
        [--preset PRESET] [--long-side 384]

WEIGHTS_DIR holds ``mrrn_cpu.safetensors`` + ``.json`` (e.g. a training run's export, renamed).
Twenty 160 px crops x 4 per seed, 5 seeds, IR distorted by the MRRN training generator
(``custom:tfrac=0.02,elastic=1,alpha=2``); the reference is the aligned IR itself (mono), the visible
luminance (cross-modal) or, with ``--translator`` (a CPSTN export), the pseudo-IR (the UMF way). Prints the mean EPE of no registration and of the network,
and the field's slope: <pred, gt> / <gt, gt> over all pixels (1 = the right amount of motion, < 1 = the network
moves the IR less than the distortion did).
``--preset`` replaces the generator; ``--long-side`` shrinks the test images first, as the pipelines do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from alignfuse.model_pipelines import load_mrrn
from alignfuse.training.data import load_bank, misaligned_crops, resize_bank

PRESET = "custom:tfrac=0.02,elastic=1,alpha=2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights_dir")
    parser.add_argument("--data", default="../shared/data/roadscene")
    parser.add_argument("--translator", help="CPSTN export (safetensors) for a pseudo-IR reference row")
    parser.add_argument("--preset", default=PRESET, help=f"distortion generator (default {PRESET})")
    parser.add_argument("--long-side", type=int, default=0, help="shrink the test images to this long side first")
    args = parser.parse_args()
    data = Path(args.data)
    bank = load_bank(data, data / "test.txt", limit=20)
    if args.long_side > 0:
        bank = resize_bank(bank, args.long_side)
    net = load_mrrn(args.weights_dir)
    rows = [(1.0, None, "mono-modal (IR reference)"), (0.0, None, "cross-modal (VIS reference)")]
    if args.translator:
        from alignfuse.training.recipes import pseudo_ir_bank

        rows.append((0.0, pseudo_ir_bank(bank, args.translator, torch.device("cpu")), "pseudo-IR reference"))
    for mono, reference, label in rows:
        before, after, dot, norm = [], [], 0.0, 0.0
        for seed in range(5):
            b = misaligned_crops(bank, np.random.default_rng([9, seed]), 4, 160, args.preset, reference, mono)
            with torch.no_grad():
                field = net(b["fixed"], b["moving"])["field"]
            before.append(b["field_gt"].pow(2).sum(1).sqrt().mean().item())
            after.append((field - b["field_gt"]).pow(2).sum(1).sqrt().mean().item())
            dot += float((field * b["field_gt"]).sum())
            norm += float(b["field_gt"].pow(2).sum())
        print(f"{label:<28} EPE no registration {np.mean(before):.3f} px   MRRN {np.mean(after):.3f} px   "
              f"slope {dot / max(norm, 1e-12):.3f}")


if __name__ == "__main__":
    main()
