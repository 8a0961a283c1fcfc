"""Infrared/visible image-fusion quality metrics, reproducing the VIFB MATLAB code.

Reference toolbox: the ``metrics/metrics*.m`` files of VIFB (xingchenzhang/VIFB, commit 22b2ea9d), the
authors' ``VIFF_Public`` (Han et al. 2013) and LIVE's ``vifp_mscale`` (Sheikh & Bovik). Every quirk of that
code is kept on purpose, because published tables copy it; the full list is in
``tests/data/metric_reference/README.md``. The tests check every value of the reference table at relative
1e-9 (VIFB metrics, SCD) and 1e-6 (VIFF, VIFp_sum).

Conventions shared by every metric here:

* Inputs are numpy arrays (or torch tensors) of **0..255 values** (uint8 or float), shape (H, W) or
  (H, W, 3); there is no rescaling to [0, 1]. Computation is float64 throughout (never float32: the Qabf
  tie rule needs exact equality of gradient magnitudes).
* Every function is called ``metric(vi, ir, fused)`` (visible, infrared, fused), like VIFB.
* Colour (VIFB rule, README section 4.0, implemented once in :func:`_split_channels`): a greyscale fused
  image is scored directly (VI and IR must then be greyscale too). A 3-channel fused image is scored channel by
  channel against the same channel of VI (a greyscale VI is broadcast) and against IR (a greyscale IR is
  broadcast to all channels), and the three per-channel scores are averaged. The one exception is
  ``Spatial_frequency``, which (like the MATLAB code) treats an RGB image as the single H x 3W image [R|G|B].
  VIFF on colour inputs uses this per-channel rule too, unlike ``VIFF_Public`` (which scores CIELAB L*);
  no reference value exists for colour VIFF, VIFp_sum, SCD, CC_mean.
* MATLAB ``round`` is half away from zero: ``floor(x + 0.5)`` on non-negative values.
* Where the MATLAB code divides 0 by 0 the result here is NaN too: Qabf when both sources are all zero; Qcb
  and Qcv when an image is constant and non-zero (normalize1); CC_mean and SCD when a correlated image is
  constant; VIFp_sum for a constant source; VIFF for an image smaller than 41 px in either direction (its 4th
  scale is empty). Where MATLAB stays finite, so does this code (e.g. Mutinf maps a constant image to all
  zeros). Psnr is +inf when F equals both sources.

Use :func:`compute_fusion_metrics` to get several metrics at once: it shares the intermediate work
(histograms, gradients, local statistics) between metrics.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, Callable, Iterable

import numpy as np
from scipy import ndimage

from ..errors import UnknownNameError

__all__ = [
    "METRIC_INFO",
    "FUSION_METRIC_NAMES",
    "VIFB_METRIC_NAMES",
    "compute_fusion_metrics",
    "Entropy",
    "Variance",
    "Mutinf",
    "Cross_entropy",
    "Qabf",
    "Qcb",
    "Qcv",
    "Ssim",
    "Psnr",
    "Rmse",
    "Spatial_frequency",
    "Avg_gradient",
    "Edge_intensity",
    "VIFF",
    "VIFp_sum",
    "SCD",
    "CC_mean",
    "SSIM_mean",
]

VIFB_METRIC_NAMES: tuple[str, ...] = (
    "Entropy", "Variance", "Mutinf", "Cross_entropy", "Qabf", "Qcb", "Qcv", "Ssim", "Psnr", "Rmse",
    "Spatial_frequency", "Avg_gradient", "Edge_intensity",
)

METRIC_INFO: dict[str, dict[str, Any]] = {
    "Entropy": {"higher_is_better": True, "convention":
                "EN of F: 256-bin histogram of floor(F), -sum p log2 p, in bits (VIFB)"},
    "Variance": {"higher_is_better": True, "convention":
                 "SD: population standard deviation of F (not a variance), 0..255 scale (VIFB)"},
    "Mutinf": {"higher_is_better": True, "convention":
               "MI(VI;F) + MI(IR;F), SUM over sources, in nats; each image min-max stretched and rounded to "
               "256 levels first (VIFB)"},
    "Cross_entropy": {"higher_is_better": False, "convention":
                      "mean over sources of KL(P_S || P_F) in bits over bins non-empty in both (VIFB)"},
    "Qabf": {"higher_is_better": True, "convention":
             "Xydeas-Petrovic Q^AB/F, 0..1; Sobel, atan without wrap, tie gS==gF gives G=gF (VIFB)"},
    "Qcb": {"higher_is_better": True, "convention":
            "Chen-Blum, 0..1; images min-max stretched/rounded, DoG CSF, 31x31 Gaussian contrast (VIFB)"},
    "Qcv": {"higher_is_better": False, "convention":
            "Chen-Varshney, unbounded; 16x16 blocks, Sobel^5 saliency, Mannos-Sakrison CSF (VIFB)"},
    "Ssim": {"higher_is_better": True, "convention":
             "SSIM(VI,F) + SSIM(IR,F), SUM over sources (max 2); 11x11 Gaussian sigma 1.5, 'valid', L=255 (VIFB)"},
    "Psnr": {"higher_is_better": True, "convention":
             "20 log10(255 / sqrt(mean_S e(S,F))), e = sqrt(SSE)/(H*W) (not an MSE), in dB (VIFB)"},
    "Rmse": {"higher_is_better": False, "convention":
             "mean over sources of e(S,F) = sqrt(sum (S-F)^2)/(H*W) (not a root mean square) (VIFB)"},
    "Spatial_frequency": {"higher_is_better": True, "convention":
                          "sqrt(RF + CF), squared first differences summed and divided by pixel count; RGB "
                          "treated as one H x 3W image (VIFB)"},
    "Avg_gradient": {"higher_is_better": True, "convention":
                     "sum sqrt((gx^2+gy^2)/2) over H*W pixels / ((H-1)(W-1)), MATLAB gradient (VIFB)"},
    "Edge_intensity": {"higher_is_better": True, "convention":
                       "mean Sobel magnitude of F, replicate borders (VIFB)"},
    "VIFF": {"higher_is_better": True, "convention":
             "Han et al. 2013 VIFF_Public on 0..255 values (sigma_n^2 = 0.005*255^2), 4 scales, "
             "weights [1,0,0.15,1]/2.15; UMF-CMGR's 'VIF'"},
    "VIFp_sum": {"higher_is_better": True, "convention":
                 "vifp_mscale(VI,F) + vifp_mscale(IR,F), SUM over sources, sigma_n^2 = 2 (Sheikh-Bovik pixel VIF)"},
    "SCD": {"higher_is_better": True, "convention":
            "corr(F-IR, VI) + corr(F-VI, IR), Pearson, SUM (Aslantas & Bendes 2015)"},
    "CC_mean": {"higher_is_better": True, "convention":
                "(corr(F,VI) + corr(F,IR)) / 2, Pearson over all pixels, MEAN over sources (UMF-CMGR 'CC')"},
    "SSIM_mean": {"higher_is_better": True, "convention":
                  "(SSIM(VI,F) + SSIM(IR,F)) / 2 = Ssim / 2, MEAN over sources (UMF-CMGR 'SSIM')"},
}

FUSION_METRIC_NAMES: tuple[str, ...] = tuple(METRIC_INFO)

_Array = np.ndarray


# ----------------------------------------------------------------------------------------------------------
# Input handling and the colour rule
# ----------------------------------------------------------------------------------------------------------

def _to_float64(x: Any, what: str) -> _Array:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"{what}: expected shape (H, W) or (H, W, 3), got {a.shape}")
    return a


def _split_channels(vi: Any, ir: Any, fused: Any) -> tuple[list["_Channel"], _Array]:
    """VIFB colour rule (README 4.0): one (vi, ir, f) greyscale triple per channel of F.

    Returns the per-channel contexts and F as float64 (for the metrics that look at F as a whole).
    """
    v, i, f = _to_float64(vi, "vi"), _to_float64(ir, "ir"), _to_float64(fused, "fused")
    for name, a in (("vi", v), ("ir", i)):
        if a.shape[:2] != f.shape[:2]:
            raise ValueError(f"{name} has size {a.shape[:2]}, fused has {f.shape[:2]}")
    if f.ndim == 2:
        if v.ndim == 3 or i.ndim == 3:
            raise ValueError("greyscale fused image with a colour source: VIFB is inconsistent there; "
                             "convert the source(s) to greyscale first")
        return [_Channel(v, i, f)], f
    chans = []
    for k in range(3):
        chans.append(_Channel(v[:, :, k] if v.ndim == 3 else v, i[:, :, k] if i.ndim == 3 else i, f[:, :, k]))
    return chans, f


# ----------------------------------------------------------------------------------------------------------
# Small numerical helpers (MATLAB equivalents)
# ----------------------------------------------------------------------------------------------------------

def _mround(x: _Array) -> _Array:
    """MATLAB round (half away from zero)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _hist256(x: _Array) -> _Array:
    """Counts of floor(x) in bins 0..255 (values outside 0..255 are clipped; MATLAB would error)."""
    idx = np.clip(np.floor(x), 0, 255).astype(np.intp)
    return np.bincount(idx.ravel(), minlength=256).astype(np.float64)


def _entropy_counts(counts: _Array, log: Callable[[_Array], _Array]) -> float:
    p = counts[counts != 0] / counts.sum()
    return float(-np.sum(p * log(p)))


def _gauss1d(n: int, sigma: float) -> _Array:
    """1-D factor of MATLAB fspecial('gaussian', n, sigma): outer(g, g) is the (normalised) 2-D kernel.

    fspecial zeroes values below eps*max; for the windows used here (n <= 17, sigma = n/5 or 1.5) no value is
    that small, so the kernel is exactly separable.
    """
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: _Array, g: _Array) -> _Array:
    """MATLAB filter2(outer(g, g), x, 'valid') for a symmetric odd 1-D factor g (separable correlation)."""
    r = len(g) // 2
    h, w = x.shape
    if h < len(g) or w < len(g):
        return np.zeros((max(h - 2 * r, 0), max(w - 2 * r, 0)))
    y = ndimage.correlate1d(x, g, axis=0, mode="constant")[r:h - r]
    return ndimage.correlate1d(y, g, axis=1, mode="constant")[:, r:w - r]


def _filter_same_zero(x: _Array, g: _Array, scale: float = 1.0) -> _Array:
    """filter2(scale * outer(g, g), x, 'same') with zero padding (separable correlation)."""
    y = ndimage.correlate1d(x, g * scale, axis=0, mode="constant")
    return ndimage.correlate1d(y, g, axis=1, mode="constant")


def _freqspace(n: int) -> _Array:
    """MATLAB freqspace(n) frequencies: ((0:n-1) - floor(n/2)) * 2/n."""
    return (np.arange(n, dtype=np.float64) - n // 2) * 2.0 / n


def _csf_filter(x: _Array, sd_centred: _Array) -> _Array:
    """real(ifft2(ifftshift(fftshift(fft2(x)) .* Sd))) for a filter Sd defined on the centred grid.

    Equivalent to filtering with ifftshift(Sd) in the natural FFT layout. Sd depends on |u|, |v| only, so
    ifftshift(Sd) is Hermitian-symmetric and the real-input FFT gives the real part directly.
    """
    h, w = x.shape
    s = np.fft.ifftshift(sd_centred)[:, : w // 2 + 1]
    return np.fft.irfft2(np.fft.rfft2(x) * s, s=(h, w))


def _normalize1(x: _Array) -> _Array:
    """Qcb/Qcv normalize1: round((x - min)/(max - min) * 255); an all-zero image is returned unchanged."""
    mx, mn = x.max(), x.min()
    if mx == 0 and mn == 0:
        return x
    with np.errstate(divide="ignore", invalid="ignore"):
        return _mround((x - mn) / (mx - mn) * 255)


def pearson(a: _Array, b: _Array) -> float:
    """Pearson correlation, the package's one numpy implementation (registration's NCC and the registrars' checks
    call it). MATLAB corr2: sum(a0*b0)/sqrt(sum(a0^2)*sum(b0^2)); NaN for a constant input (0/0)."""
    a0 = a - a.mean()
    b0 = b - b.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(a0 * b0) / np.sqrt(np.sum(a0 * a0) * np.sum(b0 * b0)))


_SOBEL_QABF_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])   # conv2 kernel h3
_SOBEL_QABF_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])   # conv2 kernel h1
_SOBEL_EI = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])       # fspecial('sobel')
_SOBEL_QCV_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])    # filter2 kernels
_SOBEL_QCV_Y = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])

_VIF_WINDOWS = [_gauss1d(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in range(1, 5)]
# N = 2^(4-s+1)+1 = 17, 9, 5, 3 for s = 1..4, as in VIFF_Public / vifp_mscale (the reference README's
# parenthetical "(33, 17, 9, 5)" is a typo: the reference values match 17, 9, 5, 3).
_SSIM_WINDOW = _gauss1d(11, 1.5)


def _blocksum16(x: _Array) -> _Array:
    """blkproc(x, [16 16], @(b) sum(b(:))): zero-pad bottom/right to a multiple of 16, sum each block."""
    h, w = x.shape
    hb, wb = -(-h // 16), -(-w // 16)
    p = np.zeros((hb * 16, wb * 16))
    p[:h, :w] = x
    return p.reshape(hb, 16, wb, 16).sum(axis=(1, 3))


# ----------------------------------------------------------------------------------------------------------
# Per-channel context: lazily computed intermediates shared between metrics
# ----------------------------------------------------------------------------------------------------------

class _Channel:
    """One greyscale (vi, ir, f) triple of float64 0..255 arrays, with cached intermediate results."""

    def __init__(self, vi: _Array, ir: _Array, f: _Array) -> None:
        self.vi, self.ir, self.f = vi, ir, f

    def src(self, name: str) -> _Array:
        return {"vi": self.vi, "ir": self.ir, "f": self.f}[name]

    # --- histograms of the integer pixel values
    @cached_property
    def hist(self) -> dict[str, _Array]:
        return {k: _hist256(self.src(k)) for k in ("vi", "ir", "f")}

    # --- Mutinf binning: min-max stretch then round(x*255)
    @cached_property
    def mi_index(self) -> dict[str, _Array]:
        out = {}
        for k in ("vi", "ir", "f"):
            x = self.src(k)
            mx, mn = x.max(), x.min()
            y = (x - mn) / (mx - mn) if mx != mn else np.zeros_like(x)
            out[k] = np.floor(y * 255 + 0.5).astype(np.intp)
        return out

    # --- Qabf gradients on 255*x: (magnitude, orientation)
    @cached_property
    def qabf_grad(self) -> dict[str, tuple[_Array, _Array]]:
        out = {}
        for k in ("vi", "ir", "f"):
            p = 255.0 * self.src(k)
            sx = ndimage.convolve(p, _SOBEL_QABF_X, mode="constant")
            sy = ndimage.convolve(p, _SOBEL_QABF_Y, mode="constant")
            g = np.sqrt(sx * sx + sy * sy)
            zero = sx == 0
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.arctan(sy / np.where(zero, 1.0, sx))
            a[zero] = np.pi / 2
            out[k] = (g, a)
        return out

    # --- normalize1 images for Qcb / Qcv
    @cached_property
    def norm1(self) -> dict[str, _Array]:
        return {k: _normalize1(self.src(k)) for k in ("vi", "ir", "f")}

    # --- SSIM of each source against F
    @cached_property
    def ssim(self) -> dict[str, float]:
        w = _SSIM_WINDOW
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        f = self.f
        mu_f = _filter_valid(f, w)
        mu_f_sq = mu_f * mu_f
        sig_f = _filter_valid(f * f, w) - mu_f_sq
        out = {}
        for k in ("vi", "ir"):
            x = self.src(k)
            mu_x = _filter_valid(x, w)
            mu_x_sq = mu_x * mu_x
            mu_xf = mu_x * mu_f
            sig_x = _filter_valid(x * x, w) - mu_x_sq
            sig_xf = _filter_valid(x * f, w) - mu_xf
            with np.errstate(divide="ignore", invalid="ignore"):
                smap = ((2 * mu_xf + c1) * (2 * sig_xf + c2)) / ((mu_x_sq + mu_f_sq + c1) * (sig_x + sig_f + c2))
            out[k] = float(np.mean(smap)) if smap.size else math.nan
        return out

    # --- VIF pyramids and cleaned local statistics (shared by VIFF and VIFp_sum)
    @cached_property
    def vif_pyramid(self) -> dict[str, list[_Array]]:
        out = {}
        for k in ("vi", "ir", "f"):
            levels = [self.src(k)]
            for s in range(1, 4):
                levels.append(_filter_valid(levels[-1], _VIF_WINDOWS[s])[::2, ::2])
            out[k] = levels
        return out

    @cached_property
    def vif_stats(self) -> dict[str, list[tuple[_Array, _Array, _Array]]]:
        """Per source ('vi', 'ir') and scale: (g, sv_sq, sigma1_sq) after the Sheikh-Bovik clean-up."""
        pyr = self.vif_pyramid
        mu_f, var_f = [], []
        for s in range(4):
            d = pyr["f"][s]
            m = _filter_valid(d, _VIF_WINDOWS[s])
            mu_f.append(m)
            var_f.append(_filter_valid(d * d, _VIF_WINDOWS[s]) - m * m)
        out = {}
        for k in ("vi", "ir"):
            per_scale = []
            for s in range(4):
                win = _VIF_WINDOWS[s]
                ref, dist = pyr[k][s], pyr["f"][s]
                mu1, mu2 = _filter_valid(ref, win), mu_f[s]
                s1 = _filter_valid(ref * ref, win) - mu1 * mu1
                s2 = var_f[s].copy()
                s12 = _filter_valid(ref * dist, win) - mu1 * mu2
                s1[s1 < 0] = 0
                s2[s2 < 0] = 0
                g = s12 / (s1 + 1e-10)
                sv = s2 - g * s12
                m1 = s1 < 1e-10
                g[m1] = 0
                sv[m1] = s2[m1]
                s1[m1] = 0
                m2 = s2 < 1e-10
                g[m2] = 0
                sv[m2] = 0
                m3 = g < 0
                sv[m3] = s2[m3]
                g[m3] = 0
                sv[sv <= 1e-10] = 1e-10
                per_scale.append((g, sv, s1))
            out[k] = per_scale
        return out


def _vid_vind(stats: tuple[_Array, _Array, _Array], sigma_nsq: float) -> tuple[_Array, _Array]:
    g, sv, s1 = stats
    vid = np.log10(1 + g * g * s1 / (sv + sigma_nsq))
    vind = np.log10(1 + s1 / sigma_nsq)
    return vid, vind


# ----------------------------------------------------------------------------------------------------------
# Single-channel metric kernels (take a _Channel, return float)
# ----------------------------------------------------------------------------------------------------------

def _k_entropy(c: _Channel) -> float:
    return _entropy_counts(c.hist["f"], np.log2)


def _k_variance(c: _Channel) -> float:
    f = c.f
    return float(np.sqrt(np.sum((f - f.mean()) ** 2) / f.size))


def _mi_pair(ia: _Array, ib: _Array) -> float:
    joint = np.bincount((ia * 256 + ib).ravel(), minlength=65536).astype(np.float64)
    ha = np.bincount(ia.ravel(), minlength=256).astype(np.float64)
    hb = np.bincount(ib.ravel(), minlength=256).astype(np.float64)
    return _entropy_counts(ha, np.log) + _entropy_counts(hb, np.log) - _entropy_counts(joint, np.log)


def _k_mutinf(c: _Channel) -> float:
    idx = c.mi_index
    return _mi_pair(idx["vi"], idx["f"]) + _mi_pair(idx["ir"], idx["f"])


def _k_cross_entropy(c: _Channel) -> float:
    n = c.f.size
    pf = c.hist["f"] / n
    total = 0.0
    for k in ("vi", "ir"):
        ps = c.hist[k] / n
        m = (ps != 0) & (pf != 0)
        total += float(np.sum(ps[m] * np.log2(ps[m] / pf[m])))
    return total / 2.0


def _k_qabf(c: _Channel) -> float:
    tg, kg, dg, ta, ka, da = 0.9994, -15.0, 0.5, 0.9879, -22.0, 0.8
    gf, af = c.qabf_grad["f"]
    num = 0.0
    den = 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in ("vi", "ir"):
            gs, as_ = c.qabf_grad[k]
            G = np.where(gs > gf, gf / gs, np.where(gs == gf, gf, gs / gf))
            A = 1 - np.abs(as_ - af) / (np.pi / 2)
            q = (tg / (1 + np.exp(kg * (G - dg)))) * (ta / (1 + np.exp(ka * (A - da))))
            num = num + q * gs
            den = den + gs
        return float(np.sum(num) / np.sum(den))


def _k_qcb(c: _Channel) -> float:
    f0, f1, a = 15.3870, 1.3456, 0.7622
    h, w = c.f.shape
    u = _freqspace(w)[None, :] * (w / 30)
    v = _freqspace(h)[:, None] * (h / 30)
    r = np.sqrt(u * u + v * v)
    sd = np.exp(-((r / f0) ** 2)) - a * np.exp(-((r / f1) ** 2))
    x15 = np.arange(-15, 16, dtype=np.float64)
    cp = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in ("vi", "ir", "f"):
            x = _csf_filter(c.norm1[k], sd)
            num = _filter_same_zero(x, np.exp(-(x15 * x15) / 8.0), 1.0 / (2 * np.pi * 4.0))
            den = _filter_same_zero(x, np.exp(-(x15 * x15) / 32.0), 1.0 / (2 * np.pi * 16.0))
            cc = np.abs(num / den - 1)
            cp[k] = cc ** 3 / (cc ** 2 + 0.0001)
        qs = {}
        for k in ("vi", "ir"):
            mask = (cp[k] < cp["f"]).astype(np.float64)
            qs[k] = (cp[k] / cp["f"]) * mask + (cp["f"] / cp[k]) * (1 - mask)
        s = cp["vi"] * cp["vi"] + cp["ir"] * cp["ir"]
        q = (cp["vi"] * cp["vi"]) / s * qs["vi"] + (cp["ir"] * cp["ir"]) / s * qs["ir"]
    return float(np.mean(q))


def _k_qcv(c: _Channel) -> float:
    h, w = c.f.shape
    u = _freqspace(w)[None, :] * (w / 8)
    v = _freqspace(h)[:, None] * (h / 8)
    r = np.sqrt(u * u + v * v)
    theta = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    xf = c.norm1["f"]
    num = 0.0
    den = 0.0
    for k in ("vi", "ir"):
        x = c.norm1[k]
        gx = ndimage.correlate(x, _SOBEL_QCV_X, mode="constant")
        gy = ndimage.correlate(x, _SOBEL_QCV_Y, mode="constant")
        lam = _blocksum16(np.sqrt(gx * gx + gy * gy) ** 5)
        d = _blocksum16(_csf_filter(x - xf, theta) ** 2) / 256.0
        num = num + lam * d
        den = den + lam
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(num) / np.sum(den))


def _k_ssim(c: _Channel) -> float:
    return c.ssim["vi"] + c.ssim["ir"]


def _k_ssim_mean(c: _Channel) -> float:
    return (c.ssim["vi"] + c.ssim["ir"]) / 2.0


def _err(s: _Array, f: _Array) -> float:
    return float(np.sqrt(np.sum((s - f) ** 2)) / s.size)


def _k_psnr(c: _Channel) -> float:
    e = (_err(c.vi, c.f) + _err(c.ir, c.f)) / 2.0
    with np.errstate(divide="ignore"):
        return float(20 * np.log10(255.0 / np.sqrt(e)))


def _k_rmse(c: _Channel) -> float:
    return (_err(c.vi, c.f) + _err(c.ir, c.f)) / 2.0


def _k_avg_gradient(c: _Channel) -> float:
    gr, gc = np.gradient(c.f)
    h, w = c.f.shape
    return float(np.sum(np.sqrt((gr * gr + gc * gc) / 2)) / ((h - 1) * (w - 1)))


def _k_edge_intensity(c: _Channel) -> float:
    gx = ndimage.correlate(c.f, _SOBEL_EI, mode="nearest")
    gy = ndimage.correlate(c.f, _SOBEL_EI.T, mode="nearest")
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def _k_viff(c: _Channel) -> float:
    sigma_nsq, cst = 0.005 * 255 * 255, 1e-7
    p = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
    st = c.vif_stats
    fs = np.empty(4)
    for s in range(4):
        g1, g2 = st["vi"][s][0], st["ir"][s][0]
        vid1, vind1 = _vid_vind(st["vi"][s], sigma_nsq)
        vid2, vind2 = _vid_vind(st["ir"][s], sigma_nsq)
        pick1 = g1 < g2  # the source with the smaller g; IR on ties
        vid = np.where(pick1, vid1, vid2)
        vind = np.where(pick1, vind1, vind2)
        with np.errstate(divide="ignore", invalid="ignore"):
            fs[s] = np.sum(vid + cst) / np.sum(vind + cst)
    return float(np.sum(fs * p))


def _k_vifp_sum(c: _Channel) -> float:
    total = 0.0
    for k in ("vi", "ir"):
        num = den = 0.0
        for s in range(4):
            vid, vind = _vid_vind(c.vif_stats[k][s], 2.0)
            num += float(np.sum(vid))
            den += float(np.sum(vind))
        with np.errstate(divide="ignore", invalid="ignore"):
            total += float(np.divide(num, den))  # 0/0 -> NaN (constant source), as in MATLAB
    return total


def _k_scd(c: _Channel) -> float:
    return pearson(c.f - c.ir, c.vi) + pearson(c.f - c.vi, c.ir)


def _k_cc_mean(c: _Channel) -> float:
    return (pearson(c.f, c.vi) + pearson(c.f, c.ir)) / 2.0


def _spatial_frequency_whole(f: _Array) -> float:
    x = np.concatenate([f[:, :, 0], f[:, :, 1], f[:, :, 2]], axis=1) if f.ndim == 3 else f
    rf = np.sum(np.diff(x, axis=1) ** 2) / x.size
    cf = np.sum(np.diff(x, axis=0) ** 2) / x.size
    return float(np.sqrt(rf + cf))


_KERNELS: dict[str, Callable[[_Channel], float]] = {
    "Entropy": _k_entropy,
    "Variance": _k_variance,
    "Mutinf": _k_mutinf,
    "Cross_entropy": _k_cross_entropy,
    "Qabf": _k_qabf,
    "Qcb": _k_qcb,
    "Qcv": _k_qcv,
    "Ssim": _k_ssim,
    "Psnr": _k_psnr,
    "Rmse": _k_rmse,
    "Avg_gradient": _k_avg_gradient,
    "Edge_intensity": _k_edge_intensity,
    "VIFF": _k_viff,
    "VIFp_sum": _k_vifp_sum,
    "SCD": _k_scd,
    "CC_mean": _k_cc_mean,
    "SSIM_mean": _k_ssim_mean,
}
_WHOLE_IMAGE: dict[str, Callable[[_Array], float]] = {"Spatial_frequency": _spatial_frequency_whole}
assert set(_KERNELS) | set(_WHOLE_IMAGE) == set(METRIC_INFO)


def _evaluate(name: str, chans: list[_Channel], f: _Array) -> float:
    if name in _WHOLE_IMAGE:
        return _WHOLE_IMAGE[name](f)
    vals = [_KERNELS[name](c) for c in chans]
    return vals[0] if len(vals) == 1 else float(np.mean(vals))


def compute_fusion_metrics(vi: Any, ir: Any, fused: Any, names: Iterable[str] | None = None) -> dict[str, float]:
    """Compute several fusion metrics at once, sharing intermediate work.

    Args:
        vi: visible image, 0..255 values, (H, W) or (H, W, 3).
        ir: infrared image, 0..255 values, (H, W) or (H, W, 3).
        fused: fused image, 0..255 values, (H, W) or (H, W, 3).
        names: metric names (keys of :data:`METRIC_INFO`); all of them when None.

    Returns:
        ``{name: value}`` in the order of ``names`` (or of :data:`FUSION_METRIC_NAMES`).
    """
    names = list(FUSION_METRIC_NAMES if names is None else names)
    unknown = [n for n in names if n not in METRIC_INFO]
    if unknown:
        raise UnknownNameError(f"unknown fusion metric(s) {unknown}; known: {list(FUSION_METRIC_NAMES)}")
    chans, f = _split_channels(vi, ir, fused)
    return {n: _evaluate(n, chans, f) for n in names}


def _single(name: str, doc: str) -> Callable[[Any, Any, Any], float]:
    def metric(vi: Any, ir: Any, fused: Any) -> float:
        chans, f = _split_channels(vi, ir, fused)
        return _evaluate(name, chans, f)

    metric.__name__ = metric.__qualname__ = name
    info = METRIC_INFO[name]
    metric.__doc__ = (f"{doc}\n\n    Convention: {info['convention']}. "
                      f"{'Higher' if info['higher_is_better'] else 'Lower'} is better.\n\n"
                      "    Args: vi, ir, fused -- 0..255 arrays, (H, W) or (H, W, 3) (VIFB colour rule).\n"
                      "    Returns: float.")
    return metric


Entropy = _single("Entropy", "Entropy of the fused image (bits).")
Variance = _single("Variance", "Standard deviation of the fused image (VIFB calls it Variance).")
Mutinf = _single("Mutinf", "Mutual information MI(VI;F) + MI(IR;F) in nats.")
Cross_entropy = _single("Cross_entropy", "Mean relative entropy KL(source || F) in bits (VIFB 'cross entropy').")
Qabf = _single("Qabf", "Xydeas-Petrovic gradient-transfer metric Q^AB/F.")
Qcb = _single("Qcb", "Chen-Blum human-perception metric.")
Qcv = _single("Qcv", "Chen-Varshney regional metric.")
Ssim = _single("Ssim", "Sum of SSIM(VI,F) and SSIM(IR,F).")
Psnr = _single("Psnr", "VIFB PSNR in dB.")
Rmse = _single("Rmse", "VIFB 'RMSE' (Frobenius norm of the difference / pixel count).")
Spatial_frequency = _single("Spatial_frequency", "Spatial frequency of the fused image.")
Avg_gradient = _single("Avg_gradient", "Average gradient of the fused image.")
Edge_intensity = _single("Edge_intensity", "Edge intensity (mean Sobel magnitude) of the fused image.")
VIFF = _single("VIFF", "Han et al. 2013 visual-information-fidelity fusion metric.")
VIFp_sum = _single("VIFp_sum", "Sum over sources of the multiscale pixel-domain VIF (source as reference).")
SCD = _single("SCD", "Sum of the correlations of differences.")
CC_mean = _single("CC_mean", "Mean Pearson correlation of F with each source.")
SSIM_mean = _single("SSIM_mean", "Mean of SSIM(VI,F) and SSIM(IR,F) (= Ssim / 2).")
