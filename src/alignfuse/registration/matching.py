"""Cross-modal matches for the global search: dense MIND-patch correspondences + RANSAC, one more kind of start.

The coarse search scores every translation of a grid of rotations and scales by one global sum (the orientation
correlation). Where a large structure of the wrong pose dominates that sum, the right pose is not among its top
candidates and the refinement never reaches its basin. Matching does not sum: each distinctive visible patch votes
for its own counterpart, and RANSAC keeps the largest geometric consensus, so a few shared structures are enough.

A candidate pose (scale, rotation, shift from the coarse search) first brings the IR near the visible geometry, since
MIND patches are neither scale- nor rotation-invariant; the matches then give the residual homography anywhere in the
frame. Descriptors: 5x5 patches (dilation 2) of the 8-channel MIND descriptor (:mod:`alignfuse.losses.mind`),
centred per pixel and L2-normalised; the visible image's most structured pixels are matched against every 2nd IR
pixel (in x and y) the candidate covers, mutual nearest neighbours only; only a plausible residual
(:func:`plausible_residual`) is returned.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..losses.mind import mind_descriptors

__all__ = ["patch_descriptors", "FixedMatcher", "plausible_residual", "homography_jacobian"]


def patch_descriptors(img: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """(1, 1, h, w) -> (n, 200): the 5x5 MIND patch (dilation 2), centred and L2-normalised, of every ``stride``-th
    pixel in x and y (row-major; n = ceil(h / stride) * ceil(w / stride))."""
    m = mind_descriptors(img)
    m = m - m.mean(1, keepdim=True)
    patches = F.unfold(m, kernel_size=5, dilation=2, padding=4, stride=stride)[0].T
    return F.normalize(patches, dim=1)


def _structure(img: torch.Tensor) -> torch.Tensor:
    """(1, 1, h, w) -> (h * w,) local gradient energy (5x5 mean of the squared central differences)."""
    gx = F.pad(img[..., :, 2:] - img[..., :, :-2], (1, 1, 0, 0))
    gy = F.pad(img[..., 2:, :] - img[..., :-2, :], (0, 0, 1, 1))
    return F.avg_pool2d(gx.square() + gy.square(), 5, 1, 2).flatten()


class FixedMatcher:
    """The visible (fixed) side of the matching, computed once per pair: descriptors of its ``keypoints`` most
    structured pixels, and of the ``pool`` x as many most structured pixels that the mutual check compares against
    (the other pixels of flat regions never win it, and skipping them makes the check ~10x cheaper).

    fixed: (1, 1, h, w); :meth:`homography` takes moving images on the same grid."""

    def __init__(self, fixed: torch.Tensor, keypoints: int = 600, pool: int = 4) -> None:
        self.size = tuple(fixed.shape[-2:])
        desc = patch_descriptors(fixed)
        order = torch.argsort(_structure(fixed), descending=True)
        self.keep = order[:keypoints]
        self.pool = order[: keypoints * pool]
        self.desc_keep, self.desc_pool = desc[self.keep], desc[self.pool]

    def homography(self, moving: torch.Tensor, inside: torch.Tensor, threshold: float = 2.0,
                   min_inliers: int = 20, stride: int = 2,
                   to_pixel: bool = False) -> tuple[np.ndarray, int] | None:
        """moving, inside: (1, 1, h, w) the IR brought near by a candidate pose and where it holds image -> (3x3
        sampling matrix, fixed px -> moving px; RANSAC inliers), or None with fewer than ``min_inliers``.

        The moving image is described at every ``stride``-th pixel (2: a quarter of the work; a match is then placed
        to within a pixel, well inside the refinement's basin); ``to_pixel`` then places each match at the best
        pixel of its stride x stride neighbourhood (full-resolution descriptors there)."""
        h, w = self.size
        desc_moving = patch_descriptors(moving, stride)
        sim = self.desc_keep @ desc_moving.T  # (k, n)
        sim[:, inside[0, 0, ::stride, ::stride].flatten() < 0.5] = -2.0
        best_cell = sim.argmax(1)
        cols = -(-w // stride)
        by, bx = (best_cell // cols) * stride, (best_cell % cols) * stride
        if to_pixel and stride > 1:
            full = patch_descriptors(moving)
            r = torch.arange(-(stride - 1), stride)
            ny = (by[:, None, None] + r[None, :, None]).clamp(0, h - 1)
            nx = (bx[:, None, None] + r[None, None, :]).clamp(0, w - 1)
            around = (ny * w + nx).flatten(1)  # (k, (2 stride - 1)^2) pixel indices
            score = (full[around] * self.desc_keep[:, None]).sum(-1)
            score = torch.where(inside.flatten()[around] >= 0.5, score, torch.full_like(score, -2.0))
            pick = around.gather(1, score.argmax(1, keepdim=True))[:, 0]
            by, bx = pick // w, pick % w
        best = by * w + bx  # pixel index on the full grid
        # mutual: the keypoint is also the best of the pool for the pixel it matched
        mutual = self.pool[(desc_moving[best_cell] @ self.desc_pool.T).argmax(1)] == self.keep
        if int(mutual.sum()) < max(min_inliers, 4):
            return None
        src = torch.stack([self.keep % w, self.keep // w], 1)[mutual].double().numpy()
        dst = torch.stack([best % w, best // w], 1)[mutual].double().numpy()
        hom, inliers = cv2.findHomography(src, dst, cv2.RANSAC, threshold)
        if hom is None or inliers is None or int(inliers.sum()) < min_inliers or not np.all(np.isfinite(hom)):
            return None
        hom = hom / hom[2, 2]
        return (hom, int(inliers.sum())) if plausible_residual(hom, self.size) else None


def homography_jacobian(hom: np.ndarray, x: float, y: float) -> np.ndarray:
    """2x2 Jacobian of the homography ``hom`` at pixel (x, y)."""
    p = hom @ np.array([x, y, 1.0])
    return (hom[:2, :2] - np.outer(p[:2] / p[2], hom[2, :2])) / p[2]


def plausible_residual(hom: np.ndarray, size: tuple[int, int], max_stretch: float = 1.4,
                       max_angle: float = 15.0, max_area_change: float = 1.5) -> bool:
    """Is ``hom`` (fixed px -> moving px on an (h, w) grid) a residual a candidate pose can leave: a near-similarity
    whose singular values lie within ``1 / max_stretch .. max_stretch``, rotation within ``max_angle`` degrees, and
    whose local area changes across the frame by at most ``max_area_change`` (mild perspective)? A chance consensus
    of matches (flat or repetitive images) fits wild warps, which zoom into texture and fool the distance."""
    h, w = size
    centre = homography_jacobian(hom, (w - 1) / 2, (h - 1) / 2)
    sv = np.linalg.svd(centre, compute_uv=False)
    angle = np.degrees(np.arctan2(centre[1, 0] - centre[0, 1], centre[0, 0] + centre[1, 1]))
    if np.linalg.det(centre) <= 0 or sv[0] > max_stretch or sv[1] < 1 / max_stretch or abs(angle) > max_angle:
        return False
    area = np.linalg.det(centre)
    corners = [np.linalg.det(homography_jacobian(hom, x, y)) / area for x in (0, w - 1) for y in (0, h - 1)]
    return all(1 / max_area_change <= c <= max_area_change for c in corners)
