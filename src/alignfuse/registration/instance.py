"""Cross-modal deformable registration by instance optimisation on MIND descriptors (no training).

MIND (modality independent neighbourhood descriptor, Heinrich et al., MedIA 2012) describes each
pixel by how similar its patch is to the patches of its neighbours. The description depends on
local structure, not on intensity, so an IR image and a visible image of the same scene have
similar descriptors even where their contrasts are inverted. Registering them is then an ordinary
L1 fitting problem that Adam solves per pair:

1. **global**: of the starts -- identity, the gradient-ECC affine, and a grid of rotations x scales
   each completed by phase correlation on gradient magnitudes (which catches shifts of tens of
   pixels) -- the one with the lowest descriptor distance is kept (optionally refined, ``affine_iters``);
2. **local**: a displacement on a coarse control grid (``spacing`` working pixels apart, bilinearly
   interpolated, so the field is smooth by construction) with a diffusion penalty, at the working
   resolution, each control point bounded to ``max_local`` (a long excursion is a false match);
3. the working-resolution field is rescaled to the input size (``warp.resize_field``).

The moving image's descriptors are computed once and resampled with the current field (the usual
shortcut of descriptor-based registration) instead of recomputing them on the warped image.

Fallback: the descriptor distance of identity, global and full results is measured at the working
resolution; a stage that increases it is dropped (``fallback`` says which; falling back to the identity
also sets ``suspect=True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import warp as _warp
from ..losses.mind import mind_descriptors
from ..stages import RegistrationResult

__all__ = ["mind_descriptors", "MINDRegistrar"]


def _identity_theta(b: int, device, dtype) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device, dtype=dtype).repeat(b, 1, 1)


class MINDRegistrar:
    """Phase correlation + affine + smooth deformable registration minimising the MIND distance.

    Follows :class:`alignfuse.stages.Registrar`: ``(moving (B,1,H,W), fixed (B,1,H,W))`` in [0, 1] ->
    :class:`~alignfuse.stages.RegistrationResult` with the field convention of :mod:`alignfuse.warp`.

    Args:
        long_side: working resolution (long side, px); the field is optimised there and rescaled.
        spacing: control-point spacing of the deformable stage, in working pixels.
        affine_iters: Adam steps per level of the MIND affine refinement of the chosen start. Default 0: on
            RoadScene ``large`` pairs the refinement moved a good ECC start to a wrong MIND minimum (one pair of 6
            went from 4.9 to 13.1 px EPE), so the start is kept as it is.
        dense_iters: Adam steps of the deformable stage.
        smooth: weight of the diffusion penalty on the control-point displacements (working px^2).
        deformable: ``False`` stops after the affine stage.
        radius / sigma: MIND neighbour distance and patch Gaussian (working pixels).
        lr: Adam step of the control points (working pixels).
        max_local: bound on each control-point displacement, as a fraction of ``long_side``.
        search_angles / search_scales: rotations (degrees) x scales tried as global starts, each completed
            by phase correlation (the default covers the ``large`` preset: +-10 degrees, scale 0.9-1.1; a
            4-degree grid missed 4 of 10 hard RoadScene pairs that the 2-degree grid recovered 3 of).
        max_shift: a global start whose displacement at the image centre exceeds this fraction of the long
            side is not considered. Phase correlation sometimes completes a rotation/scale candidate with a
            wrapped or spurious translation that the MIND distance cannot tell from the right one (TNO ``large``
            pair 06: 0.3018 vs 0.3020, 132 px mean displacement on a 512 px image against ~10); 0.15 is far
            beyond the presets (``large``: +-25 px, ~4 % of 640 px) and a typical rig's misalignment.
        min_gain: a global start replaces the identity only if it lowers the distance by this fraction.
            0.02 was the best of 0-0.08 on 40 RoadScene *training* pairs under `umf` (global-only EPE 3.38 px,
            identity 4.15, 0.08: 4.04) and equal-best under `large` (4.0 px vs 24.9).

    diagnostics: ``method``, ``global_init`` (the chosen start) and ``global_gain`` (its relative distance gain
    over the identity), ``mind_before`` / ``mind_global`` / ``mind_after`` (mean descriptor distance at
    the working resolution), ``ncc_before`` / ``ncc_after`` (global Pearson of gradient magnitudes),
    ``folding_fraction``, ``field_mean_px``, ``field_max_px``, ``suspect``, ``fallback``.
    """

    def __init__(
        self,
        long_side: int = 256,
        spacing: int = 8,
        affine_iters: int = 0,
        dense_iters: int = 80,
        smooth: float = 0.05,
        deformable: bool = True,
        radius: int = 2,
        sigma: float = 1.0,
        lr: float = 0.25,
        max_local: float = 0.03,
        search_angles: tuple[float, ...] = tuple(float(a) for a in range(-12, 13, 2)),
        search_scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1),
        min_gain: float = 0.02,
        max_shift: float = 0.15,
    ) -> None:
        if long_side < 32 or spacing < 2:
            raise ValueError(f"long_side must be >= 32 and spacing >= 2, got {long_side}, {spacing}")
        self.long_side = int(long_side)
        self.spacing = int(spacing)
        self.affine_iters = int(affine_iters)
        self.dense_iters = int(dense_iters)
        self.smooth = float(smooth)
        self.deformable = bool(deformable)
        self.radius = int(radius)
        self.sigma = float(sigma)
        self.lr = float(lr)
        self.max_local = float(max_local) * self.long_side
        self.search_angles = tuple(float(a) for a in search_angles)
        self.search_scales = tuple(float(x) for x in search_scales)
        self.min_gain = float(min_gain)
        if max_shift <= 0:
            raise ValueError(f"max_shift must be > 0 (a fraction of the long side), got {max_shift}")
        self.max_shift = float(max_shift)

    def _describe(self, img: torch.Tensor) -> torch.Tensor:
        return mind_descriptors(img, self.radius, self.sigma)

    # -- stages ------------------------------------------------------------------------------

    @staticmethod
    def _distance(desc_f: torch.Tensor, desc_m: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Mean |MIND_fixed - MIND_moving(grid)| per batch item, (B,)."""
        warped = _warp.sample_grid(desc_m, grid)
        return (desc_f - warped).abs().mean(dim=(1, 2, 3))

    def _initial_theta(self, moving: torch.Tensor, fixed: torch.Tensor,
                       ecc_matrices: list[torch.Tensor]) -> tuple[torch.Tensor, list[str], list[float]]:
        """The global start, per pair: the candidate with the lowest MIND distance at half the working size.

        Candidates: identity; the gradient-ECC affine (``ecc_matrices``: per pair, the 3x3 sampling matrix
        in working pixels); and, for every rotation in ``search_angles`` x scale in ``search_scales`` about
        the image centre, that similarity transform plus the phase-correlation translation (gradient
        magnitudes) that best completes it; candidates that move the image centre by more than ``max_shift``
        of the long side are dropped. Returns theta (B, 2, 3) and, per pair, the chosen candidate's name
        and its relative distance gain over the identity.
        """
        import cv2

        from .classical import phase_correlation

        b, _, h, w = moving.shape
        # pixel -> normalised coordinates (align_corners=False): x_n = (2 x + 1) / w - 1
        norm = np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])
        norm_inv = np.linalg.inv(norm)
        centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        size = (max(h // 2, 16), max(w // 2, 16))
        desc_m = self._describe(_warp.resize_image(moving, size))
        desc_f = self._describe(_warp.resize_image(fixed, size))
        thetas, names, gains = [], [], []
        for i in range(b):
            mv, fx = moving[i, 0].cpu().numpy(), fixed[i, 0].cpu().numpy()
            cands: dict[str, np.ndarray] = {"identity": np.eye(3)}
            ecc_m = ecc_matrices[i].numpy()
            if ecc_m.shape == (3, 3) and np.allclose(ecc_m[2], [0.0, 0.0, 1.0]) and np.isfinite(ecc_m).all():
                cands["ecc"] = ecc_m
            for angle in self.search_angles:
                for scale in self.search_scales:
                    c, s_ = scale * np.cos(np.deg2rad(angle)), scale * np.sin(np.deg2rad(angle))
                    lin = np.array([[c, -s_], [s_, c]])
                    m = np.eye(3)
                    m[:2, :2], m[:2, 2] = lin, centre - lin @ centre  # sampling map p -> lin (p - c) + c
                    warped = cv2.warpAffine(mv, m[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                            borderMode=cv2.BORDER_REPLICATE)
                    dx, dy, _ = phase_correlation(warped, fx, upsample=1, use_gradients=True)  # centroid only: dense refines
                    m[:2, 2] += lin @ np.array([dx, dy])  # fixed(p) ~ warped(p + d) = moving(m (p + d))
                    cands[f"rot{angle:+g}_scale{scale:g}"] = m
            limit = self.max_shift * max(h, w)
            cands = {k: m for k, m in cands.items()
                     if k == "identity" or np.hypot(*(m[:2, :2] @ centre + m[:2, 2] - centre)) <= limit}
            keys = list(cands)
            theta = torch.tensor(np.stack([(norm @ cands[k] @ norm_inv)[:2] for k in keys]), dtype=moving.dtype,
                                 device=moving.device)
            grid = _warp.affine_grid(theta, size)
            dist = self._distance(desc_f[i : i + 1].expand(len(keys), -1, -1, -1),
                                  desc_m[i : i + 1].expand(len(keys), -1, -1, -1), grid)
            best = int(dist.argmin())
            if float(dist[best]) > (1.0 - self.min_gain) * float(dist[0]):
                best = 0  # no start clearly better than identity (e.g. a content-free reference): do not move
            thetas.append(theta[best])
            names.append(keys[best])
            gains.append(1.0 - float(dist[best]) / max(float(dist[0]), 1e-12))
        return torch.stack(thetas).to(moving.device), names, gains

    def _affine(self, moving: torch.Tensor, fixed: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Refine theta on two levels (1/4, 1/2 of the working size) by Adam on the MIND distance."""
        h, w = moving.shape[-2:]
        theta = theta.clone().requires_grad_(True)
        for scale in (4, 2):
            size = (max(h // scale, 16), max(w // scale, 16))
            desc_m = self._describe(_warp.resize_image(moving, size))
            desc_f = self._describe(_warp.resize_image(fixed, size))
            opt = torch.optim.Adam([theta], lr=0.004)
            for _ in range(self.affine_iters):
                opt.zero_grad()
                grid = _warp.affine_grid(theta, size)
                self._distance(desc_f, desc_m, grid).sum().backward()
                opt.step()
        return theta.detach()

    def _dense(self, desc_m: torch.Tensor, desc_f: torch.Tensor, base_grid: torch.Tensor) -> torch.Tensor:
        """Control-grid displacement (B, 2, gh, gw) in working pixels minimising distance + smoothness."""
        b, _, h, w = desc_f.shape
        gh, gw = max(h // self.spacing, 2), max(w // self.spacing, 2)
        ctrl = torch.zeros(b, 2, gh, gw, device=desc_f.device, dtype=desc_f.dtype, requires_grad=True)
        to_norm = _warp.pixel_to_grid_scale((h, w), desc_f)
        opt = torch.optim.Adam([ctrl], lr=self.lr)
        for _ in range(self.dense_iters):
            opt.zero_grad()
            disp = F.interpolate(ctrl, size=(h, w), mode="bilinear", align_corners=True) * to_norm
            grid = base_grid + disp.permute(0, 2, 3, 1)
            reg = (ctrl.diff(dim=2) ** 2).mean() + (ctrl.diff(dim=3) ** 2).mean()
            (self._distance(desc_f, desc_m, grid).sum() + self.smooth * b * reg).backward()
            opt.step()
            with torch.no_grad():  # the local stage corrects residuals; a long excursion is a false match
                ctrl.clamp_(-self.max_local, self.max_local)
        return F.interpolate(ctrl.detach(), size=(h, w), mode="bilinear", align_corners=True)

    # -- registrar -----------------------------------------------------------------------------

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        if moving.ndim != 4 or moving.shape[1] != 1 or moving.shape != fixed.shape:
            raise ValueError(f"moving and fixed must be equal (B, 1, H, W), got {tuple(moving.shape)}, {tuple(fixed.shape)}")
        b, _, H, W = moving.shape
        s = self.long_side / max(H, W)
        size = (max(round(H * s), 16), max(round(W * s), 16))
        mov = _warp.resize_image(moving.float(), size)
        fix = _warp.resize_image(fixed.float(), size)
        # ECC at the input resolution (its own pyramid): at the working size it misses more often
        from .classical import ECCRegistrar

        ecc = ECCRegistrar(use_gradients=True)
        to_work = torch.diag(torch.tensor([size[1] / W, size[0] / H, 1.0], dtype=torch.float64))
        ecc_matrices = [
            to_work @ torch.tensor(ecc(moving[i : i + 1].cpu(), fixed[i : i + 1].cpu()).diagnostics[0]["matrix"],
                                   dtype=torch.float64) @ torch.linalg.inv(to_work)
            for i in range(b)
        ]
        with torch.enable_grad():
            start, start_names, start_gains = self._initial_theta(mov, fix, ecc_matrices)
            theta = self._affine(mov, fix, start)
        desc_m, desc_f = self._describe(mov), self._describe(fix)
        ident = _warp.affine_grid(_identity_theta(b, mov.device, mov.dtype), size)
        grid_g = _warp.affine_grid(theta, size)
        if self.deformable:
            with torch.enable_grad():
                disp = self._dense(desc_m, desc_f, grid_g)
        else:
            disp = torch.zeros(b, 2, *size, device=mov.device, dtype=mov.dtype)
        grid_full = grid_g + (disp * _warp.pixel_to_grid_scale(size, mov)).permute(0, 2, 3, 1)
        # an image without structure (constant, or nearly) gives no evidence for any field
        flat = (mov.flatten(1).std(1) < 1e-3) | (fix.flatten(1).std(1) < 1e-3)
        with torch.no_grad():
            d_before = self._distance(desc_f, desc_m, ident)
            d_global = self._distance(desc_f, desc_m, grid_g)
            d_after = self._distance(desc_f, desc_m, grid_full)

        # normalised sampling grid -> pixel field at the working size
        field_g = _warp.grid_to_field(grid_g)
        field_full = _warp.grid_to_field(grid_full)
        fields, diags = [], []
        for i in range(b):
            d: dict[str, Any] = {
                "method": "mind" if self.deformable else "mind-affine",
                "global_init": start_names[i],
                "global_gain": start_gains[i],
                "mind_before": float(d_before[i]),
                "mind_global": float(d_global[i]),
                "mind_after": float(d_after[i]),
                "suspect": False,
                "fallback": None,
            }
            f = field_full[i]
            if bool(flat[i]):
                f = torch.zeros_like(f)
                d.update(suspect=True, fallback="an image has no structure; kept the input (identity)")
                d["mind_after"] = d["mind_before"]
            elif float(d_after[i]) > float(d_global[i]):
                f = field_g[i]
                # benign (e.g. a pure translation the global stage already matched): not suspect
                d.update(fallback="deformable stage raised the MIND distance; kept the affine field")
                d["mind_after"] = d["mind_global"]
            if d["mind_after"] > float(d_before[i]):
                f = torch.zeros_like(f)
                d.update(suspect=True, fallback="registration raised the MIND distance; kept the input (identity)")
                d["mind_after"] = d["mind_before"]
            fields.append(f)
            diags.append(d)
        field = _warp.resize_field(torch.stack(fields), (H, W)).to(moving.dtype)
        aligned = _warp.warp(moving, field)
        from .classical import gradient_magnitude, pearson

        folding = _warp.folding_fraction(field)
        mag = _warp.magnitude(field)
        for i, d in enumerate(diags):
            gm = gradient_magnitude(moving[i, 0].cpu().numpy())
            ga = gradient_magnitude(aligned[i, 0].cpu().numpy())
            gf = gradient_magnitude(fixed[i, 0].cpu().numpy())
            d.update(ncc_before=pearson(gm, gf), ncc_after=pearson(ga, gf), folding_fraction=float(folding[i]),
                     field_mean_px=float(mag[i].mean()), field_max_px=float(mag[i].max()))
            d["confidence"] = 1.0 - d["mind_after"]
        return RegistrationResult(aligned=aligned, field=field, diagnostics=diags)
