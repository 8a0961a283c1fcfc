"""Python API on numpy images: load a pipeline, fuse or register one pair.

>>> import alignfuse
>>> pipe = alignfuse.load_pipeline("ecc+gff")                     # doctest: +SKIP
>>> result = alignfuse.fuse_arrays(ir, vis, pipe)                  # doctest: +SKIP
>>> result.fused.shape == vis.shape                               # doctest: +SKIP

Images are numpy float32 in [0, 1]: IR (H, W), VIS (H, W) or (H, W, 3). A colour VIS is fused on
its luminance Y (BT.601 full range, as in JPEG) and the VIS chroma is put back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np
import torch

from . import io
from .errors import AlignfuseWarning, UserError, suspect_detail
from .pipeline import Pipeline
from .registry import DEFAULT_PIPELINE, create_pipeline

__all__ = ["load_pipeline", "fuse_arrays", "register_arrays", "FuseResult", "resolve_device"]


def resolve_device(device: str | None) -> torch.device:
    """'auto' (or None) -> CUDA when available else CPU; a clear error for an unavailable device."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:  # torch's message lists every backend it knows; ours says what is accepted
        raise UserError(f"device {device!r} not understood: use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def load_pipeline(name: str = DEFAULT_PIPELINE, device: str | None = "cpu", weights_dir: str | None = None,
                  **kwargs: Any) -> Pipeline:
    """Build a registered pipeline (see ``alignfuse models``) on ``device``.

    ``weights_dir``: read network weights (``NAME.safetensors`` + ``NAME.json``, e.g. copied from a
    training run's ``export.*``) from this folder instead of the shipped ones, for registered pipelines
    and learned fusers in the grid (``ecc+difn``) alike; a pipeline without networks warns that it is ignored.
    """
    dev = resolve_device(device)
    return create_pipeline(name, weights_dir=weights_dir, **kwargs).to(dev)


@dataclass
class FuseResult:
    """fused: (H, W) or (H, W, 3) like the VIS; fused_y: (H, W); aligned_ir: (H, W); field: (2, H, W) on the
    visible grid; ir_size: ``(width, height)`` of the IR as given (it was resampled onto the visible grid when
    it differs from the visible size, and the field is in pixels of that resampled IR); notes: what was converted
    on reading the files or the arrays (an IR resampled onto the visible grid, ...), each one also an
    :class:`~alignfuse.errors.AlignfuseWarning`."""

    fused: np.ndarray
    fused_y: np.ndarray
    aligned_ir: np.ndarray
    field: np.ndarray
    reference: np.ndarray
    diagnostics: dict[str, Any] = dc_field(default_factory=dict)
    ir_size: tuple[int, int] | None = None
    notes: list[str] = dc_field(default_factory=list)

    @property
    def suspect(self) -> bool:
        """True when the registration may have failed (why: :func:`alignfuse.errors.suspect_detail`)."""
        return bool(self.diagnostics.get("suspect"))

    def ir_coordinates(self) -> np.ndarray:
        """(2, H, W) float64: for each visible pixel, the (x, y) position in the IR *as given* (raw IR pixels)
        that the field maps it to; see :func:`alignfuse.io.field_to_ir_coordinates`."""
        h, w = self.field.shape[-2:]
        return io.field_to_ir_coordinates(self.field, self.ir_size or (w, h))


def _check_pair(ir: np.ndarray, vis: np.ndarray) -> None:
    for name, a in (("ir", ir), ("vis", vis)):
        if not isinstance(a, np.ndarray):
            raise UserError(f"{name} must be a numpy array, got {type(a).__name__}")
        if not np.issubdtype(a.dtype, np.floating):
            raise UserError(f"{name} must be a float array in [0, 1], got dtype {a.dtype} (divide 8-bit images by "
                            "255 and 16-bit ones by 65535, or read files with alignfuse.io.read_image, which also "
                            "stretches a 16-bit IR)")
        if a.size and not np.isfinite(a).all():
            raise UserError(f"{name} holds {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} infinite "
                            "values; values must lie in [0, 1]")
        if a.size and (a.min() < -1e-6 or a.max() > 1 + 1e-6):
            raise UserError(f"{name} values must lie in [0, 1] (got {a.min():.3g}..{a.max():.3g})")
    if ir.ndim != 2:
        raise UserError(f"ir must be (H, W), got shape {ir.shape}")
    if vis.ndim not in (2, 3) or (vis.ndim == 3 and vis.shape[2] != 3):
        raise UserError(f"vis must be (H, W) or (H, W, 3), got shape {vis.shape}")


def _prepare(ir: np.ndarray, vis: np.ndarray,
             warn: bool = False) -> tuple[np.ndarray, tuple[int, int] | None, list[str]]:
    """Resample an IR of another size onto the visible grid (registration absorbs the stretch) -> (ir, ir_size
    as given, or None when the sizes already match, notes: what was done, each one also a warning with ``warn``)."""
    _check_pair(ir, vis)
    if ir.shape == vis.shape[:2]:
        return ir, None, []
    size, vis_size = (ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0])
    note = f"infrared array: {io.resample_note(size, vis_size)}"
    if warn:
        warnings.warn(note, AlignfuseWarning, stacklevel=3)
    return io.resample_to(ir, vis_size), size, [note]


MATRIX_CONVENTION = ("matrix (the global model) maps a visible pixel (x, y, 1) to the pixel of the IR resampled onto "
                     "the visible grid (u/w, v/w); matrix_raw_ir (an IR of another size) to the raw IR pixel, as a rig "
                     "file's matrix; a kept local stage adds its residual to the field only")


def _describe_matrix(diagnostics: dict[str, Any], vis_size: tuple[int, int], ir_size: tuple[int, int] | None) -> None:
    """Say in ``diagnostics`` which pixels its ``matrix`` maps to and, for an IR of another size, add the map onto the
    raw IR (``matrix_raw_ir``); nothing without a matrix."""
    if diagnostics.get("matrix") is None:
        return
    diagnostics["matrix_convention"] = MATRIX_CONVENTION
    if ir_size is not None and tuple(ir_size) != tuple(vis_size):
        diagnostics["matrix_raw_ir"] = io.matrix_to_raw_ir(diagnostics["matrix"], vis_size, ir_size).tolist()


def _warn_suspect(diagnostics: dict[str, Any], warn: bool) -> None:
    if warn and diagnostics.get("suspect"):
        warnings.warn(f"suspect registration ({suspect_detail(diagnostics)})", AlignfuseWarning, stacklevel=3)


def fuse_arrays(ir: np.ndarray, vis: np.ndarray, pipeline: Pipeline | None = None,
                ir_size: tuple[int, int] | None = None, warn: bool = True) -> FuseResult:
    """Register ``ir`` onto ``vis`` and fuse them with ``pipeline`` (default pipeline if None).

    ``ir`` may have another size than ``vis``: it is resampled onto the visible grid first and ``ir_size``
    (its size as given, ``(width, height)``) tells the registration so; ``FuseResult.ir_coordinates()`` maps
    the field back to raw IR pixels. Pass ``ir_size`` yourself when ``ir`` was already resampled. A suspect
    registration (``FuseResult.suspect``) is an :class:`~alignfuse.errors.AlignfuseWarning` unless ``warn`` is
    False (for callers that report it themselves)."""
    ir, given, notes = _prepare(ir, vis, warn)
    ir_size = ir_size or given
    pipeline = pipeline or load_pipeline()
    device = pipeline.device
    out = pipeline(io.to_tensor(ir, device), io.to_tensor(vis, device), ir_size=ir_size)
    fused_y = out.fused[0, 0].float().cpu().numpy()
    if vis.ndim == 3:
        _, cb, cr = io.rgb_to_ycbcr(vis)
        fused = np.clip(io.ycbcr_to_rgb(fused_y, cb, cr), 0, 1).astype(np.float32)
    else:
        fused = fused_y
    result = FuseResult(
        fused=fused,
        fused_y=fused_y,
        aligned_ir=out.aligned_ir[0, 0].float().cpu().numpy(),
        field=out.field[0].float().cpu().numpy(),
        reference=out.reference[0, 0].float().cpu().numpy(),
        diagnostics=out.diagnostics[0] if out.diagnostics else {},
        ir_size=ir_size,
        notes=notes,
    )
    _describe_matrix(result.diagnostics, (vis.shape[1], vis.shape[0]), ir_size)
    _warn_suspect(result.diagnostics, warn)
    return result


def register_arrays(ir: np.ndarray, vis: np.ndarray, pipeline: Pipeline | None = None,
                    ir_size: tuple[int, int] | None = None, warn: bool = True) -> FuseResult:
    """Register only: same result type, with ``fused`` left as the aligned IR (sizes: see :func:`fuse_arrays`)."""
    ir, given, notes = _prepare(ir, vis, warn)
    ir_size = ir_size or given
    pipeline = pipeline or load_pipeline()
    device = pipeline.device
    with torch.no_grad():
        reg, reference = pipeline.register(io.to_tensor(ir, device), io.to_tensor(vis, device), ir_size=ir_size)
    aligned = reg.aligned[0, 0].float().cpu().numpy()
    result = FuseResult(aligned, aligned, aligned, reg.field[0].float().cpu().numpy(),
                        reference[0, 0].float().cpu().numpy(), reg.diagnostics[0] if reg.diagnostics else {}, ir_size,
                        notes)
    _describe_matrix(result.diagnostics, (vis.shape[1], vis.shape[0]), ir_size)
    _warn_suspect(result.diagnostics, warn)
    return result
