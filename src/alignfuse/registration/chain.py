"""Registrars in sequence, composed into one field, under one acceptance policy.

``ChainRegistrar([Stage("global", GlobalSearchRegistrar()), Stage("local", mrrn, long_side=384)])`` runs each
stage on the IR as the stages before it left it, composes the fields (``warp.compose``) and keeps a stage's
contribution only when it lowers the MIND distance between the IR and the visible image (the *declared
space* of the policy: modality-independent, so contrast inversions do not count as misalignment) by at least
the stage's ``min_gain`` (relative), and, for a stage that would be the only correction, only when its field
is inverse-consistent (``max_inverse``: its registrar run on the swapped pair undoes it) and/or coherent
(``min_affine``: the share of its energy an affine model explains); what a network answers to an aligned pair is
neither. A registration is therefore never accepted when it is worse than its input
by that measure, and pairs that are already aligned stay at the identity.

The chain is also the one guard step of the pipeline: each stage sees its own working size (the field is
resized back), constant images are not registered at all, and every stage's own diagnostics are kept.

diagnostics: ``method``, ``stages`` (per stage: ``name``, ``accepted``, ``gain`` (the chain's measure),
``mean_shift_px``, ``affine_fraction``, ``diagnostics`` (its registrar's own)), ``mind_before`` / ``mind_after`` (the policy's distance), ``confidence`` (relative gain, 0..1),
``model`` and ``matrix`` (from a global stage, when one was accepted), ``suspect``, ``fallback``, ``warning``
(a kept stage below its ``warn_below`` gain, or a stage whose registrar flagged its own answer suspect with a warning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .. import warp as warp_ops
from ..stages import CONSTANT_STD, Registrar, RegistrationResult
from kornia.geometry import create_meshgrid

from ..losses.mind import mind_descriptors
from .features import orientation_correlation, orientation_field
from .global_search import KEPT_AS_DELIVERED

__all__ = ["ChainRegistrar", "Stage", "MindJudge", "OrientationJudge", "affine_fraction", "inverse_residual",
           "mind_gain", "orientation_gain"]


@dataclass
class Stage:
    """One link of a chain: a registrar, the long side (px) it works at (``None``: the input size), the relative
    MIND gain it must bring to be kept and, optionally, the mean displacement (fraction of the long side) below
    which its field is not used: a global stage whose correction lies within the reach of the local stage after
    it leaves that misalignment to the local stage; and, optionally, the fraction of its field's energy an
    affine model must explain (:func:`affine_fraction`) for it to be kept when it would be the chain's only
    correction (no earlier stage kept: the pair looked aligned to them, or their correction was small enough to
    leave to this stage, ``min_shift``). After a kept global correction the
    residual is legitimately non-rigid (elastic, parallax), so the test does not apply there. ``max_inverse`` is
    the second test of such a lone stage: its registrar is run on the swapped pair and the composition of both
    fields, relative to the forward one (:func:`inverse_residual`), must stay below it; ``alone_min_gain``, when
    set, replaces ``min_gain`` for a lone stage (its other tests guard it). A kept stage whose
    gain is below ``warn_below`` marks the registration suspect (the CLI warns): kept, since it still beat its
    input, but weakly supported (an always-kept stage, ``min_gain`` -inf, is never warned about)."""

    name: str
    registrar: Registrar
    long_side: int | None = None
    min_gain: float = 0.0
    min_shift: float = 0.0
    min_affine: float = 0.0
    max_inverse: float = math.inf
    alone_min_gain: float | None = None
    warn_below: float = 0.0


def _work_size(size: tuple[int, int], long_side: int | None, min_short: int = 64) -> tuple[int, int]:
    """``size`` shrunk so its long side is ``long_side``, the short side kept >= ``min_short`` (elongated images)."""
    h, w = size
    if not long_side or max(h, w) <= long_side:
        return size
    s = max(long_side / max(h, w), min(1.0, min_short / min(h, w)))
    return max(8, round(h * s)), max(8, round(w * s))


def affine_fraction(field: torch.Tensor, grid: int = 48) -> float:
    """Fraction of a field's energy (sum |f|^2) that its least-squares affine fit explains, 0..1.

    field (1, 2, H, W), sampled on a ``grid`` x ``grid`` lattice. A real residual misalignment (a small
    rotation, zoom or shift left by a global stage, a lens difference) is smooth and mostly low-order; what a
    cross-modal network predicts for a pair that is already aligned is incoherent, local noise (on aligned
    RoadScene training pairs the MRRN's fields are 11-47 % affine, on ``umf`` pairs 34-83 %)."""
    small = torch.nn.functional.interpolate(field.double(), size=(grid, grid), mode="bilinear", align_corners=True)
    energy = float(small.pow(2).sum())
    if not math.isfinite(energy):
        return 0.0
    if energy <= 1e-12:
        return 1.0
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, grid, dtype=torch.float64),
                            torch.linspace(-1, 1, grid, dtype=torch.float64), indexing="ij")
    design = torch.stack([xs.flatten(), ys.flatten(), torch.ones(grid * grid, dtype=torch.float64)], 1)
    target = small[0].flatten(1).T  # (grid^2, 2)
    coef = torch.linalg.lstsq(design, target).solution
    residual = float((design @ coef - target).pow(2).sum())
    return max(0.0, 1.0 - residual / energy)


class MindJudge:
    """The chain's declared space: the mean MIND distance between the IR warped by a field and the visible image,
    over the pixels whose IR sample lies inside the IR frame (replicated borders of a shifted IR are not evidence
    against the shift), at a working size of ``long_side``. moving, fixed (1, 1, H, W); call with a field
    (1, 2, H, W)."""

    def __init__(self, moving: torch.Tensor, fixed: torch.Tensor, long_side: int = 384) -> None:
        self.moving = moving
        self.size = _work_size(tuple(moving.shape[-2:]), long_side)
        self.desc_fixed = mind_descriptors(warp_ops.resize_image(fixed, self.size))

    def __call__(self, field: torch.Tensor) -> float:
        small = warp_ops.resize_field(field, self.size)
        desc = mind_descriptors(warp_ops.resize_image(warp_ops.warp(self.moving, field), self.size))
        grid = create_meshgrid(*self.size, normalized_coordinates=False, device=field.device, dtype=field.dtype)
        inside = warp_ops.inside(grid.permute(0, 3, 1, 2) + small, self.size)
        per_pixel = (desc - self.desc_fixed).abs().mean(1, keepdim=True)
        return float((per_pixel * inside).sum() / inside.sum().clamp_min(1.0))


class OrientationJudge:
    """The second, independent criterion (the global stage's, :meth:`GlobalSearchRegistrar.orientation_scores`):
    the normalised doubled-angle gradient-orientation correlation between the IR warped by a field and the visible
    image, over the IR's coverage eroded beyond the Sobel's reach, at a working size of ``long_side`` (1 = every
    edge has the same orientation). moving, fixed (1, 1, H, W); call with a field (1, 2, H, W)."""

    def __init__(self, moving: torch.Tensor, fixed: torch.Tensor, long_side: int = 384) -> None:
        self.moving = moving
        self.size = _work_size(tuple(moving.shape[-2:]), long_side)
        self.z_fixed = orientation_field(warp_ops.resize_image(fixed, self.size))[0]

    def __call__(self, field: torch.Tensor) -> float:
        small = warp_ops.resize_field(field, self.size)
        grid = create_meshgrid(*self.size, normalized_coordinates=False, device=field.device, dtype=field.dtype)
        inside = warp_ops.inside(grid.permute(0, 3, 1, 2) + small, self.size).to(field.dtype)
        moved = warp_ops.resize_image(warp_ops.warp(self.moving, field), self.size)
        return float(orientation_correlation(self.z_fixed, moved, inside)[0])


def orientation_gain(moving: torch.Tensor, fixed: torch.Tensor, field: torch.Tensor, long_side: int = 384) -> float:
    """Rise of the :class:`OrientationJudge` correlation from the identity to ``field`` (absolute)."""
    judge = OrientationJudge(moving, fixed, long_side)
    return judge(field) - judge(torch.zeros_like(field))


def mind_gain(moving: torch.Tensor, fixed: torch.Tensor, field: torch.Tensor, long_side: int = 384) -> float:
    """Relative MIND distance gain of ``field`` over the identity (the chain's measure)."""
    judge = MindJudge(moving, fixed, long_side)
    return 1.0 - judge(field) / max(judge(torch.zeros_like(field)), 1e-12)


def inverse_residual(registrar: Registrar, moving: torch.Tensor, fixed: torch.Tensor, forward: torch.Tensor) -> float:
    """Inverse consistency of ``forward`` = registrar(moving, fixed).field: the registrar is run on the swapped
    pair (b = registrar(fixed, moving).field) and ``mean |a(x) + b(x + a(x))| / mean |a|`` is returned (0: the
    swapped answer undoes the forward one exactly; ~1: unrelated). A real misalignment is seen from both sides;
    what a network answers to an aligned pair is not (RoadScene training pairs: aligned 0.87-1.02 for most,
    ``umf`` 0.30-0.62; ``benchmarks/local_gate.py``)."""
    backward = registrar(fixed, moving).field
    composed = warp_ops.compose(backward, forward)
    return float(warp_ops.magnitude(composed).mean() / warp_ops.magnitude(forward).mean().clamp_min(1e-6))


class ChainRegistrar(torch.nn.Module):
    """Stages applied in order (module docstring).

    Args:
        stages: the links; a registrar that wants the original IR size (``wants_ir_size``) gets it.
        judge_long_side: working size (long side, px) of the acceptance measure.
        dead_zone: a final field whose mean displacement is below this fraction of the long side is replaced by
            the identity. Cross-modal registration has a noise floor: on aligned RoadScene *training* pairs the
            MIND optimum lies 1-2.6 px (of ~500) from the hand alignment and the MRRN moves aligned pairs by ~1 px,
            so a sub-floor "correction" is as likely noise as signal. The default chain uses 0.0035 (1.75 px at
            500 px), chosen on 20 RoadScene training pairs per preset: aligned input 0.98 -> 0.36 px mean field
            with ``umf`` EPE unchanged (2.68 px); 0.005 gave 0.16 px / 2.82 px (docs/RESULTS.md, Registration).
        name: reported as ``method``.
    """

    def __init__(self, stages: Sequence[Stage], judge_long_side: int = 384, dead_zone: float = 0.0,
                 name: str = "chain") -> None:
        super().__init__()
        if not stages:
            raise ValueError("a chain needs at least one stage")
        self.stages = list(stages)
        # registered so .to() / .parameters() reach the networks of the stages
        self.nets = torch.nn.ModuleList([s.registrar for s in stages if isinstance(s.registrar, torch.nn.Module)])
        self.judge_long_side = judge_long_side
        self.dead_zone = float(dead_zone)
        self.suspect_loss = 0.05  # a stage that raised the distance by 5 %: its registrar failed on this pair
        self.name = name

    wants_ir_size = True

    @torch.no_grad()
    def forward(self, moving: torch.Tensor, fixed: torch.Tensor,
                ir_size: tuple[int, int] | None = None) -> RegistrationResult:
        """moving IR (B, 1, H, W), fixed reference (B, 1, H, W) -> RegistrationResult at the input size."""
        if moving.ndim != 4 or moving.shape[1] != 1 or moving.shape != fixed.shape:
            raise ValueError(f"moving and fixed must be equal (B, 1, H, W), got {tuple(moving.shape)}, "
                             f"{tuple(fixed.shape)}")
        fields, diags = [], []
        for i in range(moving.shape[0]):
            f, d = self._register_one(moving[i : i + 1], fixed[i : i + 1], ir_size)
            fields.append(f)
            diags.append(d)
        field = torch.cat(fields)
        return RegistrationResult(warp_ops.warp(moving, field), field, diags)

    def _register_one(self, moving: torch.Tensor, fixed: torch.Tensor,
                      ir_size: tuple[int, int] | None) -> tuple[torch.Tensor, dict[str, Any]]:
        size = tuple(moving.shape[-2:])
        field = torch.zeros(1, 2, *size, dtype=moving.dtype, device=moving.device)
        d: dict[str, Any] = {"method": self.name, "stages": [], "suspect": False, "fallback": None, "model": "identity",
                             "matrix": None}
        if float(moving.std()) < CONSTANT_STD or float(fixed.std()) < CONSTANT_STD:
            d.update(suspect=True, fallback="an image is constant (no structure); kept the input (identity)",
                     confidence=0.0, mind_before=None, mind_after=None)
            return field, d
        needs_judge = any(math.isfinite(s.min_gain) for s in self.stages) or self.dead_zone > 0
        judge = MindJudge(moving, fixed, self.judge_long_side) if needs_judge else None

        # a stage that is always kept (min_gain -inf, e.g. a calibrated rig) needs no judging: the measure is skipped
        # altogether when no stage needs it (a rig alone: the whole registration is one cached field)
        before = current = judge(field) if judge else float("nan")
        for stage in self.stages:
            work = _work_size(size, stage.long_side)
            moved = warp_ops.warp(moving, field) if d["stages"] and any(st["accepted"] for st in d["stages"]) else moving
            kwargs = {"ir_size": ir_size} if getattr(stage.registrar, "wants_ir_size", False) else {}
            moved_w, fixed_w = warp_ops.resize_image(moved, work), warp_ops.resize_image(fixed, work)
            result = stage.registrar(moved_w, fixed_w, **kwargs)
            stage_field = warp_ops.resize_field(result.field, size)
            candidate = warp_ops.compose(field, stage_field)
            always = not math.isfinite(stage.min_gain)
            score = judge(candidate) if judge else float("nan")
            gain = 1.0 - score / max(current, 1e-12) if math.isfinite(score) else float("nan")
            shift = float(warp_ops.magnitude(stage_field).mean())
            finite = bool(torch.isfinite(candidate).all())
            coherence = affine_fraction(stage_field) if finite else 0.0
            alone = not any(st["accepted"] for st in d["stages"])  # no earlier stage kept
            inverse = None
            reason = None
            own = result.diagnostics[0] if result.diagnostics else {}
            bar = stage.alone_min_gain if alone and stage.alone_min_gain is not None else stage.min_gain
            if not finite:
                reason = "non-finite field"
            elif shift == 0.0 and own.get("fallback"):  # the registrar kept the input itself: say why
                reason = str(own["fallback"])
            elif shift < stage.min_shift * max(size):
                reason = f"moves {shift:.1f} px, within reach of the next stage"
            elif not always and not gain >= bar:  # a NaN gain is no evidence either
                reason = f"MIND gain {gain:+.1%} < {bar:.1%}"
            elif not always and alone and coherence < stage.min_affine:
                reason = f"incoherent field ({coherence:.0%} affine < {stage.min_affine:.0%})"
            elif not always and alone and math.isfinite(stage.max_inverse):
                inverse = inverse_residual(stage.registrar, moved_w, fixed_w, result.field)
                if inverse > stage.max_inverse:
                    reason = (f"inconsistent field (the swapped pair's field undoes only {1 - inverse:.0%} of it; "
                              f"needs {1 - stage.max_inverse:.0%})")
            accepted = reason is None
            d["stages"].append({"name": stage.name, "accepted": accepted, "gain": gain, "mean_shift_px": shift,
                                "affine_fraction": coherence, "inverse_residual": inverse, "reason": reason,
                                "diagnostics": own})
            if accepted:
                field, current = candidate, score
                if own.get("matrix") is not None and own.get("model") is not None:
                    d.update(model=own["model"], matrix=own["matrix"])
        mean_shift = float(warp_ops.magnitude(field).mean())
        if 0 < mean_shift < self.dead_zone * max(size):
            field, current = torch.zeros_like(field), before
            d.update(model="identity", matrix=None, dead_zone=True)
            for s in d["stages"]:
                s["accepted"] = False
        rejected = [f"{s['name']} ({s['reason']})" for s in d["stages"] if not s["accepted"] and s.get("reason")]
        if d.get("dead_zone"):
            d["fallback"] = (f"registration would move the IR by {mean_shift:.2f} px on average, below the cross-modal "
                             f"noise floor ({self.dead_zone * max(size):.1f} px); kept the input")
        elif rejected:
            d["fallback"] = f"not used: {'; '.join(rejected)}"
        if needs_judge:
            gain = 1.0 - current / max(before, 1e-12)
            d.update(mind_before=before, mind_after=current, confidence=max(0.0, min(1.0, gain)))
        else:  # nothing was measured: the stages' own confidence (a rig's is 1)
            own = [s["diagnostics"].get("confidence") for s in d["stages"] if s["accepted"]]
            d.update(mind_before=None, mind_after=None, confidence=float(min(own)) if own and None not in own else 0.0)
        # a stage whose own result was worse than its input (by the chain's measure) is worth a warning, and so is
        # a kept stage that only just passed
        d["suspect"] = any(s["gain"] < -self.suspect_loss for s in d["stages"] if math.isfinite(s["gain"]))
        # a registrar that doubts its own answer (e.g. the global search keeping an IR of another size as delivered)
        doubts = [s["diagnostics"]["warning"] for s in d["stages"] if s["diagnostics"].get("suspect")
                  and s["diagnostics"].get("warning")]
        global_stages = [s for s in d["stages"] if "matrix" in s["diagnostics"]]
        if not doubts and ir_size is not None and global_stages and not any(s["accepted"] for s in global_stages):
            # the global stage's own answer was rejected here (e.g. a zoom into sensor noise that its search
            # scored as a gain): the IR of another size is kept as delivered, just as when the search found nothing
            doubts = [f"no global alignment kept for an IR delivered at another size; {KEPT_AS_DELIVERED}"]
        if doubts:
            d["suspect"] = True
            d["warning"] = "; ".join(doubts)
        weak = [(s["name"], s["gain"], st.warn_below) for s, st in zip(d["stages"], self.stages)
                if s["accepted"] and math.isfinite(st.min_gain) and math.isfinite(s["gain"])
                and s["gain"] < st.warn_below]
        if weak:
            d["suspect"] = True
            weak_text = [f"{name} alignment weakly supported (MIND gain {gain:.1%} < {bar:.0%}); check the result"
                         for name, gain, bar in weak]
            d["warning"] = "; ".join(([d["warning"]] if d.get("warning") else []) + weak_text)
        d["stages_used"] = [s["name"] for s in d["stages"] if s["accepted"]]
        return field, d
