"""Registration loss of UMF-CMGR's MRRN (official ``LossFunction_Dense``, spec §1.2).

L_reg = sim(aligned, fixed) + lambda_rev * sim(fixed_warped_back, moving) + lambda_smooth * Smooth(field)

with fixed = pseudo-IR, moving = distorted IR, aligned = warp(moving, field) and
fixed_warped_back = warp(fixed, -field); lambda_rev = 0.2, lambda_smooth = 10 (paper and code).

* ``similarity='feature'`` (official): L1 between frozen features (VGG19 relu4_1, no ImageNet
  normalisation, [0, 1] input); the second argument goes through the extractor under ``no_grad``.
  Without VGG weights the gradient-pyramid substitute is used (see ``models/vgg.py``).
  ``'l1'``: pixel L1 (only logged in the official code; the offline default in spec §5).
  ``'ncc'``: 1 - mean local squared NCC (VoxelMorph, 9x9 window).
  ``'mind'``: L1 between MIND descriptors (``losses/mind.py``; not in the paper): modality independent,
  so it trains the network cross-modally (VIS reference) without a translator.
* Smoothness: **the code uses squared differences (``smooth='l2'``, default); the paper's Eq. 14
  says ||grad phi||_1 (``smooth='l1'``)**. Both: (mean(d_x^2) + mean(d_y^2)) / 2 (or |.|) on the
  full-resolution field in pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from alignfuse.losses.mind import mind_distance
from alignfuse.models.vgg import GradientPyramidFeatures, VGGFeatures, build_feature_extractor

__all__ = ["smoothness", "local_ncc_loss", "feature_l1", "RegistrationLoss"]


def smoothness(field: torch.Tensor, penalty: str = "l2") -> torch.Tensor:
    """VoxelMorph ``Grad``: (mean(f(dx)) + mean(f(dy))) / 2, f = square ('l2') or abs ('l1').

    field (B, 2, H, W) in pixels -> scalar; forward differences along x and y.
    """
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    dy = field[..., 1:, :] - field[..., :-1, :]
    dx = field[..., :, 1:] - field[..., :, :-1]
    if penalty == "l2":
        dy, dx = dy * dy, dx * dx
    else:
        dy, dx = dy.abs(), dx.abs()
    return 0.5 * (dx.mean() + dy.mean())


def local_ncc_loss(a: torch.Tensor, b: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean local squared NCC over ``window`` x ``window`` boxes (VoxelMorph NCC, on ``a.device``).

    a, b: (B, C, H, W) -> scalar in [0, 1]; 0 only where both images have local contrast and match.
    ``eps`` in the denominator keeps flat patches finite.
    """
    c = a.shape[1]
    k = torch.ones(c, 1, window, window, device=a.device, dtype=a.dtype)
    pad = window // 2
    n = float(window * window)

    def box(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, padding=pad, groups=c)

    sa, sb = box(a), box(b)
    saa, sbb, sab = box(a * a), box(b * b), box(a * b)
    cross = sab - sa * sb / n
    var_a = (saa - sa * sa / n).clamp_min(0.0)
    var_b = (sbb - sb * sb / n).clamp_min(0.0)
    cc = cross * cross / (var_a * var_b + eps)
    return 1.0 - cc.mean()


def feature_l1(extractor: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the extractor's layers of L1(phi(x), phi(y)); ``y`` under ``no_grad`` (official)."""
    fx = extractor(x)
    with torch.no_grad():
        fy = extractor(y)
    return sum(F.l1_loss(fx[k], fy[k]) for k in fx) / len(fx)


class RegistrationLoss(nn.Module):
    """Bidirectional similarity + smoothness (see module docstring).

    Args:
        feature_extractor: for ``similarity='feature'``; ``None`` builds
            ``build_feature_extractor('auto', layers=('relu4_1',))`` (VGG19 if cached, else the
            substitute). Check ``.features.description`` for which one.
        lambda_rev: weight of the backward term (0.2).
        lambda_smooth: weight of the smoothness term (10).
        smooth: ``'l2'`` (code, default) or ``'l1'`` (paper Eq. 14).
        similarity: ``'feature'`` | ``'l1'`` | ``'ncc'`` | ``'mind'``.
        ncc_window: window of the ``'ncc'`` similarity.

    Forward:
        ``loss(fixed, moving, outputs)`` with fixed/moving (B, C, H, W) and ``outputs`` the dict
        of :class:`~alignfuse.models.mrrn.MRRN` / ``UNetRegistrar`` (``aligned``, ``field``,
        ``fixed_warped_back``). Returns (total, {"sim_fwd", "sim_bwd", "smooth", "pixel_l1",
        "total"} as floats); ``pixel_l1`` = L1(fixed, aligned) + 0.2 L1(moving, back), logged only.
    """

    def __init__(
        self,
        feature_extractor: VGGFeatures | GradientPyramidFeatures | None = None,
        lambda_rev: float = 0.2,
        lambda_smooth: float = 10.0,
        smooth: str = "l2",
        similarity: str = "feature",
        ncc_window: int = 9,
    ) -> None:
        super().__init__()
        if similarity not in ("feature", "l1", "ncc", "mind"):
            raise ValueError(f"similarity must be 'feature', 'l1', 'ncc' or 'mind', got {similarity!r}")
        if smooth not in ("l1", "l2"):
            raise ValueError(f"smooth must be 'l1' or 'l2', got {smooth!r}")
        if similarity == "feature" and feature_extractor is None:
            feature_extractor = build_feature_extractor("auto", layers=("relu4_1",))
        self.features = feature_extractor if similarity == "feature" else None
        self.lambda_rev, self.lambda_smooth = lambda_rev, lambda_smooth
        self.smooth, self.similarity, self.ncc_window = smooth, similarity, ncc_window

    def sim(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Dissimilarity of ``x`` (gets gradients) to reference ``y``: scalar, 0 when equal (l1/feature)."""
        if self.similarity == "feature":
            assert self.features is not None
            return feature_l1(self.features, x, y)
        if self.similarity == "l1":
            return F.l1_loss(x, y)
        if self.similarity == "mind":
            return mind_distance(x, y)
        return local_ncc_loss(x, y, self.ncc_window)

    def forward(
        self, fixed: torch.Tensor, moving: torch.Tensor, outputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        aligned, back, field = outputs["aligned"], outputs["fixed_warped_back"], outputs["field"]
        sim_fwd = self.sim(aligned, fixed)
        sim_bwd = self.sim(back, moving)
        smooth = smoothness(field, self.smooth)
        total = sim_fwd + self.lambda_rev * sim_bwd + self.lambda_smooth * smooth
        with torch.no_grad():
            pixel = F.l1_loss(fixed, aligned) + self.lambda_rev * F.l1_loss(moving, back)
        terms = {"sim_fwd": sim_fwd, "sim_bwd": sim_bwd, "smooth": smooth, "pixel_l1": pixel, "total": total}
        return total, {k: float(v.detach()) for k, v in terms.items()}
