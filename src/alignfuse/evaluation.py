"""Evaluate a pipeline on synthesised (or stored) misaligned pairs: registration + fusion metrics.

Protocol (one row per pair):

1. Read the aligned pair (``DATA/ir``, ``DATA/vi``) and misalign the IR with a preset and a seed
   (:mod:`alignfuse.synth`), or read a stored test set written by ``alignfuse synth``.
2. Run the pipeline on (misaligned IR, VIS).
3. Registration metrics: registered IR vs ground-truth IR (MSE, NCC, MI on [0, 1] images; EPE of the
   field vs the ground-truth field inside the valid region).
4. Fusion metrics on 8-bit greyscale images, as saved to disk: the VIS luminance, the ground-truth
   (aligned) IR and the fused luminance. Scoring against the aligned IR is what makes ghosting cost.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import io, synth
from .api import fuse_arrays
from .pipeline import Pipeline

__all__ = ["EvalSample", "iter_samples", "evaluate", "summarise", "format_table", "DEFAULT_FUSION_METRICS"]

# Reported by default: the RFVIF eight, the UMF-CMGR three (CC, VIFF, SSIM mean) and Qabf/PSNR.
DEFAULT_FUSION_METRICS = (
    "Cross_entropy", "Mutinf", "Qabf", "Qcb", "Qcv", "Variance", "Ssim", "Entropy",
    "CC_mean", "SSIM_mean", "VIFF",
)
REGISTRATION_METRICS = ("MSE", "NCC", "MI", "EPE_mean", "EPE_p95")


@dataclass
class EvalSample:
    """One misaligned test pair. Images float32 [0, 1]; fields (2, H, W)."""

    name: str
    ir_gt: np.ndarray
    ir_warp: np.ndarray
    vis: np.ndarray
    field: np.ndarray
    valid: np.ndarray


def _stored_testset(root: Path, names: list[str] | None) -> Iterator[EvalSample]:
    manifest = json.loads((root / "manifest.json").read_text())
    for entry in manifest["pairs"]:
        name = entry["name"]
        if names is not None and name not in names:
            continue
        ir_gt = io.read_image(root / "ir_gt" / f"{name}.png", kind="ir").data
        ir_warp = io.read_image(root / "ir_warp" / f"{name}.png", kind="ir").data
        vis = io.read_image(root / "vi" / f"{name}.png", kind="vis").data
        field = io.read_field(root / "field" / f"{name}.npy")
        valid = synth._valid_mask(field)
        yield EvalSample(name, ir_gt, ir_warp, vis, field, valid)


def iter_samples(
    data: Path, preset: str, seed: int, split: Path | None = None, limit: int | None = None
) -> tuple[int, Iterator[EvalSample]]:
    """(count, iterator of samples) for a dataset folder (ir/, vi/) or a stored synth test set."""
    names = io.read_split(split) if split else None
    if (data / "manifest.json").exists():
        entries = json.loads((data / "manifest.json").read_text())["pairs"]
        count = sum(1 for e in entries if names is None or e["name"] in names)
        count = min(count, limit) if limit else count
        it = _stored_testset(data, names)
        return count, (s for i, s in zip(range(count), it))
    pairs, unpaired = io.pair_folders(data / "ir", data / "vi", names=names)
    if names is not None:
        missing = sorted(set(names) - {stem for stem, _, _ in pairs})
        if missing:
            raise ValueError(f"{split}: {len(missing)} names have no ir/vi pair in {data}, e.g. {missing[0]}")
    if not pairs:
        raise ValueError(f"{data}: no ir/vi pairs found (expected subfolders ir/ and vi/ with matching names)")
    pairs = pairs[:limit] if limit else pairs
    spec = synth.parse_preset(preset)

    def generate() -> Iterator[EvalSample]:
        for stem, ir_path, vis_path in pairs:
            pair = io.load_pair(ir_path, vis_path)
            s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(seed, stem))
            yield EvalSample(stem, s.ir_gt, s.ir_warp, s.vis, s.field, s.valid)

    return len(pairs), generate()


def _as_u8(image: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(image, 0, 1) * 255 + 0.5)


def evaluate_sample(
    pipeline: Pipeline, sample: EvalSample, fusion_metrics: tuple[str, ...] = DEFAULT_FUSION_METRICS
) -> dict[str, float]:
    """Run the pipeline on one sample and score it. Returns {metric: value, 'seconds': runtime}."""
    from .metrics import compute_fusion_metrics, compute_registration_metrics

    t0 = time.perf_counter()
    result = fuse_arrays(sample.ir_warp, sample.vis, pipeline)
    seconds = time.perf_counter() - t0
    row = compute_registration_metrics(result.aligned_ir, sample.ir_gt, result.field, sample.field, sample.valid)
    vis_y = io.rgb_to_ycbcr(sample.vis)[0] if sample.vis.ndim == 3 else sample.vis
    row.update(compute_fusion_metrics(_as_u8(vis_y), _as_u8(sample.ir_gt), _as_u8(result.fused_y),
                                      names=list(fusion_metrics)))
    row["seconds"] = seconds
    row["suspect"] = float(bool(result.diagnostics.get("suspect", False)))
    return {k: float(v) for k, v in row.items()}


def evaluate(
    pipeline: Pipeline,
    samples: Iterator[EvalSample],
    total: int | None = None,
    fusion_metrics: tuple[str, ...] = DEFAULT_FUSION_METRICS,
    progress: bool = True,
) -> list[dict]:
    """Score every sample; returns one dict per pair (with its 'name')."""
    from tqdm import tqdm

    rows = []
    for sample in tqdm(samples, total=total, desc=pipeline.name, unit="pair", disable=not progress, leave=False):
        row = {"name": sample.name, **evaluate_sample(pipeline, sample, fusion_metrics)}
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{metric: {'mean', 'std'}} over pairs (population std; NaN-free values only)."""
    keys = [k for k in rows[0] if k != "name"] if rows else []
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r and math.isfinite(r[k])], dtype=np.float64)
        out[k] = {"mean": float(vals.mean()) if vals.size else float("nan"),
                  "std": float(vals.std()) if vals.size else float("nan")}
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]], metrics: list[str]) -> str:
    """Markdown table: one row per model, 'mean ± std' per metric."""
    header = "| model | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    for model, summary in results.items():
        cells = []
        for m in metrics:
            s = summary.get(m)
            cells.append("–" if s is None else f"{s['mean']:.4g} ± {s['std']:.2g}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
