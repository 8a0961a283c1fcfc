"""Classical fusion baselines: average, max, Laplacian pyramid and guided-filter fusion (GFF).

Every fuser follows :class:`alignfuse.stages.Fuser`: ``(ir (B,1,H,W), vis (B,1,H,W))`` float in
``[0, 1]`` -> fused ``(B,1,H,W)`` in ``[0, 1]`` with the input's dtype and device. The pyramid and
GFF fusers work per image in numpy (float64 inside the guided filter, whose eps of 1e-6 is
below float32's cancellation error on variances) and accept any size, odd ones included.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = [
    "AverageFuser",
    "MaxFuser",
    "LaplacianPyramidFuser",
    "GuidedFilterFuser",
    "FUSERS",
    "box_mean",
    "guided_filter",
    "laplacian_pyramid",
    "reconstruct_laplacian_pyramid",
]


def _check_pair(ir: torch.Tensor, vis: torch.Tensor) -> None:
    if ir.ndim != 4 or vis.ndim != 4:
        raise ValueError(f"ir and vis must be (B, C, H, W), got {tuple(ir.shape)} and {tuple(vis.shape)}")
    if ir.shape != vis.shape:
        raise ValueError(f"ir {tuple(ir.shape)} and vis {tuple(vis.shape)} differ in shape")


def _per_plane(fn, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Apply ``fn(ir_np (H, W) float64, vis_np) -> (H, W)`` to every (batch, channel) plane."""
    _check_pair(ir, vis)
    a = ir.detach().to("cpu", torch.float64).numpy()
    b = vis.detach().to("cpu", torch.float64).numpy()
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        for c in range(a.shape[1]):
            out[i, c] = fn(a[i, c], b[i, c])
    out = np.clip(out, 0.0, 1.0)
    return torch.from_numpy(out).to(device=ir.device, dtype=ir.dtype)


class AverageFuser:
    """Pixel-wise mean of the two images."""

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        _check_pair(ir, vis)
        return (0.5 * (ir + vis)).clamp(0.0, 1.0)


class MaxFuser:
    """Pixel-wise maximum of the two images."""

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        _check_pair(ir, vis)
        return torch.maximum(ir, vis).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Laplacian pyramid
# ----------------------------------------------------------------------------------------------


def laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Burt-Adelson Laplacian pyramid: ``levels - 1`` detail bands (fine first) + the Gaussian base.

    Works for any size: each ``pyrUp`` is told the size of the finer level. The number of
    levels is capped so that the base keeps at least 1 pixel per side.
    """
    img = np.asarray(img, dtype=np.float64)
    n_down = max(0, min(int(levels) - 1, int(np.floor(np.log2(max(1, min(img.shape)))))))
    gauss = [img]
    for _ in range(n_down):
        gauss.append(cv2.pyrDown(gauss[-1], borderType=cv2.BORDER_REFLECT101))
    pyr = []
    for k in range(n_down):
        h, w = gauss[k].shape
        pyr.append(gauss[k] - cv2.pyrUp(gauss[k + 1], dstsize=(w, h), borderType=cv2.BORDER_REFLECT101))
    pyr.append(gauss[-1])
    return pyr


def reconstruct_laplacian_pyramid(pyr: list[np.ndarray]) -> np.ndarray:
    """Inverse of :func:`laplacian_pyramid` (exact up to float rounding)."""
    out = pyr[-1]
    for band in reversed(pyr[:-1]):
        h, w = band.shape
        out = cv2.pyrUp(out, dstsize=(w, h), borderType=cv2.BORDER_REFLECT101) + band
    return out


class LaplacianPyramidFuser:
    """Laplacian-pyramid fusion: detail bands by max absolute value, base by average."""

    def __init__(self, levels: int = 4):
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.levels = int(levels)

    def fuse_pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pa = laplacian_pyramid(a, self.levels)
        pb = laplacian_pyramid(b, self.levels)
        fused = [np.where(np.abs(da) >= np.abs(db), da, db) for da, db in zip(pa[:-1], pb[:-1])]
        fused.append(0.5 * (pa[-1] + pb[-1]))
        return reconstruct_laplacian_pyramid(fused)

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return _per_plane(self.fuse_pair, ir, vis)


# ----------------------------------------------------------------------------------------------
# Guided filter fusion (Li, Kang, Hu 2013)
# ----------------------------------------------------------------------------------------------


def box_mean(img: np.ndarray, r: int) -> np.ndarray:
    """Mean over the ``(2r+1)^2`` window clipped to the image (He et al.'s ``boxfilter / N``).

    Summed-area table, O(H W) whatever ``r`` is; any image size, ``r`` larger than the image included.
    """
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape
    sat = np.zeros((h + 1, w + 1), dtype=np.float64)
    sat[1:, 1:] = img.cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    s = sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0]
    n = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return s / n


def guided_filter(p: np.ndarray, guide: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Grey-scale guided filter of He, Sun, Tang (2010/2013): filter ``p`` guided by ``guide``."""
    p = np.asarray(p, dtype=np.float64)
    g = np.asarray(guide, dtype=np.float64)
    mean_g = box_mean(g, r)
    mean_p = box_mean(p, r)
    cov_gp = box_mean(g * p, r) - mean_g * mean_p
    var_g = box_mean(g * g, r) - mean_g * mean_g
    a = cov_gp / (var_g + eps)
    b = mean_p - a * mean_g
    return box_mean(a, r) * g + box_mean(b, r)


def _normalise(weights: list[np.ndarray]) -> list[np.ndarray]:
    """Clip the (guided-filtered, possibly slightly negative) weights at 0 and make them sum to 1."""
    ws = [np.clip(w, 0.0, None) for w in weights]
    total = sum(ws)
    n = len(ws)
    ok = total > 1e-12
    return [np.where(ok, w / np.where(ok, total, 1.0), 1.0 / n) for w in ws]


class GuidedFilterFuser:
    """GFF: "Image fusion with guided filtering", Li, Kang, Hu, IEEE TIP 22(7), 2013.

    1. two-scale decomposition: base ``B = I * mean_{31x31}``, detail ``D = I - B``;
    2. saliency ``S = |I * Laplacian_3x3| * Gaussian(r_g=5, sigma_g=5)``;
    3. binary weight maps ``P_n = [S_n == max_k S_k]`` (ties go to the first source, IR);
    4. ``W_B = GF(P_n, I_n, r1=45, eps1=0.3)``, ``W_D = GF(P_n, I_n, r2=7, eps2=1e-6)``, each clipped
       at 0 and normalised to sum 1 over the sources;
    5. ``F = sum W_B B + sum W_D D``, clipped to [0, 1].

    Box filters (mean and guided) use windows clipped at the image border, as He's reference
    code does, so any image size works.
    """

    def __init__(
        self,
        mean_size: int = 31,
        r_g: int = 5,
        sigma_g: float = 5.0,
        r1: int = 45,
        eps1: float = 0.3,
        r2: int = 7,
        eps2: float = 1e-6,
    ):
        if mean_size < 1 or mean_size % 2 == 0:
            raise ValueError(f"mean_size must be a positive odd integer, got {mean_size}")
        self.mean_size = int(mean_size)
        self.r_g = int(r_g)
        self.sigma_g = float(sigma_g)
        self.r1, self.eps1 = int(r1), float(eps1)
        self.r2, self.eps2 = int(r2), float(eps2)

    def saliency(self, img: np.ndarray) -> np.ndarray:
        lap = cv2.Laplacian(np.asarray(img, dtype=np.float64), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REPLICATE)
        k = 2 * self.r_g + 1
        return cv2.GaussianBlur(np.abs(lap), (k, k), self.sigma_g, borderType=cv2.BORDER_REPLICATE)

    def fuse_images(self, images: list[np.ndarray]) -> np.ndarray:
        """Fuse any number of (H, W) images in [0, 1]."""
        images = [np.asarray(im, dtype=np.float64) for im in images]
        bases = [box_mean(im, self.mean_size // 2) for im in images]
        details = [im - b for im, b in zip(images, bases)]
        sal = np.stack([self.saliency(im) for im in images])
        winner = np.argmax(sal, axis=0)
        masks = [(winner == n).astype(np.float64) for n in range(len(images))]
        wb = _normalise([guided_filter(m, im, self.r1, self.eps1) for m, im in zip(masks, images)])
        wd = _normalise([guided_filter(m, im, self.r2, self.eps2) for m, im in zip(masks, images)])
        fused = sum(w * b for w, b in zip(wb, bases)) + sum(w * d for w, d in zip(wd, details))
        return fused

    def fuse_pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.fuse_images([a, b])

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return _per_plane(self.fuse_pair, ir, vis)


FUSERS: dict[str, type] = {
    "average": AverageFuser,
    "max": MaxFuser,
    "laplacian": LaplacianPyramidFuser,
    "gff": GuidedFilterFuser,
}
