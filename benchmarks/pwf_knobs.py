"""Inference-time knobs of the shipped PWF against `gff` and `laplacian` (13 VIFB metrics), on aligned pairs.

    python benchmarks/pwf_knobs.py [--split NAMES] T,G,S,TB [T,G,S,TB ...]

Each argument is one variant of the shipped network's blend, re-run outside ``PWFNet.forward`` with the same
weights: ``T`` multiplies the detail bands' logits (temperature: a sharper choice between the sources), ``G`` the
fused detail bands (a detail gain), ``S`` stretches the base weight away from 0.5 (more of one source's base),
``TB`` multiplies the base logit. ``1,1,1,1`` is the shipped fuser. Prints, per variant, the number of metrics won
against each reference, the ones lost, and the means. Default pairs: every 9th RoadScene *training* name
(``benchmarks/splits/pwf_sel.txt``, 19 pairs), the set the PWF design was chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from alignfuse import io
from alignfuse.api import fuse_arrays, load_pipeline
from alignfuse.evaluation import iter_samples, score_fusion
from alignfuse.learned_stages import load_pwf
from alignfuse.metrics import METRIC_INFO
from alignfuse.metrics.fusion import VIFB_METRIC_NAMES
from alignfuse.models.pwf import PWFNet, _up, laplacian_bands, reconstruct_bands

METRICS = VIFB_METRIC_NAMES + ("CC_mean", "SSIM_mean")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "roadscene"
REFERENCES = ("identity+gff", "identity+laplacian")


def fuse_with_knobs(net: PWFNet, ir: torch.Tensor, vis: torch.Tensor, t: float, g: float, s: float,
                    tb: float) -> torch.Tensor:
    """``PWFNet.forward`` with the module docstring's four knobs; (1, 1, H, W) each -> fused (1, 1, H, W)."""
    levels = net.config["levels"]
    logits = net.predict_logits(ir, vis)
    bands_ir, bands_vis = laplacian_bands(ir, levels), laplacian_bands(vis, levels)
    n, out = len(bands_ir), []
    for k, (a, b) in enumerate(zip(bands_ir, bands_vis)):
        idx = k if k < n - 1 else levels - 1  # the base always uses the last map
        logit = _up(logits[:, idx : idx + 1], a.shape[-2:])
        if k < n - 1:
            w = torch.sigmoid(t * (logit + net.beta[k] * (a.abs() - b.abs()) / (a.abs() + b.abs() + 1e-3)))
            out.append(g * (w * a + (1 - w) * b) * net.log_gain[k].exp())
        else:
            w = 0.5 + s * (torch.sigmoid(tb * logit) - 0.5)
            out.append(w * a + (1 - w) * b)
    return reconstruct_bands(out).clamp(0, 1)


def better(metric: str, a: float, b: float) -> bool:
    return a > b if METRIC_INFO[metric]["higher_is_better"] else a < b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", type=Path, default=Path(__file__).resolve().parent / "splits" / "pwf_sel.txt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("variants", nargs="+", help="T,G,S,TB (repeat)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = list(iter_samples(DATA, "none", 0, args.split, None).samples)
    ref = {}
    for name in REFERENCES:
        pipe = load_pipeline(name)
        rows = [score_fusion(s.vis, s.ir_gt, fuse_arrays(s.ir_warp, s.vis, pipe, warn=False).fused_y, METRICS)
                for s in samples]
        ref[name] = {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}
    net = load_pwf()
    inputs = []
    for smp in samples:
        vis_y = io.rgb_to_ycbcr(smp.vis)[0] if smp.vis.ndim == 3 else smp.vis
        inputs.append([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
                       for x in (smp.ir_warp, vis_y)])
    print(f"# {len(samples)} RoadScene pairs of {args.split.name}, aligned; command: python benchmarks/pwf_knobs.py "
          + " ".join(argv if argv is not None else __import__("sys").argv[1:]))
    for text in args.variants:
        t, g, s, tb = (float(v) for v in text.split(","))
        with torch.no_grad():
            rows = [score_fusion(smp.vis, smp.ir_gt, fuse_with_knobs(net, ir, vy, t, g, s, tb)[0, 0].numpy(), METRICS)
                    for smp, (ir, vy) in zip(samples, inputs)]
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}
        wins = {m: [k for k in VIFB_METRIC_NAMES if better(k, mean[k], ref[m][k])] for m in ref}
        lost = {m: [k for k in VIFB_METRIC_NAMES if k not in wins[m]] for m in ref}
        print(f"{text}: wins " + " / ".join(f"{len(wins[m])} vs {m}" for m in ref) + "; lost: "
              + "; ".join(f"{m}: {', '.join(lost[m])}" for m in ref)
              + f"; CC_mean {mean['CC_mean']:.3f}, SSIM_mean {mean['SSIM_mean']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
