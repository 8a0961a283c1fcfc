"""Unsupervised fusion objective of the PWF fuser (:mod:`alignfuse.models.pwf`).

Three families of terms, each matched to what the fusion metrics reward:

* structure: ``2 - SSIM(F, IR) - SSIM(F, VIS)`` (SSIM of both sources, VIFB's Ssim, PSNR/RMSE);
* gradient: ``L1(|grad F|, max(|grad IR|, |grad VIS|))`` with Sobel gradients: keep the stronger edge of either
  source at every pixel (Qabf, spatial frequency, average gradient, edge intensity);
* intensity: ``L1(F, T)`` with ``T = max(IR, VIS)`` ("max") or the saliency-weighted target of DIFN
  (``"svs"``, :func:`alignfuse.losses.fusion.svs_weights`): hot targets stay as bright as in the IR
  (entropy, SD, mutual information).

All images (B, 1, H, W) in [0, 1]; returns (total, {term: value}).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from kornia.filters import spatial_gradient

from ..errors import UnknownNameError
from .fusion import ssim, svs_weights

__all__ = ["PWF_LOSS_CONFIGS", "gradient_magnitude", "PWFLoss"]

PWF_LOSS_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"w_ssim": 1.0, "w_grad": 10.0, "w_int": 1.0, "target": "max"},
}


def gradient_magnitude(img: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude, (B, 1, H, W) -> (B, 1, H, W); epsilon inside the root keeps its gradient finite."""
    g = spatial_gradient(img, mode="sobel", normalized=True)  # (B, 1, 2, H, W)
    return (g.pow(2).sum(2) + 1e-8).sqrt()


class PWFLoss(nn.Module):
    def __init__(self, config: str = "default", **overrides: Any) -> None:
        super().__init__()
        if config not in PWF_LOSS_CONFIGS:
            raise UnknownNameError(f"unknown PWF loss config {config!r}; known: {', '.join(PWF_LOSS_CONFIGS)}")
        self.cfg = {**PWF_LOSS_CONFIGS[config], **overrides}
        if self.cfg["target"] not in ("max", "svs"):
            raise UnknownNameError(f"PWF loss target must be 'max' or 'svs', got {self.cfg['target']!r}")

    def forward(self, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        structure = 2.0 - ssim(fused, ir) - ssim(fused, vis)
        grad = (gradient_magnitude(fused) - torch.maximum(gradient_magnitude(ir), gradient_magnitude(vis))).abs().mean()
        if c["target"] == "max":
            target = torch.maximum(ir, vis)
        else:
            w_ir, w_vi = svs_weights(ir, vis)
            target = w_ir * ir + w_vi * vis
        intensity = (fused - target).abs().mean()
        total = c["w_ssim"] * structure + c["w_grad"] * grad + c["w_int"] * intensity
        return total, {"loss": float(total.detach()), "ssim": float(structure.detach()), "grad": float(grad.detach()),
                       "int": float(intensity.detach())}
