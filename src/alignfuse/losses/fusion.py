"""Fusion losses of UMF-CMGR's DIFN (spec §1.4-1.5): saliency weights, MS-SSIM, joint gradient.

Two configurations of :class:`FusionLoss`:

* ``'official'`` (``loss/fusion_loss.py``): target T = w_ir * IR + w_vi * VIS;
  L = 1 * (1 - MSSSIM(F, T; max_val=255)) + 20 * L1(F, T) + 5 * JGrad(F, IR, VIS).
  The max_val = 255 on [0, 1] images is a faithful quirk (C1 = 6.5, C2 = 58.5): the MS-SSIM term
  is then ~1 for any pair and contributes almost no gradient (spec pitfall 11).
* ``'paper'`` (Eq. 16-19): L = 1 * [(1 - MSSSIM(F, IR)) + (1 - MSSSIM(F, VIS))] (max_val = 1)
  + 20 * JGrad + 5 * L1(F, T). The paper and the code swap the 20 / 5 weights (pitfall 10).

JGrad = L1(max(|lap IR|, |lap VIS|), |lap F|) with ``kornia.filters.laplacian(x, 3)``
(normalised kernel /16, reflect border), as the official code (pitfall 12).

MS-SSIM follows ``loss/ms_ssim.py``: 5 levels, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
Gaussian window min(11, h, w) with sigma = 1.5 * win / 11, zero padding win // 2 ("same"
output), means of the maps over the whole batch, 2x2 average pooling between levels,
result = prod_{l<4} mcs_l^w_l * ssim_4^w_4. One deliberate difference: negative per-level means
are clamped to 0 before the power (``nonnegative=True``; the official code returns NaN there,
which never happens with max_val = 255).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.filters import laplacian

from ..errors import UnknownNameError

__all__ = [
    "MS_SSIM_WEIGHTS",
    "FUSION_LOSS_CONFIGS",
    "svs_map",
    "svs_weights",
    "gaussian_window",
    "ssim_components",
    "ssim",
    "ms_ssim",
    "joint_gradient_loss",
    "FusionLoss",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

FUSION_LOSS_CONFIGS: dict[str, dict[str, Any]] = {
    "official": {
        "w_ssim": 1.0,
        "w_svs": 20.0,
        "w_grad": 5.0,
        "ssim_against": "target",
        "max_val": 255.0,  # faithful quirk on [0, 1] data
        "multiscale": True,
    },
    # Eq. 16 calls its term the "MS-SSIM loss" (and the official code keeps that two-source line,
    # commented out, with MS-SSIM), so the paper config uses MS-SSIM; multiscale=False gives SSIM.
    "paper": {
        "w_ssim": 1.0,
        "w_svs": 5.0,
        "w_grad": 20.0,
        "ssim_against": "sources",
        "max_val": 1.0,
        "multiscale": True,
    },
}


def _to_uint8_levels(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> integer grey levels 0..255 (round: inverts the x/255 of image loading)."""
    return (img.detach() * 255.0).round().clamp(0, 255).long()


def svs_map(img: torch.Tensor) -> torch.Tensor:
    """Self-visual-saliency (histogram contrast) map of the official ``get_svs_map.py``, vectorised.

    For each image: S(v) = sum_j h[j] * |v - j| over its 256-bin histogram h, M(p) = S(I(p)),
    normalised by max(M) (all zeros if the max is 0). Computed as S = D @ h with D[i, j] = |i - j|.

    img: (B, 1, H, W) in [0, 1] (quantised to 8 bits) -> (B, 1, H, W) in [0, 1], no gradient.
    """
    if img.ndim != 4 or img.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W), got {tuple(img.shape)}")
    b = img.shape[0]
    levels = _to_uint8_levels(img).reshape(b, -1)  # (B, N)
    hist = torch.zeros(b, 256, dtype=torch.float64, device=img.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float64))
    grey = torch.arange(256, dtype=torch.float64, device=img.device)
    dist = (grey[:, None] - grey[None, :]).abs()  # (256, 256), D[i, j] = |i - j|
    sal = hist @ dist  # (B, 256): S(v) for every grey level v (D is symmetric)
    m = torch.gather(sal, 1, levels)  # (B, N)
    mx = m.amax(dim=1, keepdim=True)
    m = torch.where(mx > 0, m / mx.clamp_min(1e-12), torch.zeros_like(m))
    return m.reshape(img.shape).to(img.dtype)


def svs_weights(ir: torch.Tensor, vis: torch.Tensor, as_uint8: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Saliency weights w_ir = 0.5 + 0.5 (M_ir - M_vi), w_vi = 0.5 + 0.5 (M_vi - M_ir) (pitfall 13).

    Compute them on the *aligned* raw IR/VIS. w_ir + w_vi = 1, both in [0, 1].
    ``as_uint8=True`` reproduces the official storage (x255 truncated to uint8, read back /255),
    after which the sum is only approximately 1.

    ir, vis: (B, 1, H, W) in [0, 1] -> (w_ir, w_vi), each (B, 1, H, W).
    """
    if ir.shape != vis.shape:
        raise ValueError(f"ir {tuple(ir.shape)} and vis {tuple(vis.shape)} differ")
    m_ir, m_vi = svs_map(ir), svs_map(vis)
    w_ir = 0.5 + 0.5 * (m_ir - m_vi)
    w_vi = 0.5 + 0.5 * (m_vi - m_ir)
    if as_uint8:
        w_ir = torch.floor(w_ir * 255.0) / 255.0
        w_vi = torch.floor(w_vi * 255.0) / 255.0
    return w_ir, w_vi


def gaussian_window(
    size: int, sigma: float, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size), centre at size // 2 (as the official ``create_window``)."""
    x = torch.arange(size, device=device, dtype=dtype or torch.float32) - size // 2
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_components(
    x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0, window_size: int = 11
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure (cs) maps, official windowing (see module docstring).

    x, y: (B, C, H, W) -> two scalars (means over batch, channels and pixels).
    """
    c, h, w = x.shape[1], x.shape[-2], x.shape[-1]
    win = min(window_size, h, w)
    sigma = 1.5 * win / 11.0
    k = gaussian_window(win, sigma, x.device, x.dtype).expand(c, 1, win, win)
    pad = win // 2

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, padding=pad, groups=c)

    mu1, mu2 = filt(x), filt(y)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(x * x) - mu1_sq
    s2 = filt(y * y) - mu2_sq
    s12 = filt(x * y) - mu12
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    v1, v2 = 2.0 * s12 + c2, s1 + s2 + c2
    ssim_map = ((2.0 * mu12 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return ssim_map.mean(), (v1 / v2).mean()


def ssim(x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0, window_size: int = 11) -> torch.Tensor:
    """Single-scale SSIM with the same window/padding as :func:`ms_ssim` (scalar)."""
    return ssim_components(x, y, max_val, window_size)[0]


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    max_val: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    nonnegative: bool = True,
) -> torch.Tensor:
    """Multi-scale SSIM as in the official ``loss/ms_ssim.py`` (scalar; 1 for x == y).

    Args:
        x, y: (B, C, H, W); min(H, W) must be >= 2**(levels - 1).
        max_val: data range. The official code uses 255 on [0, 1] data (quirk); the correct
            value for alignfuse images is 1.
        weights: per-level exponents (len = number of levels).
        nonnegative: clamp negative level means at 0 (avoids NaN from a negative base).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"x and y must be the same (B, C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
    levels = len(weights)
    if min(x.shape[-2:]) < 2 ** (levels - 1):
        raise ValueError(f"MS-SSIM with {levels} levels needs H, W >= {2 ** (levels - 1)}, got {tuple(x.shape[-2:])}")
    w = torch.tensor(weights, device=x.device, dtype=x.dtype)
    value = x.new_ones(())
    for i in range(levels):
        s, cs = ssim_components(x, y, max_val)
        base = s if i == levels - 1 else cs
        if nonnegative:
            base = torch.relu(base)
        value = value * base ** w[i]
        if i < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return value


def _abs_lap(t: torch.Tensor) -> torch.Tensor:
    return laplacian(t, 3, border_type="reflect", normalized=True).abs()


def joint_gradient_loss(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """JGrad = L1(max(|lap IR|, |lap VIS|), |lap F|), kornia's normalised 3x3 Laplacian. (B, 1, H, W) -> scalar."""
    return F.l1_loss(torch.maximum(_abs_lap(ir), _abs_lap(vis)), _abs_lap(fused))


class FusionLoss(nn.Module):
    """DIFN loss, ``config='official'`` (default) or ``'paper'`` (see module docstring).

    Keyword overrides (``w_ssim``, ``w_svs``, ``w_grad``, ``ssim_against`` in
    {'target', 'sources'}, ``max_val``, ``multiscale`` (False: single-scale :func:`ssim`)) replace
    single settings of the chosen config.

    Forward:
        ``loss(fused, ir, vis, w_ir=None, w_vi=None)``; all (B, 1, H, W) in [0, 1]; ``ir`` is the
        registered IR. Without weights, :func:`svs_weights` (ir, vis) is used (the official maps
        come from the raw *aligned* pair, so pass them when you have them).
        Returns (total, {"ssim", "svs", "grad", "total"} floats; "ssim" is the unweighted
        1 - MS-SSIM term, summed over the two sources for 'sources').
    """

    def __init__(self, config: str = "official", **overrides: Any) -> None:
        super().__init__()
        if config not in FUSION_LOSS_CONFIGS:
            raise UnknownNameError(f"unknown fusion loss config {config!r}; choose from {sorted(FUSION_LOSS_CONFIGS)}")
        unknown = set(overrides) - set(FUSION_LOSS_CONFIGS[config])
        if unknown:
            raise TypeError(f"unknown FusionLoss settings {sorted(unknown)}")
        cfg = {**FUSION_LOSS_CONFIGS[config], **overrides}
        if cfg["ssim_against"] not in ("target", "sources"):
            raise ValueError(f"ssim_against must be 'target' or 'sources', got {cfg['ssim_against']!r}")
        self.config_name = config
        self.w_ssim, self.w_svs, self.w_grad = float(cfg["w_ssim"]), float(cfg["w_svs"]), float(cfg["w_grad"])
        self.ssim_against, self.max_val = cfg["ssim_against"], float(cfg["max_val"])
        self.multiscale = bool(cfg["multiscale"])

    def _similarity(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ms_ssim(x, y, self.max_val) if self.multiscale else ssim(x, y, self.max_val)

    def forward(
        self,
        fused: torch.Tensor,
        ir: torch.Tensor,
        vis: torch.Tensor,
        w_ir: torch.Tensor | None = None,
        w_vi: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if w_ir is None or w_vi is None:
            w_ir, w_vi = svs_weights(ir, vis)
        target = w_ir * ir + w_vi * vis
        if self.ssim_against == "target":
            l_ssim = 1.0 - self._similarity(fused, target)
        else:
            l_ssim = (1.0 - self._similarity(fused, ir)) + (1.0 - self._similarity(fused, vis))
        l_svs = F.l1_loss(fused, target)
        l_grad = joint_gradient_loss(fused, ir, vis)
        total = self.w_ssim * l_ssim + self.w_svs * l_svs + self.w_grad * l_grad
        terms = {"ssim": l_ssim, "svs": l_svs, "grad": l_grad, "total": total}
        return total, {k: float(v.detach()) for k, v in terms.items()}
