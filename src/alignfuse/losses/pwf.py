"""Unsupervised fusion objective of the PWF fuser (:mod:`alignfuse.models.pwf`).

Three families of terms, each matched to what the fusion metrics reward:

* structure: ``2 - SSIM(F, IR) - SSIM(F, VIS)`` (SSIM of both sources, VIFB's Ssim, PSNR/RMSE);
* gradient: ``L1(|grad F|, max(|grad IR|, |grad VIS|))`` with Sobel gradients: keep the stronger edge of either
  source at every pixel (Qabf, spatial frequency, average gradient, edge intensity);
* intensity: ``L1(F, T)`` with ``T = max(IR, VIS)`` ("max") or the saliency-weighted target of DIFN
  (``"svs"``, :func:`alignfuse.losses.fusion.svs_weights`): hot targets stay as bright as in the IR
  (entropy, SD, mutual information).

Optional terms (named config options, 0 by default: the shipped objective is unchanged):

* ``w_rmse`` x ``rmse_term``: per image, the mean of the RMS distances of F to IR and to VIS (VIFB's Psnr / Rmse
  average the two sources' L2 errors the same way). Any spatially constant blend of the sources reaches the same
  minimum (triangle equality), so the term penalises spatial *variation* of the blend where the sources differ,
  not the overall IR share;
* ``w_qabf`` x ``(1 - qabf)``: a differentiable Qabf (Xydeas-Petrovic edge transfer, VIFB constants, Sobel on
  255 x image, zero border): per pixel, the edge strength and orientation of F against each source, weighted by
  that source's edge strength; equals the VIFB metric up to VIFB's tie rule (``G = gf`` when ``gs == gf``);
* ``grad_gain``: the gradient term's target becomes ``grad_gain x max(|grad IR|, |grad VIS|)`` (1: the shipped
  term): above 1 it asks for edges a little stronger than either source's (spatial frequency, average gradient,
  edge intensity), which the net can reach through its per-band detail gains;
* ``w_sd`` x ``sd_shortfall``: per image, ``max(0, max(SD(IR), SD(VIS)) - SD(F))``: F's contrast (VIFB's SD, and
  with it entropy and mutual information) at least that of the more contrasted source. Against the Rmse term,
  which is indifferent to the overall share of each source, it favours one dominant source per image over a
  spatially varying blend;
* ``w_qcv`` x ``qcv / 1000``: a differentiable Chen-Varshney Qcv (VIFB constants): the CSF-filtered difference of F
  to each source, in 16 x 16 blocks, weighted by the source's edge strength^5 in the block (weights not
  differentiated). The metric scales its CSF with the image size; ``qcv_ref`` (px, 0: the crop's own size, which
  is the metric on the crop) scores a training crop as if it were part of a ``qcv_ref``-pixel image.

All images (B, 1, H, W) in [0, 1]; returns (total, {term: value}).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.filters import spatial_gradient

from ..errors import UnknownNameError
from .fusion import ssim, svs_weights

__all__ = ["PWF_LOSS_CONFIGS", "gradient_magnitude", "qabf", "qcv", "rmse_term", "sd_shortfall", "hot_regions",
           "hot_target_saliency", "hot_target_shortfall", "PWFLoss"]

PWF_LOSS_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {"w_ssim": 1.0, "w_grad": 10.0, "w_int": 1.0, "target": "max", "w_rmse": 0.0, "w_qabf": 0.0,
                "grad_gain": 1.0, "w_sd": 0.0, "w_qcv": 0.0, "qcv_ref": 0},
}

# VIFB's Qabf kernels (conv2 orientation) and constants
_QABF_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_QABF_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
_TG, _KG, _DG, _TA, _KA, _DA = 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8


def _qabf_grad(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) in [0, 1] -> Sobel strength and orientation of 255 x img as VIFB computes them (convolution,
    zero border; orientation atan(sy / sx), pi / 2 where sx == 0)."""
    p = 255.0 * img
    kx = _QABF_X.flip(0, 1).view(1, 1, 3, 3).to(img)  # conv2 = correlation with the flipped kernel
    ky = _QABF_Y.flip(0, 1).view(1, 1, 3, 3).to(img)
    sx = torch.nn.functional.conv2d(p, kx, padding=1)
    sy = torch.nn.functional.conv2d(p, ky, padding=1)
    g = (sx * sx + sy * sy + 1e-12).sqrt()
    zero = sx == 0
    ratio = sy / torch.where(zero, torch.ones_like(sx), sx)
    a = torch.where(zero, torch.full_like(sx, torch.pi / 2), torch.atan(ratio))
    return g, a


def qabf(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Differentiable Qabf of each image, (B, 1, H, W) x3 in [0, 1] -> (B,)."""
    gf, af = _qabf_grad(fused)
    num, den = 0.0, 0.0
    for src in (vis, ir):
        gs, as_ = _qabf_grad(src)
        g = torch.minimum(gs, gf) / torch.maximum(gs, gf)  # strength preservation, 1 where equal
        a = 1.0 - (as_ - af).abs() / (torch.pi / 2)
        q = (_TG / (1 + torch.exp(_KG * (g - _DG)))) * (_TA / (1 + torch.exp(_KA * (a - _DA))))
        num = num + q * gs
        den = den + gs
    return num.flatten(1).sum(1) / den.flatten(1).sum(1).clamp_min(1e-8)


def rmse_term(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Per image, (RMS(F - IR) + RMS(F - VIS)) / 2, (B, 1, H, W) x3 -> (B,) (VIFB's Rmse x sqrt(pixels))."""
    rms = lambda d: (d.pow(2).flatten(1).mean(1) + 1e-12).sqrt()  # noqa: E731
    return 0.5 * (rms(fused - ir) + rms(fused - vis))


def gradient_magnitude(img: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude, (B, 1, H, W) -> (B, 1, H, W); epsilon inside the root keeps its gradient finite."""
    g = spatial_gradient(img, mode="sobel", normalized=True)  # (B, 1, 2, H, W)
    return (g.pow(2).sum(2) + 1e-8).sqrt()


def sd_shortfall(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Per image, max(0, max(SD(IR), SD(VIS)) - SD(F)) (population SD over the pixels), (B, 1, H, W) x3 -> (B,)."""
    sd = lambda x: x.flatten(1).std(1, unbiased=False)  # noqa: E731
    return torch.relu(torch.maximum(sd(ir), sd(vis)) - sd(fused))


_QCV_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # filter2 (correlation) kernels
_QCV_Y = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])


def hot_regions(ir: torch.Tensor, ring: int = 15) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hot targets of an IR batch (B, 1, h, w) -> (mask, ring around it: (B, 1, h, w) 0/1, has a target: (B,)
    bool). Mask = IR above its mean + 2 std (the warmest objects: people, engines), counted as a target when it covers
    0.1-20 % of the image and at least 10 pixels lie within ``ring`` px around it. The one definition behind
    ``benchmarks/fusion_wins.py``'s hot-target saliency and :func:`hot_target_shortfall`."""
    with torch.no_grad():
        flat = ir.flatten(1)
        threshold = (flat.mean(1) + 2 * flat.std(1, unbiased=False)).view(-1, 1, 1, 1)
        mask = (ir > threshold).to(ir.dtype)
        around = F.max_pool2d(mask, 2 * ring + 1, stride=1, padding=ring) - mask
        share = mask.flatten(1).mean(1)
        has = (share >= 0.001) & (share <= 0.2) & (around.flatten(1).sum(1) >= 10)
    return mask, around, has


def hot_target_saliency(fused: torch.Tensor, ir: torch.Tensor, ring: int = 15,
                        min_contrast: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, h, w) x2 -> (saliency (B,), valid (B,)): how salient the IR's hot targets (:func:`hot_regions`) are in
    ``fused`` against the ring around them, relative to the IR, ``(F mask - F ring) / (IR mask - IR ring)``; 1.0 = as
    salient as in the IR. Valid where there is a target whose IR contrast exceeds ``min_contrast``; differentiable in
    ``fused``."""
    mask, around, has = hot_regions(ir, ring)
    n_mask, n_ring = mask.flatten(1).sum(1).clamp_min(1.0), around.flatten(1).sum(1).clamp_min(1.0)

    def contrast(x: torch.Tensor) -> torch.Tensor:
        return (x * mask).flatten(1).sum(1) / n_mask - (x * around).flatten(1).sum(1) / n_ring

    contrast_ir = contrast(ir).detach()
    valid = has & (contrast_ir > min_contrast)
    return contrast(fused) / contrast_ir.clamp_min(min_contrast), valid


def hot_target_shortfall(fused: torch.Tensor, ir: torch.Tensor, ring: int = 15) -> torch.Tensor:
    """How much less salient the IR's hot targets are in ``fused`` than in ``ir``, (B, 1, h, w) x2 -> scalar: per
    crop with a target (IR contrast > 0.01), ``max(0, 1 - saliency)`` (:func:`hot_target_saliency`), averaged over
    those crops; 0 (with a gradient) when no crop has one."""
    saliency, valid = hot_target_saliency(fused, ir, ring, min_contrast=1e-2)
    if not bool(valid.any()):
        return fused.sum() * 0.0
    return torch.relu(1.0 - saliency)[valid].mean()


def _normalize255(x: torch.Tensor) -> torch.Tensor:
    """Per image (x - min) / (max - min) x 255 (VIFB normalize1 without its rounding); a constant image -> 0."""
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (x - lo) / (hi - lo).clamp_min(1e-8) * 255.0


def qcv(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, ref: int = 0) -> torch.Tensor:
    """Differentiable Qcv of each image (lower is better), (B, 1, H, W) x3 in [0, 1] -> (B,); ``ref``: see
    ``w_qcv`` in the module docstring (0: the image's own size, VIFB's metric)."""
    h, w = fused.shape[-2:]
    fu = torch.fft.fftfreq(w, device=fused.device, dtype=fused.dtype) * 2.0 * ((ref or w) / 8.0)
    fv = torch.fft.fftfreq(h, device=fused.device, dtype=fused.dtype) * 2.0 * ((ref or h) / 8.0)
    r = (fu[None, :] ** 2 + fv[:, None] ** 2).sqrt()
    theta = 2.6 * (0.0192 + 0.144 * r) * torch.exp(-((0.144 * r) ** 1.1))
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16  # blkproc pads bottom / right with zeros
    pad = (0, wp - w, 0, hp - h)
    block = lambda x: torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, pad), 16)  # noqa: E731
    xf = _normalize255(fused)
    srcs = [_normalize255(src) for src in (vis, ir)]
    with torch.no_grad():  # edge-strength weights of each source's blocks, on one common scale
        strength = []
        for xs in srcs:
            gx = torch.nn.functional.conv2d(xs, _QCV_X.view(1, 1, 3, 3).to(xs), padding=1)
            gy = torch.nn.functional.conv2d(xs, _QCV_Y.view(1, 1, 3, 3).to(xs), padding=1)
            strength.append((gx * gx + gy * gy).sqrt())
        top = torch.maximum(*(g.flatten(1).max(1).values for g in strength)).clamp_min(1e-8).view(-1, 1, 1, 1)
        lams = [block((g / top) ** 5) for g in strength]  # the ratio below is scale-free
    num, den = 0.0, 0.0
    for xs, lam in zip(srcs, lams):
        diff = torch.fft.ifft2(torch.fft.fft2(xs - xf) * theta).real
        d = block(diff * diff)
        num = num + (lam * d).flatten(1).sum(1)
        den = den + lam.flatten(1).sum(1)
    return num / den.clamp_min(1e-30)


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
        grad_target = torch.maximum(gradient_magnitude(ir), gradient_magnitude(vis))
        if c["grad_gain"] != 1.0:
            grad_target = c["grad_gain"] * grad_target
        grad = (gradient_magnitude(fused) - grad_target).abs().mean()
        if c["target"] == "max":
            target = torch.maximum(ir, vis)
        else:
            w_ir, w_vi = svs_weights(ir, vis)
            target = w_ir * ir + w_vi * vis
        intensity = (fused - target).abs().mean()
        total = c["w_ssim"] * structure + c["w_grad"] * grad + c["w_int"] * intensity
        terms = {"ssim": float(structure.detach()), "grad": float(grad.detach()), "int": float(intensity.detach())}
        if c["w_rmse"]:
            rmse = rmse_term(fused, ir, vis).mean()
            total = total + c["w_rmse"] * rmse
            terms["rmse"] = float(rmse.detach())
        if c["w_qabf"]:
            edge = 1.0 - qabf(fused, ir, vis).mean()
            total = total + c["w_qabf"] * edge
            terms["qabf"] = float(edge.detach())
        if c["w_sd"]:
            short = sd_shortfall(fused, ir, vis).mean()
            total = total + c["w_sd"] * short
            terms["sd"] = float(short.detach())
        if c["w_qcv"]:
            cv = qcv(fused, ir, vis, int(c["qcv_ref"])).mean() / 1000.0
            total = total + c["w_qcv"] * cv
            terms["qcv"] = float(cv.detach())
        return total, {"loss": float(total.detach()), **terms}
