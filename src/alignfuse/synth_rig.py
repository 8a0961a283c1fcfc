"""Synthetic fixed rigs: aligned pairs re-delivered through one IR camera model, with per-frame jitter.

A rig is a homography ``H`` (visible pixel -> raw IR pixel, the convention of rig files,
:mod:`alignfuse.registration.rig`) and the IR sensor's ``ir_size``. :func:`deliver_ir` renders what that IR
camera would record of an aligned IR image; :func:`jittered` perturbs ``H`` by a small random translation per
frame (a rig that is only *nearly* fixed: vibration, rolling shutter).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["example_rig", "jittered", "deliver_ir", "true_field", "seen_by_ir"]


def example_rig(vis_size: tuple[int, int], ir_size: tuple[int, int], shift: tuple[float, float] = (28.0, -17.0),
                scale: float = 0.88, angle_deg: float = 2.5, perspective: float = 2e-5) -> np.ndarray:
    """A plausible rig (visible pixel -> raw IR pixel): the IR sees a wider field (``scale`` < 1 IR px per visible
    px after matching widths), rolled by ``angle_deg``, offset by ``shift`` raw IR px, with mild perspective."""
    (vw, vh), (iw, ih) = vis_size, ir_size
    a = np.deg2rad(angle_deg)
    s = scale * iw / vw
    centre_v = np.array([[1, 0, -(vw - 1) / 2], [0, 1, -(vh - 1) / 2], [0, 0, 1]], dtype=np.float64)
    centre_i = np.array([[1, 0, (iw - 1) / 2 + shift[0]], [0, 1, (ih - 1) / 2 + shift[1]], [0, 0, 1]], dtype=np.float64)
    rot = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [perspective, 0, 1]])
    return centre_i @ rot @ centre_v


def jittered(matrix: np.ndarray, jitter_px: float, rng: np.random.Generator) -> np.ndarray:
    """``matrix`` followed by a random IR-pixel translation of standard deviation ``jitter_px`` per axis."""
    dx, dy = rng.normal(0.0, jitter_px, 2) if jitter_px > 0 else (0.0, 0.0)
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=np.float64) @ matrix


def deliver_ir(ir_aligned: np.ndarray, matrix: np.ndarray, ir_size: tuple[int, int]) -> np.ndarray:
    """The raw IR frame (``ir_size = (w, h)``) of a camera whose pixel ``H x`` sees what visible pixel ``x`` sees.

    ir_aligned: (H, W) float32 on the visible grid. Parts of the IR field of view outside the visible one are
    filled by reflection (the scene continues; no black border that would hand the registration a free edge)."""
    out = cv2.warpPerspective(np.ascontiguousarray(ir_aligned, dtype=np.float32), np.asarray(matrix, np.float64),
                              tuple(ir_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, 0.0, 1.0)


def _mapped_grid(matrix: np.ndarray, vis_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every visible pixel (x, y) and where the 3x3 ``matrix`` maps it: (positions (2, H, W), grid (2, H, W))."""
    vw, vh = vis_size
    ys, xs = np.mgrid[0:vh, 0:vw].astype(np.float64)
    q = np.asarray(matrix, np.float64) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    return (q[:2] / q[2:]).reshape(2, vh, vw), np.stack([xs, ys])


def true_field(matrix: np.ndarray, vis_size: tuple[int, int], ir_size: tuple[int, int]) -> np.ndarray:
    """(2, H, W) float32 ground-truth field on the visible grid, in pixels of the IR resampled onto that grid
    (the field convention of ``alignfuse register``)."""
    from .registration.rig import _ir_to_grid

    pos, grid = _mapped_grid(_ir_to_grid(vis_size, ir_size) @ np.asarray(matrix, np.float64), vis_size)
    return (pos - grid).astype(np.float32)


def seen_by_ir(matrix: np.ndarray, vis_size: tuple[int, int], ir_size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the visible pixels whose raw IR position (``matrix``, visible pixel -> raw IR pixel) lies inside
    the IR frame, i.e. where a registration of this rig can be judged."""
    iw, ih = ir_size
    (u, v), _ = _mapped_grid(matrix, vis_size)
    return (u >= 0) & (u <= iw - 1) & (v >= 0) & (v <= ih - 1)
