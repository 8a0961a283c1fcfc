"""Training data: aligned pairs held in memory and seeded patch samplers.

Every sampler takes a ``numpy.random.Generator`` (the training loop derives it from
(seed, step, rank)), so a batch is a pure function of the step: resuming reproduces it.
Batches are float32 tensors ``(B, C, h, w)`` in [0, 1].
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import io, synth
from ..errors import AlignfuseWarning, UserError

__all__ = ["PairBank", "ShiftedBatch", "load_bank", "resize_bank", "paired_crops", "shifted_crops", "misaligned_crops",
           "degrade_sources", "swap_sources"]


@dataclass
class PairBank:
    """Aligned pairs: ir[i] (H, W), vis[i] (H, W, 3) or (H, W), vis_y[i] (H, W); float32 [0, 1]."""

    names: list[str]
    ir: list[np.ndarray]
    vis: list[np.ndarray]
    vis_y: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.names)


def load_bank(data: Path, split: Path | None = None, limit: int | None = None) -> PairBank:
    """Read the aligned pairs of ``data/ir`` and ``data/vi`` (restricted to ``split`` names)."""
    names = io.read_split(split) if split else None
    pairs, unpaired = io.pair_folders(Path(data) / "ir", Path(data) / "vi", names=names)
    if not pairs:
        raise UserError(f"{data}: no training pairs found")
    if unpaired and names is not None:  # a listed name trained on nothing would go unnoticed in the record
        warnings.warn(f"{split}: {len(unpaired)} listed name(s) left out of training ({unpaired[0]}"
                      + (", ..." if len(unpaired) > 1 else "") + ")", AlignfuseWarning, stacklevel=2)
    pairs = pairs[:limit] if limit else pairs
    bank = PairBank([], [], [], [])
    for stem, ir_path, vis_path in pairs:
        p = io.load_pair(ir_path, vis_path)
        bank.names.append(stem)
        bank.ir.append(p.ir)
        vis = p.vis if p.vis.ndim == 3 else np.repeat(p.vis[..., None], 3, axis=2)
        bank.vis.append(vis.astype(np.float32))
        bank.vis_y.append(p.vis_y)
    return bank


def resize_bank(bank: PairBank, long_side: int) -> PairBank:
    """The bank with every pair shrunk so its long side is at most ``long_side`` px (:func:`alignfuse.warp.resize_image`,
    as :class:`alignfuse.pipeline.Pipeline` resizes before registering); smaller pairs are kept as they are."""
    from ..warp import resize_image

    def shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        t = resize_image(t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None], size).clamp(0, 1)
        return (t[0, 0] if img.ndim == 2 else t[0].permute(1, 2, 0)).numpy()

    out = PairBank(list(bank.names), [], [], [])
    for ir, vis, vis_y in zip(bank.ir, bank.vis, bank.vis_y):
        h, w = ir.shape
        s = long_side / max(h, w)
        size = (max(8, round(h * s)), max(8, round(w * s))) if s < 1 else (h, w)
        for dst, img in ((out.ir, ir), (out.vis, vis), (out.vis_y, vis_y)):
            dst.append(shrink(img, size) if size != (h, w) else img)
    return out


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """list of (h, w) or (h, w, c) -> (B, C, h, w)."""
    batch = np.stack(arrays)
    if batch.ndim == 3:
        batch = batch[:, None]
    else:
        batch = batch.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))


def pick_image(bank: PairBank, rng: np.random.Generator, size: int, margin: int = 0) -> int:
    """Index of a random image large enough for a ``size`` crop with ``margin``; images too small are skipped."""
    need = size + 2 * margin
    fits = [i for i, ir in enumerate(bank.ir) if min(ir.shape) >= need]
    if not fits:
        raise UserError(f"no training image is at least {need}x{need} px (crop {size} + margin {margin})")
    return fits[int(rng.integers(len(fits)))]


def _crop_box(rng: np.random.Generator, h: int, w: int, size: int, margin: int = 0) -> tuple[int, int]:
    if h < size + 2 * margin or w < size + 2 * margin:
        raise ValueError(f"image {w}x{h} too small for {size}px crops with a {margin}px margin")
    y = int(rng.integers(margin, h - size - margin + 1))
    x = int(rng.integers(margin, w - size - margin + 1))
    return y, x


def paired_crops(bank: PairBank, rng: np.random.Generator, batch: int, size: int,
                 colour: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Same crop and flip of aligned VIS and IR ("paired mode"). -> vis (B,3|1,s,s), ir (B,1,s,s)."""
    vis, ir = [], []
    for _ in range(batch):
        i = pick_image(bank, rng, size)
        y, x = _crop_box(rng, *bank.ir[i].shape, size)
        v = (bank.vis[i] if colour else bank.vis_y[i])[y:y + size, x:x + size]
        r = bank.ir[i][y:y + size, x:x + size]
        if rng.random() < 0.5:
            v, r = v[:, ::-1], r[:, ::-1]
        vis.append(v)
        ir.append(r)
    return _stack(vis), _stack(ir)


class ShiftedBatch(NamedTuple):
    """RFVIF training batch: vis, ir (shifted), gt (IR at the VIS position) (B,1,s,s); shifts (B,2) as
    (dx, dy); teacher (B,1,s,s) crops of the teacher images at the VIS position, or None."""

    vis: torch.Tensor
    ir: torch.Tensor
    gt: torch.Tensor
    shifts: torch.Tensor
    teacher: torch.Tensor | None


def shifted_crops(bank: PairBank, rng: np.random.Generator, batch: int, size: int, max_shift: int = 8,
                  p_zero: float = 0.1, teacher: list[np.ndarray] | None = None) -> ShiftedBatch:
    """RFVIF samples (spec §4.6): VIS crop at p, IR crop at p + (dy, dx), GT = IR crop at p.

    (dy, dx) are independent uniform integers in [-max_shift, max_shift]; with probability ``p_zero``
    both are 0 so the aligned case is learned. ``teacher``: optional (h, w) images on the VIS grid of
    each bank pair (e.g. a fusion of the aligned pair), cropped and flipped like the VIS.
    """
    if teacher is not None and len(teacher) != len(bank):
        raise ValueError(f"teacher has {len(teacher)} images for {len(bank)} pairs")
    vis, ir, gt, shifts, taught = [], [], [], [], []
    for _ in range(batch):
        i = pick_image(bank, rng, size, margin=max_shift)
        y, x = _crop_box(rng, *bank.ir[i].shape, size, margin=max_shift)
        if rng.random() < p_zero:
            dy = dx = 0
        else:
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        v = bank.vis_y[i][y:y + size, x:x + size]
        g = bank.ir[i][y:y + size, x:x + size]
        s = bank.ir[i][y + dy:y + dy + size, x + dx:x + dx + size]
        t = teacher[i][y:y + size, x:x + size] if teacher is not None else None
        if rng.random() < 0.5:
            v, g, s = v[:, ::-1], g[:, ::-1], s[:, ::-1]
            t = t[:, ::-1] if t is not None else None
            dx = -dx
        vis.append(v)
        gt.append(g)
        ir.append(s)
        taught.append(t)
        shifts.append((dx, dy))
    return ShiftedBatch(_stack(vis), _stack(ir), _stack(gt), torch.tensor(shifts, dtype=torch.float32),
                        _stack(taught) if teacher is not None else None)


def misaligned_crops(bank: PairBank, rng: np.random.Generator, batch: int, size: int, preset: str = "umf",
                     reference: list[np.ndarray] | None = None, mono_fraction: float = 0.0,
                     zero_fraction: float = 0.0) -> dict[str, torch.Tensor]:
    """Registration samples: same crop of (reference, IR), then the IR crop is distorted by ``preset``.

    ``reference`` defaults to the VIS luminance (cross-modal); pass the pseudo-IR images to train
    MRRN the UMF way. With probability ``mono_fraction`` a sample's reference is the aligned IR itself
    (mono-modal self-supervision, not in the paper). With probability ``zero_fraction`` the IR is left
    undistorted (field_gt = 0), so the network also learns to leave aligned pairs alone. Returns fixed
    (B,1,s,s), moving (distorted IR), ir_gt, field_gt (B,2,s,s).

    ``preset`` may list alternatives separated by ``|`` (e.g. several elastic scales); each sample then
    draws one uniformly. A single preset draws nothing extra, so its batches are as before.
    """
    specs = [synth.parse_preset(p.strip()) for p in preset.split("|")]
    ref = reference if reference is not None else bank.vis_y
    fixed, moving, gt, fields = [], [], [], []
    for _ in range(batch):
        i = pick_image(bank, rng, size)
        y, x = _crop_box(rng, *bank.ir[i].shape, size)
        r = bank.ir[i][y:y + size, x:x + size]
        f = (bank.ir if rng.random() < mono_fraction else ref)[i][y:y + size, x:x + size]
        if rng.random() < 0.5:
            r, f = np.ascontiguousarray(r[:, ::-1]), np.ascontiguousarray(f[:, ::-1])
        fixed.append(f)
        gt.append(r)
        if zero_fraction > 0 and rng.random() < zero_fraction:
            moving.append(r)
            fields.append(np.zeros((2, *r.shape), dtype=np.float32))
            continue
        spec = specs[int(rng.integers(len(specs)))] if len(specs) > 1 else specs[0]
        s = synth.synthesise_pair(np.ascontiguousarray(r), f, spec, rng, inverse_iterations=20)
        moving.append(s.ir_warp)
        fields.append(s.field)
    return {"fixed": _stack(fixed), "moving": _stack(moving), "ir_gt": _stack(gt),
            "field_gt": torch.from_numpy(np.stack(fields))}


def degrade_sources(vis: torch.Tensor, ir: torch.Tensor, rng: np.random.Generator, p: float,
                    noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, with probability ``p``, one source (chosen at random) loses contrast around its crop mean ``m``:
    ``x' = m' + k (x - m)``, ``k ~ U(0.25, 0.7)``; a visible crop also darkens (``m' = m U(0.5, 1)``, a night frame), an
    IR crop washes out (``m' = m + (1 - m) U(0, 0.3)``, a warm scene); plus Gaussian noise of std ``U(0, noise)``.
    (B, 1, s, s) x2 in [0, 1] -> the same; the draws are one block, so the stream does not depend on the picks."""
    n = vis.shape[0]
    draws = rng.random((6, n))
    hit, pick_ir = draws[0] < p, draws[1] < 0.5
    k = 0.25 + 0.45 * draws[2]

    def per_sample(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=vis.dtype, device=vis.device).view(n, 1, 1, 1)

    out = []
    for x, is_ir in ((vis, False), (ir, True)):
        m = x.mean((2, 3), keepdim=True)
        m_new = m + (1.0 - m) * per_sample(0.3 * draws[3]) if is_ir else m * per_sample(0.5 + 0.5 * draws[3])
        y = m_new + per_sample(k) * (x - m)
        if noise > 0:
            y = y + per_sample(noise * draws[4]) * torch.as_tensor(rng.standard_normal(tuple(x.shape)), dtype=x.dtype,
                                                                   device=x.device)
        out.append(torch.where(per_sample(hit & (pick_ir == is_ir)) > 0, y.clamp(0.0, 1.0), x))
    return out[0], out[1]


def swap_sources(vis: torch.Tensor, ir: torch.Tensor, rng: np.random.Generator,
                 p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, with probability ``p``, the IR and visible crops trade places: (B, 1, s, s) x2 -> (vis, ir)."""
    flip = torch.as_tensor(rng.random(vis.shape[0]) < p, device=vis.device).view(-1, 1, 1, 1)
    return torch.where(flip, ir, vis), torch.where(flip, vis, ir)
