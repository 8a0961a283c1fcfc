"""Classical registration baselines: phase correlation, ECC (OpenCV) and elastix (optional).

Every registrar follows :class:`alignfuse.stages.Registrar`: ``(moving (B,1,H,W), fixed (B,1,H,W))``
float32 in ``[0, 1]`` -> :class:`~alignfuse.stages.RegistrationResult`. The batch is processed item
by item in numpy float32; the field follows :mod:`alignfuse.warp`
(``aligned[y, x] = moving[y + dy, x + dx]``) and ``aligned`` is always produced by
:func:`alignfuse.warp.warp` from that field, so image and field can never disagree.

Conventions checked by ``tests/test_baselines.py``:

* ``cv2.phaseCorrelate(fixed, moving)`` returns the field's ``(dx, dy)`` directly; the numpy
  cross-power spectrum with the same sign is ``F(moving) * conj(F(fixed))``. (OpenCV 5.0's
  ``phaseCorrelate`` with a window writes the windowed image back into its inputs when their size
  needs no DFT padding, e.g. 96x128: it is only ever given copies here.)
* ``cv2.findTransformECC(template=fixed, input=moving)`` returns ``W`` with
  ``fixed(p) ~ moving(W p)``, i.e. ``W`` is the sampling matrix of :func:`alignfuse.warp.field_from_affine`.
* elastix's transform maps fixed-image points to moving-image points, so transformix's
  deformation field ``T(x) - x`` (unit spacing, zero origin) is our field as it is.
"""

from __future__ import annotations

import functools
import math
import tempfile
from typing import Any, Callable

import cv2
import numpy as np
import torch

from .. import warp as _warp
from ..errors import MissingDependency
from ..stages import IdentityRegistrar, RegistrationResult

__all__ = [
    "PhaseCorrelationRegistrar",
    "ECCRegistrar",
    "ElastixRegistrar",
    "IdentityRegistrar",
    "REGISTRARS",
    "ELASTIX_MISSING",
    "gradient_magnitude",
    "pearson",
    "phase_correlation",
    "field_from_matrix",
]

ELASTIX_MISSING = "the elastix registrar needs the optional extra: pip install 'alignfuse[baselines]'"

_NCC_TOL = 0.01  # an alignment that lowers the global Pearson by more than this is suspect


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _check_pair(moving: torch.Tensor, fixed: torch.Tensor) -> None:
    if moving.ndim != 4 or fixed.ndim != 4:
        raise ValueError(f"moving and fixed must be (B, 1, H, W), got {tuple(moving.shape)} and {tuple(fixed.shape)}")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} differ in shape")
    if moving.shape[1] != 1:
        raise ValueError(f"registrars take single-channel images, got {moving.shape[1]} channels")


def _np(t: torch.Tensor) -> np.ndarray:
    """(H, W) tensor -> contiguous float32 numpy array."""
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """Sobel (3x3) gradient magnitude of a 2-D float image, float32."""
    img = np.asarray(img, dtype=np.float32)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx * gx + gy * gy)


def pearson(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Global Pearson correlation of two images (0.0 where either is constant): :func:`alignfuse.metrics.ncc`."""
    from ..metrics.registration import ncc

    a = _np(a) if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    b = _np(b) if isinstance(b, torch.Tensor) else np.asarray(b, dtype=np.float64)
    return ncc(a.reshape(1, -1), b.reshape(1, -1))


def _upsampled_peak(spec: np.ndarray, est: tuple[float, float], upsample: int, radius: float = 1.5) -> tuple[float, float]:
    """Refine the peak of ``ifft2(spec)`` around ``est = (dx, dy)`` on a grid of step ``1/upsample``.

    Matrix-multiply DFT of Guizar-Sicairos et al. (2008): the correlation surface is evaluated only
    in a ``±radius`` px window, so the cost is O(n H W) with n = 2 * radius * upsample + 1.
    """
    h, w = spec.shape
    n = int(math.ceil(2 * radius * upsample)) + 1
    offs = (np.arange(n) - (n - 1) / 2.0) / upsample
    xs = est[0] + offs
    ys = est[1] + offs
    fy = np.fft.fftfreq(h)  # cycles per pixel, signed
    fx = np.fft.fftfreq(w)
    ey = np.exp(2j * np.pi * np.outer(ys, fy))  # (n, H)
    ex = np.exp(2j * np.pi * np.outer(fx, xs))  # (W, n)
    surf = np.real(ey @ spec @ ex)  # (n_y, n_x)
    iy, ix = np.unravel_index(int(np.argmax(surf)), surf.shape)
    return float(xs[ix]), float(ys[iy])


def phase_correlation(
    moving: np.ndarray, fixed: np.ndarray, upsample: int = 20, use_gradients: bool = True
) -> tuple[float, float, float]:
    """Translation ``(dx, dy)`` with ``fixed(p) ~ moving(p + (dx, dy))`` and the peak response.

    ``cv2.phaseCorrelate`` (Hanning window, 5x5 weighted centroid) gives the peak and its
    response (energy in the 5x5 around the peak, 1 for a single clean peak); for ``upsample > 1``
    the estimate is refined by an upsampled DFT of the same windowed cross-power spectrum, which
    removes the centroid's bias on fractional shifts. On a constant image the result is
    ``(0, 0, 0)``.
    """
    a = gradient_magnitude(moving) if use_gradients else np.asarray(moving, dtype=np.float32)
    b = gradient_magnitude(fixed) if use_gradients else np.asarray(fixed, dtype=np.float32)
    h, w = a.shape
    if h < 2 or w < 2 or float(a.std()) < 1e-8 or float(b.std()) < 1e-8:
        return 0.0, 0.0, 0.0
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    # copies: OpenCV 5.0 multiplies the window into its inputs in place (when no DFT padding is needed)
    (dx, dy), response = cv2.phaseCorrelate(b.copy(), a.copy(), win)
    if not (np.isfinite(dx) and np.isfinite(dy) and np.isfinite(response)):
        return 0.0, 0.0, 0.0
    if upsample and upsample > 1:
        am = (a - a.mean()) * win
        bm = (b - b.mean()) * win
        spec = np.fft.fft2(am) * np.conj(np.fft.fft2(bm))
        spec /= np.maximum(np.abs(spec), 1e-12)
        # wrap the estimate into the principal range the DFT sees
        dx = (dx + w / 2.0) % w - w / 2.0
        dy = (dy + h / 2.0) % h - h / 2.0
        dx, dy = _upsampled_peak(spec, (dx, dy), int(upsample))
    return float(dx), float(dy), float(response)


def field_from_matrix(matrix: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(2, H, W) float32 field of a 2x3 affine or 3x3 homography *sampling* matrix (output -> moving)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (3, 3) and not np.allclose(m[2], [0.0, 0.0, 1.0]):
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        den = m[2, 0] * xs + m[2, 1] * ys + m[2, 2]
        den = np.where(np.abs(den) < 1e-12, 1e-12, den)
        u = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / den - xs
        v = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / den - ys
        return torch.from_numpy(np.stack([u, v]).astype(np.float32))
    aff = torch.from_numpy(m[:2].astype(np.float64))[None]
    return _warp.field_from_affine(aff, height, width)[0].to(torch.float32)


def _finish(moving: torch.Tensor, fields: list[torch.Tensor], diags: list[dict[str, Any]]) -> RegistrationResult:
    field = torch.stack(fields).to(device=moving.device, dtype=moving.dtype)
    aligned = _warp.warp(moving, field)
    return RegistrationResult(aligned=aligned, field=field, diagnostics=diags)


class _PairwiseRegistrar:
    """Registrars that work one numpy pair at a time: ``register_pair(mov, fix) -> ((2, H, W) field, diagnostics)``;
    this runs it over the batch and warps the input with the fields (:func:`_finish`)."""

    def register_pair(self, mov: np.ndarray, fix: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        _check_pair(moving, fixed)
        fields, diags = [], []
        for i in range(moving.shape[0]):
            f, d = self.register_pair(_np(moving[i, 0]), _np(fixed[i, 0]))
            fields.append(f)
            diags.append(d)
        return _finish(moving, fields, diags)


# ----------------------------------------------------------------------------------------------
# phase correlation
# ----------------------------------------------------------------------------------------------


class PhaseCorrelationRegistrar:
    """Global translation by phase correlation, on Sobel gradient magnitudes by default.

    Gradient magnitude is blind to the sign of contrast, so the estimate survives the
    contrast inversions common between IR and visible images (hot = bright, but a dark
    object on a bright sky in the visible). The field is constant.

    diagnostics: ``method``, ``shift`` (dx, dy), ``response`` (peak energy in [0, 1]),
    ``confidence`` (= response), ``suspect`` (response < ``min_response``).
    """

    def __init__(self, upsample: int = 20, use_gradients: bool = True, min_response: float = 0.1):
        self.upsample = int(upsample)
        self.use_gradients = bool(use_gradients)
        self.min_response = float(min_response)

    def estimate(self, moving: np.ndarray, fixed: np.ndarray) -> tuple[float, float, float]:
        """numpy (H, W) pair -> (dx, dy, response)."""
        return phase_correlation(moving, fixed, upsample=self.upsample, use_gradients=self.use_gradients)

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        _check_pair(moving, fixed)
        b, _, h, w = moving.shape
        fields, diags = [], []
        for i in range(b):
            dx, dy, resp = self.estimate(_np(moving[i, 0]), _np(fixed[i, 0]))
            suspect = bool(resp < self.min_response)
            fallback = None
            if suspect:  # a weak peak is as likely wrong as right: do nothing rather than guess
                fallback = f"weak phase-correlation peak ({resp:.3f} < {self.min_response}); kept the input"
            f = torch.zeros(2, h, w, dtype=torch.float32)
            if not suspect:
                f[0] = dx
                f[1] = dy
            fields.append(f)
            diags.append(
                {
                    "method": "phase",
                    "shift": (dx, dy),
                    "response": resp,
                    "confidence": resp,
                    "suspect": suspect,
                    "fallback": fallback,
                }
            )
        return _finish(moving, fields, diags)


# ----------------------------------------------------------------------------------------------
# ECC
# ----------------------------------------------------------------------------------------------

_MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}


class ECCRegistrar(_PairwiseRegistrar):
    """OpenCV ``findTransformECC`` on a Gaussian pyramid, coarse to fine.

    ``template = fixed`` and ``input = moving``; the returned ``W`` satisfies
    ``fixed(p) ~ moving(W p)``, so it is the sampling matrix of our field
    (:func:`field_from_matrix`). Between pyramid levels (``cv2.pyrDown``: coarse pixel ``i`` sits
    on fine pixel ``2 i``) the matrix is conjugated by ``S = diag(2, 2, 1)``: ``W_fine = S W S^-1``
    (translation doubled, linear part kept, perspective terms halved).

    With ``init='phase'`` (default) the coarsest level starts from the phase-correlation
    translation (on gradient magnitudes), which is what lets ECC catch shifts of several
    pixels; where the phase peak is weak (response < ``min_response``) or the shift implausible
    (beyond ``max_displacement * max(H, W)``) it starts from identity.

    ECC raising ``cv2.error`` (non-convergence, constant image) on the finest level, a
    degenerate matrix, or a result whose Pearson correlation with ``fixed`` is below that of the
    initialisation all make the registrar fall back to its initialisation; ``diagnostics``
    then has ``suspect=True`` and ``fallback`` says why (``fallback`` is ``None`` otherwise).
    A failure on a coarse level alone only skips that level (listed in ``level_failures``).
    "Degenerate" means non-finite, a Jacobian determinant outside (0.2, 5), or an image corner
    moved by more than ``max_displacement * max(H, W)`` pixels away from the initialisation.

    diagnostics: ``method``, ``motion``, ``matrix`` (3x3 nested list), ``init``, ``init_shift``,
    ``correlation`` (ECC's returned coefficient, or the Pearson of the fallback alignment),
    ``confidence`` (= correlation), ``ncc_before``, ``ncc_after`` (global Pearson of moving /
    aligned with fixed, on gradient magnitudes when ``use_gradients``, as ``ncc_space`` says),
    ``levels``, ``level_failures``, ``suspect``, ``fallback``, ``estimated_at`` ((H, W) the matrix
    was estimated at).

    ``max_size``: estimate on the pair shrunk by ``cv2.pyrDown`` until its long side is at most this
    (``None``: at full size) and lift the matrix back with the same conjugation, so the field still
    covers the input grid; the correlations in ``diagnostics`` are then those of the shrunk pair.
    1024 by default: no change up to 1024 px (every dataset we evaluate on), and a 3840x2160 pair is
    registered about 5x faster for a few hundredths of a pixel (``benchmarks/bench_ecc_size.py``).
    """

    def __init__(
        self,
        motion: str = "affine",
        levels: int = 3,
        iterations: int = 100,
        eps: float = 1e-5,
        use_gradients: bool = False,
        init: str = "phase",
        gauss_filt_size: int = 5,
        min_size: int = 16,
        min_response: float = 0.1,
        upsample: int = 20,
        max_displacement: float = 0.25,
        max_size: int | None = 1024,
    ):
        if motion not in _MOTIONS:
            raise ValueError(f"motion must be one of {sorted(_MOTIONS)}, got {motion!r}")
        if init not in ("phase", "identity"):
            raise ValueError(f"init must be 'phase' or 'identity', got {init!r}")
        if gauss_filt_size < 1 or gauss_filt_size % 2 == 0:
            raise ValueError(f"gauss_filt_size must be a positive odd integer, got {gauss_filt_size}")
        self.motion = motion
        self.levels = max(1, int(levels))
        self.iterations = int(iterations)
        self.eps = float(eps)
        self.use_gradients = bool(use_gradients)
        self.init = init
        self.gauss_filt_size = int(gauss_filt_size)
        self.min_size = int(min_size)
        self.min_response = float(min_response)
        self.max_displacement = float(max_displacement)
        if max_size is not None and max_size < 2 * min_size:
            raise ValueError(f"max_size must be at least 2 * min_size = {2 * min_size}, got {max_size}")
        self.max_size = max_size
        self.phase = PhaseCorrelationRegistrar(upsample=upsample, use_gradients=True, min_response=min_response)

    # -- one image pair -----------------------------------------------------------------------

    def _initial(self, mov: np.ndarray, fix: np.ndarray) -> tuple[np.ndarray, str, tuple[float, float]]:
        w0 = np.eye(3)
        if self.init == "identity":
            return w0, "identity", (0.0, 0.0)
        dx, dy, resp = self.phase.estimate(mov, fix)
        if resp < self.min_response:
            return w0, f"identity (phase response {resp:.3f} < {self.min_response})", (0.0, 0.0)
        limit = self.max_displacement * max(mov.shape)
        if max(abs(dx), abs(dy)) > limit:
            return w0, f"identity (phase shift ({dx:.1f}, {dy:.1f}) beyond {limit:.0f} px)", (0.0, 0.0)
        w0[0, 2], w0[1, 2] = dx, dy
        return w0, "phase", (dx, dy)

    def _pyramid(self, img: np.ndarray, n: int) -> list[np.ndarray]:
        pyr = [img]
        for _ in range(n - 1):
            pyr.append(cv2.pyrDown(pyr[-1], borderType=cv2.BORDER_REPLICATE))
        return pyr

    def _n_levels(self, h: int, w: int) -> int:
        n = 1
        while n < self.levels and min(h, w) / 2**n >= self.min_size:
            n += 1
        return n

    def _sane(self, m: np.ndarray, init: np.ndarray, h: int, w: int) -> bool:
        """Finite, orientation-preserving, not wildly scaled, and no corner moved further than
        ``max_displacement * max(H, W)`` from where the initialisation put it (ECC lost in a far
        local optimum)."""
        if not np.all(np.isfinite(m)):
            return False
        det = float(np.linalg.det(m[:2, :2]))
        if not 0.2 < det < 5.0:
            return False
        corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
        mapped = corners @ m.T
        if np.any(mapped[:, 2] <= 1e-3):
            return False
        start = corners @ init.T
        disp = mapped[:, :2] / mapped[:, 2:] - start[:, :2] / start[:, 2:]
        return float(np.abs(disp).max()) <= self.max_displacement * max(h, w)

    def register_pair(self, mov: np.ndarray, fix: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
        """numpy (H, W) pair -> ((2, H, W) field, diagnostics)."""
        h, w = mov.shape
        halvings = 0  # stop before the short side gets too small for the pyramid (very elongated images)
        while (self.max_size is not None and max(h, w) / 2**halvings > self.max_size
               and min(h, w) / 2 ** (halvings + 1) >= 2 * self.min_size):
            halvings += 1
        for _ in range(halvings):
            mov = cv2.pyrDown(mov, borderType=cv2.BORDER_REPLICATE)
            fix = cv2.pyrDown(fix, borderType=cv2.BORDER_REPLICATE)
        matrix, field, diag = self._estimate(mov, fix)
        diag["estimated_at"] = tuple(mov.shape)
        if not halvings:
            return field, diag
        s = np.diag([2.0**halvings, 2.0**halvings, 1.0])
        matrix = s @ matrix @ np.linalg.inv(s)
        diag["matrix"] = matrix.tolist()
        diag["init_shift"] = tuple(2.0**halvings * v for v in diag["init_shift"])
        return field_from_matrix(matrix, h, w), diag

    def _estimate(self, mov: np.ndarray, fix: np.ndarray) -> tuple[np.ndarray, torch.Tensor, dict[str, Any]]:
        """numpy (H, W) pair -> (3x3 sampling matrix, its (2, H, W) field, diagnostics) at this size."""
        h, w = mov.shape
        w_init, init_name, init_shift = self._initial(mov, fix)
        n = self._n_levels(h, w)
        src_m = gradient_magnitude(mov) if self.use_gradients else mov
        src_f = gradient_magnitude(fix) if self.use_gradients else fix
        pyr_m = self._pyramid(src_m, n)
        pyr_f = self._pyramid(src_f, n)
        s = 2.0 ** (n - 1)
        # coarse pixel i sits on fine pixel s*i, so W_coarse = S^-1 W_fine S with S = diag(s, s, 1)
        cur = np.diag([1 / s, 1 / s, 1.0]) @ w_init @ np.diag([s, s, 1.0])
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.iterations, self.eps)
        up = np.diag([2.0, 2.0, 1.0])
        failures: list[str] = []
        rho = float("nan")
        finest_failed = False
        for lev in range(n - 1, -1, -1):
            warp_m = cur.astype(np.float32) if self.motion == "homography" else cur[:2].astype(np.float32).copy()
            try:
                rho, out = cv2.findTransformECC(
                    pyr_f[lev], pyr_m[lev], warp_m, _MOTIONS[self.motion], criteria, None, self.gauss_filt_size
                )
                nxt = np.eye(3)
                nxt[: out.shape[0]] = out
                cur = nxt
            except cv2.error as exc:
                text = " ".join(str(exc).split())
                msg = text.split("error: ", 1)[-1].split(" in function")[0] or repr(exc)
                failures.append(f"level {lev}: {msg}")
                if lev == 0:
                    finest_failed = True
            if lev > 0:
                cur = up @ cur @ np.linalg.inv(up)

        fallback = None
        if finest_failed:
            # the full OpenCV message stays in diagnostics["level_failures"]
            fallback = f"ECC did not converge; fell back to the {init_name} estimate"
        elif not self._sane(cur, w_init, h, w):
            fallback = (
                f"ECC gave a degenerate or implausibly large warp; fell back to the {init_name} initialisation"
            )

        mov_t = torch.from_numpy(mov)[None, None]
        rep_fix = gradient_magnitude(fix) if self.use_gradients else fix

        def ncc_of(f: torch.Tensor) -> float:
            """Pearson of the aligned image with fixed, in the space ECC works in."""
            aligned = _warp.warp(mov_t, f[None])[0, 0].numpy()
            return pearson(gradient_magnitude(aligned) if self.use_gradients else aligned, rep_fix)

        ncc_before = pearson(src_m, src_f)
        field = field_init = field_from_matrix(w_init, h, w)
        ncc_init = ncc_of(field_init)
        if fallback is None:
            field = field_from_matrix(cur, h, w)
            ncc_ecc = ncc_of(field)
            if ncc_ecc < ncc_init - _NCC_TOL:
                fallback = (
                    f"ECC result (ncc {ncc_ecc:.3f}) worse than its {init_name} initialisation "
                    f"(ncc {ncc_init:.3f}); fell back to the initialisation"
                )
        if fallback is not None:
            cur, field = w_init, field_init
        ncc_after = ncc_init if fallback is not None else ncc_ecc
        if fallback is not None or not np.isfinite(rho):
            rho = ncc_after
        diag = {
            "method": "ecc",
            "motion": self.motion,
            "matrix": cur.tolist(),
            "init": init_name,
            "init_shift": init_shift,
            "correlation": float(rho),
            "confidence": float(rho),
            "ncc_before": ncc_before,
            "ncc_after": ncc_after,
            "ncc_space": "gradient" if self.use_gradients else "intensity",
            "levels": n,
            "level_failures": failures,
            "suspect": bool(fallback is not None or ncc_after < ncc_before - _NCC_TOL),
            "fallback": fallback,
        }
        return cur, field, diag



# ----------------------------------------------------------------------------------------------
# elastix (optional)
# ----------------------------------------------------------------------------------------------


def _import_itk():
    try:
        import itk  # noqa: PLC0415  (optional dependency, imported lazily)

        itk.ParameterObject  # noqa: B018  (the elastix wrapping, not plain ITK)
    except (ImportError, AttributeError) as exc:
        raise MissingDependency(ELASTIX_MISSING) from exc
    return itk


class ElastixRegistrar(_PairwiseRegistrar):
    """Dense B-spline registration with elastix (Mattes mutual information), via itk-elastix.

    Needs the optional extra ``alignfuse[baselines]``; constructing it without ``itk-elastix``
    raises :class:`~alignfuse.errors.MissingDependency` (an ``ImportError``) with the install command. ``transforms`` lists elastix default
    parameter maps run in sequence (e.g. ``("translation", "bspline")`` for a rigid
    pre-alignment); the first metric of every map is set to ``metric``. The field is
    transformix's deformation field (unit spacing, zero origin: pixels), which already is our
    ``aligned[p] = moving[p + u(p)]`` convention. On an elastix error the field is zero and the
    item is marked suspect with ``fallback`` saying why.

    diagnostics: ``method``, ``ncc_before``, ``ncc_after``, ``folding_fraction``, ``suspect``, ``fallback``.
    """

    def __init__(
        self,
        transforms: tuple[str, ...] = ("bspline",),
        grid_spacing: float = 16.0,
        resolutions: int = 3,
        iterations: int = 256,
        metric: str = "AdvancedMattesMutualInformation",
        histogram_bins: int = 32,
        threads: int | None = None,
    ):
        self._itk = _import_itk()
        self.transforms = tuple(transforms)
        self.grid_spacing = float(grid_spacing)
        self.resolutions = int(resolutions)
        self.iterations = int(iterations)
        self.metric = metric
        self.histogram_bins = int(histogram_bins)
        self.threads = threads

    def _parameters(self):
        itk = self._itk
        po = itk.ParameterObject.New()
        for name in self.transforms:
            pm = po.GetDefaultParameterMap(name, self.resolutions, self.grid_spacing)
            metrics = list(pm["Metric"]) if "Metric" in pm else [self.metric]
            metrics[0] = self.metric
            pm["Metric"] = metrics
            pm["NumberOfHistogramBins"] = [str(self.histogram_bins)]
            pm["MaximumNumberOfIterations"] = [str(self.iterations)]
            po.AddParameterMap(pm)
        return po

    def register_pair(self, mov: np.ndarray, fix: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
        itk = self._itk
        h, w = mov.shape
        fixed_img = itk.GetImageFromArray(np.ascontiguousarray(fix, dtype=np.float32))
        moving_img = itk.GetImageFromArray(np.ascontiguousarray(mov, dtype=np.float32))
        fallback = None
        try:
            kwargs: dict[str, Any] = {"parameter_object": self._parameters(), "log_to_console": False}
            if self.threads is not None:
                kwargs["number_of_threads"] = int(self.threads)
            _, result_params = itk.elastix_registration_method(fixed_img, moving_img, **kwargs)
            # transformix writes deformationField.nii into its output directory (the working directory by
            # default): a private one, so runs neither litter the user's folder nor overwrite each other's file
            with tempfile.TemporaryDirectory(prefix="alignfuse-transformix-") as out_dir:
                deformation = itk.transformix_deformation_field(moving_img, result_params, output_directory=out_dir,
                                                                log_to_console=False)
            arr = np.asarray(itk.GetArrayFromImage(deformation), dtype=np.float32).reshape(h, w, 2)
            field = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
            if not torch.isfinite(field).all():
                raise RuntimeError("non-finite deformation field")
        except Exception as exc:  # elastix reports failures as generic RuntimeErrors
            fallback = f"elastix failed ({type(exc).__name__}: {exc}); fell back to identity"
            field = torch.zeros(2, h, w)
        mov_t = torch.from_numpy(np.ascontiguousarray(mov, dtype=np.float32))[None, None]
        ncc_before = pearson(mov, fix)
        ncc_after = pearson(_warp.warp(mov_t, field[None])[0, 0], fix)
        folding = float(_warp.folding_fraction(field[None])[0])
        diag = {
            "method": "elastix",
            "ncc_before": ncc_before,
            "ncc_after": ncc_after,
            "folding_fraction": folding,
            "suspect": bool(fallback is not None or folding > 0.01 or ncc_after < ncc_before - _NCC_TOL),
            "fallback": fallback,
        }
        return field, diag



REGISTRARS: dict[str, Callable[[], Any]] = {
    "identity": IdentityRegistrar,
    "phase": PhaseCorrelationRegistrar,
    "ecc": ECCRegistrar,
    # ECC on Sobel magnitudes: survives contrast inversion between IR and VIS (cross-modal)
    "eccgrad": functools.partial(ECCRegistrar, use_gradients=True),
    "elastix": ElastixRegistrar,
}


def _mind(**kwargs):
    from .instance import MINDRegistrar  # noqa: PLC0415  (kornia-based; keeps this module numpy/OpenCV only)

    return MINDRegistrar(**kwargs)


# phase correlation + affine + smooth deformable field on MIND descriptors (registration/instance.py)
REGISTRARS["mind"] = _mind
REGISTRARS["mindaffine"] = functools.partial(_mind, deformable=False)


def _global(**kwargs):
    from .global_search import GlobalSearchRegistrar  # noqa: PLC0415  (torch-based; see _mind)

    return GlobalSearchRegistrar(**kwargs)


# cross-modal global search for real rigs (offset, field of view, roll, perspective): registration/global_search.py
REGISTRARS["global"] = _global
