"""Pipeline(translator, registrar, fuser): misaligned IR + VIS -> fused image, aligned IR, field.

The pipeline works on tensors ``(B, C, H, W)`` float32 in ``[0, 1]`` on one device. Colour handling
(fuse the visible luminance, keep its chroma) and file I/O live in :mod:`alignfuse.api`.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any

import itertools

import torch
from torch import nn

from . import warp as warp_ops
from .pixel_grid import rescale_matrix
from .stages import (CONSTANT_IR_NOTE, CONSTANT_STD, Fuser, IdentityRegistrar, IdentityTranslator, Registrar,
                     RegistrationResult, Translator, luminance)

__all__ = ["Pipeline", "PipelineOutput"]


@dataclass
class PipelineOutput:
    """fused: (B, 1, H, W) fused luminance; aligned_ir: (B, 1, H, W); field: (B, 2, H, W) pixel (dx, dy);
    reference: (B, 1, H, W) what the IR was registered to (pseudo-IR or visible luminance)."""

    fused: torch.Tensor
    aligned_ir: torch.Tensor
    field: torch.Tensor
    reference: torch.Tensor
    diagnostics: list[dict[str, Any]] = dc_field(default_factory=list)


MIN_WORK_SHORT_SIDE = 64  # px; see Pipeline's register_long_side


def _matrices_to_full(diagnostics: Any, work: tuple[int, int], full: tuple[int, int]) -> None:
    """Re-express every ``matrix`` (visible px -> IR px, 3x3) in a registration's diagnostics (its stages' and their
    alternatives' too), found on images resized from ``full`` = (h, w) to ``work``, between the full-size images."""
    if isinstance(diagnostics, dict):
        for key, value in diagnostics.items():
            if key == "matrix" and value is not None:
                m = rescale_matrix(value, work, full)
                diagnostics[key] = (m / m[2, 2]).tolist()
            else:
                _matrices_to_full(value, work, full)
    elif isinstance(diagnostics, list):
        for item in diagnostics:
            _matrices_to_full(item, work, full)


class Pipeline:
    """Three replaceable stages.

    Args:
        translator: vis -> reference for registration (``IdentityTranslator`` = visible luminance).
        registrar: (moving IR, reference) -> RegistrationResult.
        fuser: (aligned IR, visible luminance) -> fused luminance.
        register_long_side: if set, registration runs on images resized so their long side is at most
            this many pixels; the field is resized (values rescaled) and warps the full-resolution IR.
            This keeps registration cost independent of the image size. The short side is not shrunk
            below ``MIN_WORK_SHORT_SIDE`` (or its own size): on a very elongated image (e.g. 40x900) a
            17 px tall working image leaves too little for phase correlation and the networks.
        name: the registry name, for reports.
        aligns_in_fuser: the fuser aligns the IR itself (RFVIF): the registrar is the identity by design, and there
            is no aligned IR or field to write.
    """

    def __init__(
        self,
        translator: Translator | None = None,
        registrar: Registrar | None = None,
        fuser: Fuser | None = None,
        register_long_side: int | None = None,
        name: str = "custom",
        aligns_in_fuser: bool = False,
    ) -> None:
        if fuser is None:
            raise ValueError("a pipeline needs a fuser")
        self.translator = translator or IdentityTranslator()
        self.registrar = registrar or IdentityRegistrar()
        self.fuser = fuser
        self.register_long_side = register_long_side
        self.name = name
        self.aligns_in_fuser = aligns_in_fuser
        self._device = torch.device("cpu")  # the last .to(): the device of a pipeline without networks

    @property
    def device(self) -> torch.device:
        """Device of the stages' networks (their first parameter or buffer); for a pipeline without any, the
        device of the last ``.to()`` (classical stages run where their inputs are), else CPU."""
        for stage in (self.translator, self.registrar, self.fuser):
            if isinstance(stage, nn.Module):
                for tensor in itertools.chain(stage.parameters(), stage.buffers()):
                    return tensor.device
        return self._device

    def to(self, device: torch.device | str) -> "Pipeline":
        """Move every stage that has ``.to`` (networks) to ``device``; the API sends inputs there."""
        self._device = torch.device(device)
        for stage in (self.translator, self.registrar, self.fuser):
            if hasattr(stage, "to"):
                stage.to(device)
        return self

    def register(self, ir: torch.Tensor, vis: torch.Tensor,
                 ir_size: tuple[int, int] | None = None) -> tuple[RegistrationResult, torch.Tensor]:
        """ir (B, 1, H, W), vis (B, 1|3, H, W) -> (registration at full resolution, reference image).

        ir_size: ``(width, height)`` of the IR before it was resampled onto the visible grid (when it was);
        registrars that model the two cameras (``wants_ir_size``) use it as their prior."""
        if ir.shape[0] != vis.shape[0] or ir.shape[-2:] != vis.shape[-2:]:
            raise ValueError(f"ir {tuple(ir.shape)} and vis {tuple(vis.shape)} must share batch and size")
        h, w = ir.shape[-2:]
        work = (h, w)
        if self.register_long_side and max(h, w) > self.register_long_side:
            s = max(self.register_long_side / max(h, w), min(1.0, MIN_WORK_SHORT_SIDE / min(h, w)))
            work = (max(8, round(h * s)), max(8, round(w * s)))
        vis_w = warp_ops.resize_image(vis, work)
        reference = self.translator(vis_w)
        # a registrar whose global stage works on the visible image (not the translator's output) says so
        extra = {"visible": luminance(vis_w)} if getattr(self.registrar, "uses_visible", False) else {}
        if ir_size is not None and getattr(self.registrar, "wants_ir_size", False):
            extra["ir_size"] = tuple(ir_size)
        result = self.registrar(warp_ops.resize_image(ir, work), reference, **extra)
        if work != (h, w):
            full_field = warp_ops.resize_field(result.field, (h, w))
            result = RegistrationResult(warp_ops.warp(ir, full_field), full_field, result.diagnostics)
            reference = warp_ops.resize_image(reference, (h, w))
            for d in result.diagnostics:  # a registrar's matrices are in pixels of the working size
                _matrices_to_full(d, work, (h, w))
                d["registered_at"] = list(work)  # (h, w): the size its other pixel figures (e.g. shifts) refer to
        # every registrar's field size, in pixels of the images given (a registrar sees the working size)
        for d, mag in zip(result.diagnostics, warp_ops.magnitude(result.field).flatten(1)):
            d.update(field_mean_px=float(mag.mean()), field_max_px=float(mag.max()))
        return result, reference

    @torch.no_grad()
    def __call__(self, ir: torch.Tensor, vis: torch.Tensor, ir_size: tuple[int, int] | None = None) -> PipelineOutput:
        """ir (B, 1, H, W) misaligned infrared, vis (B, 1|3, H, W) visible -> PipelineOutput (``ir_size``: see
        :meth:`register`)."""
        reg, reference = self.register(ir, vis, ir_size)
        vis_y = luminance(vis)
        # a constant IR (a lens cap, a dead sensor) carries nothing to fuse; a fuser would only shift the visible
        # image's brightness (a learned one by up to half its range), so the visible luminance is the output
        constant = ir.flatten(1).std(1) < CONSTANT_STD  # (B,)
        if bool(constant.all()):
            fused = vis_y.clone()
        else:
            fused = self.fuser(reg.aligned, vis_y).clamp(0, 1)
        if bool(constant.any()):
            fused = torch.where(constant[:, None, None, None], vis_y.to(fused.dtype), fused)
            diagnostics = list(reg.diagnostics) + [{} for _ in range(ir.shape[0] - len(reg.diagnostics))]
            for i in constant.nonzero().flatten().tolist():
                d = diagnostics[i]
                d.update(suspect=True, fused_from="visible",
                         warning="; ".join(w for w in (d.get("warning"), CONSTANT_IR_NOTE) if w))
            reg = RegistrationResult(reg.aligned, reg.field, diagnostics)
        return PipelineOutput(fused, reg.aligned, reg.field, reference, reg.diagnostics)

    def __repr__(self) -> str:
        stages = ", ".join(type(s).__name__ for s in (self.translator, self.registrar, self.fuser))
        return f"Pipeline({self.name!r}: {stages})"
