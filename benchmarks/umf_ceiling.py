"""Ghosting check against the aligned-input ceiling, plus the docs image grid (UMF-CMGR issue 4).

For every test pair (misaligned on the fly by ``--preset``/``--seed``, like ``alignfuse evaluate``):

* ``fused``   = ``--model`` on (misaligned IR, VIS);
* ``ceiling`` = DIFN alone (``umf-cmgr-noreg``) on (ground-truth aligned IR, VIS);
* ``SSIM(fused_Y, ceiling_Y)``: Gaussian-window SSIM (11 px, sigma 1.5, data range 1) of the two fused
  luminance images over the whole frame. 1 means the misaligned-input result is the ceiling's image;
  ghosting (doubled edges) pulls it down. Also reported for ``--baseline`` (default ``umf-cmgr-noreg``,
  i.e. no registration) so the gain from registration is visible;
* ``oracle``  = DIFN on the misaligned IR warped back with the *true* registration field (bilinear, as the
  pipelines warp; ``--oracle-mode bicubic`` for less blur): the best any registrar can do under this
  protocol, which resamples the IR twice;
* ``Qabf`` (VIFB, against the VIS and the ground-truth IR) of all four fused images.

The first ``--grid`` pairs become one PNG: VIS | IR misaligned | IR registered | fused | ceiling.

Usage::

    python benchmarks/umf_ceiling.py --data ../shared/data/roadscene --split ../shared/data/roadscene/test.txt \
        --preset umf --model umf-cmgr --out outputs/ceiling_umf --grid 4 [--weights-dir DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from alignfuse.api import fuse_arrays
from alignfuse.evaluation import EvalFailure, iter_samples, score_fusion
from alignfuse.losses.fusion import ssim
from alignfuse.registry import create_pipeline
from alignfuse.warp import warp


def ssim_y(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) float images in [0, 1]."""
    return float(ssim(torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float()))


def qabf(vis: np.ndarray, ir_gt: np.ndarray, fused_y: np.ndarray) -> float:
    """VIFB Qabf of a fused luminance, scored as ``alignfuse evaluate`` scores it."""
    return score_fusion(vis, ir_gt, fused_y, ["Qabf"])["Qabf"]


def oracle_ir(ir_warp: np.ndarray, field: np.ndarray, mode: str = "bilinear") -> np.ndarray:
    """The misaligned IR (H, W) warped back with the true registration field (2, H, W)."""
    moving = torch.from_numpy(np.ascontiguousarray(ir_warp, dtype=np.float32))[None, None]
    field_t = torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]
    return warp(moving, field_t, mode=mode)[0, 0].clamp(0, 1).numpy()


def save_grid(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("VIS", "IR misaligned", "IR registered", "fused", "ceiling (aligned IR)")
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, key in enumerate(("vis", "ir_warp", "aligned_ir", "fused", "ceiling")):
            img = row[key]
            axes[r, c].imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=10)
        axes[r, 0].set_ylabel(row["name"], fontsize=8)
        axes[r, 3].set_xlabel(f"SSIM to ceiling {row['ssim']:.3f}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path)
    ap.add_argument("--preset", default="umf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="umf-cmgr")
    ap.add_argument("--baseline", default="umf-cmgr-noreg")
    ap.add_argument("--weights-dir", type=Path)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--oracle-mode", default="bilinear", choices=("bilinear", "bicubic"),
                    help="interpolation of the true-field oracle's warp")
    ap.add_argument("--grid", type=int, default=0, help="pairs in the image grid (0 = none)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    kw = {"weights_dir": args.weights_dir} if args.weights_dir else {}
    model = create_pipeline(args.model, **kw)
    baseline = create_pipeline(args.baseline, **kw)
    ceiling = create_pipeline("umf-cmgr-noreg", **kw)
    source = iter_samples(args.data, args.preset, args.seed, args.split, args.limit)
    per_pair, grid_rows, failures = [], [], []
    from tqdm import tqdm

    for sample in tqdm(source.samples, total=source.count, unit="pair"):
        if isinstance(sample, EvalFailure):
            failures.append(sample.name)
            continue
        ref = fuse_arrays(sample.ir_gt, sample.vis, ceiling, warn=False)
        res = fuse_arrays(sample.ir_warp, sample.vis, model, warn=False)
        base = fuse_arrays(sample.ir_warp, sample.vis, baseline, warn=False)
        oracle = fuse_arrays(oracle_ir(sample.ir_warp, sample.field, args.oracle_mode), sample.vis, ceiling,
                             warn=False)
        row = {"name": sample.name, "ssim_model": ssim_y(res.fused_y, ref.fused_y),
               "ssim_baseline": ssim_y(base.fused_y, ref.fused_y), "ssim_oracle": ssim_y(oracle.fused_y, ref.fused_y)}
        for key, out in (("model", res), ("baseline", base), ("oracle", oracle), ("ceiling", ref)):
            row[f"qabf_{key}"] = qabf(sample.vis, sample.ir_gt, out.fused_y)
        per_pair.append(row)
        if len(grid_rows) < args.grid:
            grid_rows.append({"name": sample.name, "vis": sample.vis, "ir_warp": sample.ir_warp,
                              "aligned_ir": res.aligned_ir, "fused": res.fused, "ceiling": ref.fused,
                              "ssim": row["ssim_model"]})
    summary = {}
    for key in ("ssim_model", "ssim_baseline", "ssim_oracle", "qabf_model", "qabf_baseline", "qabf_oracle", "qabf_ceiling"):
        vals = [r[key] for r in per_pair]
        summary[key] = {"mean": statistics.fmean(vals), "min": min(vals), "median": statistics.median(vals)}
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.data.name}_{args.preset.replace(':', '')}"
    report = {"data": str(args.data), "preset": source.preset, "seed": source.seed, "model": args.model,
              "baseline": args.baseline, "oracle_mode": args.oracle_mode, "pairs": len(per_pair), "failures": failures, "summary": summary,
              "per_pair": per_pair}
    (args.out / f"{tag}.json").write_text(json.dumps(report, indent=1))
    print(f"{tag}: {len(per_pair)} pairs; SSIM(fused, ceiling) {args.model} mean {summary['ssim_model']['mean']:.4f} "
          f"(min {summary['ssim_model']['min']:.4f}); {args.baseline} mean {summary['ssim_baseline']['mean']:.4f}; "
          f"true-field oracle {summary['ssim_oracle']['mean']:.4f}")
    print("Qabf: " + ", ".join(f"{k} {summary['qabf_' + k]['mean']:.4f}"
                               for k in ("model", "baseline", "oracle", "ceiling")))
    if grid_rows:
        save_grid(grid_rows, args.out / f"{tag}_grid.png")
        print(f"grid -> {args.out / f'{tag}_grid.png'}")
    if failures:
        print(f"failed pairs: {', '.join(failures)}")


if __name__ == "__main__":
    main()
