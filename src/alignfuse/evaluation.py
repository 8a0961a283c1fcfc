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
from typing import Iterable, Iterator

import numpy as np

from . import io, synth
from .api import FuseResult, fuse_arrays
from .errors import UserError
from .pipeline import Pipeline

__all__ = ["EvalSample", "EvalFailure", "SampleSource", "iter_samples", "read_manifest", "score_fusion", "evaluate", "summarise", "format_table", "DEFAULT_FUSION_METRICS"]

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


def read_manifest(root: Path) -> dict:
    """``root/manifest.json`` of a test set written by ``alignfuse synth`` (clear error if malformed)."""
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest.get("pairs"), list) or "preset" not in manifest or "seed" not in manifest:
            raise ValueError("missing 'pairs', 'preset' or 'seed'")
    except (json.JSONDecodeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: not a valid alignfuse test-set manifest ({exc})") from None
    return manifest


def _stored_testset(root: Path, names: list[str] | None) -> Iterator[EvalSample | EvalFailure]:
    manifest = read_manifest(root)
    for entry in manifest["pairs"]:
        name = entry["name"]
        if names is not None and name not in names:
            continue
        try:
            ir_gt = io.read_image(root / "ir_gt" / f"{name}.png", kind="ir").data
            ir_warp = io.read_image(root / "ir_warp" / f"{name}.png", kind="ir").data
            vis = io.read_image(root / "vi" / f"{name}.png", kind="vis").data
            field = io.read_field(root / "field" / f"{name}.npy", shape=ir_gt.shape)
        except ValueError as exc:  # a damaged file: reported by evaluate(), the rest goes on
            yield EvalFailure(name, str(exc))
            continue
        yield EvalSample(name, ir_gt, ir_warp, vis, field, synth.valid_mask(field))


@dataclass
class SampleSource:
    """Where samples come from: count, iterator, the preset and seed that made them, skipped names."""

    count: int
    samples: Iterator[EvalSample]
    preset: str
    seed: int
    stored: bool
    unpaired: list[str]


def iter_samples(
    data: Path, preset: str | None = None, seed: int | None = None, split: Path | None = None,
    limit: int | None = None,
) -> SampleSource:
    """Samples of a dataset folder (ir/, vi/; misaligned on the fly with ``preset``/``seed``, default
    umf/0) or of a stored test set (its manifest's preset and seed; a different explicit one is an error)."""
    names = io.read_split(split) if split else None
    if (data / "manifest.json").exists():
        manifest = read_manifest(data)
        for given, stored, what in ((preset, manifest["preset"], "preset"), (seed, manifest["seed"], "seed")):
            if given is not None and given != stored:
                raise UserError(f"{data} was synthesised with {what} {stored!r}; drop --{what} or pass {stored!r}")
        entries = manifest["pairs"]
        count = sum(1 for e in entries if names is None or e["name"] in names)
        if count == 0:
            raise UserError(f"{data}: no pairs of the test set are listed in {split}")
        count = min(count, limit) if limit else count
        stored = {e["name"] for e in entries}
        missing = [f"{n!r} is listed in {split} but is no pair of the test set {data}"
                   for n in (names or []) if n not in stored]
        it = _stored_testset(data, names)
        return SampleSource(count, (s for _, s in zip(range(count), it)), manifest["preset"], int(manifest["seed"]),
                            True, missing)
    preset = "umf" if preset is None else preset
    seed = 0 if seed is None else seed
    spec = synth.parse_preset(preset)
    pairs, unpaired = io.pair_folders(data / "ir", data / "vi", names=names)
    if not pairs and names is not None:
        raise UserError(f"{split}: none of its {len(names)} names has an ir/vi pair in {data}"
                         + (f" (e.g. {unpaired[0]})" if unpaired else ""))
    if not pairs:
        raise UserError(f"{data}: no ir/vi pairs found (expected subfolders ir/ and vi/ with matching names)")
    pairs = pairs[:limit] if limit else pairs

    def generate() -> Iterator[EvalSample]:
        for stem, ir_path, vis_path in pairs:
            try:
                pair = io.load_pair(ir_path, vis_path)
                s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(seed, stem))
            except ValueError as exc:  # unreadable pair: reported by evaluate(), the rest goes on
                yield EvalFailure(stem, str(exc))
                continue
            yield EvalSample(stem, s.ir_gt, s.ir_warp, s.vis, s.field, s.valid)

    return SampleSource(len(pairs), generate(), preset, seed, False, unpaired)


@dataclass
class EvalFailure:
    """A pair that could not be read or scored; ``internal``: by a bug, not by the data or the options."""

    name: str
    message: str
    internal: bool = False


def _as_u8(image: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(image, 0, 1) * 255 + 0.5)


def score_fusion(vis: np.ndarray, ir_gt: np.ndarray, fused_y: np.ndarray,
                 names: Iterable[str] = DEFAULT_FUSION_METRICS) -> dict[str, float]:
    """Fusion metrics of a fused luminance (H, W) against the visible image ((H, W) or (H, W, 3), scored on its
    luminance) and the ground-truth IR, all float in [0, 1], quantised to 8 bits as the VIFB code expects."""
    from .metrics import compute_fusion_metrics

    vis_y = io.rgb_to_ycbcr(vis)[0] if vis.ndim == 3 else vis
    return compute_fusion_metrics(_as_u8(vis_y), _as_u8(ir_gt), _as_u8(fused_y), names=list(names))


def evaluate_sample(
    pipeline: Pipeline, sample: EvalSample, fusion_metrics: tuple[str, ...] = DEFAULT_FUSION_METRICS
) -> tuple[dict[str, float], FuseResult]:
    """Run the pipeline on one sample and score it -> ({metric: value, 'seconds', 'suspect'}, result).

    MSE, NCC and MI are computed inside the valid region (pixels whose ground-truth correspondence
    lies in the misaligned image), like the EPE: outside it no registration can be right.
    """
    from .metrics import compute_registration_metrics

    t0 = time.perf_counter()
    result = fuse_arrays(sample.ir_warp, sample.vis, pipeline, warn=False)
    seconds = time.perf_counter() - t0
    v = sample.valid if sample.valid.sum() > 1 else np.ones_like(sample.valid)
    row = compute_registration_metrics(result.aligned_ir[v][None], sample.ir_gt[v][None])  # (1, N) valid pixels
    epe = compute_registration_metrics(result.aligned_ir, sample.ir_gt, result.field, sample.field, v)
    row["EPE_mean"], row["EPE_p95"] = epe["EPE_mean"], epe["EPE_p95"]
    row.update(score_fusion(sample.vis, sample.ir_gt, result.fused_y, fusion_metrics))
    row["seconds"] = seconds
    row["suspect"] = float(bool(result.diagnostics.get("suspect", False)))
    return {k: float(v) for k, v in row.items()}, result


def evaluate(
    pipeline: Pipeline,
    samples: Iterator[EvalSample | EvalFailure],
    total: int | None = None,
    fusion_metrics: tuple[str, ...] = DEFAULT_FUSION_METRICS,
    progress: bool = True,
) -> tuple[list[dict], list[EvalFailure]]:
    """Score every sample -> (one dict per pair with its 'name', failures). A failing pair does not stop the run."""
    from tqdm import tqdm

    rows, failures = [], []
    for sample in tqdm(samples, total=total, desc=pipeline.name, unit="pair", disable=not progress, leave=False):
        if isinstance(sample, EvalFailure):
            failures.append(sample)
            continue
        try:
            rows.append({"name": sample.name, **evaluate_sample(pipeline, sample, fusion_metrics)[0]})
        except Exception as exc:  # noqa: BLE001 - one broken pair must not lose the others' results
            internal = not isinstance(exc, (UserError, OSError))
            failures.append(EvalFailure(sample.name, f"{type(exc).__name__}: {exc}", internal))
    return rows, failures


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{metric: {'mean', 'std', 'n'}} over pairs (population std; NaN-free values only, ``n`` of them: a metric
    undefined on some pairs, e.g. Qcb on a constant image, is averaged over the others)."""
    keys = [k for k in rows[0] if k != "name"] if rows else []
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r and math.isfinite(r[k])], dtype=np.float64)
        out[k] = {"mean": float(vals.mean()) if vals.size else float("nan"),
                  "std": float(vals.std()) if vals.size else float("nan"), "n": int(vals.size)}
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]], metrics: list[str]) -> str:
    """Markdown table: one row per model, 'mean ± std' per metric, '(n=K)' where a metric is defined on fewer pairs
    than the model's others."""
    header = "| model | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    for model, summary in results.items():
        cells = []
        most = max((s.get("n", 0) for s in summary.values()), default=0)
        for m in metrics:
            s = summary.get(m)
            fewer = s is not None and "n" in s and s["n"] < most
            cells.append("–" if s is None else f"{s['mean']:.4g} ± {s['std']:.2g}" + (f" (n={s['n']})" if fewer else ""))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
