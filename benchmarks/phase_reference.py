"""Phase correlation (gradient magnitudes) of the misaligned IR against the visible luminance vs our CPSTN pseudo-IR.

Usage::

    python benchmarks/phase_reference.py --data ../shared/data/roadscene --split ../shared/data/roadscene/test.txt \
        --preset shift:13 [--limit 12]

At the 384 px registration working size, as the pipelines run it: for each pair the translation the
global stage of ``umf-cmgr`` would estimate, its phase-peak response, whether it falls back (response
< 0.1), and its error against the mean ground-truth displacement of the valid region. Prints one row per
reference: mean |error| (px, working size; a fallback counts as the identity), fallbacks, mean response.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from alignfuse import warp
from alignfuse.baselines.registration import PhaseCorrelationRegistrar
from alignfuse.evaluation import iter_samples
from alignfuse.model_pipelines import REGISTER_LONG_SIDE, load_cpstn
from alignfuse.stages import luminance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path)
    parser.add_argument("--preset", default="shift:13")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    translator, phase = load_cpstn(), PhaseCorrelationRegistrar()
    rows: dict[str, list[tuple[float, bool, float]]] = {"visible luminance": [], "CPSTN pseudo-IR": []}
    src = iter_samples(args.data, args.preset, args.seed, args.split, args.limit)
    for s in src.samples:
        ir = torch.from_numpy(s.ir_warp)[None, None]
        vis = torch.from_numpy(s.vis).permute(2, 0, 1)[None] if s.vis.ndim == 3 else torch.from_numpy(s.vis)[None, None]
        h, w = ir.shape[-2:]
        scale = min(1.0, REGISTER_LONG_SIDE / max(h, w))
        work = (round(h * scale), round(w * scale))
        ir_w, vis_w = warp.resize_image(ir, work), warp.resize_image(vis, work)
        with torch.no_grad():
            references = {"visible luminance": luminance(vis_w), "CPSTN pseudo-IR": translator(vis_w)}
        truth = s.field[:, s.valid].mean(1) * scale
        for name, ref in references.items():
            res = phase(ir_w, ref)
            d = res.diagnostics[0]
            est = res.field[0].flatten(1).mean(1).numpy()  # (dx, dy); zero after a fallback
            rows[name].append((float(np.hypot(*(est - truth))), d.get("fallback") is not None, float(d["response"])))
    print(f"| reference ({args.data.name}, {args.preset}, {len(rows['visible luminance'])} pairs) "
          "| mean error (px @ working size) | fallbacks | mean response |")
    print("|---|--:|--:|--:|")
    for name, r in rows.items():
        print(f"| {name} | {statistics.mean(e for e, _, _ in r):.2f} | {sum(f for _, f, _ in r)} "
              f"| {statistics.mean(x for _, _, x in r):.3f} |")


if __name__ == "__main__":
    main()
