"""Registration metrics: registered IR vs ground-truth IR, and end-point error of displacement fields.

Conventions:

* Images are greyscale in **[0, 1]** (float numpy arrays or torch tensors; shapes (H, W), (1, H, W) or
  (1, 1, H, W)). They are converted to float64 numpy before computing.
* ``mse`` is the plain mean of squared differences on the [0, 1] scale (UMF-CMGR ``Evaluation/metrics.py``).
* ``ncc`` is the *global* Pearson correlation with population (1/N) statistics. Unlike UMF-CMGR, which adds
  asymmetric epsilons (1e-5, 1e-6) to the two variances, ``eps`` here only replaces a zero denominator:
  the result is ``cov / max(sqrt(var_a * var_b), eps)``, so a constant image gives 0.0 instead of 0/0 and
  any image with a standard deviation above ~1e-6 is unaffected.
* ``mutual_information`` quantises each image as ``clip(floor(x * (bins-1) + 0.5), 0, bins-1)`` (256 levels
  by default, i.e. the 8-bit value), builds the joint histogram and returns ``H(a) + H(b) - H(a, b)`` in the
  given log ``base`` (default e: **nats**; pass ``base=2`` for bits). No min-max stretching (unlike VIFB's
  fusion ``Mutinf``).
* Fields are (2, H, W) (or (1, 2, H, W)) pixel displacements, channel 0 = dx, channel 1 = dy. The end-point
  error is the per-pixel Euclidean norm of the difference, in pixels; ``p95`` is numpy's linear-interpolated
  95th percentile. ``valid`` (boolean (H, W)) restricts EPE to valid pixels; with no valid pixel both are NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["mse", "ncc", "mutual_information", "epe", "compute_registration_metrics", "check_point_errors",
           "target_registration_error"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _image(x: Any, what: str) -> np.ndarray:
    a = _to_numpy(x)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a greyscale image (H, W), (1, H, W) or (1, 1, H, W), got {a.shape}")
    return a


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _image(a, "a"), _image(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    return x, y


def mse(a: Any, b: Any) -> float:
    """Mean squared difference of two [0, 1] images (mean over pixels). Lower is better."""
    x, y = _pair(a, b)
    return float(np.mean((x - y) ** 2))


def ncc(a: Any, b: Any, eps: float = 1e-12) -> float:
    """Global normalised cross-correlation (Pearson r, population statistics), in [-1, 1]. Higher is better.

    ``eps`` only avoids 0/0: the denominator is ``max(sqrt(var_a * var_b), eps)``, so a constant image
    gives 0.0.
    """
    from .fusion import pearson  # the one numpy Pearson (MATLAB corr2, validated against VIFB)

    x, y = _pair(a, b)
    x0, y0 = x - x.mean(), y - y.mean()
    if math.sqrt(float(np.mean(x0 * x0)) * float(np.mean(y0 * y0))) < eps:
        return 0.0
    return pearson(x.astype(np.float64), y.astype(np.float64))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def mutual_information(a: Any, b: Any, bins: int = 256, base: float = math.e) -> float:
    """Mutual information of two [0, 1] images from their joint ``bins`` x ``bins`` histogram.

    Each image is quantised as ``clip(floor(x * (bins - 1) + 0.5), 0, bins - 1)``; the result is
    ``H(a) + H(b) - H(a, b)`` in units of log ``base`` (default e: nats). Higher is better.
    ``mutual_information(a, a)`` equals the entropy of the quantised ``a``.
    """
    x, y = _pair(a, b)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    qx = np.clip(np.floor(x * (bins - 1) + 0.5), 0, bins - 1).astype(np.intp).ravel()
    qy = np.clip(np.floor(y * (bins - 1) + 0.5), 0, bins - 1).astype(np.intp).ravel()
    joint = np.bincount(qx * bins + qy, minlength=bins * bins)
    hx = _entropy(np.bincount(qx, minlength=bins))
    hy = _entropy(np.bincount(qy, minlength=bins))
    mi = hx + hy - _entropy(joint)
    return mi / math.log(base)


def _field(x: Any, what: str) -> np.ndarray:
    a = _to_numpy(x)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] != 2:
        raise ValueError(f"{what}: expected a field of shape (2, H, W) or (1, 2, H, W), got {a.shape}")
    return a


def epe(field_pred: Any, field_gt: Any, valid: Any | None = None) -> dict[str, float]:
    """End-point error between two displacement fields, in pixels. Lower is better.

    Args:
        field_pred: predicted field, (2, H, W) or (1, 2, H, W), channels (dx, dy) in pixels.
        field_gt: ground-truth field, same layout.
        valid: optional boolean mask (H, W) (or (1, H, W), (1, 1, H, W)); only True pixels count.

    Returns:
        ``{"mean": mean EPE, "p95": 95th percentile (linear interpolation)}``; NaN for both when no pixel is
        valid.
    """
    p, g = _field(field_pred, "field_pred"), _field(field_gt, "field_gt")
    if p.shape != g.shape:
        raise ValueError(f"field shapes differ: {p.shape} vs {g.shape}")
    d = p - g
    err = np.sqrt(d[0] ** 2 + d[1] ** 2)
    if valid is not None:
        m = _to_numpy(valid) != 0
        while m.ndim > 2 and m.shape[0] == 1:
            m = m[0]
        if m.shape != err.shape:
            raise ValueError(f"valid mask has shape {m.shape}, fields have {err.shape}")
        err = err[m]
    else:
        err = err.ravel()
    if err.size == 0:
        return {"mean": math.nan, "p95": math.nan}
    return {"mean": float(err.mean()), "p95": float(np.percentile(err, 95))}


def compute_registration_metrics(
    registered: Any,
    gt: Any,
    field_pred: Any | None = None,
    field_gt: Any | None = None,
    valid: Any | None = None,
) -> dict[str, float]:
    """Registration metrics of a registered IR image against the ground-truth (aligned) IR.

    Args:
        registered, gt: [0, 1] greyscale images (see module conventions).
        field_pred, field_gt: optional (2, H, W) pixel fields; give both or neither.
        valid: optional boolean (H, W) mask, used for the EPE only (MSE/NCC/MI use all pixels).

    Returns:
        ``{"MSE", "NCC", "MI"}`` (MI in nats, 256 bins), plus ``"EPE_mean"`` and ``"EPE_p95"`` when fields
        are given.
    """
    out = {"MSE": mse(registered, gt), "NCC": ncc(registered, gt), "MI": mutual_information(registered, gt)}
    if (field_pred is None) != (field_gt is None):
        raise ValueError("give both field_pred and field_gt, or neither")
    if field_pred is not None:
        e = epe(field_pred, field_gt, valid)
        out["EPE_mean"] = e["mean"]
        out["EPE_p95"] = e["p95"]
    return out


def check_point_errors(ir_coordinates: Any, points: Any) -> np.ndarray:
    """(N, 2) error vectors (predicted - true IR location, raw IR pixels) of a registration at its check points.

    ir_coordinates: (2, H, W) for every visible pixel its (x, y) position in the IR as delivered
    (:func:`alignfuse.io.field_to_ir_coordinates`); points: (N, 4) rows ``vis_x, vis_y, ir_x, ir_y`` (the
    ``roadscene_raw`` check-point format). The coordinates are read at the visible points bilinearly."""
    import cv2

    coords = _to_numpy(ir_coordinates).astype(np.float32)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 4)
    x = pts[:, 0].astype(np.float32)[None]
    y = pts[:, 1].astype(np.float32)[None]
    pred = np.stack([cv2.remap(np.ascontiguousarray(c), x, y, cv2.INTER_LINEAR)[0] for c in coords], 1)
    return pred - pts[:, 2:4]


def target_registration_error(ir_coordinates: Any, points: Any) -> float:
    """Mean check-point error (raw IR pixels) of a registration: the mean length of :func:`check_point_errors`."""
    err = check_point_errors(ir_coordinates, points)
    return float(np.hypot(err[:, 0], err[:, 1]).mean())

