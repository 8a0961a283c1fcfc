"""RFVIF training loss (Li et al., Inf. Fusion 2023, Eq. 7 and 16-18).

``l_tot = l_pixel + l_per + lam * l_align`` with

* ``l_pixel = (1 - alpha) * L1(f, vis) + alpha * L1(f, ir_gt)``        (mean absolute error [INFER])
* ``l_per   = (1 - beta) * MSE(phi(f), phi(vis)) + beta * MSE(phi(f), phi(ir_gt))``
  (the paper's Frobenius norm as a mean squared error over C*H*W, so its scale is comparable to the L1
  terms [INFER]; ``phi`` is any (B,1,H,W) -> (B,C',h,w) feature extractor, e.g. VGG16 relu2_2 from
  :mod:`alignfuse.models.vgg`; without one the term is skipped and reported as 0)
* ``l_align = sum_l L1(down_l(ir_gt), aligned_l)`` over the three aligned-IR heads, where ``down_l`` is an
  antialiased bilinear downsampling of the GT-aligned IR to the head's size (mean-L1 per level [INFER]).

Not in the paper: ``grad_weight * l_grad`` with ``l_grad`` the joint-gradient term of the UMF-CMGR fusion
loss (L1 between |Laplacian F| and max(|Laplacian VIS|, |Laplacian IR_gt|)). Default 0 (paper). It exists
because without ImageNet VGG weights the perceptual term is computed on a fixed gradient pyramid whose
magnitude is ~10x below the pixel L1, so the pixel term (which alone yields the source average) dominates
and the output loses contrast and edges. Off in every shipped recipe: one 8000-step CPU run with weight 10
did not raise Qabf or SD (docs/RESULTS.md §3.7).

Not in the paper either: ``teacher_weight * L1(f, teacher)`` where ``teacher`` is a fusion of the *aligned*
pair by another method (the shipped CPU recipe uses guided-filtering fusion of the VIS and the GT-aligned IR).
The paper's pixel term is flat for any value between the two sources (alpha = 0.5) and its VGG term, which
would decide where in that range the output lies, is not available here; the teacher supplies that
decision. Default 0 (paper).

Not in the paper: ``objective="fusion"`` replaces the pixel and perceptual terms by the unsupervised fusion
objective of the PWF fuser (:class:`alignfuse.losses.pwf.PWFLoss`: ``2 - SSIM(f, ir_gt) - SSIM(f, vis)`` +
``w_grad * L1(|grad f|, max(|grad vis|, |grad ir_gt|))`` + ``w_int * L1(f, max(vis, ir_gt))``) against the aligned
pair; the alignment term stays. It exists because the paper's pixel term is flat between the two sources and
its perceptual term, without ImageNet VGG, cannot say where in that range the output lies: the result is a soft
average in which hot targets fade (docs/RESULTS.md §3). ``objective="paper"`` (default) is Eq. 18.

``ir_gt`` is the IR crop that is aligned with ``vis`` (the "re-cropped patch" of the paper), not the
misaligned network input. Images are (B, 1, H, W) in [0, 1].
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from alignfuse.losses.fusion import joint_gradient_loss
from alignfuse.losses.pwf import PWFLoss
from alignfuse.models.rfvif import PAD_MULTIPLE, pad_to_multiple

__all__ = ["RFVIF_OBJECTIVES", "pixel_loss", "perceptual_loss", "alignment_targets", "alignment_loss", "RFVIFLoss"]

RFVIF_OBJECTIVES = ("paper", "fusion")

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


def _check_image(name: str, t: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(t.shape)}")
    if like is not None and t.shape != like.shape:
        raise ValueError(f"{name} {tuple(t.shape)} must match the fused image {tuple(like.shape)}")


def pixel_loss(fused: torch.Tensor, vis: torch.Tensor, ir_gt: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Eq. 16: ``(1 - alpha) * mean|f - vis| + alpha * mean|f - ir_gt|``. All (B, 1, H, W)."""
    return (1.0 - alpha) * F.l1_loss(fused, vis) + alpha * F.l1_loss(fused, ir_gt)


def perceptual_loss(
    fused: torch.Tensor,
    vis: torch.Tensor,
    ir_gt: torch.Tensor,
    feature_extractor: FeatureExtractor,
    beta: float = 0.6,
) -> torch.Tensor:
    """Eq. 17 with mean squared feature distances; the targets' features are computed without gradient."""
    feat_f = feature_extractor(fused)
    with torch.no_grad():
        feat_vis = feature_extractor(vis)
        feat_ir = feature_extractor(ir_gt)
    return (1.0 - beta) * F.mse_loss(feat_f, feat_vis) + beta * F.mse_loss(feat_f, feat_ir)


def alignment_targets(
    ir_gt: torch.Tensor, sizes: Sequence[tuple[int, int] | torch.Size], pad_multiple: int = PAD_MULTIPLE
) -> list[torch.Tensor]:
    """GT pyramid for the aligned-IR heads: pad like :class:`~alignfuse.models.rfvif.RFVIF`, then downsample.

    ``ir_gt`` (B, 1, H, W) is replicate-padded (bottom/right) to multiples of ``pad_multiple`` — exactly as
    the network pads its inputs, so the head at level l covers the padded image — and resized to each
    ``sizes[l]`` with antialiased bilinear interpolation (``align_corners=False``) [INFER antialias].
    """
    padded = pad_to_multiple(ir_gt, pad_multiple)
    targets = []
    for size in sizes:
        size = (int(size[0]), int(size[1]))
        if tuple(padded.shape[-2:]) == size:
            targets.append(padded)
        else:
            targets.append(F.interpolate(padded, size=size, mode="bilinear", align_corners=False, antialias=True))
    return targets


def alignment_loss(
    aligned_ir: Sequence[torch.Tensor], ir_gt: torch.Tensor, pad_multiple: int = PAD_MULTIPLE
) -> torch.Tensor:
    """Eq. 7: ``sum_l mean|down_l(ir_gt) - aligned_l|`` over the aligned-IR heads (B, 1, h_l, w_l)."""
    if len(aligned_ir) == 0:
        return ir_gt.new_zeros(())
    for i, a in enumerate(aligned_ir):
        _check_image(f"aligned_ir[{i}]", a)
    targets = alignment_targets(ir_gt, [a.shape[-2:] for a in aligned_ir], pad_multiple)
    return sum(F.l1_loss(a, t) for a, t in zip(aligned_ir, targets))


class RFVIFLoss(nn.Module):
    """Total RFVIF loss, Eq. 18.

    Args:
        alpha: IR weight of the pixel loss [PAPER 0.5].
        beta: IR weight of the perceptual loss [PAPER 0.6].
        lam: weight of the alignment loss [PAPER 0.3].
        feature_extractor: Phi, a callable (B, 1, H, W) -> (B, C', h, w) (e.g. frozen VGG16 relu2_2 that does
            its own grey->RGB and ImageNet normalisation); None skips the perceptual term. If it is an
            ``nn.Module`` it becomes a submodule (moves with ``.to()``); it is not frozen here.
        grad_weight: weight of the joint-gradient term (not in the paper; 0 = paper).
        teacher_weight: weight of the L1 term against a teacher fusion (not in the paper; 0 = paper).
        objective: "paper" (Eq. 18) or "fusion" (pixel + perceptual replaced by the PWF objective, see the
            module docstring; not in the paper).
        fusion_grad_weight, fusion_int_weight: the gradient and intensity weights of the "fusion" objective.
        fusion_qabf_weight, fusion_sd_weight: its optional metric-shaped terms (:class:`~alignfuse.losses.pwf.PWFLoss`
            ``w_qabf``: 1 - a differentiable Qabf; ``w_sd``: the shortfall of the fused SD below the more contrasted
            source's); 0: off.

    ``forward(fused, aligned_ir, vis, ir_gt, teacher=None)`` returns ``(total, terms)`` where ``terms``
    holds the floats ``pixel``, ``perceptual``, ``align``, ``grad``, ``teacher`` (unweighted) and ``total``;
    under ``objective="fusion"`` ``pixel`` is the fusion objective's total and ``perceptual`` is 0.
    ``teacher`` (B, 1, H, W) is required when ``teacher_weight > 0``.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.6,
        lam: float = 0.3,
        feature_extractor: FeatureExtractor | None = None,
        grad_weight: float = 0.0,
        teacher_weight: float = 0.0,
        objective: str = "paper",
        fusion_grad_weight: float = 30.0,
        fusion_int_weight: float = 1.0,
        fusion_qabf_weight: float = 0.0,
        fusion_sd_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if objective not in RFVIF_OBJECTIVES:
            raise ValueError(f"objective must be one of {RFVIF_OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.fusion_objective = (PWFLoss(w_grad=fusion_grad_weight, w_int=fusion_int_weight, w_qabf=fusion_qabf_weight,
                                         w_sd=fusion_sd_weight)
                                 if objective == "fusion" else None)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        for name, value in (("grad_weight", grad_weight), ("teacher_weight", teacher_weight),
                            ("fusion_grad_weight", fusion_grad_weight), ("fusion_int_weight", fusion_int_weight),
                            ("fusion_qabf_weight", fusion_qabf_weight), ("fusion_sd_weight", fusion_sd_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.grad_weight = grad_weight
        self.teacher_weight = teacher_weight
        self.alpha = alpha
        self.beta = beta
        self.lam = lam
        self.feature_extractor = feature_extractor

    def forward(
        self,
        fused: torch.Tensor,
        aligned_ir: Sequence[torch.Tensor],
        vis: torch.Tensor,
        ir_gt: torch.Tensor,
        teacher: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        _check_image("fused", fused)
        _check_image("vis", vis, fused)
        _check_image("ir_gt", ir_gt, fused)
        if self.fusion_objective is not None:
            l_pixel = self.fusion_objective(fused, ir_gt, vis)[0]
            l_per = fused.new_zeros(())
        else:
            l_pixel = pixel_loss(fused, vis, ir_gt, self.alpha)
            if self.feature_extractor is not None:
                l_per = perceptual_loss(fused, vis, ir_gt, self.feature_extractor, self.beta)
            else:
                l_per = fused.new_zeros(())
        l_align = alignment_loss(aligned_ir, ir_gt)
        total = l_pixel + l_per + self.lam * l_align
        l_grad = joint_gradient_loss(fused, ir_gt, vis) if self.grad_weight > 0 else fused.new_zeros(())
        total = total + self.grad_weight * l_grad
        if self.teacher_weight > 0:
            if teacher is None:
                raise ValueError("teacher_weight > 0 needs the teacher fusion (B, 1, H, W)")
            _check_image("teacher", teacher, fused)
            l_teacher = F.l1_loss(fused, teacher)
            total = total + self.teacher_weight * l_teacher
        else:
            l_teacher = fused.new_zeros(())
        terms = {
            "pixel": float(l_pixel.detach()),
            "perceptual": float(l_per.detach()),
            "align": float(l_align.detach()),
            "grad": float(l_grad.detach()),
            "teacher": float(l_teacher.detach()),
            "total": float(total.detach()),
        }
        return total, terms
