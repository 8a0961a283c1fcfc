"""Fixed camera rigs: one global IR -> visible model calibrated from many frames, then reused for every frame.

A rig file (JSON, :data:`RIG_FORMAT`) holds a 3x3 matrix ``H`` that maps a **visible** pixel to the **raw IR**
pixel it sees: ``[u, v, w]^T = H [x, y, 1]^T``, IR position ``(u / w, v / w)``; pixel centres at integer
coordinates, origin at the centre of the top-left pixel, x to the right, y down. It applies to frames of the
stated ``vis_size`` and ``ir_size`` (``[width, height]`` as delivered, before any resampling).

:func:`estimate_rig` runs the global search (:class:`GlobalSearchRegistrar`) on each frame pair, drops frames
whose estimate has a low confidence (relative MIND gain), and takes a robust consensus: the per-corner median
of where the four visible-frame corners land in the IR, the frames within a tolerance of it (``agreed``), and
the homography through the mean corners of those frames. :class:`RigRegistrar` turns a rig into the global
stage of a :class:`~alignfuse.registration.ChainRegistrar`: no search per frame, the same field every frame.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .. import warp as warp_ops
from ..errors import UserError
from ..stages import CONSTANT_STD, RegistrationResult
from ..pixel_grid import scale_matrix
from .global_search import GlobalSearchRegistrar, describe_model

__all__ = ["RIG_FORMAT", "RIG_CONVENTION", "RigModel", "FrameEstimate", "estimate_rig", "RigRegistrar",
           "frame_corners", "corner_error", "consensus", "estimate_frame"]

RIG_FORMAT = "alignfuse-rig/1"
RIG_CONVENTION = ("matrix maps a visible pixel (x, y, 1) to the raw IR pixel (u/w, v/w) it sees, "
                  "[u, v, w] = matrix @ [x, y, 1]; pixel centres at integer coordinates, origin at the centre of "
                  "the top-left pixel, x right, y down; sizes are [width, height] as delivered")

Size = tuple[int, int]  # (width, height)


def frame_corners(matrix: np.ndarray, vis_size: Size) -> np.ndarray:
    """Where the 4 visible-frame corners land under ``matrix`` (3x3): (4, 2) positions (tl, tr, bl, br)."""
    w, h = vis_size
    pts = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T
    q = np.asarray(matrix, dtype=np.float64) @ pts
    return (q[:2] / q[2:]).T


def _ir_to_grid(vis_size: Size, ir_size: Size) -> np.ndarray:
    """Raw IR pixel -> pixel of the IR resampled onto the visible grid (``io.resample_to``)."""
    (vw, vh), (iw, ih) = vis_size, ir_size
    return scale_matrix((ih, iw), (vh, vw))


@dataclass
class RigModel:
    """A calibrated rig. ``matrix``: visible pixel -> raw IR pixel (module docstring); sizes ``(width, height)``."""

    matrix: np.ndarray
    vis_size: Size
    ir_size: Size
    model: str = "homography"
    frames: dict[str, int] = dc_field(default_factory=dict)
    spread_px: dict[str, float] = dc_field(default_factory=dict)
    verdict: str = "ok"
    reason: str = ""
    source: str = ""
    agreeing: list[int] = dc_field(default_factory=list)  # indices of the agreeing frames (calibration only)

    def grid_matrix(self) -> np.ndarray:
        """Sampling matrix on the visible grid: visible pixel -> pixel of the IR resampled onto that grid."""
        return _ir_to_grid(self.vis_size, self.ir_size) @ self.matrix

    def check_sizes(self, vis_size: Size, ir_size: Size, what: str = "this pair") -> None:
        if tuple(vis_size) != tuple(self.vis_size) or tuple(ir_size) != tuple(self.ir_size):
            raise UserError(f"{self.source or 'rig'}: calibrated for visible {self.vis_size[0]}x{self.vis_size[1]} and "
                            f"IR {self.ir_size[0]}x{self.ir_size[1]}, but {what} has visible {vis_size[0]}x{vis_size[1]}"
                            f" and IR {ir_size[0]}x{ir_size[1]}; calibrate this rig's frames again")

    def require_usable(self) -> "RigModel":
        """-> self; a failed calibration is a :class:`UserError`, a weak one a warning (its frames agreed poorly)."""
        if self.verdict == "failed":
            raise UserError(f"{self.source or 'rig'}: this calibration failed ({self.reason}); calibrate again with "
                            "more frames")
        if self.verdict == "weak":
            warnings.warn(f"{self.source or 'rig'}: a weak calibration ({self.reason})", stacklevel=2)
        return self

    def to_json(self) -> dict[str, Any]:
        return {"format": RIG_FORMAT, "convention": RIG_CONVENTION, "model": self.model,
                "matrix": [[float(v) for v in row] for row in np.asarray(self.matrix)],
                "vis_size": list(self.vis_size), "ir_size": list(self.ir_size), "frames": dict(self.frames),
                "spread_px": {k: float(v) for k, v in self.spread_px.items()}, "verdict": self.verdict,
                "reason": self.reason, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RigModel":
        """Read and validate a rig file; every defect is a :class:`UserError` naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(), parse_constant=lambda c: float("nan"))
        except OSError as exc:
            raise UserError(f"{path}: cannot read the rig file ({exc.strerror or exc})") from exc
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise UserError(f"{path}: not a rig file (invalid JSON: {type(exc).__name__})") from exc

        def bad(what: str) -> UserError:
            return UserError(f"{path}: not a valid rig file ({what}); write one with `alignfuse calibrate`")

        if not isinstance(data, dict) or data.get("format") != RIG_FORMAT:
            raise bad(f"'format' must be {RIG_FORMAT!r}")
        try:
            matrix = np.array(data["matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad("'matrix' must be a 3x3 list of numbers") from exc
        if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
            raise bad("'matrix' must be a 3x3 list of finite numbers")
        if abs(np.linalg.det(matrix)) < 1e-12:
            raise bad("'matrix' is singular")
        sizes = []
        for key in ("vis_size", "ir_size"):
            value = data.get(key)
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
                raise bad(f"'{key}' must be [width, height], positive integers")
            sizes.append((value[0], value[1]))
        frames = data.get("frames", {})
        spread = data.get("spread_px", {})
        return cls(matrix=matrix, vis_size=sizes[0], ir_size=sizes[1], model=str(data.get("model", "homography")),
                   frames=frames if isinstance(frames, dict) else {}, spread_px=spread if isinstance(spread, dict) else {},
                   verdict=str(data.get("verdict", "")), reason=str(data.get("reason", "")), source=str(path))


@dataclass
class FrameEstimate:
    """One frame's global estimate: ``grid_matrix`` (visible pixel -> resampled-IR pixel), its confidence, why the
    input was kept (``fallback``), and whether the search flagged its own answer ``suspect`` (an IR of another size
    kept as delivered: no evidence that the cameras are aligned)."""

    name: str
    grid_matrix: np.ndarray
    confidence: float
    fallback: str | None
    suspect: bool = False


def estimate_frame(registrar: GlobalSearchRegistrar, name: str, ir: np.ndarray, vis_y: np.ndarray,
                   ir_size: Size | None) -> FrameEstimate:
    """ir, vis_y: (H, W) float in [0, 1] on the visible grid (the IR resampled onto it)."""
    if float(np.std(ir)) < CONSTANT_STD or float(np.std(vis_y)) < CONSTANT_STD:  # nothing to search (a lens cap)
        return FrameEstimate(name, np.eye(3), 0.0, "an image is constant (no structure)", suspect=True)
    moving = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None]
    fixed = torch.from_numpy(np.ascontiguousarray(vis_y, dtype=np.float32))[None, None]
    with torch.no_grad():
        matrix, diag = registrar.register_pair(moving, fixed, ir_size)
    return FrameEstimate(name, np.asarray(matrix, dtype=np.float64), float(diag.get("confidence", 0.0)),
                         diag.get("fallback"), bool(diag.get("suspect", False)))


def consensus(estimates: list[FrameEstimate], vis_size: Size, ir_size: Size, min_confidence: float = 0.02,
              tolerance_px: float | None = None) -> RigModel:
    """Robust consensus of per-frame estimates (module docstring) -> :class:`RigModel`.

    tolerance_px: a frame agrees when each of its corners lies within this many visible pixels of the median
    corner (default: 3 % of the long side, at least 3 px: per-frame homographies scatter by up to ~2 % at the
    corners of small frames, a wrong optimum lands 5 % or more away)."""
    w, h = vis_size
    tol = tolerance_px if tolerance_px is not None else max(3.0, 0.03 * max(w, h))
    confident = [e for e in estimates if e.fallback is None and e.confidence >= min_confidence]
    counts = {"frames": len(estimates), "confident": len(confident), "agreed": 0}
    # a frame kept as delivered is a vote for an aligned rig, unless the search doubted it: an IR of another size
    # that matched nothing (a covered lens, a dead sensor, another scene) says nothing about the rig
    identity_votes = sum(1 for e in estimates if e.fallback is not None and not e.suspect)
    unmatched = sum(1 for e in estimates if e.fallback is not None and e.suspect)
    to_raw = np.linalg.inv(_ir_to_grid(vis_size, ir_size))
    if len(confident) < 2:
        if estimates and identity_votes > len(estimates) / 2:
            counts["agreed"] = identity_votes
            return RigModel(to_raw, vis_size, ir_size, "identity", counts, {"corner_rms": 0.0, "corner_max": 0.0},
                            "ok", f"{identity_votes} of {len(estimates)} frames need no global correction: "
                            "the IR resampled onto the visible grid is already aligned")
        why = f"only {len(confident)} of {len(estimates)} frames gave a confident estimate (need 2)"
        if unmatched:
            why += (f"; in {unmatched} the IR matched the visible image nowhere (a covered lens, a dead sensor or "
                    "another scene?)")
        return RigModel(to_raw, vis_size, ir_size, "identity", counts, {}, "failed", why)
    corners = np.stack([frame_corners(e.grid_matrix, vis_size) for e in confident])  # (N, 4, 2)
    median = np.median(corners, axis=0)
    deviation = np.linalg.norm(corners - median, axis=2).max(axis=1)  # (N,) worst corner per frame
    agree = deviation <= tol
    counts["agreed"] = int(agree.sum())
    index = {id(e): i for i, e in enumerate(estimates)}
    agreeing = [index[id(e)] for e, ok in zip(confident, agree) if ok]
    if counts["agreed"] < 2:
        return RigModel(to_raw, vis_size, ir_size, "identity", counts, {}, "failed",
                        f"the {len(confident)} confident frames disagree (no two within {tol:.1f} px at the corners)")
    mean_corners = corners[agree].mean(axis=0)
    src = frame_corners(np.eye(3), vis_size).astype(np.float32)
    grid = cv2.getPerspectiveTransform(src, mean_corners.astype(np.float32)).astype(np.float64)
    residual = np.linalg.norm(corners[agree] - mean_corners, axis=2)  # (n, 4)
    spread = {"corner_rms": float(np.sqrt((residual ** 2).mean())), "corner_max": float(residual.max()),
              "tolerance": float(tol)}
    share = counts["agreed"] / len(confident)
    if counts["agreed"] >= 3 and share >= 0.5:
        verdict, reason = "ok", (f"{counts['agreed']} of {len(confident)} confident frames agree within {tol:.1f} px "
                                 f"(corner RMS spread {spread['corner_rms']:.2f} px)")
    else:
        verdict, reason = "weak", (f"only {counts['agreed']} of {len(confident)} confident frames agree; calibrate "
                                   "on more frames with structure in both images")
    return RigModel(to_raw @ grid, vis_size, ir_size, describe_model(grid, (h, w)), counts, spread, verdict, reason,
                    agreeing=agreeing)


def refine_rig(rig: RigModel, frames: list[tuple[np.ndarray, np.ndarray]], long_side: int = 640) -> RigModel:
    """Refine the consensus with every given frame at once (:func:`refine_matrix_joint`: one Gauss-Newton problem
    over all their MIND residuals, at 384 px then up to ``long_side``): the per-frame estimates each see one scene
    and scatter by 1-2 % at the corners; together they constrain the rig far better. frames: (ir on the visible
    grid, visible luminance), (H, W) float. A refinement that moves a corner by more than the consensus tolerance
    is not trusted (it is reported and the consensus kept)."""
    from .global_search import refine_matrix_joint

    if len(frames) < 2 or rig.model == "identity":
        return rig
    h, w = frames[0][1].shape
    top = min(long_side, max(h, w))
    sizes = (384, top) if top > 384 else (top,)
    movings = [torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None] for ir, _ in frames]
    fixeds = [torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None, None] for _, v in frames]
    with torch.no_grad():
        grid, _ = refine_matrix_joint(movings, fixeds, rig.grid_matrix(), sizes, (10,) * len(sizes),
                                      ("homography",) * len(sizes))
    moved = corner_error(grid, rig.grid_matrix(), rig.vis_size)
    rig.frames["refined_with"] = len(frames)
    rig.spread_px["refinement_shift"] = moved
    if not np.all(np.isfinite(grid)) or moved > rig.spread_px.get("tolerance", 3.0):
        rig.reason += f"; joint refinement moved a corner by {moved:.1f} px, kept the consensus"
        return rig
    rig.matrix = np.linalg.inv(_ir_to_grid(rig.vis_size, rig.ir_size)) @ grid
    rig.model = describe_model(grid, (h, w))
    return rig


def estimate_rig(frames: Iterable[tuple[str, np.ndarray, np.ndarray, Size]], registrar: GlobalSearchRegistrar | None = None,
                 min_confidence: float = 0.02, tolerance_px: float | None = None,
                 refine_frames: int = 12) -> tuple[RigModel, list[FrameEstimate]]:
    """frames: (name, ir on the visible grid (H, W), visible luminance (H, W), raw IR size (w, h)), all of one
    rig (same sizes) -> (rig, per-frame estimates). The ``refine_frames`` most confident frames are kept in memory
    for the joint refinement of the consensus (:func:`refine_rig`; 0: no refinement)."""
    registrar = registrar or GlobalSearchRegistrar()
    estimates: list[FrameEstimate] = []
    kept: list[tuple[float, int, np.ndarray, np.ndarray]] = []  # (confidence, index, ir, vis_y), best first
    sizes: tuple[Size, Size] | None = None
    for name, ir, vis_y, ir_size in frames:
        vis_size = (vis_y.shape[1], vis_y.shape[0])
        if sizes is None:
            sizes = (vis_size, tuple(ir_size))
        elif sizes != (vis_size, tuple(ir_size)):
            raise UserError(f"{name}: visible {vis_size[0]}x{vis_size[1]} / IR {ir_size[0]}x{ir_size[1]} differ from the "
                            f"first frame's ({sizes[0][0]}x{sizes[0][1]} / {sizes[1][0]}x{sizes[1][1]}); one rig, one size")
        same = tuple(ir_size) == vis_size
        estimate = estimate_frame(registrar, name, ir, vis_y, None if same else tuple(ir_size))
        estimates.append(estimate)
        if refine_frames > 0 and estimate.fallback is None:
            kept.append((estimate.confidence, len(estimates) - 1, ir, vis_y))
            kept = sorted(kept, key=lambda t: -t[0])[:refine_frames]
    if sizes is None:
        raise UserError("no frames to calibrate from")
    rig = consensus(estimates, sizes[0], sizes[1], min_confidence, tolerance_px)
    if rig.verdict != "failed":
        agreeing = set(rig.agreeing)
        rig = refine_rig(rig, [(ir, v) for _, i, ir, v in kept if i in agreeing])
    return rig, estimates


class RigRegistrar:
    """The global stage of a calibrated rig: the rig's homography as a field, for every frame of its sizes.

    Call: moving (B, 1, H, W) IR on the visible grid, fixed (B, 1, H, W) -> RegistrationResult; ``ir_size`` is the
    IR's delivered ``(width, height)`` (None: the visible size)."""

    wants_ir_size = True

    def __init__(self, rig: RigModel | str | Path) -> None:
        self.rig = (rig if isinstance(rig, RigModel) else RigModel.load(rig)).require_usable()
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor, ir_size: Size | None = None) -> RegistrationResult:
        b, _, h, w = moving.shape
        self.rig.check_sizes((w, h), tuple(ir_size) if ir_size is not None else (w, h))
        key = (h, w, moving.device, moving.dtype)
        if self._cache is None or self._cache[0] != key:
            m = torch.from_numpy(self.rig.grid_matrix())[None]
            self._cache = (key, warp_ops.field_from_matrix(m, h, w).to(moving.device, moving.dtype))
        field = self._cache[1].expand(b, -1, -1, -1).contiguous()
        d = {"method": "rig", "model": self.rig.model, "matrix": self.rig.grid_matrix().tolist(),
             "rig": self.rig.source, "suspect": False, "fallback": None, "confidence": 1.0}
        return RegistrationResult(warp_ops.warp(moving, field), field, [dict(d) for _ in range(b)])


def corner_error(a: np.ndarray, b: np.ndarray, vis_size: Size) -> float:
    """Largest distance (px) between where two matrices send the visible-frame corners."""
    return float(np.linalg.norm(frame_corners(a, vis_size) - frame_corners(b, vis_size), axis=1).max())

