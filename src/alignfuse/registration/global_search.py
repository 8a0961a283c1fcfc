"""Global registration for real camera rigs: exhaustive coarse search, then sub-pixel refinement.

Two cameras on a rig differ by tens of pixels of offset, a field-of-view (scale) ratio, a few degrees of
roll and some perspective; their images also differ in modality (contrast inversions are normal). The
stage works in three steps, all on the visible grid (the IR already resampled onto it):

1. **Anchor.** Pixels are square on nearly every camera, so when the original IR size is known
   (``ir_size``) the search is centred on the *aspect-preserving* map (the IR scaled by the same factor in
   x and y, centres matched), not on the stretch that resampling onto the visible grid introduced.
2. **Coarse search** at about ``search_size`` px: every rotation x scale x anisotropy candidate warps the IR
   onto a canvas with ``max_shift`` margins and is correlated with the visible image for *all* translations
   at once (FFT) on doubled-angle gradient orientations (:func:`~.features.orientation_field`). The best
   ``top_k`` (plus the identity) go on.
3. **Refinement** by inverse-compositional Lucas-Kanade on MIND descriptors over a pyramid
   (:func:`refine_matrices`: all the starts of a level as one batch): affine at the coarse levels, ``model``
   (homography by default) at the finest. The start with the lowest MIND distance after the first level wins.

The result is accepted only when it lowers the MIND distance to the visible image by ``min_gain``
(relative) against the identity **and** a second, independent criterion agrees (the doubled-angle gradient
orientations correlate better, by ``agree_margin``, than at the input, and, for a solution from a distant
start, than at the refined input), so pairs that are already aligned stay exactly where they are. A weak result
(a distant solution with a small gain, or none for an IR of another size) is searched again with a finer coarse
search (``rescue_size``), and the stronger of the two results is kept.

diagnostics: ``method`` ("global"), ``model`` (the simplest of translation / similarity / affine /
homography that is within 0.5 px of the estimate at the frame corners), ``matrix`` (3x3 sampling matrix:
visible pixel -> pixel of the IR on the visible grid), ``start`` (the winning candidate), ``mind_before`` /
``mind_after`` (MIND distance at the finest refinement size), ``gain`` (relative distance gain),
``alternatives`` (``near``: the refined identity start, ``far``: the best other start, ``identity``: the input;
each with its ``start``, ``mind`` distance, ``orientation`` correlation and ``matrix``), ``far_rank`` (the far
start's rank in the coarse search, 1 = best), ``near_because`` (why the near solution was kept over the far one:
"mind", "orientation" or None), ``tiebreak`` (the far one won on the orientations where MIND tied),
``confidence`` (= gain clipped to [0, 1]), ``suspect``, ``fallback``, ``warning`` (an IR delivered at another size than
the visible image that no alignment was found for: suspect), ``rescue`` (only where the second search ran: its
``search_size`` and the ``start``, ``confidence`` and ``fallback`` of the ``first`` and ``second`` results),
``ir_field`` (only where the narrow fallback ran: the field ``used``, and the other search's ``start`` and
``fallback``).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Sequence

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from .. import warp as warp_ops
from ..pixel_grid import rescale_matrix, scale_matrix
from ..errors import UserError
from ..losses.mind import mind_descriptors
from ..stages import RegistrationResult
from .features import orientation_correlation, orientation_field
from .matching import FixedMatcher, homography_jacobian

# the isotropic sampling scales the coarse search tries (resampled-IR px per visible px about the square-pixel anchor),
# by what the user says of the IR's field of view: "wider" (the default; an IR that sees more than the visible camera,
# up to 1 / 0.45, or somewhat less, down to 1 / 1.6 of its width), "narrower" (an IR that sees 38-110 % of the
# visible width, as beside a wide visible camera on drone gimbals); the same step (~7 %) in both
IR_FIELDS = {"wider": tuple(np.exp(np.linspace(math.log(0.45), math.log(1.6), 19))),
             "narrower": tuple(np.exp(np.linspace(math.log(0.9), math.log(2.6), 16)))}

# the warning for an IR of another size left as delivered (the search's own, and the chain's when it rejects the search)
KEPT_AS_DELIVERED = "the input is kept as if the two images were already registered"

__all__ = ["GlobalSearchRegistrar", "refine_matrix", "refine_matrices", "refine_matrix_joint", "describe_model"]


# ----------------------------------------------------------------------------------------------
# coordinate helpers (3x3 sampling matrices: output pixel -> moving pixel, pixel centres at integers)
# ----------------------------------------------------------------------------------------------


def _to_normalised(h: int, w: int) -> np.ndarray:
    """Pixel (centres at integers) -> grid_sample coordinate in [-1, 1] (align_corners=True) of an (h, w) image."""
    return np.array([[2.0 / max(w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(h - 1, 1), -1.0], [0.0, 0.0, 1.0]])


def _warp_by(image: torch.Tensor, matrices: torch.Tensor | np.ndarray, out_size: tuple[int, int],
             origin: tuple[float, float] = (0.0, 0.0), padding_mode: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """image (1|N, C, h, w) sampled at ``matrices (N, 3, 3) @ (p + origin)`` on an ``out_size`` grid ->
    (warped (N, C, H, W), inside mask (N, 1, H, W)).

    The matrices are folded into grid_sample's normalised coordinates in float64 once, so the per-pixel work is
    one float32 grid product (two for a homography: numerator and third row) and one ``grid_sample``: the
    coarse search reads hundreds of candidates and the refinement one descriptor stack per start and iteration."""
    hh, ww = out_size
    mats = torch.as_tensor(np.asarray(matrices, dtype=np.float64)).reshape(-1, 3, 3)
    from_out = np.linalg.inv(_to_normalised(hh, ww))
    from_out[:2, 2] += origin
    theta = torch.from_numpy(_to_normalised(*image.shape[-2:])) @ mats @ torch.from_numpy(from_out)
    theta = (theta / theta[:, 2:, 2:]).float()
    n = theta.shape[0]
    base = _base_grid(hh, ww)
    # the grid as one broadcast product with a cached base grid: what F.affine_grid computes, bit for bit, without
    # materialising a base grid per candidate (x2.5 on the coarse search's hundreds of canvases)
    grid = torch.matmul(base, theta[:, :2].transpose(1, 2)).reshape(n, hh, ww, 2)
    if not bool((theta[:, 2, :2].abs() < 1e-12).all()):  # a homography: divide by its third row
        den = torch.matmul(base, theta[:, 2:].transpose(1, 2)).reshape(n, hh, ww, 1)
        grid = grid / torch.where(den.abs() > 1e-12, den, torch.full_like(den, 1e-12))
    image = image.expand(n, -1, -1, -1) if image.shape[0] == 1 else image
    warped = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding_mode,
                           align_corners=True)
    lim = 1.0 + 1e-6
    inside = ((grid[..., 0].abs() <= lim) & (grid[..., 1].abs() <= lim))[:, None].to(image.dtype)
    return warped, inside


def _box_sums(values: torch.Tensor, box: tuple[int, int], margin: tuple[int, int]) -> torch.Tensor:
    """values (N, h + 2 mh, w + 2 mw), box (h, w), margin (mh, mw) -> (N, 2 mh + 1, 2 mw + 1): the sum of each map
    over the h x w box at every corner (t, l), t <= 2 mh, l <= 2 mw, by running sums along each axis (exact zeros
    where the box holds only zeros: the two partial sums are then the same number)."""
    (h, w), (mh, mw) = box, margin
    rows = F.pad(values.cumsum(1), (0, 0, 1, 0))
    rows = rows[:, h : h + 2 * mh + 1] - rows[:, : 2 * mh + 1]
    cols = F.pad(rows.cumsum(2), (1, 0))
    return cols[..., w : w + 2 * mw + 1] - cols[..., : 2 * mw + 1]


@functools.lru_cache(maxsize=32)
def _base_grid(h: int, w: int) -> torch.Tensor:
    """(1, h * w, 3) float32 homogeneous grid_sample coordinates (x, y, 1) of an (h, w) grid, align_corners=True
    (F.affine_grid's base grid; a side of 1 px sits at 0)."""
    xs = torch.linspace(-1.0, 1.0, w) if w > 1 else torch.zeros(1)
    ys = torch.linspace(-1.0, 1.0, h) if h > 1 else torch.zeros(1)
    return torch.stack([xs[None].expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w)], -1).reshape(1, h * w, 3)


class ImagePyramid:
    """An image (1, 1, H, W) and its antialiased halvings, read through sampling matrices onto any grid from the
    level whose pixel pitch matches the sampling step: no blur from magnifying a shrunk copy (a wide-field IR seen
    through a narrow visible crop is magnified 1.5-2x), no aliasing from minifying a large one."""

    def __init__(self, image: torch.Tensor, min_side: int = 16) -> None:
        self.size = tuple(image.shape[-2:])
        self.levels = [image]
        while min(self.levels[-1].shape[-2:]) >= 2 * min_side:
            h, w = self.levels[-1].shape[-2:]
            self.levels.append(warp_ops.resize_image(self.levels[-1], ((h + 1) // 2, (w + 1) // 2)))

    def read(self, matrices: np.ndarray, out_size: tuple[int, int], origin: tuple[float, float] = (0.0, 0.0),
             padding_mode: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
        """matrices (N, 3, 3): output pixel (+ origin) -> full-resolution image pixel -> (warped (N, 1, H, W),
        inside (N, 1, H, W))."""
        matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
        step = np.sqrt(np.abs(np.linalg.det(matrices[:, :2, :2])))  # image pixels per output pixel
        level = np.clip(np.floor(np.log2(np.maximum(step, 1e-6)) + 0.5), 0, len(self.levels) - 1).astype(int)
        out = torch.zeros(len(matrices), 1, *out_size, dtype=self.levels[0].dtype)
        ins = torch.zeros_like(out)
        for j in np.unique(level):
            idx = np.nonzero(level == j)[0]
            to_level = scale_matrix(self.size, tuple(self.levels[j].shape[-2:]))
            w_, i_ = _warp_by(self.levels[j], to_level @ matrices[idx], out_size, origin,
                              padding_mode)
            out[idx], ins[idx] = w_, i_
        return out, ins


def describe_model(matrix: np.ndarray, size: tuple[int, int], tol: float = 0.5) -> str:
    """The simplest motion model within ``tol`` px of ``matrix`` at the corners of a frame of ``size = (h, w)``."""
    h, w = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T

    def apply(m: np.ndarray) -> np.ndarray:
        q = m @ corners
        return q[:2] / q[2:]

    target = apply(matrix)
    m = matrix / matrix[2, 2]
    affine = np.vstack([m[:2], [0.0, 0.0, 1.0]])
    if np.abs(apply(affine) - target).max() > tol:
        return "homography"
    a = affine[:2, :2]
    sim = np.array([[a[0, 0] + a[1, 1], a[0, 1] - a[1, 0]], [a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]]]) / 2
    similarity = affine.copy()
    similarity[:2, :2] = sim
    # the similarity that keeps the frame centre where the affine puts it
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    similarity[:2, 2] = a @ c + affine[:2, 2] - sim @ c
    if np.abs(apply(similarity) - target).max() > tol:
        return "affine"
    translation = np.eye(3)
    translation[:2, 2] = a @ c + affine[:2, 2] - c
    if np.abs(apply(translation) - target).max() > tol:
        return "similarity"
    return "translation" if np.abs(translation[:2, 2]).max() > 1e-6 else "identity"


# ----------------------------------------------------------------------------------------------
# refinement: inverse-compositional Lucas-Kanade on MIND descriptors (Baker & Matthews 2004)
# ----------------------------------------------------------------------------------------------


# the warp parameters each refinement model fits, as columns of _FixedLevel.jacobian: (a00 - 1, a01, tx, a10,
# a11 - 1, ty, h20, h21) in normalised coordinates
MODEL_PARAMS = {"translation": (2, 5), "affine": (0, 1, 2, 3, 4, 5), "homography": (0, 1, 2, 3, 4, 5, 6, 7)}


class _FixedLevel:
    """What one pyramid level of the refinement needs from the fixed (visible) image, computed once for all the
    starts that are refined there: its MIND descriptors and their Jacobian with respect to the warp parameters
    (homography; the first six columns are the affine ones), in coordinates normalised to [-1, 1]."""

    def __init__(self, fixed: torch.Tensor) -> None:
        h, w = self.size = tuple(fixed.shape[-2:])
        desc = mind_descriptors(fixed)[0]  # (C, h, w)
        gx = torch.zeros_like(desc)
        gy = torch.zeros_like(desc)
        gx[..., 1:-1] = (desc[..., 2:] - desc[..., :-2]) / 2
        gy[..., 1:-1, :] = (desc[..., 2:, :] - desc[..., :-2, :]) / 2
        s = max(h, w) / 2.0  # conditioning: parameters of order 1
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        ys, xs = torch.meshgrid(torch.arange(h, dtype=desc.dtype), torch.arange(w, dtype=desc.dtype), indexing="ij")
        xn, yn = (xs - cx) / s, (ys - cy) / s
        gx, gy = gx * s, gy * s
        radial = gx * xn + gy * yn
        self.jacobian = torch.stack([gx * xn, gx * yn, gx, gy * xn, gy * yn, gy, -radial * xn, -radial * yn], -1)
        self.desc = desc
        border = torch.ones(h, w, dtype=desc.dtype)
        border[:2], border[-2:], border[:, :2], border[:, -2:] = 0, 0, 0, 0  # central differences undefined there
        self.border = border
        self.to_norm = torch.tensor([[1 / s, 0, -cx / s], [0, 1 / s, -cy / s], [0, 0, 1]], dtype=torch.float64)
        self.from_norm = torch.linalg.inv(self.to_norm)
        self._flat: dict[str, torch.Tensor] = {}

    def flat_jacobian(self, model: str) -> torch.Tensor:
        """(C * h * w, P): the Jacobian's columns of a motion model's parameters (:data:`MODEL_PARAMS`)."""
        if model not in self._flat:
            cols = list(MODEL_PARAMS[model])
            self._flat[model] = self.jacobian[..., cols].reshape(-1, len(cols)).contiguous()
        return self._flat[model]



class _PairLevels(dict):
    """The visible side of one pair, shared by every search of it (first, rescue, narrow): the LK levels by long side
    (the dict itself, ``{size: _FixedLevel}``) and the cross-modal matchers by long side (:meth:`matcher`)."""

    def __init__(self, levels: dict[int, _FixedLevel]) -> None:
        super().__init__(levels)
        self._matchers: dict[int, tuple[FixedMatcher, torch.Tensor]] = {}

    def matcher(self, fixed: torch.Tensor, side: int) -> tuple[FixedMatcher, torch.Tensor]:
        """(the matcher of ``fixed`` (1, 1, H, W) resized to a long side of ``side``, that resized image)."""
        if side not in self._matchers:
            small = _resized(fixed.float(), side)
            self._matchers[side] = (FixedMatcher(small), small)
        return self._matchers[side]


def _lk_level(moving: ImagePyramid, fixed: _FixedLevel, matrices: np.ndarray, iterations: int,
              model: str) -> tuple[np.ndarray, np.ndarray]:
    """One pyramid level for several independent starts: refine each of ``matrices`` (N, 3, 3) (pixels of this
    level, both images) so MIND(moving @ matrix) matches MIND(fixed) -> (matrices (N, 3, 3), MIND distances (N,)).
    The starts share the fixed image, so they are refined as one batch."""
    return _lk_level_joint([moving], [fixed], matrices, iterations, model)


def _lk_level_joint(movings: Sequence[ImagePyramid], fixeds: Sequence[_FixedLevel], matrices: np.ndarray,
                    iterations: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Refine N ``matrices`` (N, 3, 3) (pixels of this level), each shared by all the frame pairs given (one pair
    for a single registration, several of the same size for a fixed rig), minimising the summed MIND residuals of
    those frames -> (matrices (N, 3, 3), mean MIND distances (N,)).

    Each IR is warped by each current estimate once (from the pyramid level of matching resolution) and its
    descriptors are computed on that image, so only a small residual warp is fitted; the Jacobian lives on the
    fixed (visible) descriptors (inverse compositional): each iteration costs one descriptor warp per frame and
    start and a 6x6 / 8x8 solve of the summed normal equations per start. The N starts run as one batch; a start
    stops when its update falls below 1e-4 of the half-size (< 0.03 px at 384 px) and keeps the distance measured
    before that last update."""
    h, w = fixeds[0].size
    mats = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    cols = list(MODEL_PARAMS[model])
    n, n_params = len(mats), len(cols)
    frames = []  # (moved descriptors (N, C, h, w), valid mask (N, h, w)) per frame
    hess = torch.zeros(n, n_params, n_params, dtype=torch.float64)
    for moving, fixed in zip(movings, fixeds):
        to_full = np.linalg.inv(scale_matrix(moving.size, (h, w)))
        moved, inside = moving.read(to_full @ mats, (h, w), padding_mode="border")
        valid = inside[:, 0] * fixed.border
        if iterations > 0:  # each start's Gauss-Newton Hessian over the pixels its IR covers
            jac = fixed.flat_jacobian(model).view(-1, h * w, n_params)  # (C, h*w, P)
            for i in range(n):
                jv = (jac * valid[i].reshape(1, -1, 1)).reshape(-1, n_params)
                hess[i] += (jv.T @ jv).double()
        frames.append((mind_descriptors(moved), valid))

    def distance(active: torch.Tensor, warps: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean MIND distance (A,) of the ``active`` starts under their residual ``warps`` (A, 3, 3) (None: the
        current estimate itself), and their masked residuals (A, C, h, w) per frame."""
        total = torch.zeros(len(active), dtype=torch.float64)
        count = torch.zeros(len(active), dtype=torch.float64)
        residuals = []
        for (desc_m, valid), fixed in zip(frames, fixeds):
            if warps is None:
                warped, mask = desc_m[active], valid[active]
            else:
                warped, ins = _warp_by(desc_m[active], warps, (h, w), padding_mode="border")
                mask = ins[:, 0] * valid[active]
            r = (warped - fixed.desc[None]) * mask[:, None]
            total += r.abs().flatten(1).sum(1).double()
            count += mask.flatten(1).sum(1).double() * fixed.desc.shape[0]
            residuals.append(r)
        return total / count.clamp_min(1.0), residuals

    everyone = torch.arange(n)
    if iterations <= 0:  # the distance of the matrices themselves (e.g. of the identity, for the acceptance test)
        return mats, distance(everyone, None)[0].numpy()
    fixed = fixeds[0]  # same size, so the same normalisation for every frame
    ridge = 1e-6 * hess.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
    hess_inv = torch.linalg.inv(hess + ridge[:, None, None] * torch.eye(n_params, dtype=hess.dtype))
    residual_warp = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    cost = torch.full((n,), float("nan"), dtype=torch.float64)
    active = everyone
    for _ in range(iterations):
        if len(active) == 0:
            break
        cost[active], residuals = distance(active, fixed.from_norm @ residual_warp[active] @ fixed.to_norm)
        rhs = sum((r.flatten(1) @ fx.flat_jacobian(model)).double()
                  for r, fx in zip(residuals, fixeds))  # (A, P): J^T r (r is already masked)
        dp_model = (hess_inv[active] @ rhs[..., None])[..., 0]
        finite = torch.isfinite(dp_model).all(1)
        step, dp_model = active[finite], dp_model[finite]
        dp = torch.zeros(len(step), 8, dtype=torch.float64)  # the model's parameters, the others held at 0
        dp[:, cols] = dp_model
        d = torch.eye(3, dtype=torch.float64).repeat(len(step), 1, 1)
        d[:, 0, 0] += dp[:, 0]
        d[:, 0, 1], d[:, 0, 2], d[:, 1, 0] = dp[:, 1], dp[:, 2], dp[:, 3]
        d[:, 1, 1] += dp[:, 4]
        d[:, 1, 2] = dp[:, 5]
        if model == "homography":
            d[:, 2, 0], d[:, 2, 1] = dp[:, 6], dp[:, 7]
        updated = residual_warp[step] @ torch.linalg.inv(d)
        residual_warp[step] = updated / updated[:, 2:, 2:]
        active = step[dp_model.abs().amax(1) >= 1e-4]
    return mats @ (fixed.from_norm @ residual_warp @ fixed.to_norm).numpy(), cost.numpy()


def _resized(img: torch.Tensor, long_side: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    f = min(1.0, long_side / max(h, w))
    return warp_ops.resize_image(img, (max(round(h * f), 8), max(round(w * f), 8)))


def refine_matrices(moving: torch.Tensor | ImagePyramid, fixed: torch.Tensor, matrices: np.ndarray,
                    sizes: Sequence[int] = (256, 384), iterations: Sequence[int] = (10, 8),
                    models: Sequence[str] = ("affine", "homography"),
                    fixed_levels: dict[int, _FixedLevel] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refine N full-resolution sampling matrices (N, 3, 3), independently and as one batch, over a pyramid (long
    sides ``sizes``) -> (matrices (N, 3, 3), MIND distances (N,) at the last level). moving (or its
    :class:`ImagePyramid`), fixed: (1, 1, H, W) on the same grid."""
    full = tuple(fixed.shape[-2:])
    pyr = moving if isinstance(moving, ImagePyramid) else ImagePyramid(moving)
    mats = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    costs = np.full(len(mats), np.nan)
    for size, its, model in zip(sizes, iterations, models):
        fix = fixed_levels[size] if fixed_levels and size in fixed_levels else _FixedLevel(_resized(fixed, size))
        work = fix.size
        mats, costs = _lk_level(pyr, fix, rescale_matrix(mats, full, work), its, model)
        mats = rescale_matrix(mats, work, full)
    return mats, costs


def refine_matrix(moving: torch.Tensor | ImagePyramid, fixed: torch.Tensor, matrix: np.ndarray,
                  sizes: Sequence[int] = (256, 384), iterations: Sequence[int] = (10, 8),
                  models: Sequence[str] = ("affine", "homography"),
                  fixed_levels: dict[int, _FixedLevel] | None = None) -> tuple[np.ndarray, float]:
    """:func:`refine_matrices` for one full-resolution sampling matrix -> (matrix, MIND distance at the last
    level)."""
    mats, costs = refine_matrices(moving, fixed, np.asarray(matrix)[None], sizes, iterations, models, fixed_levels)
    return mats[0], float(costs[0])


def refine_matrix_joint(movings: Sequence[torch.Tensor], fixeds: Sequence[torch.Tensor], matrix: np.ndarray,
                        sizes: Sequence[int] = (384, 640), iterations: Sequence[int] = (10, 8),
                        models: Sequence[str] = ("homography", "homography")) -> tuple[np.ndarray, float]:
    """:func:`refine_matrix` for one matrix shared by several pairs of one size (a fixed rig): the residuals of
    every pair enter one Gauss-Newton step. movings, fixeds: (1, 1, H, W) each, all on the same grid."""
    full = tuple(fixeds[0].shape[-2:])
    pyrs = [ImagePyramid(m) for m in movings]
    matrix = np.asarray(matrix, dtype=np.float64)
    cost = float("nan")
    for size, its, model in zip(sizes, iterations, models):
        levels = [_FixedLevel(_resized(f, size)) for f in fixeds]
        work = levels[0].size
        m, c = _lk_level_joint(pyrs, levels, rescale_matrix(matrix, full, work)[None], its, model)
        matrix, cost = rescale_matrix(m[0], work, full), float(c[0])
    return matrix, cost


# ----------------------------------------------------------------------------------------------
# the registrar
# ----------------------------------------------------------------------------------------------


class GlobalSearchRegistrar:
    """Cross-modal global registration (translation up to ``max_shift`` of the frame, anisotropic scale, roll,
    mild perspective) for pairs as real rigs deliver them.

    Args:
        search_size: the coarse search runs on images of about ``0.75 * search_size^2`` pixels (80: 80x60 for 4:3).
        angles: rotations searched (degrees).
        scales: isotropic scales searched, relative to the anchor (sampling scale: < 1 = the IR field of view
            is wider than the visible one); default ``IR_FIELDS[ir_field]``.
        anisotropies: x/y scale ratios searched on top of the anchor.
        max_shift: translations searched, as a fraction of the frame in each direction.
        second_pass: the best candidates of the coarse search re-scored, with their half-step neighbours, at twice
            ``search_size`` (0: one pass).
        passes: coarse passes in all (each after the first at twice the size, half the steps, half the candidates);
            3 was not better than 2 on the training pairs where the search fails (docs/RESULTS.md §1.10).
        refine_anisotropy: the later passes also step the anisotropy (by half its grid step); off by default, for
            the same reason.
        top_k: coarse candidates refined at the first pyramid level.
        finalists: how many distant starts (lowest MIND distance) go on after level ``select_after``, then after
            each later level (the last count repeats): (3, 1) = three to the second level, one to the later ones. The
            identity start always goes on.
        sizes / iterations / models: the refinement pyramid (long side in px, LK iterations, motion model). Each
            level must start inside its own basin: the best start often ends the 128 px level 6-13 raw px from the
            truth on night scenes, beyond what a 256 px level pulls back, so a 192 px level sits between them
            (docs/RESULTS.md §1.10).
        min_gain: relative MIND gain over the identity below which the identity is kept (aligned pairs stay put).
        same_size_scales: the scale range searched when the IR was delivered at the visible size (no
            ``ir_size``); the full ``scales`` when the sizes differ (real rigs with different sensors).
        far_margin: the identity start is refined too; a solution found from another start must have a MIND
            distance lower than that local solution's by this fraction to be preferred.
        min_overlap: a candidate must cover this fraction of the visible frame with IR (with ``ir_field``
            "narrower": of the smaller of the frame and the IR's footprint on the search canvas, the frame plus its
            ``max_shift`` margins).
        agree_margin: a distant solution must also raise the orientation correlation
            (:meth:`orientation_scores`) over the near one by this much, and the result over the input (the
            identity) by this much, or the input is kept (``None``: MIND alone decides). 0.04: on RoadScene
            training pairs (``large``, ``roadscene_raw``) every right solution raised it by >= 0.086 over the
            near one and >= 0.10 over the input (``benchmarks/global_alternatives.py``).
        orientation_tiebreak: where MIND cannot separate the two (within ``far_margin``) but the distant solution is
            at least as close in MIND, it is preferred when its orientation correlation beats the near one's by this
            much (``None``: never). 0.06 = 1.5 ``agree_margin``: on 205 training records (``roadscene_raw``, ``none``,
            ``umf``, ``large``) it changes one choice, a night pair (129 -> 7.6 raw px), and no other.
        ir_field: "wider" (the default: the IR sees about as much as the visible camera or more, as on RoadScene's
            rig) or "narrower" (a narrow thermal lens beside a wide visible camera): the scales searched
            (``IR_FIELDS``), the coverage test (``min_overlap``) and, with "narrower", no ``same_size_scales`` limit
            for an IR delivered at the visible size. Kept apart because solutions that cover only part of the frame
            are false positives on wide rigs (docs/RESULTS.md §1.12).
        rescue_size / rescue_below: a weak result is searched again at ``rescue_size`` (``None``: never); see
            :meth:`register_pair`. 0.10: on the 45 `roadscene_raw` probe training pairs the wrong solutions of the
            80 px search gained <= 0.093 and the right ones the 128 px search found instead >= 0.150 (0.12 rescued
            the same pairs, with more searches that change nothing).
        rescue_jitter: ``(n, step, dscale)``: the rescue search also starts from its ``n`` best coarse candidates
            moved by +-``step`` of the frame's long side in x and y and scaled by 1 +- ``dscale`` (``None``: no extra
            starts): on night pairs the nearest coarse candidate can sit just outside the refinement's basin.
            (5, 0.04, 0.08): on the 45 ``roadscene_raw`` probe training pairs 4.42 -> 4.31 raw px (one pair 6.6 ->
            1.5, none worse), 25 RoadScene training pairs per preset unchanged (docs/RESULTS.md §1.10).
        narrow_fallback: with ``ir_field`` "wider", an IR delivered at another size for which the search (and its
            rescue) kept nothing is searched once more as a narrow-field IR (``ir_field`` "narrower"), and that
            solution is kept if it passes the same acceptance tests: a thermal camera with a narrower lens than the
            visible one (drone gimbals) is then registered without ``--ir-field narrower``, while pairs the wide
            search registers never see the narrow search and its false positives (docs/RESULTS.md §1.12).
        narrow_above: with ``ir_field`` "wider", an IR of another size whose wide solution samples it at a scale of at
            least this much (relative to the square-pixel anchor; the wide search stops at 1.6) is also searched as a
            narrow-field IR, and the two solutions are judged over the visible pixels both cover
            (:meth:`_narrow_if_better`): a wide solution at the top of the wide scale range is what a narrower IR than
            that range leaves (``None``: never). 1.35: on RoadScene training pairs re-delivered by a 56 %-width IR
            (``benchmarks/rig_zoo.py``) 13.5 -> 8.6 px, the other rigs and the 45 ``roadscene_raw`` probe pairs
            unchanged; the raw rig's true scales are 0.47-1.04 (docs/RESULTS.md §1.12).
        match_starts: ``(n, long_side)``: each of the ``n`` best coarse candidates also gives a start from cross-modal
            matches (:mod:`.matching`: the IR read by the candidate at ``long_side`` px, dense MIND-patch matches to
            the visible image, RANSAC homography), which the refinement and the acceptance tests then judge like any
            other start (``None``: none). Where a wrong pose dominates the coarse sum, a few shared structures still
            vote for the right one. (2, 200): on the 45 ``roadscene_raw`` probe training pairs 4.31 -> 3.59 raw px
            (30 -> 33 within 5 px, no other pair moved); 25 RoadScene training pairs per preset unchanged but one
            ``shift:13`` pair (4.1 -> 5.6 px); only in the rescue search it changed nothing (docs/RESULTS.md §1.10).
        match_to_pixel: each match, found among every 2nd IR pixel, is then placed at the best pixel of its
            neighbourhood (~0.05 s more per candidate). Tried, off: it undoes the two training-pair harms of the
            stride-2 matches (``shift:13`` ``FLIR_00288``, ``rig_zoo`` narrow 1.5 ``FLIR_00594``) but adds one of its
            own (``rig_zoo`` narrow 1.3 3.20 -> 3.33 px), with the same probe result (docs/RESULTS.md §1.10).
        occam_margin: the chosen solution is replaced by a pure translation (the one that moves the frame centre
            alike, refined alone over the last two levels) when that keeps all but this fraction of its MIND gain over
            the input (``None``: never): the extra parameters of an affine or homography fit follow MIND's own
            optimum 1-2 px away on a pair that is only shifted. 0.2: on RoadScene training pairs ``shift:13`` 1.61 ->
            1.06 px, ``large``, ``umf``, aligned pairs and the 45 ``roadscene_raw`` probe pairs unchanged (within 0.02
            px); 0.3 sent a raw night pair to a wrong solution (docs/RESULTS.md §1.10).

    ``ir_size``: ``(width, height)`` of the IR before it was resampled onto the visible grid, if it was; the
    search is then centred on the square-pixel map (module docstring).
    """

    wants_ir_size = True

    def __init__(self, search_size: int = 80, angles: Sequence[float] = (-15, -10, -5, 0, 5, 10, 15),
                 scales: Sequence[float] | None = None, anisotropies: Sequence[float] = (1 / 1.2, 1.0, 1.2),
                 max_shift: float = 0.25, top_k: int = 8, sizes: Sequence[int] = (128, 192, 256, 384),
                 iterations: Sequence[int] = (15, 10, 10, 8),
                 models: Sequence[str] = ("affine", "affine", "affine", "homography"),
                 min_gain: float = 0.02, min_overlap: float = 0.5, finalists: int | Sequence[int] = (3, 1),
                 select_after: int = 1,
                 second_pass: int = 16, passes: int = 2, refine_anisotropy: bool = False, far_margin: float = 0.03,
                 same_size_scales: tuple[float, float] = (0.8, 1.25), agree_margin: float | None = 0.04,
                 orientation_tiebreak: float | None = 0.06, ir_field: str = "wider", rescue_size: int | None = 128,
                 rescue_below: float = 0.10, occam_margin: float | None = 0.2, narrow_fallback: bool = True,
                 rescue_jitter: tuple[int, float, float] | None = (5, 0.04, 0.08),
                 narrow_above: float | None = 1.35, match_starts: tuple[int, int] | None = (2, 200),
                 match_to_pixel: bool = False) -> None:
        if ir_field not in IR_FIELDS:
            raise UserError(f"ir_field is one of {', '.join(IR_FIELDS)}, got {ir_field!r}")
        if not (len(sizes) == len(iterations) == len(models)) or not sizes:
            raise UserError("sizes, iterations and models must have the same (non-zero) length")
        if not 0.0 <= far_margin < 1.0:
            raise UserError(f"far_margin is a fraction in [0, 1), got {far_margin}")
        for m in models:
            if m not in MODEL_PARAMS:
                raise UserError(f"refinement models are {', '.join(map(repr, MODEL_PARAMS))}, got {m!r}")
        self.search_size = int(search_size)
        self.angles = tuple(float(a) for a in angles)
        self.ir_field = ir_field
        self.scales = tuple(float(s) for s in (scales if scales is not None else IR_FIELDS[ir_field]))
        self.anisotropies = tuple(float(a) for a in anisotropies)
        self.max_shift = float(max_shift)
        self.top_k = int(top_k)
        self.sizes, self.iterations, self.models = tuple(sizes), tuple(iterations), tuple(models)
        self.min_gain = float(min_gain)
        self.min_overlap = float(min_overlap)
        self.finalists = (int(finalists),) if isinstance(finalists, (int, float)) else tuple(int(n) for n in finalists)
        self.second_pass = int(second_pass)
        self.passes = max(1, int(passes))
        self.refine_anisotropy = bool(refine_anisotropy)
        self.far_margin = float(far_margin)
        self.same_size_scales = tuple(float(x) for x in same_size_scales)
        self.agree_margin = None if agree_margin is None else float(agree_margin)
        self.orientation_tiebreak = None if orientation_tiebreak is None else float(orientation_tiebreak)
        self.select_after = max(1, min(int(select_after), len(self.sizes)))
        self.rescue_size = None if rescue_size is None else int(rescue_size)
        self.rescue_below = float(rescue_below)
        self.occam_margin = None if occam_margin is None else float(occam_margin)
        self.narrow_fallback = bool(narrow_fallback)
        self.rescue_jitter = None if rescue_jitter is None else (int(rescue_jitter[0]), float(rescue_jitter[1]),
                                                                 float(rescue_jitter[2]))
        self.narrow_above = None if narrow_above is None else float(narrow_above)
        self.match_starts = None if match_starts is None else (int(match_starts[0]), int(match_starts[1]))
        self.match_to_pixel = bool(match_to_pixel)

    # -- coarse search -------------------------------------------------------------------------

    def _anchor(self, size: tuple[int, int], ir_size: tuple[int, int] | None) -> np.ndarray:
        """2x2 linear part of the square-pixel hypothesis on the visible grid (identity when unknown)."""
        if ir_size is None:
            return np.eye(2)
        (iw, ih), (vh, vw) = ir_size, size
        # resampled IR pixel (x_r, y_r) = raw (x vw/iw, y vh/ih); square pixels with the widths matched sample
        # the resampled IR at (x, y * (iw/vw) * (vh/ih))
        return np.diag([1.0, (iw / vw) * (vh / ih)])

    def candidates(self, anchor: np.ndarray, wide: bool = True) -> list[tuple[str, np.ndarray]]:
        """(label, 2x2 linear sampling map) for every rotation x scale x anisotropy.

        ``wide=False`` (IR and visible delivered at the same size: one sensor format, or frames already resampled
        or cropped to each other) keeps the scales within ``same_size_scales`` and the anisotropies within 10 %:
        on aligned same-size TNO pairs, far zooms (scale 0.45) of repetitive structure scored a lower MIND
        distance than the identity."""
        lo, hi = self.same_size_scales if not wide and self.ir_field == "wider" else (0.0, np.inf)
        out = []
        for a in self.angles:
            c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
            rot = np.array([[c, -s], [s, c]])
            for k in self.scales:
                if not lo <= k <= hi:
                    continue
                for r in self.anisotropies:
                    if not wide and abs(math.log(r)) > math.log(1.1) + 1e-9:
                        continue
                    lin = rot @ np.diag([k * math.sqrt(r), k / math.sqrt(r)]) @ anchor
                    out.append((f"rot{a:+g}_scale{k:.3f}_aniso{r:.3f}", lin))
        return out

    def coarse(self, moving: torch.Tensor | ImagePyramid, fixed: torch.Tensor, ir_size: tuple[int, int] | None = None,
               search_size: int | None = None) -> list[tuple[float, str, np.ndarray]]:
        """moving (or its pyramid), fixed (1, 1, H, W) -> the ``top_k`` (score, label, full-resolution 3x3 sampling
        matrix).

        ``passes`` passes (two by default): every candidate at ``search_size`` (default: the registrar's); then the
        ``second_pass`` best, each with its neighbours at half a grid step in scale and angle (and anisotropy, with
        ``refine_anisotropy``), at twice that size (finer translations, scales and angles for the price of about one
        more first pass); each further pass halves the steps and the number kept again and doubles the size."""
        pyr = moving if isinstance(moving, ImagePyramid) else ImagePyramid(moving.float())
        cands = self.candidates(self._anchor(tuple(fixed.shape[-2:]), ir_size), wide=ir_size is not None)
        size = self.search_size if search_size is None else int(search_size)
        scored = self._score(pyr, fixed, cands, size)
        half_scale = math.sqrt(self.scales[1] / self.scales[0]) if len(self.scales) > 1 else 1.0
        half_angle = (self.angles[1] - self.angles[0]) / 2 if len(self.angles) > 1 else 0.0
        half_aniso = math.sqrt(self.anisotropies[1] / self.anisotropies[0]) if len(self.anisotropies) > 1 else 1.0
        keep = self.second_pass
        for _ in range(self.passes - 1 if self.second_pass > 0 else 0):
            # the best so far, each with its neighbours at half the last step in scale, angle (and anisotropy), at
            # twice the size
            steps = [("", 1.0, 0.0, 1.0), ("_s+", half_scale, 0.0, 1.0), ("_s-", 1 / half_scale, 0.0, 1.0),
                     ("_a+", 1.0, half_angle, 1.0), ("_a-", 1.0, -half_angle, 1.0)]
            if self.refine_anisotropy and half_aniso > 1.0:
                steps += [("_r+", 1.0, 0.0, half_aniso), ("_r-", 1.0, 0.0, 1 / half_aniso)]
            variants = []
            for _, label, lin, _ in scored[:keep]:
                for tag, k, a, r in steps:
                    c, sn = math.cos(math.radians(a)), math.sin(math.radians(a))
                    stretch = np.diag([math.sqrt(r), 1 / math.sqrt(r)])
                    variants.append((label + tag, k * np.array([[c, -sn], [sn, c]]) @ stretch @ lin))
            size *= 2
            scored = self._score(pyr, fixed, variants, size)
            half_scale, half_angle, keep = math.sqrt(half_scale), half_angle / 2, max(1, keep // 2)
            half_aniso = math.sqrt(half_aniso)
        return [(sc, label, m) for sc, label, _, m in scored[: self.top_k]]

    def search_canvas(self, full: tuple[int, int], search_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The coarse search's geometry for a visible frame of ``full = (H, W)``: ((h, w) the frame resized to about
        ``0.75 search_size^2`` px, (mh, mw) the shift margins, ``max_shift`` of each side); the canvas is
        (h + 2 mh, w + 2 mw) with the frame in its middle."""
        f = min(1.0, search_size * math.sqrt(0.75) / math.sqrt(full[0] * full[1]))
        h, w = max(round(full[0] * f), 8), max(round(full[1] * f), 8)
        return (h, w), (max(1, round(self.max_shift * h)), max(1, round(self.max_shift * w)))

    def _score(self, pyr: ImagePyramid, fixed: torch.Tensor, cands: list[tuple[str, np.ndarray]],
               search_size: int) -> list[tuple[float, str, np.ndarray, np.ndarray]]:
        """Best translation of every (label, 2x2 linear map about the centre) by FFT orientation correlation at
        about ``0.75 search_size^2`` px -> (score, label, linear map, full-resolution matrix), best first."""
        full = tuple(fixed.shape[-2:])
        (h, w), (mh, mw) = self.search_canvas(full, search_size)
        fix = warp_ops.resize_image(fixed.float(), (h, w))
        ch, cw = h + 2 * mh, w + 2 * mw
        z_fix = torch.zeros(ch, cw, dtype=torch.complex64)
        z_fix[mh : mh + h, mw : mw + w] = orientation_field(fix)[0]
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        mats = np.zeros((len(cands), 3, 3))
        for i, (_, lin) in enumerate(cands):  # about the frame centre
            mats[i, :2, :2], mats[i, :2, 2], mats[i, 2, 2] = lin, centre - lin @ centre, 1.0
        warped, inside = pyr.read(np.linalg.inv(scale_matrix(full, (h, w))) @ mats, (ch, cw), origin=(-mw, -mh))
        # each candidate's edge-noise level over the part of the canvas its IR covers
        z_mov = orientation_field(warped, mask=inside) * inside[:, 0]
        # transforms zero-padded to FFT-friendly sizes (a canvas of 82 x 133 px is 2 x 41 by 7 x 19): exact, since
        # no shift within the margins reads the padding (the fixed image sits mh, mw px inside the canvas); only
        # the shifts within the margins, every one of them, are scored
        fh, fw = scipy.fft.next_fast_len(ch), scipy.fft.next_fast_len(cw)
        rows = torch.cat([torch.arange(mh + 1), torch.arange(fh - mh, fh)])  # shifts 0..mh, -mh..-1 in FFT order
        cols = torch.cat([torch.arange(mw + 1), torch.arange(fw - mw, fw)])
        fz = torch.fft.fft2(z_fix, s=(fh, fw))
        # corr[d] = sum_p fix(p + d) conj(mov(p)): the fixed image matches the canvas shifted by -d
        corr = torch.fft.ifft2(fz[None] * torch.fft.fft2(z_mov, s=(fh, fw)).conj())[:, rows][:, :, cols].real
        dy = torch.cat([torch.arange(mh + 1), torch.arange(-mh, 0)])  # the shifts of rows / cols, in px
        dx = torch.cat([torch.arange(mw + 1), torch.arange(-mw, 0)])
        # the moving edge energy and IR coverage inside the visible frame, for every shift: sums over the frame's
        # window on the canvas, the h x w box at (mh - dy, mw - dx), by running sums (the correlations with the frame
        # mask, without two more transforms per candidate)
        tops, lefts = mh - dy, mw - dx
        energy = _box_sums(z_mov.real.square() + z_mov.imag.square(), (h, w), (mh, mw))[:, tops][:, :, lefts]
        overlap = _box_sums(inside[:, 0], (h, w), (mh, mw))[:, tops][:, :, lefts]
        # the overlap as a fraction of the visible frame; for an IR with a narrower field of view than the visible
        # camera, of the smaller of the frame and the IR's footprint (the right answer covers only part of the frame)
        area = (inside.sum((1, 2, 3)).clamp(1.0, h * w)[:, None, None] if self.ir_field == "narrower"
                else torch.tensor(float(h * w)))
        cover = overlap / area
        score = corr / (z_fix.abs().pow(2).sum() * energy.clamp_min(1e-6)).sqrt()
        score = torch.where(cover > self.min_overlap, score, torch.full_like(score, -1.0))
        best, idx = score.flatten(1).max(1)
        out = []
        for n in torch.argsort(best, descending=True).tolist():
            iy, ix = divmod(int(idx[n]), len(cols))
            shift = np.eye(3)
            shift[:2, 2] = [-float(dx[ix]), -float(dy[iy])]  # fix(p) ~ canvas(p - d) = mov(M (p - d))
            out.append((float(best[n]), cands[n][0], cands[n][1], rescale_matrix(mats[n] @ shift, (h, w), full)))
        return out

    def orientation_scores(self, pyr: ImagePyramid, fixed: torch.Tensor, matrices: Sequence[np.ndarray],
                           long_side: int = 256) -> list[float]:
        """Normalised doubled-angle orientation correlation between the visible image and the IR sampled by each
        full-resolution ``matrix``, over the part of the frame the IR covers, at ``long_side`` px (1 = every edge
        has the same orientation). The edge of that coverage is left out (the IR is read with border replication,
        the mask eroded by 2 px, beyond the 3x3 Sobel's reach): it is no edge of the scene, and counting it would
        penalise every solution that moves the IR."""
        full = tuple(fixed.shape[-2:])
        fix = _resized(fixed.float(), long_side)
        size = tuple(fix.shape[-2:])
        to_full = np.linalg.inv(scale_matrix(full, size))
        mats = np.stack([rescale_matrix(np.asarray(m, dtype=np.float64), full, size) for m in matrices])
        warped, inside = pyr.read(to_full @ mats, size, padding_mode="border")
        return [float(v) for v in orientation_correlation(orientation_field(fix)[0], warped, inside)]

    def inverse_residual(self, moving: torch.Tensor, fixed: torch.Tensor, matrix: np.ndarray) -> float:
        """Inverse consistency of a solution: the refinement is run again on the swapped pair (the visible image
        moving onto the IR) from the inverse of ``matrix``, and the composition of both maps is compared with the
        identity on a 5x5 grid of frame points -> mean residual / mean displacement of ``matrix`` (0 = the two
        directions agree exactly; ~1 = the swapped refinement undid nothing of it or went elsewhere).

        A refinement that drifts on a low-texture pair follows the texture of the image it warps, so the two
        directions drift differently; a real misalignment is found from both sides. moving, fixed: (1, 1, H, W)."""
        h, w = fixed.shape[-2:]
        matrix = np.asarray(matrix, dtype=np.float64)
        back, _ = refine_matrix(ImagePyramid(fixed.float()), moving.float(), np.linalg.inv(matrix), self.sizes,
                                self.iterations, self.models)
        xs, ys = np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5))
        pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])

        def moved(m: np.ndarray) -> float:
            q = m @ pts
            return np.linalg.norm(q[:2] / q[2:] - pts[:2], axis=0).mean()

        return float(moved(matrix @ back) / max(moved(matrix), 1e-9))

    # -- registrar -----------------------------------------------------------------------------

    def register_pair(self, moving: torch.Tensor, fixed: torch.Tensor,
                      ir_size: tuple[int, int] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """moving, fixed (1, 1, H, W) float -> (3x3 sampling matrix, diagnostics).

        A weak result (a solution from a distant start kept with a MIND gain under ``rescue_below``, or, for an IR of
        another size, none kept) is searched again with the coarse search at ``rescue_size`` (the same acceptance
        tests), and the result with the larger gain is kept: on dark night scenes the 80 px search can rank every
        candidate near the truth out of its top ``top_k``, and the finer one finds them; the right solutions then
        gain more than the wrong ones the first search returned (docs/RESULTS.md §1.10).

        With ``narrow_fallback``, an IR of another size for which nothing was kept is then searched as a narrow-field
        IR (:meth:`_narrow_fallback`)."""
        pyr = ImagePyramid(moving)
        levels = _PairLevels({s: _FixedLevel(_resized(fixed, s)) for s in self.sizes})
        matrix, d = self._search_with_rescue(pyr, levels, fixed, ir_size)
        if self.ir_field != "wider" or ir_size is None:
            return matrix, d
        if self.narrow_fallback and d["fallback"] is not None:
            return self._narrow_fallback(pyr, levels, fixed, ir_size, matrix, d)
        if self.narrow_above is not None and d["fallback"] is None:
            d["anchor_scale"] = self.anchor_scale(matrix, tuple(fixed.shape[-2:]), ir_size)
            if d["anchor_scale"] >= self.narrow_above:
                return self._narrow_if_better(pyr, levels, fixed, ir_size, matrix, d)
        return matrix, d

    def anchor_scale(self, matrix: np.ndarray, size: tuple[int, int], ir_size: tuple[int, int]) -> float:
        """The isotropic sampling scale of a full-resolution ``matrix`` at the frame centre, relative to the
        square-pixel anchor (the ``scales`` a candidate is labelled with; > 1: the IR sees a narrower field)."""
        h, w = size
        jac = homography_jacobian(np.asarray(matrix, dtype=np.float64), (w - 1) / 2.0, (h - 1) / 2.0)
        return float(math.sqrt(abs(np.linalg.det(jac @ np.linalg.inv(self._anchor(size, ir_size))))))

    def _narrow_if_better(self, pyr: ImagePyramid, levels: dict[int, _FixedLevel], fixed: torch.Tensor,
                          ir_size: tuple[int, int], matrix: np.ndarray,
                          d: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """A wide solution at the top of the wide scale range against the narrow search's: both judged over the same
        support (the visible pixels both IR footprints cover, at the finest level) by the MIND distance and the
        orientation correlation; the narrow one replaces it only when both prefer it, MIND by ``far_margin``."""
        narrow = copy.copy(self)
        narrow.ir_field, narrow.scales, narrow.narrow_fallback, narrow.narrow_above = (
            "narrower", IR_FIELDS["narrower"], False, None)
        matrix2, d2 = narrow._search_with_rescue(pyr, levels, fixed, ir_size)
        if d2["fallback"] is not None:
            d["ir_field"] = {"used": "wider", "narrower": {"start": d2["start"], "fallback": d2["fallback"]}}
            return matrix, d
        level = levels[self.sizes[-1]]
        h, w = level.size
        full = tuple(fixed.shape[-2:])
        to_full = np.linalg.inv(scale_matrix(pyr.size, (h, w)))
        mats = np.stack([rescale_matrix(m, full, (h, w)) for m in (matrix, matrix2)])
        moved, inside = pyr.read(to_full @ mats, (h, w), padding_mode="border")
        both = inside[0, 0] * inside[1, 0] * level.border
        residual = (mind_descriptors(moved) - level.desc[None]).abs().mean(1)  # (2, h, w)
        dist = (residual * both).flatten(1).sum(1) / both.sum().clamp_min(1.0)
        orient = orientation_correlation(orientation_field(_resized(fixed.float(), self.sizes[-1]))[0], moved,
                                         both[None, None].expand(2, 1, h, w))
        compared = {"mind_same_support": [float(x) for x in dist],
                    "orientation_same_support": [float(x) for x in orient], "support": float(both.mean())}
        if float(dist[1]) < float(dist[0]) * (1.0 - self.far_margin) and float(orient[1]) > float(orient[0]):
            d2["ir_field"] = {"used": "narrower", "wider": {"start": d["start"], "confidence": d["confidence"],
                                                            "anchor_scale": d["anchor_scale"]}, "compared": compared}
            return matrix2, d2
        d["ir_field"] = {"used": "wider", "narrower": {"start": d2["start"], "confidence": d2["confidence"],
                                                       "compared": compared}}
        return matrix, d

    def _search_with_rescue(self, pyr: ImagePyramid, levels: dict[int, _FixedLevel], fixed: torch.Tensor,
                            ir_size: tuple[int, int] | None) -> tuple[np.ndarray, dict[str, Any]]:
        """The search at ``search_size``, searched again at ``rescue_size`` when weak (:meth:`register_pair`)."""
        matrix, d = self._register(pyr, levels, fixed, ir_size, self.search_size)
        # weak: a distant solution kept with a small gain, or, for an IR of another size, none kept (a weak *near*
        # solution is a small correction of a nearly aligned pair, which a finer coarse search does not change)
        far_kept = d["fallback"] is None and d["near_because"] is None
        weak = (far_kept and d["confidence"] < self.rescue_below) or (d["fallback"] is not None and ir_size is not None)
        if self.rescue_size is None or self.rescue_size <= self.search_size or not weak:
            return matrix, d
        matrix2, d2 = self._register(pyr, levels, fixed, ir_size, self.rescue_size)
        rescue = {"search_size": self.rescue_size, "first": {"start": d["start"], "confidence": d["confidence"],
                                                             "fallback": d["fallback"]},
                  "second": {"start": d2["start"], "confidence": d2["confidence"], "fallback": d2["fallback"]}}
        if d2["confidence"] > d["confidence"]:
            matrix, d = matrix2, d2
        d["rescue"] = rescue
        return matrix, d

    def _narrow_fallback(self, pyr: ImagePyramid, levels: dict[int, _FixedLevel], fixed: torch.Tensor,
                         ir_size: tuple[int, int], matrix: np.ndarray,
                         d: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """The wide-field search kept nothing for an IR of another size: search it as a narrow-field IR (the same
        registrar with ``ir_field`` "narrower": larger sampling scales, coverage relative to the IR's footprint).
        Its solution is kept when it passes its own acceptance tests; otherwise the wide search's result (the input,
        flagged suspect) stands, with the hint to try ``--ir-field narrower`` dropped, since that was tried."""
        narrow = copy.copy(self)
        narrow.ir_field, narrow.scales, narrow.narrow_fallback = "narrower", IR_FIELDS["narrower"], False
        matrix2, d2 = narrow._search_with_rescue(pyr, levels, fixed, ir_size)
        summary = {"start": d2["start"], "confidence": d2["confidence"], "fallback": d2["fallback"]}
        if d2["fallback"] is None:
            d2["ir_field"] = {"used": "narrower", "wider": {"start": d["start"], "fallback": d["fallback"]}}
            return matrix2, d2
        d["ir_field"] = {"used": "wider", "narrower": summary}
        d["warning"] = ("no global alignment found for an IR delivered at another size, with a wider or a narrower IR "
                        f"field; {KEPT_AS_DELIVERED}")
        return matrix, d

    def _register(self, pyr: ImagePyramid, levels: dict[int, _FixedLevel], fixed: torch.Tensor,
                  ir_size: tuple[int, int] | None, search_size: int) -> tuple[np.ndarray, dict[str, Any]]:
        """One search at ``search_size``: coarse candidates, the LK pyramid, acceptance -> (matrix, diagnostics)."""
        full = tuple(fixed.shape[-2:])
        coarse = [(label, m) for _, label, m in self.coarse(pyr, fixed, ir_size, search_size)]
        rescue = search_size == self.rescue_size and search_size != self.search_size
        if self.rescue_jitter is not None and rescue:
            coarse += self._jittered(coarse, full)
        if self.match_starts is not None:
            coarse += self._matched(pyr, fixed, coarse, levels)
        starts = [("identity", np.eye(3))] + coarse
        # every start through the first ``select_after`` levels; then, after each level, the identity start and
        # the best distant ones (``finalists``, one count per level) go on
        current = [(label, m, float("nan")) for label, m in starts]
        for i, level in enumerate(zip(self.sizes, self.iterations, self.models)):
            mats, costs = refine_matrices(pyr, fixed, np.stack([m for _, m, _ in current]), *([x] for x in level),
                                          fixed_levels=levels)
            current = [(label, m, float(c)) for (label, _, _), m, c in zip(current, mats, costs)]
            if i + 1 >= self.select_after:
                keep = self.finalists[min(i + 1 - self.select_after, len(self.finalists) - 1)]
                current = [current[0]] + sorted(current[1:], key=lambda t: t[2])[: max(1, keep)]
        near, far = current[0], min(current[1:], key=lambda t: t[2])
        label, matrix, cost = far
        orient_identity, *orient = self.orientation_scores(pyr, fixed, [np.eye(3), near[1], far[1]])
        alternatives = {"near": {"start": near[0], "mind": near[2], "orientation": orient[0],
                                 "matrix": np.asarray(near[1]).tolist()},
                        "far": {"start": far[0], "mind": far[2], "orientation": orient[1],
                                "matrix": np.asarray(far[1]).tolist()}}
        # Occam: a solution far from the input must beat the refined input by far_margin; repetitive structure
        # (rows of windows, tree lines) offers distant minima only slightly better than the right one
        why_near, tiebreak = None, False
        if near[2] <= cost / (1.0 - self.far_margin) or not np.isfinite(cost):
            # MIND cannot separate them; the orientations may break the tie, by a wider margin, if the distant
            # solution is at least as close in MIND (night scenes: a dark visible image gives MIND gains of 2-3 %)
            tiebreak = (self.orientation_tiebreak is not None and np.isfinite(cost) and cost <= near[2]
                        and orient[1] >= orient[0] + self.orientation_tiebreak)
            why_near = None if tiebreak else "mind"
        # and a second, independent criterion must agree: the gradient orientations (an edge-presence measure,
        # not MIND's local self-similarity) must match better at the distant solution than at the near one
        elif self.agree_margin is not None and orient[1] < orient[0] + self.agree_margin:
            why_near = "orientation"
        if why_near:
            label, matrix, cost = near
        # the identity's distance at the finest size: what the estimate must beat
        _, cost_identity = refine_matrix(pyr, fixed, np.eye(3), self.sizes[-1:], (0,), self.models[-1:],
                                         fixed_levels=levels)
        simpler = self._simpler(pyr, fixed, levels, matrix, cost, cost_identity)
        simplified_from = None
        if simpler is not None:
            simplified_from = describe_model(matrix, full)
            matrix, cost = simpler
        gain = 1.0 - cost / max(cost_identity, 1e-12) if np.isfinite(cost) else -1.0
        alternatives["identity"] = {"start": "none", "mind": cost_identity, "orientation": orient_identity,
                                    "matrix": np.eye(3).tolist()}
        d: dict[str, Any] = {"method": "global", "start": label, "mind_before": cost_identity, "mind_after": cost,
                             "gain": gain, "far_rank": [lb for lb, _ in starts].index(far[0]),
                             "alternatives": alternatives, "near_because": why_near, "tiebreak": tiebreak,
                             "simplified_from": simplified_from,
                             "suspect": False,
                             "fallback": None}
        orient_final = orient[0] if why_near else orient[1]
        if not np.all(np.isfinite(matrix)) or gain < self.min_gain:
            matrix = np.eye(3)
            d.update(mind_after=cost_identity, fallback=f"no global alignment lowers the MIND distance by "
                     f"{self.min_gain:.0%} (best {gain:+.1%}); kept the input")
        elif self.agree_margin is not None and orient_final < orient_identity + self.agree_margin:
            # the same two-criteria test against the input itself: MIND alone drifts on low-texture pairs
            matrix = np.eye(3)
            d.update(mind_after=cost_identity, fallback=f"the gradient orientations do not confirm the global "
                     f"alignment (correlation {orient_final:.3f} vs {orient_identity:.3f} for the input); kept "
                     f"the input")
        if d["fallback"] is not None and ir_size is not None:
            # an IR of another size kept as delivered: right only if the two images were registered before they
            # reached us; a rig whose IR sees a narrower field than this search tries ends here too (RESULTS §1.12)
            d.update(suspect=True, warning=f"no global alignment found for an IR delivered at another size; "
                     f"{KEPT_AS_DELIVERED}" + (
                         "; if the IR camera sees a narrower field than the visible one, try --ir-field narrower"
                         if self.ir_field == "wider" else ""))
        d.update(matrix=matrix.tolist(), model=describe_model(matrix, full),
                 confidence=float(min(max(gain, 0.0), 1.0)) if d["fallback"] is None else 0.0)
        return matrix, d

    def _matched(self, pyr: ImagePyramid, fixed: torch.Tensor, coarse: list[tuple[str, np.ndarray]],
                 levels: dict[int, _FixedLevel] | None = None) -> list[tuple[str, np.ndarray]]:
        """Extra starts from cross-modal matches (:mod:`.matching`): for each of the ``match_starts[0]`` best coarse
        candidates, the IR read by it at ``match_starts[1]`` px (long side), matched to the visible image, and the
        RANSAC homography of the matches composed with it."""
        top, side = self.match_starts
        full = tuple(fixed.shape[-2:])
        # the visible side is described once per pair (``levels`` of :meth:`register_pair`), not once per search
        cache = levels if isinstance(levels, _PairLevels) else _PairLevels({})
        matcher, small = cache.matcher(fixed, side)
        size = tuple(small.shape[-2:])
        to_small = scale_matrix(full, size)
        out = []
        for label, m in coarse[:top]:
            read = m @ np.linalg.inv(to_small)  # small visible px -> IR px
            moved, inside = pyr.read(read[None], size, padding_mode="zeros")
            found = matcher.homography(moved, inside, to_pixel=self.match_to_pixel)
            if found is not None:
                hom, inliers = found
                out.append((f"{label}_match{inliers}", read @ hom @ to_small))
        return out

    def _jittered(self, coarse: list[tuple[str, np.ndarray]], full: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
        """Extra starts for the rescue search: each of the ``rescue_jitter[0]`` best coarse candidates moved by
        +-``rescue_jitter[1]`` of the frame's long side in x and in y and scaled by 1 +- ``rescue_jitter[2]`` about the
        frame centre (six starts each), for a right solution whose nearest candidate lies just outside the
        refinement's basin."""
        top, step, dscale = self.rescue_jitter
        h, w = full
        step *= max(h, w)  # a fraction of the frame: the same search on a thumbnail and on a full frame
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        out = []
        for label, m in coarse[: int(top)]:
            for tag, ds, tx, ty in (("_x+", 0.0, step, 0.0), ("_x-", 0.0, -step, 0.0), ("_y+", 0.0, 0.0, step),
                                    ("_y-", 0.0, 0.0, -step), ("_z+", dscale, 0.0, 0.0), ("_z-", -dscale, 0.0, 0.0)):
                p = np.eye(3)
                p[:2, :2] *= 1.0 + ds
                p[:2, 2] = centre - (1.0 + ds) * centre + [tx, ty]
                out.append((label + tag, m @ p))
        return out

    def _simpler(self, pyr: ImagePyramid, fixed: torch.Tensor, levels: dict[int, _FixedLevel], matrix: np.ndarray,
                 cost: float, cost_identity: float) -> tuple[np.ndarray, float] | None:
        """Occam: the translation that moves the frame centre as ``matrix`` does, refined alone over the last two
        levels -> (matrix, MIND distance) when it keeps all but ``occam_margin`` of ``matrix``'s MIND gain over the
        input, else None. Skipped where ``matrix`` gains less than ``min_gain`` (most aligned pairs: the input is kept
        there unless a translation gained more than the full model, which its refinement is not built to find)."""
        if (self.occam_margin is None or not np.isfinite(cost) or cost >= cost_identity
                or 1.0 - cost / max(cost_identity, 1e-12) < self.min_gain):
            return None
        h, w = fixed.shape[-2:]
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
        q = matrix @ centre
        start = np.eye(3)
        start[:2, 2] = q[:2] / q[2] - centre[:2]
        sizes = self.sizes[-2:]
        shift, shift_cost = refine_matrix(pyr, fixed, start, sizes, self.iterations[-2:],
                                          ("translation",) * len(sizes), fixed_levels=levels)
        kept = (cost_identity - shift_cost) / (cost_identity - cost)
        return (shift, shift_cost) if kept >= 1.0 - self.occam_margin else None

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor,
                 ir_size: tuple[int, int] | None = None) -> RegistrationResult:
        """moving IR (B, 1, H, W), fixed reference (B, 1, H, W) -> RegistrationResult (field on the fixed grid)."""
        if moving.ndim != 4 or moving.shape[1] != 1 or moving.shape != fixed.shape:
            raise ValueError(f"moving and fixed must be equal (B, 1, H, W), got {tuple(moving.shape)}, "
                             f"{tuple(fixed.shape)}")
        b, _, h, w = moving.shape
        mats, diags = [], []
        with torch.no_grad():
            for i in range(b):
                m, d = self.register_pair(moving[i : i + 1].float().cpu(), fixed[i : i + 1].float().cpu(), ir_size)
                mats.append(m)
                diags.append(d)
            field = warp_ops.field_from_matrix(torch.from_numpy(np.stack(mats)), h, w).to(moving.device, moving.dtype)
        return RegistrationResult(warp_ops.warp(moving, field), field, diags)
