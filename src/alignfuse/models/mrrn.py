"""MRRN (UMF-CMGR's registration network) and a VoxelMorph-style U-Net registrar.

MRRN follows the official ``DeformableNet`` (spec §1.2): a shared (Siamese) 2-level feature
extractor with k4/s2 down-sampling convs, an L1 "match cost" map (not a cost volume), a coarse
and a refine flow estimator at 1/4 and at 1/2 resolution, and ``ResizeTransform`` up-sampling
(values x2, bilinear x2 with ``align_corners=True``), including the quirk that the 16-channel
decoder features are also multiplied by 2 (``upfeat_quirk``). Module names match the official
ones (``enc``, ``conv2_0``, ``predict_flow2a``, ``dc_conv1_2`` ...) so its weights map directly
(drop its duplicated ``enc.6+`` keys and ``*.grid`` buffers).

Differences from the official code, on purpose:

* any input size: inputs are replicate-padded (bottom/right) to a multiple of 4 and the outputs
  cropped back; every resampling goes through :func:`alignfuse.warp.warp` with grids built from
  the input shape (no fixed 256x256 buffers, no ``.cuda()``);
* the flow heads start near zero (N(0, 1e-5) weights, zero bias, as VoxelMorph), so an
  untrained MRRN is the identity warp;
* Convention: **inside** the network flows keep the official channel order (row/y, column/x),
  so official weights stay valid; every field **returned** (and every warp call) uses alignfuse's
  ``(dx, dy)`` pixel convention, ``aligned[y, x] = moving[y + dy, x + dx]`` (channels flipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from alignfuse.errors import UnknownNameError
from alignfuse.losses.mind import mind_descriptors
from alignfuse.stages import RegistrationResult
from alignfuse.warp import warp

__all__ = [
    "MRRN_CONFIGS",
    "UNET_CONFIGS",
    "MRRN",
    "UNetRegistrar",
    "match_cost",
    "correlation_volume",
    "resize_transform",
    "build_mrrn",
    "build_unet_registrar",
    "convert_official_mrrn_state_dict",
]

MIND_CHANNELS = 8  # descriptors per pixel of losses.mind.mind_descriptors

# enc: extractor widths at 1/2 and 1/4; coarse: M_C widths; refine: M_R (dilated) widths.
MRRN_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {"enc": (16, 32), "coarse": (48, 32, 16), "refine": (48, 48, 32)},  # official, 0.171 M
    # The MRRN is already cheap (1.8 GMACs @256^2): spec §5 shrinks crops/batch, not widths.
    "cpu": {"enc": (16, 32), "coarse": (48, 32, 16), "refine": (48, 48, 32)},
    "tiny": {"enc": (4, 8), "coarse": (8, 8, 4), "refine": (8, 8, 8)},  # tests / smoke runs
    # not in the paper: the official net with a radius-3 correlation volume instead of the 1-channel
    # L1 match cost (trained here because the official cost learned nothing cross-modally on CPU)
    "cpu-corr": {"enc": (16, 32), "coarse": (48, 32, 16), "refine": (48, 48, 32), "cost": "corr",
                 "corr_radius": 3},
    # not in the paper: the extractor sees MIND descriptors (modality-independent, losses/mind.py) instead
    # of intensities, so the cross-modal matching problem the network must learn becomes near mono-modal
    "cpu-mind": {"enc": (16, 32), "coarse": (48, 32, 16), "refine": (48, 48, 32), "cost": "corr",
                 "corr_radius": 3, "inputs": "mind"},
}

# VoxelMorph default U-Net features: encoder, decoder (with skips), full-resolution tail.
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {"enc": (16, 32, 32, 32), "dec": (32, 32, 32, 32), "tail": (32, 16, 16)},
    "cpu": {"enc": (8, 16, 16, 16), "dec": (16, 16, 16, 16), "tail": (16, 8, 8)},
    "cpu-mind": {"enc": (8, 16, 16, 16), "dec": (16, 16, 16, 16), "tail": (16, 8, 8), "inputs": "mind"},
    "tiny": {"enc": (4, 8, 8), "dec": (8, 8, 8), "tail": (8, 4)},
}


def _yx_to_xy(flow: torch.Tensor) -> torch.Tensor:
    """Official (row, col) channel order <-> alignfuse (dx, dy); its own inverse."""
    return flow.flip(1)


def match_cost(feat_fixed: torch.Tensor, feat_moving: torch.Tensor) -> torch.Tensor:
    """Per-pixel L1 feature distance: (B, C, H, W) x 2 -> (B, 1, H, W) (the official ``MatchCost``)."""
    return (feat_fixed - feat_moving).abs().sum(dim=1, keepdim=True)


def correlation_volume(feat_fixed: torch.Tensor, feat_moving: torch.Tensor, radius: int) -> torch.Tensor:
    """Local correlation (PWC-Net style): (B, C, H, W) x 2 -> (B, (2r+1)^2, H, W).

    Channel ``(j + r) * (2r + 1) + (i + r)`` holds ``mean_c f[c, y, x] * m[c, y + j, x + i]`` of the
    channel-normalised features (zero padding outside), so the network sees *where* the moving
    features match, not only *how far* they are from the fixed ones at the same pixel.
    """
    # channels-last: the per-offset channel sums run over contiguous memory (3x faster on CPU at 1/2 of
    # a 384 px image than the channels-first layout; the same values up to float rounding)
    f = F.normalize(feat_fixed, dim=1).contiguous(memory_format=torch.channels_last)
    m = F.pad(F.normalize(feat_moving, dim=1), (radius,) * 4).contiguous(memory_format=torch.channels_last)
    h, w = f.shape[-2:]
    size = 2 * radius + 1
    out = [(f * m[..., j:j + h, i:i + w]).sum(1, keepdim=True) for j in range(size) for i in range(size)]
    return torch.cat(out, dim=1)


def resize_transform(x: torch.Tensor, scale_values: bool = True) -> torch.Tensor:
    """Official ``ResizeTransform(1/2)``: multiply by 2, then bilinear x2 (``align_corners=True``).

    Factor 2 is the pixel-unit ratio between consecutive levels (the k4/s2 convs halve the size),
    as in the official code; it is not warp.resize_field's (W1-1)/(W0-1). ``scale_values=False``
    only up-samples (used for features when the up-feature quirk is disabled).
    (B, C, h, w) -> (B, C, 2h, 2w).
    """
    if scale_values:
        x = 2.0 * x
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


def _pad_bottom_right(x: torch.Tensor, multiple: int) -> torch.Tensor:
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def _check_pair(fixed: torch.Tensor, moving: torch.Tensor, channels: int) -> None:
    if fixed.ndim != 4 or fixed.shape[1] != channels:
        raise ValueError(f"fixed must be (B, {channels}, H, W), got {tuple(fixed.shape)}")
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} differ")


def _check_inputs(inputs: str, in_channels: int) -> int:
    """Validate the ``inputs`` option; returns the channels the first conv sees per image."""
    if inputs not in ("image", "mind"):
        raise ValueError(f"inputs must be 'image' or 'mind', got {inputs!r}")
    if inputs == "mind" and in_channels != 1:
        raise ValueError(f"inputs='mind' needs 1-channel images, got in_channels={in_channels}")
    return MIND_CHANNELS if inputs == "mind" else in_channels


def _describe(x: torch.Tensor, inputs: str) -> torch.Tensor:
    """What the network's first conv sees: the image, or its MIND descriptors (B, 8, H, W)."""
    return mind_descriptors(x) if inputs == "mind" else x


def _flow_head(cin: int) -> nn.Conv2d:
    head = nn.Conv2d(cin, 2, kernel_size=3, padding=1)
    nn.init.normal_(head.weight, std=1e-5)  # start at the identity warp (VoxelMorph)
    nn.init.zeros_(head.bias)
    return head


class _ConvBlock(nn.Module):
    """Official ``conv_block``: stride 1 -> conv3x3 p1, stride 2 -> conv4x4 s2 p1; then LReLU(0.2)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        k = {1: 3, 2: 4}[stride]
        self.main = nn.Conv2d(cin, cout, k, stride, 1)
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.main(x))


def _dilated(cin: int, cout: int, dilation: int) -> nn.Sequential:
    """Official ``conv2D``: conv3x3 with dilation d and padding d, then LReLU(0.1)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, dilation, dilation=dilation), nn.LeakyReLU(0.1))


class MRRN(nn.Module):
    """Multi-level Refinement Registration Network (official ``DeformableNet``), any input size.

    Args:
        enc: extractor widths (level 1 at 1/2, level 2 at 1/4); official (16, 32).
        coarse: widths of the coarse estimator M_C; official (48, 32, 16). Its last width is the
            size of the up-sampled decoder features fed to level 1.
        refine: widths of the dilated refine estimator M_R (dilations 1, 2, 4); official (48, 48, 32).
        upfeat_quirk: True (faithful) multiplies the up-sampled 16-channel decoder features by 2
            like the flows, as the official ``ResizeTransform`` does; False only up-samples them.
        cost: ``"l1"`` (official: single-channel per-pixel L1 feature distance, which tells the
            estimators how badly a pixel matches but not in which direction the match lies) or
            ``"corr"`` (not in the paper: a local correlation volume of radius ``corr_radius`` at both
            levels, which makes the capture range explicit).
        in_channels: image channels (1 in UMF-CMGR).
        inputs: ``"image"`` (official: the extractor sees intensities) or ``"mind"`` (not in the paper:
            it sees the 8 MIND descriptors of each 1-channel image, which are invariant to gain, offset
            and contrast inversion, so IR and VIS look alike; the warp still moves the image itself).

    Forward: ``forward(fixed, moving)`` with fixed = pseudo-IR (on the VIS grid) and moving = the
    distorted real IR, both (B, C, H, W), any H, W >= 2.

    Returns:
        dict with
        ``aligned`` (B, C, H, W) = warp(moving, field);
        ``field`` (B, 2, H, W) pixel (dx, dy) field, ``aligned[y, x] = moving[y + dy, x + dx]``;
        ``field_half`` (B, 2, ceil(H/2), ceil(W/2)) and ``field_quarter`` (B, 2, ceil(H/4), ceil(W/4)):
        the refined level fields (official ``int_flow1``/``int_flow2``), (dx, dy) in pixels of
        their own level;
        ``fixed_warped_back`` (B, C, H, W) = warp(fixed, -field) (-field as approximate inverse,
        the official backward term).
    """

    def __init__(
        self,
        enc: Sequence[int] = (16, 32),
        coarse: Sequence[int] = (48, 32, 16),
        refine: Sequence[int] = (48, 48, 32),
        upfeat_quirk: bool = True,
        in_channels: int = 1,
        cost: str = "l1",
        corr_radius: int = 3,
        inputs: str = "image",
    ) -> None:
        super().__init__()
        first_channels = _check_inputs(inputs, in_channels)
        if cost not in ("l1", "corr"):
            raise ValueError(f"cost must be 'l1' or 'corr', got {cost!r}")
        if corr_radius < 1:
            raise ValueError(f"corr_radius must be >= 1, got {corr_radius}")
        c1, c2 = enc
        a, b, c = coarse
        r0, r1, r2 = refine
        self.config = {
            "enc": tuple(enc),
            "coarse": tuple(coarse),
            "refine": tuple(refine),
            "upfeat_quirk": upfeat_quirk,
            "cost": cost,
            "corr_radius": corr_radius,
            "inputs": inputs,
        }
        self.inputs = inputs
        self.cost, self.corr_radius = cost, corr_radius
        n_cost = 1 if cost == "l1" else (2 * corr_radius + 1) ** 2
        self.in_channels = in_channels
        self.upfeat_quirk = upfeat_quirk
        # Shared extractor: enc[0:3] -> level 1 (1/2), enc[3:6] -> level 2 (1/4).
        self.enc = nn.ModuleList(
            [
                _ConvBlock(first_channels, c1, 2),
                _ConvBlock(c1, c1),
                _ConvBlock(c1, c1),
                _ConvBlock(c1, c2, 2),
                _ConvBlock(c2, c2),
                _ConvBlock(c2, c2),
            ]
        )
        # Scale 2 (1/4): coarse on cat(match cost, fixed features), refine on the flow only (Eq. 2).
        self.conv2_0 = _ConvBlock(n_cost + c2, a)
        self.conv2_1 = _ConvBlock(a, b)
        self.conv2_2 = _ConvBlock(b, c)
        self.predict_flow2a = _flow_head(c)
        self.dc_conv2_0 = _dilated(2, r0, 1)
        self.dc_conv2_1 = _dilated(r0, r1, 2)
        self.dc_conv2_2 = _dilated(r1, r2, 4)
        self.predict_flow2b = _flow_head(r2)
        # Scale 1 (1/2): cat(match cost, fixed features, up-sampled flow, up-sampled features).
        self.conv1_0 = _ConvBlock(n_cost + c1 + 2 + c, a)
        self.conv1_1 = _ConvBlock(a, b)
        self.conv1_2 = _ConvBlock(b, c)
        self.predict_flow1a = _flow_head(c)
        self.dc_conv1_0 = _dilated(2, r0, 1)
        self.dc_conv1_1 = _dilated(r0, r1, 2)
        self.dc_conv1_2 = _dilated(r1, r2, 4)
        self.predict_flow1b = _flow_head(r2)

    def _cost(self, feat_fixed: torch.Tensor, feat_moving: torch.Tensor) -> torch.Tensor:
        if self.cost == "l1":
            return match_cost(feat_fixed, feat_moving)
        return correlation_volume(feat_fixed, feat_moving, self.corr_radius)

    def _extract(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _describe(x, self.inputs)
        l1 = self.enc[2](self.enc[1](self.enc[0](x)))
        l2 = self.enc[5](self.enc[4](self.enc[3](l1)))
        return l1, l2

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_pair(fixed, moving, self.in_channels)
        h, w = fixed.shape[-2:]
        c11, c12 = self._extract(_pad_bottom_right(moving, 4))  # official "src"
        c21, c22 = self._extract(_pad_bottom_right(fixed, 4))  # official "tgt"

        # Scale 2 (1/4). Flows here are (y, x) pixels of this level (official order).
        x = torch.cat([self._cost(c22, c12), c22], dim=1)
        x = self.conv2_2(self.conv2_1(self.conv2_0(x)))
        flow2 = self.predict_flow2a(x)
        upfeat2 = resize_transform(x, scale_values=self.upfeat_quirk)
        r = self.dc_conv2_2(self.dc_conv2_1(self.dc_conv2_0(flow2)))
        flow2 = self.predict_flow2b(r) + flow2
        up2 = resize_transform(flow2)
        c11_warped = warp(c11, _yx_to_xy(up2))

        # Scale 1 (1/2): coarse is a residual on the up-sampled flow.
        x = torch.cat([self._cost(c21, c11_warped), c21, up2, upfeat2], dim=1)
        x = self.conv1_2(self.conv1_1(self.conv1_0(x)))
        flow1 = self.predict_flow1a(x) + up2
        r = self.dc_conv1_2(self.dc_conv1_1(self.dc_conv1_0(flow1)))
        flow1 = self.predict_flow1b(r) + flow1

        field = _yx_to_xy(resize_transform(flow1))[..., :h, :w]
        return {
            "aligned": warp(moving, field),
            "field": field,
            "field_half": _yx_to_xy(flow1)[..., : -(-h // 2), : -(-w // 2)],
            "field_quarter": _yx_to_xy(flow2)[..., : -(-h // 4), : -(-w // 4)],
            "fixed_warped_back": warp(fixed, -field),
        }

    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        """:class:`~alignfuse.stages.Registrar` call order (moving first); no diagnostics."""
        out = self(fixed, moving)
        return RegistrationResult(out["aligned"], out["field"], [{"method": "mrrn"} for _ in range(moving.shape[0])])


class UNetRegistrar(nn.Module):
    """VoxelMorph-style dense registration U-Net (Table 1's "VoxelMorph" row), any input size.

    ``cat(fixed, moving)`` -> encoder (conv3x3 + LReLU(0.2), max-pool 2 after each level) ->
    decoder (conv, nearest x2, concat skip) -> full-resolution tail convs -> flow head (N(0, 1e-5),
    zero bias). Inputs are replicate-padded to a multiple of 2**len(enc) and cropped back. The
    field is predicted directly in (dx, dy) pixels (no scaling-and-squaring). ``inputs`` as in
    :class:`MRRN` (``"mind"``: the U-Net sees both images' MIND descriptors).

    Returns the same dict as :class:`MRRN` minus the level fields: ``aligned``, ``field``,
    ``fixed_warped_back``.
    """

    def __init__(
        self,
        enc: Sequence[int] = (16, 32, 32, 32),
        dec: Sequence[int] = (32, 32, 32, 32),
        tail: Sequence[int] = (32, 16, 16),
        in_channels: int = 1,
        inputs: str = "image",
    ) -> None:
        super().__init__()
        if len(dec) != len(enc):
            raise ValueError(f"enc and dec need the same number of levels, got {len(enc)} and {len(dec)}")
        first_channels = _check_inputs(inputs, in_channels)
        self.config = {"enc": tuple(enc), "dec": tuple(dec), "tail": tuple(tail), "inputs": inputs}
        self.in_channels = in_channels
        self.inputs = inputs
        self.levels = len(enc)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2))

        self.encoder = nn.ModuleList()
        cin = 2 * first_channels
        for cout in enc:
            self.encoder.append(block(cin, cout))
            cin = cout
        self.decoder = nn.ModuleList()
        for cout, skip in zip(dec, reversed(enc)):
            self.decoder.append(block(cin, cout))
            cin = cout + skip  # after up-sampling and concatenating the skip
        self.tail = nn.ModuleList()
        for cout in tail:
            self.tail.append(block(cin, cout))
            cin = cout
        self.flow = _flow_head(cin)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_pair(fixed, moving, self.in_channels)
        h, w = fixed.shape[-2:]
        mult = 2**self.levels
        x = torch.cat([_describe(_pad_bottom_right(fixed, mult), self.inputs),
                       _describe(_pad_bottom_right(moving, mult), self.inputs)], dim=1)
        skips = []
        for conv in self.encoder:
            x = conv(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        for conv in self.decoder:
            x = conv(x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = torch.cat([x, skips.pop()], dim=1)
        for conv in self.tail:
            x = conv(x)
        field = self.flow(x)[..., :h, :w]
        return {"aligned": warp(moving, field), "field": field, "fixed_warped_back": warp(fixed, -field)}

    def register(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        """:class:`~alignfuse.stages.Registrar` call order (moving first); no diagnostics."""
        out = self(fixed, moving)
        return RegistrationResult(out["aligned"], out["field"], [{"method": "unet"} for _ in range(moving.shape[0])])


def _lookup(table: Mapping[str, Mapping[str, Any]], config: str | Mapping[str, Any], what: str) -> dict[str, Any]:
    if isinstance(config, str):
        if config not in table:
            raise UnknownNameError(f"unknown {what} config {config!r}; choose from {sorted(table)}")
        return dict(table[config])
    return dict(config)


def build_mrrn(config: str | Mapping[str, Any] = "paper", **overrides: Any) -> MRRN:
    """MRRN from a named config in :data:`MRRN_CONFIGS` (or a dict), with keyword overrides."""
    return MRRN(**{**_lookup(MRRN_CONFIGS, config, "MRRN"), **overrides})


def build_unet_registrar(config: str | Mapping[str, Any] = "paper", **overrides: Any) -> UNetRegistrar:
    """UNetRegistrar from a named config in :data:`UNET_CONFIGS` (or a dict), with overrides."""
    return UNetRegistrar(**{**_lookup(UNET_CONFIGS, config, "U-Net registrar"), **overrides})


def convert_official_mrrn_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Official ``DeformableNet`` checkpoint -> :class:`MRRN` keys (paper widths).

    Unwraps a ``{'net': ...}`` checkpoint, strips a ``module.`` prefix (DataParallel), drops the
    ``enc.6``... duplicates (the official code appends every decoder module to ``enc`` too) and the
    fixed-size ``*.grid`` buffers. Load the result with ``strict=True``.
    """
    if "net" in state and isinstance(state["net"], Mapping):
        state = state["net"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        parts = key.split(".")
        if parts[-1] == "grid" or (parts[0] == "enc" and int(parts[1]) >= 6):
            continue
        out[key] = value
    return out
