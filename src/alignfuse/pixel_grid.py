"""Pixel maps between an image and its resize (numpy only, no torch: :mod:`alignfuse.io` uses it at import).

Pixel centres are at integers and a resize keeps the image's outer edges (``align_corners=False``, as
:func:`alignfuse.warp.resize_image`, OpenCV's ``resize`` and :func:`alignfuse.io.resample_to` resample): pixel ``x`` of
a width-``w`` image is ``(x + 0.5) * W / w - 0.5`` of its width-``W`` resize. Sizes are ``(h, w)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["scale_matrix", "rescale_matrix"]


def scale_matrix(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(3, 3): pixel of an image of size ``src = (h, w)`` -> pixel of its resize to ``dst``."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def rescale_matrix(matrix: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """A sampling matrix (3, 3) or a stack (N, 3, 3) between two images of size ``src``, expressed between their
    resizes to ``dst``."""
    a = scale_matrix(src, dst)
    return a @ np.asarray(matrix, dtype=np.float64) @ np.linalg.inv(a)
