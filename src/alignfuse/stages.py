"""The three replaceable stages of misaligned fusion and the values they exchange.

Every method is a choice for each stage (see DESIGN): a translator turns the visible image
into something that looks like the infrared one (pseudo-IR, or just the visible luminance),
a registrar warps the infrared onto it, and a fuser merges the aligned infrared with the
visible luminance.

Tensors are ``(B, C, H, W)`` float32 in ``[0, 1]``; fields follow :mod:`alignfuse.warp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["RegistrationResult", "Translator", "Registrar", "Fuser", "IdentityTranslator", "IdentityRegistrar",
           "CONSTANT_STD", "CONSTANT_IR_NOTE"]

# an image whose standard deviation (values in [0, 1]) is below this holds no structure: nothing to register or fuse
CONSTANT_STD = 1e-4
CONSTANT_IR_NOTE = ("the infrared image is constant (a covered lens or a dead sensor?): the fused image is the "
                    "visible image")


@dataclass
class RegistrationResult:
    """Output of a registrar.

    aligned: (B, 1, H, W) the moving image warped onto the fixed grid.
    field: (B, 2, H, W) pixel (dx, dy) field with ``aligned[y, x] = moving[y + dy, x + dx]``.
    diagnostics: one dict per batch item (similarity before/after, confidence, suspect flag...).
    """

    aligned: torch.Tensor
    field: torch.Tensor
    diagnostics: list[dict[str, Any]] = dc_field(default_factory=list)


@runtime_checkable
class Translator(Protocol):
    """vis (B, 1|3, H, W) -> pseudo-IR (B, 1, H, W), on the visible grid."""

    def __call__(self, vis: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Registrar(Protocol):
    """(moving IR (B, 1, H, W), fixed reference (B, 1, H, W)) -> RegistrationResult."""

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult: ...


@runtime_checkable
class Fuser(Protocol):
    """(IR (B, 1, H, W), visible luminance (B, 1, H, W)) -> fused luminance (B, 1, H, W) in [0, 1]."""

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor: ...


def luminance(vis: torch.Tensor) -> torch.Tensor:
    """(B, 1|3, H, W) -> (B, 1, H, W): the Y of YCbCr (BT.601) for colour, the image itself for grey."""
    if vis.shape[1] == 1:
        return vis
    if vis.shape[1] != 3:
        raise ValueError(f"visible image must have 1 or 3 channels, got {vis.shape[1]}")
    r, g, b = vis[:, 0:1], vis[:, 1:2], vis[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


class IdentityTranslator:
    """Mono-modal methods: the 'pseudo-IR' is the visible luminance itself."""

    def __call__(self, vis: torch.Tensor) -> torch.Tensor:
        return luminance(vis)


class IdentityRegistrar:
    """No registration: zero field, the moving image unchanged."""

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        b, _, h, w = moving.shape
        zero = torch.zeros(b, 2, h, w, dtype=moving.dtype, device=moving.device)
        return RegistrationResult(moving, zero, [{"method": "identity", "suspect": False} for _ in range(b)])
