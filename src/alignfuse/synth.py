"""Seeded misalignment synthesis with exact ground-truth fields.

Two fields describe one synthetic pair (both float32 ``(2, H, W)`` pixel ``(dx, dy)``, the
:mod:`alignfuse.warp` convention):

* ``distortion`` D: how the misaligned IR was made, ``ir_warp[y, x] = ir_gt[y + Dy, x + Dx]``;
* ``field`` G (the registration ground truth, what a registrar should output):
  ``ir_gt[y, x] ~= ir_warp[y + Gy, x + Gx]``. G is the inverse of D, computed numerically
  (fixed-point iteration) except for pure translations, where it is exact.

Presets (``parse_preset``):

* ``umf``: the official UMF-CMGR generator (spec §2): uniform translation within +-1 % of W and H,
  plus elastic noise ``U(-1, 1)`` per pixel smoothed by a 101-tap Gaussian (sigma 16, zero border),
  interpreted in normalised units (no alpha), so pixel magnitudes grow with the image size
  (mean |d| ~ 2.5 px at 256 px). Unlike the official code the field is applied exactly in pixels
  (no align_corners mix-up), so the stored field is the field that was used.
* ``shift:N``: the RFVIF protocol (spec §4.8): ``vis = V[0:H-N, 0:W-N]``, ``ir_warp = I[N:H, N:W]``,
  ``ir_gt = I[0:H-N, 0:W-N]``: IR content displaced by N px both ways, no interpolation.
* ``large``: rotation +-10 deg, translation +-25 px, scale 0.9-1.1 (about the centre), then the
  ``umf`` elastic noise.
* ``none``: aligned (zero field).
* free parameters: ``custom:rot=5,tx=10,tfrac=0,scale=0.05,elastic=1,sigma=16,kernel=101,alpha=1``
  (``tx`` is the maximum translation in px along each axis; ``tfrac`` the same as a fraction of the
  size; any elastic parameter switches the elastic noise on). Exact magnitudes, for sweeps
  (:func:`sweep_spec`): ``tnorm=20`` a translation of length exactly 20 px at a uniformly random
  direction, ``rotfix=5`` a rotation of exactly +-5 deg (random sign), ``zoom=0.8`` a scale of exactly
  0.8 (the sampling scale, as ``scale``: ``ir_warp`` at p shows ``ir_gt`` at ``c + 0.8 (p - c)``).

Randomness: each pair draws from ``numpy.random.default_rng([seed, crc32(name)])``, so a pair's
misalignment depends on the seed and its name only (not on order or the other pairs), and the same
seed gives identical bytes. Out-of-image samples take the nearest border value.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate1d

from . import warp as warp_ops
from .errors import UserError

__all__ = ["SynthSpec", "SynthPair", "parse_preset", "pair_rng", "sample_distortion", "synthesise_pair", "PRESETS",
           "SWEEP_KINDS", "sweep_spec"]


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of a misalignment generator (all ranges are symmetric, uniform)."""

    name: str
    translation_frac: float = 0.0  # max |t| as a fraction of W (x) and H (y)
    translation_px: float = 0.0  # max |t| in pixels (added to the fractional range)
    rotation_deg: float = 0.0
    scale_delta: float = 0.0  # scale in [1 - d, 1 + d]
    elastic: bool = False
    elastic_kernel: int = 101
    elastic_sigma: float = 16.0
    elastic_alpha: float = 1.0  # multiplier of the official normalised-unit noise
    shift: int | None = None  # crop-based integer shift (RFVIF protocol)
    translation_norm_px: float = 0.0  # |t| exactly this (px) at a uniformly random direction, on top of the ranges
    rotation_fixed_deg: float = 0.0  # rotation exactly +- this (random sign), on top of the range
    scale_fixed: float = 1.0  # scale factor exactly this, times the range's draw

    @property
    def is_crop_shift(self) -> bool:
        return self.shift is not None


PRESETS: dict[str, SynthSpec] = {
    "none": SynthSpec("none"),
    "umf": SynthSpec("umf", translation_frac=0.01, elastic=True),
    "large": SynthSpec("large", translation_px=25.0, rotation_deg=10.0, scale_delta=0.1, elastic=True),
}

_CUSTOM_KEYS = {
    "rot": "rotation_deg",
    "tx": "translation_px",
    "tfrac": "translation_frac",
    "scale": "scale_delta",
    "elastic": "elastic",
    "sigma": "elastic_sigma",
    "kernel": "elastic_kernel",
    "alpha": "elastic_alpha",
    "tnorm": "translation_norm_px",
    "rotfix": "rotation_fixed_deg",
    "zoom": "scale_fixed",
}


def parse_preset(text: str) -> SynthSpec:
    """``'umf'``, ``'large'``, ``'none'``, ``'shift:N'`` or ``'custom:key=value,...'`` -> SynthSpec."""
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    if text.startswith("shift:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise UserError(f"bad preset {text!r}: shift:N needs an integer N") from None
        if n < 0:
            raise UserError(f"bad preset {text!r}: N must be >= 0")
        return SynthSpec(text, shift=n)
    if text.startswith("custom:"):
        kwargs: dict[str, object] = {}
        for item in filter(None, text.split(":", 1)[1].split(",")):
            key, _, value = item.partition("=")
            if key.strip() not in _CUSTOM_KEYS:
                raise UserError(f"bad preset {text!r}: unknown key {key!r} (known: {', '.join(_CUSTOM_KEYS)})")
            field_name = _CUSTOM_KEYS[key.strip()]
            try:
                kwargs[field_name] = (
                    bool(int(value)) if field_name == "elastic"
                    else int(value) if field_name == "elastic_kernel"
                    else float(value)
                )
            except ValueError:
                raise UserError(f"bad preset {text!r}: {key} needs a number, got {value!r}") from None
        if {"elastic_sigma", "elastic_kernel", "elastic_alpha"} & set(kwargs) and "elastic" not in kwargs:
            kwargs["elastic"] = True
        spec = SynthSpec(text, **kwargs)  # type: ignore[arg-type]
        _validate(spec)
        return spec
    known = ", ".join([*PRESETS, "shift:N", "custom:rot=..,tx=..,scale=..,elastic=0|1"])
    raise UserError(f"unknown preset {text!r}; known: {known}")


def _validate(spec: SynthSpec) -> None:
    checks = [
        (spec.rotation_deg >= 0 and math.isfinite(spec.rotation_deg), "rot must be >= 0 (degrees)"),
        (spec.translation_px >= 0 and math.isfinite(spec.translation_px), "tx must be >= 0 (px)"),
        (0 <= spec.translation_frac < 0.5, "tfrac must be in [0, 0.5)"),
        (0 <= spec.scale_delta < 1, "scale must be in [0, 1) (scale range is 1 +- scale)"),
        (spec.elastic_sigma > 0 and math.isfinite(spec.elastic_sigma), "sigma must be > 0"),
        (spec.elastic_kernel >= 1, "kernel must be >= 1"),
        (math.isfinite(spec.elastic_alpha), "alpha must be finite"),
        (spec.translation_norm_px >= 0 and math.isfinite(spec.translation_norm_px), "tnorm must be >= 0 (px)"),
        (spec.rotation_fixed_deg >= 0 and math.isfinite(spec.rotation_fixed_deg), "rotfix must be >= 0 (degrees)"),
        (spec.scale_fixed > 0 and math.isfinite(spec.scale_fixed), "zoom must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"bad preset {spec.name!r}: {message}")


# sweep kind -> (unit, the level that means no misalignment)
SWEEP_KINDS: dict[str, tuple[str, float]] = {
    "translation": ("px", 0.0),
    "rotation": ("deg", 0.0),
    "scale": ("x", 1.0),
    "elastic": ("x umf elastic", 0.0),
}
_SWEEP_KEYS = {"translation": "tnorm", "rotation": "rotfix", "scale": "zoom", "elastic": "alpha"}


def sweep_spec(kind: str, level: float) -> SynthSpec:
    """A misalignment of one kind and exact magnitude, for sweeps over the magnitude.

    ``translation``: a shift of length ``level`` px at a random direction; ``rotation``: ``level`` degrees
    about the centre, random sign; ``scale``: a scale of exactly ``level`` about the centre; ``elastic``: the
    ``umf`` elastic noise times ``level`` (``alpha``), no translation. The direction and sign depend on the
    pair's seed and name only, so one pair moves along one direction as the level grows. The identity level
    (0, or scale 1) gives the ``none`` preset, so every sweep shares that point.
    """
    if kind not in SWEEP_KINDS:
        raise UserError(f"unknown sweep {kind!r}; known: {', '.join(SWEEP_KINDS)}")
    if float(level) == SWEEP_KINDS[kind][1]:
        return PRESETS["none"]
    return parse_preset(f"custom:{_SWEEP_KEYS[kind]}={float(level):g}")


def pair_rng(seed: int, name: str) -> np.random.Generator:
    """Generator for one pair: depends on the seed and the pair's name only."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _elastic_field(spec: SynthSpec, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Official UMF elastic noise: U(-1,1) -> separable Gaussian (zero border) in normalised units -> pixels."""
    noise = rng.uniform(-1.0, 1.0, size=(2, height, width))
    taps = _gaussian_taps(spec.elastic_kernel, spec.elastic_sigma)
    smooth = correlate1d(correlate1d(noise, taps, axis=1, mode="constant"), taps, axis=2, mode="constant")
    # normalised [-1, 1] units -> pixels (x spans W-1 px, y spans H-1 px)
    scale = np.array([(width - 1) / 2, (height - 1) / 2]).reshape(2, 1, 1)
    return spec.elastic_alpha * smooth * scale


def _affine_matrix(spec: SynthSpec, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """2x3 sampling matrix (output pixel -> moving pixel) about the image centre."""
    angle = math.radians(rng.uniform(-spec.rotation_deg, spec.rotation_deg)) if spec.rotation_deg else 0.0
    scale = rng.uniform(1 - spec.scale_delta, 1 + spec.scale_delta) if spec.scale_delta else 1.0
    tx = rng.uniform(-1, 1) * (spec.translation_px + spec.translation_frac * width)
    ty = rng.uniform(-1, 1) * (spec.translation_px + spec.translation_frac * height)
    # exact magnitudes (sweeps) draw after the ranges, and only when set: the presets' draws stay as they were
    if spec.rotation_fixed_deg:
        angle += math.radians(spec.rotation_fixed_deg) * (1.0 if rng.random() < 0.5 else -1.0)
    if spec.translation_norm_px:
        direction = rng.uniform(0.0, 2 * math.pi)
        tx += spec.translation_norm_px * math.cos(direction)
        ty += spec.translation_norm_px * math.sin(direction)
    scale *= spec.scale_fixed
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    cx, cy = (width - 1) / 2, (height - 1) / 2
    lin = np.array([[c, -s], [s, c]])
    offset = np.array([cx, cy]) - lin @ np.array([cx, cy]) + np.array([tx, ty])
    return np.concatenate([lin, offset[:, None]], axis=1)


def sample_distortion(spec: SynthSpec, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Distortion D (2, H, W) float32 with ``ir_warp[y, x] = ir_gt[y + Dy, x + Dx]`` (not for shift:N)."""
    if spec.is_crop_shift:
        raise ValueError("shift:N is crop based; use synthesise_pair")
    matrix = torch.from_numpy(_affine_matrix(spec, height, width, rng)).unsqueeze(0)
    affine = warp_ops.field_from_affine(matrix, height, width).float()
    if not spec.elastic:
        return affine[0].numpy()
    elastic = torch.from_numpy(_elastic_field(spec, height, width, rng)).float().unsqueeze(0)
    # ir_warp = elastic(affine(ir)): the affine warp is applied first
    return warp_ops.compose(affine, elastic)[0].numpy()


@dataclass
class SynthPair:
    """One synthetic misaligned pair. Images are float32 in [0, 1]; fields (2, H, W) float32 pixels."""

    ir_gt: np.ndarray  # (H, W) aligned infrared (the registration target)
    ir_warp: np.ndarray  # (H, W) misaligned infrared (the input)
    vis: np.ndarray  # (H, W) or (H, W, 3)
    field: np.ndarray  # registration ground truth G: ir_gt ~= warp(ir_warp, G)
    distortion: np.ndarray  # D: ir_warp = warp(ir_gt, D)
    valid: np.ndarray  # (H, W) bool: G samples inside the misaligned image
    stats: dict[str, float]


def _stats(field: np.ndarray, valid: np.ndarray, residual: float) -> dict[str, float]:
    mag = np.sqrt((field.astype(np.float64) ** 2).sum(axis=0))[valid]
    if mag.size == 0:
        mag = np.zeros(1)
    return {
        "mean_px": float(mag.mean()),
        "p95_px": float(np.percentile(mag, 95)),
        "max_px": float(mag.max()),
        "valid_fraction": float(valid.mean()),
        "inverse_residual_px": float(residual),
    }


def valid_mask(field: np.ndarray) -> np.ndarray:
    """(H, W) bool: where the registration field samples inside the misaligned image."""
    h, w = field.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w]
    x, y = xs + field[0], ys + field[1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def synthesise_pair(
    ir: np.ndarray, vis: np.ndarray, spec: SynthSpec, rng: np.random.Generator, inverse_iterations: int = 50
) -> SynthPair:
    """Misalign ``ir`` (H, W) against ``vis`` (H, W[, 3]) according to ``spec``."""
    if ir.ndim != 2:
        raise ValueError(f"ir must be (H, W), got {ir.shape}")
    h, w = ir.shape
    if spec.is_crop_shift:
        s = int(spec.shift or 0)
        if s >= min(h, w) // 2:
            raise UserError(f"shift {s} px is too large for a {w}x{h} image")
        ir_gt = ir[: h - s, : w - s]
        ir_warp = ir[s:, s:]
        vis_c = vis[: h - s, : w - s]
        hh, ww = ir_gt.shape
        field = np.full((2, hh, ww), -float(s), dtype=np.float32)
        distortion = -field
        valid = valid_mask(field)
        return SynthPair(ir_gt.copy(), ir_warp.copy(), vis_c.copy(), field, distortion, valid, _stats(field, valid, 0.0))

    distortion = sample_distortion(spec, h, w, rng)
    d = torch.from_numpy(distortion).unsqueeze(0)
    img = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None]
    ir_warp = warp_ops.warp(img, d)[0, 0].clamp(0, 1).numpy()
    g = warp_ops.invert(d, iterations=inverse_iterations)
    # residual of the inverse: D(p + G(p)) + G(p) should vanish
    residual = (warp_ops.warp(d, g) + g).pow(2).sum(1).sqrt().mean().item()
    field = g[0].numpy().astype(np.float32)
    valid = valid_mask(field)
    return SynthPair(ir.astype(np.float32), ir_warp, vis.astype(np.float32), field, distortion.astype(np.float32),
                     valid, _stats(field, valid, residual))


def write_pair(out: Path, name: str, pair: SynthPair) -> dict:
    """Write one pair of a test set (ir_gt/, ir_warp/, vi/ as 8-bit PNG; field/, distortion/ as .npy).

    Returns its manifest entry (name, size and field magnitude statistics).
    """
    from . import io

    io.write_image(out / "ir_gt" / f"{name}.png", pair.ir_gt)
    io.write_image(out / "ir_warp" / f"{name}.png", pair.ir_warp)
    io.write_image(out / "vi" / f"{name}.png", pair.vis)
    io.write_field(out / "field" / f"{name}.npy", pair.field)
    io.write_field(out / "distortion" / f"{name}.npy", pair.distortion)
    return {"name": name, "height": int(pair.ir_gt.shape[0]), "width": int(pair.ir_gt.shape[1]), **pair.stats}


def write_manifest(path: Path, spec: SynthSpec, seed: int, entries: list[dict]) -> None:
    """Write ``manifest.json`` (preset, seed, parameters, per-pair magnitude) atomically."""
    data = {"preset": spec.name, "seed": seed, "parameters": asdict(spec), "field_convention":
            "field/NAME.npy: float32 (2,H,W) pixel (dx,dy), ir_gt[y,x] = ir_warp[y+dy, x+dx] (bilinear); "
            "distortion/NAME.npy: ir_warp[y,x] = ir_gt[y+dy, x+dx]",
            "pairs": entries}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
