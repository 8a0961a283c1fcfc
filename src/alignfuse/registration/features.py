"""Cross-modal image features and similarities shared by the registrars.

* **Doubled-angle gradient orientation** (:func:`orientation_field`): ``z = (g_x + i g_y)^2 / (|g|^2 + eta^2)``.
  Squaring the complex gradient maps an edge and its contrast-inverted twin (a hot object bright in the IR,
  dark in the visible) to the same value, and the normalisation (the normalised gradient field of Haber and
  Modersitzki) weighs edges by presence, not strength, so ``Re(z_f conj z_m)`` summed over an overlap is a
  correlation that FFTs evaluate for every translation at once.
* **MIND descriptors** (:mod:`alignfuse.losses.mind`) for the sub-pixel refinement and the acceptance checks.
* **Pearson correlation** (:func:`pearson`): the one implementation used by every registrar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses.mind import descriptor_distance, mind_descriptors

__all__ = ["orientation_field", "orientation_correlation", "sobel", "pearson", "mind_distance_to"]


def sobel(img: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2, H, W) Sobel derivatives (x, y), replicate borders, normalised by 1/8.

    Written as separable slices rather than a 3x3 ``conv2d``: on single-channel batches of hundreds of search
    canvases the convolution's im2col dominated the global search on CPU."""
    p = F.pad(img, (1, 1, 1, 1), mode="replicate")
    dx = p[..., :, 2:] - p[..., :, :-2]  # (B, 1, H + 2, W)
    dy = p[..., 2:, :] - p[..., :-2, :]  # (B, 1, H, W + 2)
    gx = (dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :]) / 8
    gy = (dy[..., :, :-2] + 2 * dy[..., :, 1:-1] + dy[..., :, 2:]) / 8
    return torch.cat([gx, gy], dim=1)


def orientation_field(img: torch.Tensor, eta2: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) -> complex (B, H, W) doubled-angle normalised gradient; ``|z| < 1``.

    eta2: the squared edge-noise level (B, 1, 1); default the mean squared gradient of each image (over ``mask``
    (B, 1, H, W), e.g. the part of a canvas an image covers, when given), so the feature does not depend on the
    image's contrast."""
    g = sobel(img)
    gx, gy = g[:, 0], g[:, 1]
    m2 = gx * gx + gy * gy
    if eta2 is None and mask is not None:
        m = mask[:, 0]
        eta2 = ((m2 * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1)).reshape(-1, 1, 1)
    elif eta2 is None:
        eta2 = m2.mean(dim=(1, 2), keepdim=True)
    den = m2 + eta2.clamp_min(1e-12)
    return torch.complex((gx * gx - gy * gy) / den, 2 * gx * gy / den)


def orientation_correlation(z_fixed: torch.Tensor, moving: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Normalised doubled-angle orientation correlation of warped images with a fixed one, over their coverage.

    z_fixed: complex (H, W), :func:`orientation_field` of the fixed image; moving: (B, 1, H, W) images warped onto it
    (read with border replication); inside: (B, 1, H, W) their coverage -> (B,), 1 = every edge has the same
    orientation. The coverage is eroded by 2 px, beyond the 3x3 Sobel's reach: its edge is no edge of the scene,
    and counting it would penalise every warp that moves the image."""
    inside = -F.max_pool2d(-inside, 5, stride=1, padding=2)
    z = orientation_field(moving, mask=inside) * inside[:, 0]
    num = (z.conj() * z_fixed[None]).real.sum((1, 2))
    den = ((z_fixed.abs() ** 2)[None] * inside[:, 0]).sum((1, 2)) * (z.abs() ** 2).sum((1, 2))
    return num / den.clamp_min(1e-12).sqrt()


def pearson(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Global Pearson correlation per batch item: (B, C, H, W) x2 -> (B,); 0 where either is constant."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    m = mask.flatten(1).double() if mask is not None else torch.ones_like(a)
    n = m.sum(1).clamp_min(1)
    am = a - (a * m).sum(1, keepdim=True) / n[:, None]
    bm = b - (b * m).sum(1, keepdim=True) / n[:, None]
    cov = (am * bm * m).sum(1)
    den = ((am**2 * m).sum(1) * (bm**2 * m).sum(1)).sqrt()
    return torch.where(den > 1e-12, cov / den.clamp_min(1e-12), torch.zeros_like(cov)).float()


def mind_distance_to(fixed: torch.Tensor):
    """``moving -> (B,)`` mean MIND distance to ``fixed`` (B, 1, H, W); the fixed descriptors are computed once."""
    desc_fixed = mind_descriptors(fixed)
    return lambda moving: descriptor_distance(mind_descriptors(moving), desc_fixed, per_item=True)
