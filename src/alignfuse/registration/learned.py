"""Learned registrar stage: optional global alignment, then a deformable network, with diagnostics.

``DeformableRegistrar(net)`` registers the moving IR onto the fixed reference (the pseudo-IR from
CPSTN, or the visible luminance for the cross-modal baselines):

1. **global** (beyond the paper, which only handles a few pixels): a phase-correlation translation
   (default), an ECC affine or the MIND global search between the reference and the IR. With a perfect
   pseudo-IR the modality gap would be gone and a mono-modal ECC affine would handle rotations and scale;
   with our CPU-trained CPSTN it is not, and ECC on the pseudo-IR multiplies the error under small
   misalignment by 1.5-2.3 (docs/RESULTS.md §1.8), so the default is the translation only.
2. **local**: the network (MRRN or the U-Net) predicts a residual field on the globally aligned IR.
3. The two fields are composed into one (``warp.compose``).

Diagnostics per pair: the similarity of reference vs IR before, after the global stage and after
the full registration (``criterion='ncc'``: global Pearson NCC, right for a pseudo-IR reference;
``'mind'``: 1 - MIND descriptor distance, right for a visible reference where contrasts invert);
folded-pixel fraction (Jacobian <= 0); field magnitude. When the full result is worse than the
global-only result (similarity lower by more than ``tolerance``), the global field is used instead;
when that is worse than doing nothing, the identity is used. Either way the pair is flagged
``suspect`` and ``fallback`` says what happened.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import warp as warp_ops
from ..errors import UserError
from ..stages import RegistrationResult

__all__ = ["DeformableRegistrar", "pearson"]

from .features import pearson  # noqa: E402  (re-exported: the one Pearson of the package)


class DeformableRegistrar(nn.Module):
    """Global (optional) + learned deformable registration with fallback.

    Args:
        net: a module with ``forward(fixed, moving) -> {"field": (B, 2, H, W), ...}`` (MRRN, U-Net).
        global_stage: ``"phase"`` (translation by phase correlation of gradient magnitudes, the default),
            ``"ecc"`` (affine ECC on gradient magnitudes, initialised by phase correlation), ``"mind"`` (best of identity / phase / ECC by MIND distance, ``baselines/dense.py``)
            or ``None`` (network only, as in the paper).
        tolerance: similarity drop that counts as "worse" for the fallback.
        criterion: ``"ncc"`` (Pearson; diagnostics ``ncc_*``) or ``"mind"`` (1 - MIND distance; ``mind_*``).
        global_reference: what the global stage registers the IR against: ``"reference"`` (the translator's
            output, e.g. the pseudo-IR) or ``"visible"`` (the visible luminance, passed as ``visible=``). With our
            CPU-trained CPSTN the pseudo-IR keeps too few edges for a global estimate while phase correlation
            on the visible image's gradients works (docs/RESULTS.md §1.8), so ``umf-cmgr`` uses ``"visible"``.
        global_min_shift: ``None`` keeps every global field; a number (px at the size the registrar is given)
            keeps it only where its mean displacement is at least that, so misalignment within the network's
            own reach never goes through the global stage (diagnostic ``start``: ``"identity (small global)"``).
        global_margin: ``None`` keeps the global start always. A number also runs the network from the
            identity and keeps the global start only where its final similarity is higher by more than
            ``global_margin``: a wrong global start (a few degrees, a few % of scale) is then caught *after*
            the deformable stage, where the network has done its best from both starts (diagnostic ``start``).
    """

    def __init__(self, net: nn.Module, global_stage: str | None = "phase", tolerance: float = 0.005,
                 criterion: str = "ncc", global_margin: float | None = None,
                 global_reference: str = "reference", global_min_shift: float | None = None) -> None:
        super().__init__()
        self.global_min_shift = global_min_shift
        self.global_margin = global_margin
        if global_reference not in ("reference", "visible"):
            raise UserError(f"global_reference must be 'reference' or 'visible', got {global_reference!r}")
        self.global_reference = global_reference
        if global_stage not in (None, "ecc", "phase", "mind"):
            raise UserError(f"global_stage must be 'ecc', 'phase', 'mind' or None, got {global_stage!r}")
        if criterion not in ("ncc", "mind"):
            raise UserError(f"criterion must be 'ncc' or 'mind', got {criterion!r}")
        self.net = net
        self.global_stage = global_stage
        self.tolerance = tolerance
        self.criterion = criterion
        self._global = None
        if global_stage == "mind":
            from .instance import MINDRegistrar

            self._global = MINDRegistrar(deformable=False)
        elif global_stage is not None:
            from .classical import ECCRegistrar, PhaseCorrelationRegistrar

            self._global = ECCRegistrar(use_gradients=True) if global_stage == "ecc" else PhaseCorrelationRegistrar()

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-item similarity (B,) of two (B, 1, H, W) images under ``criterion``; higher is better."""
        return self._similarity_to(b)(a)

    def _similarity_to(self, fixed: torch.Tensor):
        """``a -> similarity(a, fixed)``; for ``"mind"`` the fixed image's descriptors are computed once."""
        if self.criterion == "ncc":
            return lambda a: pearson(a, fixed)
        from ..losses.mind import descriptor_distance, mind_descriptors

        desc_fixed = mind_descriptors(fixed)
        return lambda a: 1.0 - descriptor_distance(mind_descriptors(a), desc_fixed, per_item=True)

    @property
    def uses_visible(self) -> bool:
        """True when the global stage wants the visible luminance (``Pipeline`` then passes ``visible=``)."""
        return self._global is not None and self.global_reference == "visible"

    @torch.no_grad()
    def forward(self, moving: torch.Tensor, fixed: torch.Tensor,
                visible: torch.Tensor | None = None) -> RegistrationResult:
        """moving IR (B, 1, H, W), fixed reference (B, 1, H, W) -> RegistrationResult.

        visible: the visible luminance (B, 1, H, W) on the same grid; required when the global stage is
        estimated against it (``global_reference="visible"``), ignored otherwise."""
        b = moving.shape[0]
        zero = torch.zeros(b, 2, *moving.shape[-2:], dtype=moving.dtype, device=moving.device)
        if self.uses_visible and visible is None:
            raise ValueError("global_reference='visible' needs the visible luminance: registrar(moving, reference, "
                             "visible=...) (Pipeline passes it)")
        if self._global is not None:
            g = self._global(moving.cpu(), (visible if self.uses_visible else fixed).cpu())
            field_g = g.field.to(moving.device)
        else:
            field_g = zero
        start = ["global" if self._global is not None else "identity"] * b
        if self._global is not None and self.global_min_shift is not None:
            small = warp_ops.magnitude(field_g).flatten(1).mean(1) < self.global_min_shift
            for i in torch.nonzero(small).flatten().tolist():
                field_g[i], start[i] = 0.0, "identity (small global)"
        moved = warp_ops.warp(moving, field_g)
        local = self.net(fixed, moved)["field"]
        field = warp_ops.compose(field_g, local)
        aligned = warp_ops.warp(moving, field)
        # each similarity once per call, the reference's MIND descriptors once for all of them
        similarity = self._similarity_to(fixed)
        sim_before = similarity(moving)
        sim_global = similarity(moved) if self._global is not None else sim_before.clone()
        sim_after = similarity(aligned)
        if self._global is not None and self.global_margin is not None:
            field_id = self.net(fixed, moving)["field"]
            aligned_id = warp_ops.warp(moving, field_id)
            sim_id = similarity(aligned_id)
            # score each start as the fallback below would leave it: a start is worth at least its own
            # input (the global field alone / the identity), so a good global field is not lost when the
            # network happens to make it worse
            score_global = torch.maximum(sim_after, sim_global)
            score_identity = torch.maximum(sim_id, sim_before)
            keep_identity = score_global <= score_identity + self.global_margin
            for i in torch.nonzero(keep_identity).flatten().tolist():
                field_g[i], moved[i], field[i], aligned[i] = zero[i], moving[i], field_id[i], aligned_id[i]
                sim_global[i], sim_after[i] = sim_before[i], sim_id[i]
                start[i] = "identity"

        k = self.criterion
        # a constant image holds nothing to register against: whatever field the networks produce is noise
        flat = (moving.flatten(1).std(1) < 1e-4) | (fixed.flatten(1).std(1) < 1e-4)
        folding = warp_ops.folding_fraction(field)
        diagnostics: list[dict[str, Any]] = []
        for i in range(b):
            d: dict[str, Any] = {
                "method": f"{self.global_stage or 'none'}+{type(self.net).__name__.lower()}",
                f"{k}_before": float(sim_before[i]),
                f"{k}_global": float(sim_global[i]),
                f"{k}_after": float(sim_after[i]),
                "folding_fraction": float(folding[i]),
                "start": start[i],
                "suspect": False,
                "fallback": None,
            }
            if float(sim_after[i]) < float(sim_global[i]) - self.tolerance:
                field[i], aligned[i] = field_g[i], moved[i]
                d.update(suspect=True, fallback="deformable stage lowered the similarity; kept the global field")
                d[f"{k}_after"] = d[f"{k}_global"]
            if d[f"{k}_after"] < float(sim_before[i]) - self.tolerance:
                field[i], aligned[i] = zero[i], moving[i]
                d.update(suspect=True, fallback="registration lowered the similarity; kept the input (identity)")
                d[f"{k}_after"] = d[f"{k}_before"]
            if bool(flat[i]):
                field[i], aligned[i] = zero[i], moving[i]
                d.update(suspect=True, fallback="an image is constant (no structure); kept the input (identity)")
                d.update({f"{k}_after": d[f"{k}_before"], "folding_fraction": 0.0})
            mag = field[i].pow(2).sum(0).sqrt()
            d["field_mean_px"] = float(mag.mean())
            d["field_max_px"] = float(mag.max())
            d["confidence"] = d[f"{k}_after"]
            diagnostics.append(d)
        return RegistrationResult(aligned, field, diagnostics)
