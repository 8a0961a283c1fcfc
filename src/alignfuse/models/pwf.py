"""PWF: pyramid-weight fusion network, the default pipeline's learned fuser (trained here, not from a paper).

A small dilated CNN reads the two images at half resolution and predicts one soft weight map per band
of a Laplacian pyramid; the fused image is the weighted pyramid of the two sources, reconstructed:

    L_k(F) = g_k * (w_k * L_k(IR) + (1 - w_k) * L_k(VIS)),   k = 0 .. K-2 (detail bands)
    B(F)   = w_base * B(IR) + (1 - w_base) * B(VIS)           (Gaussian base)

with ``w = sigmoid(net(IR, VIS))`` resized to each band and ``g_k`` a learned per-band detail gain. On detail
bands the weight's logit also gets ``beta_k * (|L_k(IR)| - |L_k(VIS)|) / (|L_k(IR)| + |L_k(VIS)| + eps)``, the
pixel-precise contrast of the two bands (a learned, soft version of the classical max-abs rule): the net's maps
are half resolution, so alone they would blur the choice at edges and cancel details of opposite sign.
Because the output is built from the sources' own bands, it cannot invent texture, checkerboards or
colour casts, and a network of 25 k parameters suffices: the learning is *where* each source wins at
each scale, which is what classical fusers hard-code (max-abs details, averaged base, guided weights).

Shapes: ``ir``, ``vis`` (B, 1, H, W) in [0, 1], any H, W >= 1 -> :class:`PWFOutput` with ``fused``
(B, 1, H, W) and ``weights`` (B, K, H/2, W/2).

Option ``global_branch`` (off by default): the convolutions see ~70 px, so they cannot tell which
source carries the image-wide contrast. The branch pools the body features (mean and std over the image) and a few
statistics of each source at half resolution (mean, std, mean gradient magnitude, mean local contrast, histogram
entropy), and a 2-layer MLP maps them to one logit offset per band (detail bands and base), added to every pixel's
logit of that band. Its last layer starts at zero, so a net warm-started from weights without the branch fuses
exactly as they do. The config records ``global_branch`` only when it is on, so the shipped configs are unchanged.
Statistics are per call: images larger than the fuser's tile (1024 px) get them per tile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnknownNameError

__all__ = ["PWF_CONFIGS", "PWFOutput", "PWFNet", "build_pwf", "laplacian_bands", "reconstruct_bands"]

PWF_CONFIGS: dict[str, dict[str, Any]] = {
    "cpu": {"width": 16, "levels": 5, "dilations": (1, 2, 4, 8, 1)},
    "tiny": {"width": 4, "levels": 3, "dilations": (1, 2)},
}

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial blur, reflect border (replicate when a side is too small to reflect)."""
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode=mode), k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode=mode), k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def laplacian_bands(img: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """(B, C, H, W) -> ``levels - 1`` detail bands (fine first) + the base; fewer when the image is small.

    ``reconstruct_bands`` inverts it exactly (each band is defined against the same upsampling)."""
    bands, cur = [], img
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 2:
            break
        low = _blur(cur)[..., ::2, ::2]
        bands.append(cur - _up(low, cur.shape[-2:]))
        cur = low
    bands.append(cur)
    return bands


def reconstruct_bands(bands: list[torch.Tensor]) -> torch.Tensor:
    out = bands[-1]
    for band in reversed(bands[:-1]):
        out = _up(out, band.shape[-2:]) + band
    return out


_N_STATS = 5  # per source, see _image_stats


def _image_stats(feats: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w) = [ir, vis, contrast ir, contrast vis] at half resolution -> (B, 2 * _N_STATS): per source its
    mean, std, mean gradient magnitude, mean local contrast and 32-bin histogram entropy / 5 (constants, no
    gradient: they are functions of the inputs only)."""
    with torch.no_grad():
        img = feats[:, :2]
        gy = (img[..., 1:, :] - img[..., :-1, :]).abs().mean((2, 3)) if img.shape[-2] > 1 else img.new_zeros(
            img.shape[:2])
        gx = (img[..., :, 1:] - img[..., :, :-1]).abs().mean((2, 3)) if img.shape[-1] > 1 else img.new_zeros(
            img.shape[:2])
        hist = torch.stack([torch.histc(x, bins=32, min=0.0, max=1.0) for x in img.flatten(0, 1)])
        p = hist / hist.sum(1, keepdim=True).clamp_min(1.0)
        ent = -(p * p.clamp_min(1e-12).log2()).sum(1).view(img.shape[:2]) / 5.0
        stats = [img.mean((2, 3)), img.flatten(2).std(2, unbiased=False), (gx + gy) * 4.0,
                 feats[:, 2:].mean((2, 3)), ent]
        return torch.cat(stats, 1)


@dataclass
class PWFOutput:
    fused: torch.Tensor  # (B, 1, H, W) in [0, 1]
    weights: torch.Tensor  # (B, K, h, w): IR weight per band (detail bands fine first, then the base)


class PWFNet(nn.Module):
    """Weight predictor + pyramid blend. Args: width (channels), levels (pyramid levels K), dilations (one
    3x3 conv each, after the 3x3 input conv)."""

    def __init__(self, width: int = 16, levels: int = 5, dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
                 beta: float = 4.0, global_branch: bool = False) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.config = {"width": int(width), "levels": int(levels), "dilations": [int(d) for d in dilations],
                       "beta": float(beta)}
        if global_branch:
            self.config["global_branch"] = True
        layers: list[nn.Module] = [nn.Conv2d(4, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for d in dilations:
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, levels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)  # starts as the average of the two pyramids
        self.log_gain = nn.Parameter(torch.zeros(max(levels - 1, 1)))
        self.beta = nn.Parameter(torch.full((max(levels - 1, 1),), float(beta)))
        self.glob: nn.Sequential | None = None
        if global_branch:
            self.glob = nn.Sequential(nn.Linear(2 * width + 2 * _N_STATS, width), nn.LeakyReLU(0.2),
                                      nn.Linear(width, levels))
            nn.init.zeros_(self.glob[2].weight)
            nn.init.zeros_(self.glob[2].bias)  # starts as the net without the branch

    def predict_logits(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) x2 -> the net's weight logits (B, K, ceil(H/2), ceil(W/2)): detail bands fine first, then the
        base."""
        h, w = ir.shape[-2:]
        half = (max(1, (h + 1) // 2), max(1, (w + 1) // 2))
        small = F.interpolate(torch.cat([ir, vis], 1), size=half, mode="area")
        # local contrast of each source (|x - blur(x)|) tells the net where each one carries detail
        feats = torch.cat([small, (small - _blur(small)).abs() * 4.0], 1)
        body = self.body(feats)
        logits = self.head(body)
        if self.glob is not None:
            mean = body.mean((2, 3))
            std = (body.pow(2).mean((2, 3)) - mean.pow(2)).clamp_min(0.0).add(1e-8).sqrt()  # torch.std is ~30x slower
            pooled = torch.cat([mean, std, _image_stats(feats)], 1)
            logits = logits + self.glob(pooled)[:, :, None, None]
        return logits

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> PWFOutput:
        if ir.shape != vis.shape or ir.ndim != 4 or ir.shape[1] != 1:
            raise ValueError(f"ir and vis must both be (B, 1, H, W), got {tuple(ir.shape)} and {tuple(vis.shape)}")
        logits = self.predict_logits(ir, vis)
        bands_ir = laplacian_bands(ir, self.config["levels"])
        bands_vis = laplacian_bands(vis, self.config["levels"])
        n = len(bands_ir)
        fused_bands = []
        for k, (a, b) in enumerate(zip(bands_ir, bands_vis)):
            idx = k if k < n - 1 else self.config["levels"] - 1  # the base always uses the last map
            logit = _up(logits[:, idx:idx + 1], a.shape[-2:])
            if k < n - 1:
                contrast = (a.abs() - b.abs()) / (a.abs() + b.abs() + 1e-3)
                logit = logit + self.beta[k] * contrast
            wk = torch.sigmoid(logit)
            band = wk * a + (1.0 - wk) * b
            fused_bands.append(band * self.log_gain[k].exp() if k < n - 1 else band)
        fused = reconstruct_bands(fused_bands).clamp(0.0, 1.0)
        return PWFOutput(fused=fused, weights=torch.sigmoid(logits))


def build_pwf(config: str | Mapping[str, Any] = "cpu") -> PWFNet:
    if isinstance(config, str):
        if config not in PWF_CONFIGS:
            raise UnknownNameError(f"unknown PWF config {config!r}; known: {', '.join(PWF_CONFIGS)}")
        config = PWF_CONFIGS[config]
    return PWFNet(**dict(config))
