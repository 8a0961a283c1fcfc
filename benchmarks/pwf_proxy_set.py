"""A visible-dominant proxy of the 19 RoadScene *training* pairs of ``benchmarks/splits/pwf_sel.txt`` (deterministic).

    python benchmarks/pwf_proxy_set.py --out PROXY
    python benchmarks/fusion_wins.py --data PROXY --split benchmarks/splits/pwf_sel.txt --model identity+pwf ...

RoadScene's training crops are IR-dominant; TNO's visible images carry more contrast than the IR on 16 of 25 pairs.
This set turns the selection pairs around, to choose fusers for that case without looking at TNO:

    IR'  = 0.30 + 0.50 IR^1.5        a cool, washed-out thermal scene (contrast about halved, hot parts kept best)
    VIS' = mY + 1.35 (VIS - mY)      per RGB channel, mY the image's mean luminance; clipped to [0, 1]

written as 8-bit PNG to ``PROXY/ir`` and ``PROXY/vi`` under the pairs' names (docs/RESULTS.md §2.6).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from alignfuse import io

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "roadscene"
SEL = Path(__file__).resolve().parent / "splits" / "pwf_sel.txt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for sub in ("ir", "vi"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    pairs, _ = io.pair_folders(args.data / "ir", args.data / "vi", names=io.read_split(SEL))
    for stem, ir_path, vis_path in pairs:
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0
        vis = cv2.imread(str(vis_path), cv2.IMREAD_COLOR).astype(np.float64) / 255.0  # BGR
        y = 0.299 * vis[..., 2] + 0.587 * vis[..., 1] + 0.114 * vis[..., 0]
        ir2 = 0.30 + 0.50 * ir**1.5
        vis2 = np.clip(y.mean() + 1.35 * (vis - y.mean()), 0, 1)
        cv2.imwrite(str(args.out / "ir" / f"{stem}.png"), np.round(ir2 * 255).astype(np.uint8))
        cv2.imwrite(str(args.out / "vi" / f"{stem}.png"), np.round(vis2 * 255).astype(np.uint8))
        y2 = 0.299 * vis2[..., 2] + 0.587 * vis2[..., 1] + 0.114 * vis2[..., 0]
        print(f"{stem}: IR SD {ir.std():.3f} -> {ir2.std():.3f}, visible luminance SD {y.std():.3f} -> {y2.std():.3f}")
    print(f"{len(pairs)} pairs -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
