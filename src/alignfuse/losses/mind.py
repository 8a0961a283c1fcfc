"""MIND: modality independent neighbourhood descriptor (Heinrich et al., Medical Image Analysis 2012).

Each pixel is described by how similar its patch is to the patches of its 8 neighbours. That depends
on local structure, not on intensity: the descriptor is exactly invariant to gain, offset and contrast
inversion, so an IR and a visible image of the same scene have close descriptors. Used by the MIND
instance-optimisation registrar (``baselines/dense.py``) and as the ``'mind'`` similarity of the
registration loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

__all__ = ["mind_descriptors", "mind_distance", "descriptor_distance"]

# the 8 neighbours (dx, dy) of a pixel at Chebyshev distance 1, scaled by the descriptor radius
_OFFSETS = ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1))


def _shift(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``out[y, x] = img[y + dy, x + dx]`` with replicate borders; (B, C, H, W) -> same shape."""
    h, w = img.shape[-2:]
    p = max(abs(dx), abs(dy))
    padded = F.pad(img, (p, p, p, p), mode="replicate")
    return padded[..., p + dy : p + dy + h, p + dx : p + dx + w]


def mind_descriptors(img: torch.Tensor, radius: int = 2, sigma: float = 1.0) -> torch.Tensor:
    """MIND descriptor of each pixel: (B, 1, H, W) -> (B, 8, H, W) in (0, 1].

    ``D_r(x) = G_sigma * (I(x) - I(x + r))^2`` for the 8 neighbour offsets ``r`` at distance ``radius``;
    ``MIND_r(x) = exp(-D_r(x) / V(x))`` with ``V`` the mean of ``D`` over ``r`` (the local noise
    estimate that makes the descriptor contrast-invariant), then divided by its maximum over ``r``.
    """
    if img.ndim != 4 or img.shape[1] != 1:
        raise ValueError(f"img must be (B, 1, H, W), got {tuple(img.shape)}")
    k = 2 * int(3 * sigma) + 1
    # one (depthwise) blur of all 8 squared differences: 3x faster than a blur per offset at 384x288 on
    # CPU, and the same numbers
    sq_diff = torch.cat([img - _shift(img, dx * radius, dy * radius) for dx, dy in _OFFSETS], dim=1).square()
    dist = gaussian_blur2d(sq_diff, (k, k), (sigma, sigma))
    var = dist.mean(1, keepdim=True)
    # floor the noise estimate so flat regions (sky, road) do not turn quantisation noise into structure
    var = var.clamp_min(1e-3 * var.mean(dim=(2, 3), keepdim=True) + 1e-8)
    mind = torch.exp(-dist / var)
    return mind / mind.amax(1, keepdim=True)


def mind_distance(x: torch.Tensor, y: torch.Tensor, radius: int = 2, sigma: float = 1.0,
                  per_item: bool = False) -> torch.Tensor:
    """Mean absolute difference of the MIND descriptors of two (B, 1, H, W) images, 0 when equal:
    a scalar, or (B,) with ``per_item``."""
    return descriptor_distance(mind_descriptors(x, radius, sigma), mind_descriptors(y, radius, sigma), per_item)


def descriptor_distance(desc_x: torch.Tensor, desc_y: torch.Tensor, per_item: bool = False) -> torch.Tensor:
    """:func:`mind_distance` of precomputed descriptors (B, 8, H, W), so a fixed image's are computed once."""
    diff = (desc_x - desc_y).abs()
    return diff.mean(dim=(1, 2, 3)) if per_item else diff.mean()
