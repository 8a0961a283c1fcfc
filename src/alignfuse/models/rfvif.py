"""RFVIF: registration-free, translation-robust infrared/visible fusion.

Li, Zhao, Li, Yu, Lu, "Feature dynamic alignment and refinement for infrared-visible image fusion:
Translation robust fusion", Information Fusion 2023. No official code exists; this module follows the
project's buildable spec (``architecture-spec.md`` section 4). Every choice the paper does not state is a
field of :class:`RFVIFConfig` or is marked ``[INFER]`` in a docstring or comment.

Data flow (VIS is the reference: the output lives on the visible grid)::

    ir, vis (B,1,H,W) --replicate pad to a multiple of 8--> (B,1,Hp,Wp)
    CMFEM   head + MSRBs + cross-modulation (CM), per part l = 1..3  -> F^cm_{l,vi}, F^cm_{l,ir} at Hp/2^l
    FDAM    per level: num_fab feature alignment blocks (FAB) with dynamic kernels (DKG) -> F^align_l,
            and a 1x1 head -> aligned IR image x^align_l (B,1,Hp/2^l,Wp/2^l)      (for the alignment loss)
    CMF     per level: learned spatial mask, Eq. 8                    -> F_l
    MGFRM   per level: mix the three F_m at level l's size, then LFR (VIS + IR branches) -> F^_l
    PFFM    Eq. 13-15, at Hp/2 -> 6 residual blocks -> nearest x2 -> 3 conv3x3 -> sigmoid -> crop to (H,W)

Tensors are ``(B, C, H, W)`` float32; images are single-channel in ``[0, 1]`` (the visible luminance).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from alignfuse.errors import UnknownNameError
from alignfuse.models.concat_conv import conv_of_concat, sequential_of_concat
from alignfuse.models.pwf import laplacian_bands, reconstruct_bands
from alignfuse.registration.features import orientation_field
from alignfuse.warp import warp

__all__ = [
    "RFVIFConfig",
    "RFVIF_CONFIGS",
    "RFVIFOutput",
    "RFVIF",
    "MSRB",
    "CrossModulation",
    "DynamicKernelGenerator",
    "ChannelAttention",
    "FeatureAlignmentBlock",
    "FeatureDynamicAlignment",
    "FullResolutionIRAlignment",
    "GlobalShiftEstimator",
    "ComplementaryMaskFusion",
    "LocalFeatureRefinement",
    "PyramidFeatureFusion",
    "dynamic_depthwise_conv2d",
    "local_similarity_aggregate",
    "similarity_suppress",
    "abs_laplacian",
    "pad_to_multiple",
    "count_params_and_macs",
]

PAD_MULTIPLE = 8  # three stride-2 levels
PYRAMID_LEVELS = 5  # RFVIFConfig.pyramid_head: Laplacian levels (4 detail bands + the base), PWF's
_OUTPUT_ACTIVATIONS = ("sigmoid", "clamp", "none")


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class RFVIFConfig:
    """Hyper-parameters of :class:`RFVIF`. The defaults are the paper-like configuration.

    Args:
        width: base channel width C [INFER: 64 paper-like, 16 on CPU].
        msrb_blocks: MSRBs per encoder part [PAPER: 3, 2, 2].
        num_fab: feature alignment blocks per level, 1..3 [PAPER: 2 is best].
        dkg_kernel_sizes: sizes of the dynamic kernels of the three DKG branches [PAPER: 3, 5, 7].
        lfr_kernel: k of the k x k neighbourhood of the LFR visible branch [INFER: 3].
        lfr_temperature: ``None`` = paper (softmax of raw cosine similarities, which is nearly uniform);
            a float tau > 0 = softmax(cos / tau) with tau a learnable scalar initialised at that value
            (non-paper option, pitfall 21).
        num_res_blocks: residual blocks after the PFFM [PAPER: 6].
        cam_reduction: reduction of the CBAM channel-attention MLP; hidden = max(C // r, 4) [INFER].
        output_activation: ``'sigmoid'`` [INFER], ``'clamp'`` (clamp to [0, 1]) or ``'none'``.
        use_cm: cross-modulation; off = only the stride-2 conv of Eq. 5, no modulation (ablation "w/o CM").
        use_fdam: dynamic alignment; off = F^align = F^cm_ir, the aligned-IR head kept (ablation "w/o FDAM").
        use_dkg: dynamic kernels; off = ordinary learned k x k convolutions C->C in each FAB, fixed after
            training (ablation "w/o DKG").
        use_cmf: complementary mask fusion; off = concat + conv1x1 (ablation "w/o CMF").
        use_pffm: pyramid fusion; off = transposed convs up to H/2 + concat + conv1x1 (ablation "w/o PFFM").
        use_lfr_vis: LFR visible (texture) branch (ablation "w/o upper branch").
        use_lfr_ir: LFR infrared (artifact suppression) branch (ablation "w/o lower branch").
        vis_skip: [EXTENSION, not in the paper] feed the full-resolution visible head features to the
            reconstruction convs beside the nearest-upsampled H/2 features. In the paper's design every path to
            the output passes through H/2, so a narrow network cannot return full-resolution edges; the visible
            image is the reference frame, so this skip adds no misaligned content (docs/RESULTS.md §3.1).
        ir_skip: [EXTENSION, not in the paper; needs ``vis_skip``, ``use_fdam`` and ``use_dkg``] a full-resolution
            IR path aligned by the level-1 FDAM: its dynamic kernels, which shift H/2 features, are applied dilated
            by 2 to the full-resolution IR head features (:class:`FullResolutionIRAlignment`), and the result is
            added to the visible skip through a zero-initialised 1x1 conv (a warm start from ``fast-skip`` weights
            begins as that model). A full-resolution aligned-IR head joins the alignment loss.
        shift_prior: [EXTENSION, not in the paper; needs ``vis_skip``] a global translation of the IR before
            the paper's network (:class:`GlobalShiftEstimator`: gradient-orientation correlation at 1/2
            resolution, soft-argmax with a learned sharpness, supervised in training by the known shift); since
            the IR is then aligned, its full-resolution head features join the visible skip through a
            zero-initialised 1x1 gate. Why: the DKG pools its features globally, so it sees a shift only within
            its 5x5 receptive field (+-2 px at H/2, less than the 5-8 px protocol shifts): the FDAM learned to
            blur the IR instead of aligning it (docs/RESULTS.md §3.7). The estimate is applied times the buffer
            ``shift.gain``, 0 in a new net and ramped to 1 by the training recipe, so a warm start from
            ``fast-skip`` weights begins exactly as that model.
        pyramid_head: [EXTENSION, not in the paper; needs ``shift_prior``] the output is no longer synthesised by the
            reconstruction convs but blended from the sources' own Laplacian pyramids, as the PWF fuser does
            (:mod:`alignfuse.models.pwf`): the first reconstruction conv's full-resolution features predict, through
            two 1x1 convs (the last zero-initialised), ``PYRAMID_LEVELS`` IR-weight logits, average-pooled to each
            band's size; on detail bands a learned multiple ``beta_k`` of the bands' contrast
            ``(|L_k(IR)| - |L_k(VIS)|) / (|L_k(IR)| + |L_k(VIS)| + eps)`` is added (a soft max-abs rule, PWF's);
            ``F = reconstruct(g_k * (w_k L_k(IR') + (1 - w_k) L_k(VIS)))``, ``w_k = sigmoid(logit_k)``, ``g_k`` a
            learned detail gain (1 for the base), IR' the IR translated by the shift prior; clamped to [0, 1]. The
            output cannot contain structure neither source has; where the shift estimate is off the weights can
            drop the IR's fine bands. Why: the convs that synthesise the output read mostly half-resolution
            features and reach Qabf 0.45 even on aligned TNO, the pyramid fuser 0.60 (docs/RESULTS.md §2.6, §3).
            The rest of the net is unchanged (the alignment heads still feed the loss), so a warm start from
            ``fast-shift`` weights loads every tensor but the new ``pyr_*`` ones; the last two reconstruction convs
            are kept but not used.
    """

    width: int = 64
    msrb_blocks: tuple[int, int, int] = (3, 2, 2)
    num_fab: int = 2
    dkg_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    lfr_kernel: int = 3
    lfr_temperature: float | None = None
    num_res_blocks: int = 6
    cam_reduction: int = 16
    output_activation: str = "sigmoid"
    use_cm: bool = True
    use_fdam: bool = True
    use_dkg: bool = True
    use_cmf: bool = True
    use_pffm: bool = True
    use_lfr_vis: bool = True
    use_lfr_ir: bool = True
    vis_skip: bool = False
    ir_skip: bool = False
    shift_prior: bool = False
    pyramid_head: bool = False

    def __post_init__(self) -> None:
        # accept lists (e.g. from JSON) but store tuples so the config stays hashable
        object.__setattr__(self, "msrb_blocks", tuple(int(n) for n in self.msrb_blocks))
        object.__setattr__(self, "dkg_kernel_sizes", tuple(int(k) for k in self.dkg_kernel_sizes))
        if self.width < 2:
            raise ValueError(f"width must be >= 2, got {self.width}")
        if len(self.msrb_blocks) != 3 or min(self.msrb_blocks) < 0:
            raise ValueError(f"msrb_blocks must be three non-negative ints, got {self.msrb_blocks}")
        if not 1 <= self.num_fab <= 3:
            raise ValueError(f"num_fab must be in 1..3, got {self.num_fab}")
        if not self.dkg_kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.dkg_kernel_sizes):
            raise ValueError(f"dkg_kernel_sizes must be odd positive ints, got {self.dkg_kernel_sizes}")
        if self.lfr_kernel < 1 or self.lfr_kernel % 2 == 0:
            raise ValueError(f"lfr_kernel must be odd and positive, got {self.lfr_kernel}")
        if self.lfr_temperature is not None and not self.lfr_temperature > 0:
            raise ValueError(f"lfr_temperature must be None or > 0, got {self.lfr_temperature}")
        if self.num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        if self.output_activation not in _OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {_OUTPUT_ACTIVATIONS}, got {self.output_activation!r}")
        if self.ir_skip and not (self.vis_skip and self.use_fdam and self.use_dkg):
            raise ValueError("ir_skip reuses the level-1 dynamic kernels and joins the visible skip: it needs "
                             "vis_skip, use_fdam and use_dkg")
        if self.shift_prior and not self.vis_skip:
            raise ValueError("shift_prior adds the aligned IR to the visible skip: it needs vis_skip")
        if self.pyramid_head and not self.shift_prior:
            raise ValueError("pyramid_head blends the IR translated by the shift prior: it needs shift_prior")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RFVIFConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``KeyError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise KeyError(f"unknown RFVIFConfig keys: {sorted(unknown)}")
        return cls(**data)


RFVIF_CONFIGS: dict[str, RFVIFConfig] = {
    # spec section 5: 16.9 M params, ~382 GMACs @256^2 (GPU)
    "paper": RFVIFConfig(),
    # spec section 5: ~0.7 M params, ~10.5 GMACs @256^2, trainable on 2 CPU cores at 64^2 crops
    "cpu": replace(RFVIFConfig(), width=16, msrb_blocks=(1, 1, 1)),
    # no MSRB at full resolution: the two full-resolution MSRBs are 27.4 of the `cpu` config's 49.1 GMACs at
    # 640x480 (count_params_and_macs); `fast` is 21.7 GMACs (for the 0.5 s target; trained once, not shipped: docs/RESULTS.md §3.7).
    "fast": replace(RFVIFConfig(), width=16, msrb_blocks=(0, 1, 1)),
    # `fast` + the full-resolution visible skip into the reconstruction (RFVIFConfig.vis_skip).
    "fast-skip": replace(RFVIFConfig(), width=16, msrb_blocks=(0, 1, 1), vis_skip=True),
    # `fast-skip` + the full-resolution IR path aligned by the level-1 FDAM kernels (RFVIFConfig.ir_skip).
    "fast-irskip": replace(RFVIFConfig(), width=16, msrb_blocks=(0, 1, 1), vis_skip=True, ir_skip=True),
    # `fast-skip` + the learned global shift of the IR and its gated full-resolution skip (RFVIFConfig.shift_prior).
    "fast-shift": replace(RFVIFConfig(), width=16, msrb_blocks=(0, 1, 1), vis_skip=True, shift_prior=True),
    # `fast-shift` with the output blended from the sources' Laplacian pyramids (RFVIFConfig.pyramid_head).
    "fast-shift-pyr": replace(RFVIFConfig(), width=16, msrb_blocks=(0, 1, 1), vis_skip=True, shift_prior=True,
                              pyramid_head=True),
}


def _resolve_config(config: RFVIFConfig | str | None) -> RFVIFConfig:
    if config is None:
        return RFVIF_CONFIGS["paper"]
    if isinstance(config, str):
        if config not in RFVIF_CONFIGS:
            raise UnknownNameError(f"unknown RFVIF config {config!r}; known: {sorted(RFVIF_CONFIGS)}")
        return RFVIF_CONFIGS[config]
    if not isinstance(config, RFVIFConfig):
        raise TypeError(f"config must be an RFVIFConfig, a name or None, got {type(config).__name__}")
    return config


# --------------------------------------------------------------------------------------------------
# functional pieces


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Replicate-pad the bottom and right of ``x`` (B, C, H, W) so H and W are multiples of ``multiple``."""
    ph = (-x.shape[-2]) % multiple
    pw = (-x.shape[-1]) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``); antialiased when shrinking [INFER]."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _upsample_nearest(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """The N(.) operator of Eq. 13-15."""
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="nearest")


def dynamic_depthwise_conv2d(x: torch.Tensor, kernels: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Per-sample depthwise convolution (cross-correlation, zero padding, same size).

    ``out[b, c, y, x] = sum_{i,j} kernels[b, c, i, j] * x[b, c, y + d (i - r), x + d (j - r)]`` with
    ``r = k // 2`` and ``d = dilation``, so a delta at the kernel centre is the identity and a delta at
    ``(r + dy, r + dx)`` pulls the feature from ``(y + d dy, x + d dx)``. Implemented as one grouped conv with
    ``groups = B * C``.

    Shape:
        x: (B, C, H, W); kernels: (B, C, k, k) with k odd; returns (B, C, H, W).
    """
    if x.ndim != 4 or kernels.ndim != 4 or kernels.shape[:2] != x.shape[:2]:
        raise ValueError(f"kernels {tuple(kernels.shape)} must be (B, C, k, k) for x {tuple(x.shape)}")
    k = kernels.shape[-1]
    if kernels.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"kernels must be square and odd, got {tuple(kernels.shape[-2:])}")
    b, c, h, w = x.shape
    out = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, k, k), padding=dilation * (k // 2),
                   dilation=dilation, groups=b * c)
    return out.view(b, c, h, w)


def local_similarity_aggregate(
    feat: torch.Tensor,
    ref: torch.Tensor,
    kernel_size: int = 3,
    temperature: torch.Tensor | float | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """LFR visible branch, Eq. 9-11: re-weight each k x k neighbourhood of ``feat`` by similarity to ``ref``.

    For every pixel p: ``s(d) = cos(feat[p + d], ref[p])`` for the k*k offsets d, ``w = softmax(s / tau)``
    (tau = 1 when ``temperature`` is None, the paper), ``out[p] = sum_d w(d) * feat[p + d]``. Neighbours
    outside the image are zero vectors (cosine 0), as with ``F.unfold(padding=k // 2)``. Computed offset
    by offset, so memory stays O(C * H * W) instead of O(k^2 * C * H * W).

    Shape:
        feat, ref: (B, C, H, W); returns (B, C, H, W).
    """
    if feat.shape != ref.shape:
        raise ValueError(f"feat {tuple(feat.shape)} and ref {tuple(ref.shape)} differ")
    r = kernel_size // 2
    h, w = feat.shape[-2:]
    # eps keeps the normalisation finite for all-zero vectors (padding, dead ReLU features)
    feat_n = F.pad(F.normalize(feat, dim=1, eps=eps), (r, r, r, r))
    feat_p = F.pad(feat, (r, r, r, r))
    ref_n = F.normalize(ref, dim=1, eps=eps)
    offsets = [(dy, dx) for dy in range(kernel_size) for dx in range(kernel_size)]
    sim = torch.stack(
        [(feat_n[:, :, dy : dy + h, dx : dx + w] * ref_n).sum(dim=1) for dy, dx in offsets], dim=1
    )  # (B, k*k, H, W)
    if temperature is not None:
        sim = sim / temperature
    weights = sim.softmax(dim=1)
    out = torch.zeros_like(feat)
    for i, (dy, dx) in enumerate(offsets):
        out = out + weights[:, i : i + 1] * feat_p[:, :, dy : dy + h, dx : dx + w]
    return out


def similarity_suppress(feat: torch.Tensor, ref: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LFR infrared branch, Eq. 12: ``out = (1 - cos(ref, feat)) * feat + feat`` per pixel.

    Shape:
        feat, ref: (B, C, H, W); returns (B, C, H, W).
    """
    if feat.shape != ref.shape:
        raise ValueError(f"feat {tuple(feat.shape)} and ref {tuple(ref.shape)} differ")
    s = (F.normalize(feat, dim=1, eps=eps) * F.normalize(ref, dim=1, eps=eps)).sum(dim=1, keepdim=True)
    return (1.0 - s) * feat + feat


def abs_laplacian(img: torch.Tensor) -> torch.Tensor:
    """|4-neighbour Laplacian| with replicate border [INFER: the paper says only "Laplace operator"].

    Shape:
        img: (B, C, H, W); returns (B, C, H, W).
    """
    c = img.shape[1]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=img.device, dtype=img.dtype)
    kernel = kernel.view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), kernel, groups=c).abs()


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


@torch.no_grad()
def _init_channel_average(conv: nn.Conv2d, groups: int) -> None:
    """1x1 conv (groups*C -> C) that averages the ``groups`` inputs channel by channel [INFER init]."""
    c = conv.out_channels
    if conv.in_channels != groups * c or conv.kernel_size != (1, 1):
        raise ValueError("expected a 1x1 conv from groups * C to C channels")
    conv.weight.zero_()
    eye = torch.eye(c, dtype=conv.weight.dtype) / groups
    for g in range(groups):
        conv.weight[:, g * c : (g + 1) * c, 0, 0] = eye
    if conv.bias is not None:
        conv.bias.zero_()


# --------------------------------------------------------------------------------------------------
# blocks


class MSRB(nn.Module):
    """Multi-scale residual block (MSRN design): 3x3 and 5x5 paths, crossed once, 1x1 fuse, skip.

    Params 174 C^2 + 7 C (biases). Shape: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.s1 = _conv(c, c, 3)
        self.p1 = _conv(c, c, 5)
        self.s2 = _conv(2 * c, 2 * c, 3)
        self.p2 = _conv(2 * c, 2 * c, 5)
        self.fuse = _conv(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = F.relu(self.s1(x))
        p1 = F.relu(self.p1(x))
        s2 = F.relu(conv_of_concat([s1, p1], self.s2))
        p2 = F.relu(conv_of_concat([p1, s1], self.p2))
        return conv_of_concat([s2, p2], self.fuse) + x


class CrossModulation(nn.Module):
    """Cross-modulation, Eq. 2-5; halves the resolution.

    ``a_i = conv3x3 s2(F_i)``; ``h = 3 x (conv3x3 2C->2C, ReLU)`` on cat(a_vi, a_ir) [INFER: ReLU after each];
    split into (h_vi, h_ir); ``gamma_i = sigmoid(conv(h_i))``, ``beta_i = sigmoid(conv(h_i))``;
    ``F^cm_i = a_i * gamma_i + beta_i`` [INFER: the stride-2 conv of Eq. 5 is the one of Eq. 2].
    With ``modulate=False`` (ablation) it returns ``(a_vi, a_ir)``.

    Shape: two (B, C, H, W) -> two (B, C, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, channels: int, modulate: bool = True) -> None:
        super().__init__()
        c = channels
        self.modulate = modulate
        self.down_vi = _conv(c, c, 3, stride=2)
        self.down_ir = _conv(c, c, 3, stride=2)
        if modulate:
            layers: list[nn.Module] = []
            for _ in range(3):
                layers += [_conv(2 * c, 2 * c, 3), nn.ReLU(inplace=True)]
            self.trunk = nn.Sequential(*layers)
            self.gamma_vi = _conv(c, c, 3)
            self.beta_vi = _conv(c, c, 3)
            self.gamma_ir = _conv(c, c, 3)
            self.beta_ir = _conv(c, c, 3)

    def forward(self, f_vi: torch.Tensor, f_ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_vi, a_ir = self.down_vi(f_vi), self.down_ir(f_ir)
        if not self.modulate:
            return a_vi, a_ir
        h_vi, h_ir = sequential_of_concat([a_vi, a_ir], self.trunk).chunk(2, dim=1)
        cm_vi = a_vi * torch.sigmoid(self.gamma_vi(h_vi)) + torch.sigmoid(self.beta_vi(h_vi))
        cm_ir = a_ir * torch.sigmoid(self.gamma_ir(h_ir)) + torch.sigmoid(self.beta_ir(h_ir))
        return cm_vi, cm_ir


class DynamicKernelGenerator(nn.Module):
    """DKG, Eq. 6: per-sample depthwise kernels of sizes ``kernel_sizes`` from (reference, moving) features.

    ``g = ReLU(conv3x3 2C->C(cat(ref, x)))``; branch k: ``v = GAP(ReLU(conv3x3 C->C(g)))``,
    ``theta_k = FC(C -> C k^2)(v)`` reshaped to (B, C, k, k) [INFER: depthwise, not full C x C kernels].
    Init [INFER, spec]: FC weight ~ N(0, 1e-4), FC bias = centred delta, so every kernel starts as the
    identity and the FAB starts as a pass-through.
    """

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (3, 5, 7), init_std: float = 1e-4) -> None:
        super().__init__()
        c = channels
        self.channels = c
        self.kernel_sizes = tuple(kernel_sizes)
        self.stem = _conv(2 * c, c, 3)
        self.branches = nn.ModuleList(_conv(c, c, 3) for _ in self.kernel_sizes)
        self.heads = nn.ModuleList(nn.Linear(c, c * k * k) for k in self.kernel_sizes)
        with torch.no_grad():
            for head, k in zip(self.heads, self.kernel_sizes):
                nn.init.normal_(head.weight, std=init_std)
                delta = torch.zeros(c, k, k)
                delta[:, k // 2, k // 2] = 1.0
                head.bias.copy_(delta.flatten())

    def forward(self, ref: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) x2 -> list of (B, C, k, k) kernels, one per kernel size."""
        b = x.shape[0]
        g = F.relu(conv_of_concat([ref, x], self.stem))
        kernels = []
        for branch, head, k in zip(self.branches, self.heads, self.kernel_sizes):
            v = F.relu(branch(g)).mean(dim=(2, 3))
            kernels.append(head(v).view(b, self.channels, k, k))
        return kernels


class ChannelAttention(nn.Module):
    """CBAM channel attention [INFER: the paper's CAM]: ``x * sigmoid(MLP(GAP x) + MLP(GMP x))``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)


class FeatureAlignmentBlock(nn.Module):
    """FAB, Fig. 2(d): k x k (dynamic) convs of the moving features -> concat -> 1x1 -> BN -> ReLU -> CAM.

    With ``dynamic=True`` the kernels come from a DKG fed with (reference, current moving features)
    [INFER: each FAB owns its DKG]; with ``dynamic=False`` (ablation "w/o DKG") they are ordinary learned
    C->C convolutions. The 1x1 conv starts as the channel-wise mean of the branches and the k x k kernels
    start as identities [INFER init], so in eval mode at init ``FAB(x) = g[b, c] * ReLU(x) / sqrt(1 + eps_bn)``
    with a per-(sample, channel) gain ``g`` in (0, 1) from the CAM: no spatial mixing. No residual [INFER].
    """

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...], dynamic: bool, cam_hidden: int) -> None:
        super().__init__()
        c = channels
        self.dynamic = dynamic
        if dynamic:
            self.dkg = DynamicKernelGenerator(c, kernel_sizes)
        else:
            self.static = nn.ModuleList(_conv(c, c, k) for k in kernel_sizes)
            for conv in self.static:
                nn.init.dirac_(conv.weight)
                nn.init.zeros_(conv.bias)
        n = len(kernel_sizes)
        self.fuse = _conv(n * c, c, 1)
        _init_channel_average(self.fuse, n)
        self.bn = nn.BatchNorm2d(c)
        self.cam = ChannelAttention(c, cam_hidden)

    def forward(self, ref: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_kernels(ref, x)[0]

    def forward_with_kernels(self, ref: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (aligned features, the dynamic kernels used: one (B, C, k, k) per size; [] when static)."""
        if self.dynamic:
            kernels = self.dkg(ref, x)
            ys = [dynamic_depthwise_conv2d(x, theta) for theta in kernels]
        else:
            kernels, ys = [], [conv(x) for conv in self.static]
        y = F.relu(self.bn(conv_of_concat(ys, self.fuse)))
        return self.cam(y), kernels


class FeatureDynamicAlignment(nn.Module):
    """FDAM at one level: ``num_fab`` FABs in sequence, outputs merged by conv1x1 (num_fab*C -> C).

    Returns F^align (B, C, h, w). The merge starts as the mean of the FAB outputs [INFER init].
    """

    def __init__(
        self, channels: int, num_fab: int, kernel_sizes: tuple[int, ...], dynamic: bool, cam_hidden: int
    ) -> None:
        super().__init__()
        self.fabs = nn.ModuleList(
            FeatureAlignmentBlock(channels, kernel_sizes, dynamic, cam_hidden) for _ in range(num_fab)
        )
        self.merge = _conv(num_fab * channels, channels, 1)
        _init_channel_average(self.merge, num_fab)

    def forward(self, ref: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_kernels(ref, x)[0]

    def forward_with_kernels(self, ref: torch.Tensor,
                             x: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """-> (F^align, every FAB's dynamic kernels, in order)."""
        outs, kernels = [], []
        for fab in self.fabs:
            x, k = fab.forward_with_kernels(ref, x)
            outs.append(x)
            kernels.append(k)
        return conv_of_concat(outs, self.merge), kernels


class FullResolutionIRAlignment(nn.Module):
    """[EXTENSION] ``ir_skip``: the level-1 FDAM's alignment carried to the full-resolution IR features.

    The level-1 kernels are global per (sample, channel), so a tap at offset ``u`` in H/2 pixels is the offset
    ``2u`` at full resolution: each FAB's kernels are applied with dilation 2 to features first blurred by the
    separable [1, 2, 1] / 4 (the bilinear interpolation of the dilated kernel, so a sub-pixel tap mix at H/2
    stays a shift, not a comb), then merged by a 1x1 conv (channel average at init) and a ReLU, FAB after FAB.
    ``head`` maps the result to an aligned IR image for the alignment loss; ``gate`` (1x1, zero at init) adds
    it to the visible skip.

    Shape: ``f_ir`` (B, C, Hp, Wp), ``kernels`` per FAB a list of (B, C, k, k) -> (B, C, Hp, Wp).
    """

    def __init__(self, channels: int, num_fab: int, num_kernels: int) -> None:
        super().__init__()
        c = channels
        self.fuse = nn.ModuleList(_conv(num_kernels * c, c, 1) for _ in range(num_fab))
        for conv in self.fuse:
            _init_channel_average(conv, num_kernels)
        self.head = _conv(c, 1, 1)
        self.gate = _conv(c, c, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    @staticmethod
    def _tent(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = x.new_tensor([0.25, 0.5, 0.25])
        x = F.conv2d(F.pad(x, (1, 1, 0, 0), mode="replicate"), k.view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c)
        return F.conv2d(F.pad(x, (0, 0, 1, 1), mode="replicate"), k.view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c)

    def forward(self, f_ir: torch.Tensor, kernels: list[list[torch.Tensor]]) -> torch.Tensor:
        x = f_ir
        for fuse, fab_kernels in zip(self.fuse, kernels):
            x = self._tent(x)
            x = F.relu(conv_of_concat([dynamic_depthwise_conv2d(x, th, dilation=2) for th in fab_kernels], fuse))
        return x


class GlobalShiftEstimator(nn.Module):
    """[EXTENSION] ``shift_prior``: one translation per sample, where to read the IR so it lies on the visible grid.

    Both images are area-shrunk by ``factor`` and turned into doubled-angle gradient orientation fields
    (:func:`alignfuse.registration.features.orientation_field`: contrast inversions between IR and visible count as
    agreement); their correlation for every displacement within ``+-radius`` (shrunk px) is averaged over the
    overlap, and a soft-argmax with a learned sharpness (initially 300: the scores of real pairs span ~0.005-0.05)
    turns the ``(2r+1)^2`` scores into the expected displacement (sub-pixel), times ``factor``. Learned encoders in
    place of the orientation fields were tried first: from random weights their cross-modal correlations stayed
    flat and the estimate did not move.

    Shape: ``ir``, ``vis`` (B, 1, H, W) -> (B, 2) = (dx, dy) in full-resolution px: ``ir(x + dx, y + dy)`` lies on
    ``vis(x, y)`` (the :func:`alignfuse.warp.warp` convention).
    """

    def __init__(self, factor: int = 2, radius: int = 5) -> None:
        super().__init__()
        self.factor, self.radius = int(factor), int(radius)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(300.0)))
        # how much of the estimate the network applies: 0 in a new estimator, ramped to 1 by the training recipe
        self.register_buffer("gain", torch.zeros(()))
        r = self.radius
        dy, dx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
        self.register_buffer("offsets", torch.stack([dx.flatten(), dy.flatten()], dim=1) * float(self.factor),
                             persistent=False)

    def _orientation(self, img: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(img, self.factor, ceil_mode=True) if self.factor > 1 else img
        return torch.view_as_real(orientation_field(small)).permute(0, 3, 1, 2)  # (B, 2, h, w)

    def scores(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """-> (B, (2r+1)^2) mean orientation correlation per displacement, in the order of ``offsets``."""
        z_vi, z_ir = self._orientation(vis), self._orientation(ir)
        r = self.radius
        h, w = z_vi.shape[-2:]
        padded = F.pad(z_ir, (r, r, r, r))
        out = []
        for uy in range(-r, r + 1):
            for ux in range(-r, r + 1):
                moved = padded[..., r + uy : r + uy + h, r + ux : r + ux + w]
                overlap = max((h - abs(uy)) * (w - abs(ux)), 1)
                out.append((z_vi * moved).sum(dim=(1, 2, 3)) / overlap)
        return torch.stack(out, dim=1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        prob = torch.softmax(self.log_sharpness.exp() * self.scores(ir, vis), dim=1)
        return prob @ self.offsets


def translate(image: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """image (B, C, H, W) read at (x + dx, y + dy) for ``shift`` (B, 2) = (dx, dy) px; border replication."""
    field = shift[:, :, None, None].expand(-1, -1, *image.shape[-2:]).to(image.dtype)
    return warp(image, field)


class ComplementaryMaskFusion(nn.Module):
    """CMF, Eq. 8: ``A = sigmoid(3 conv3x3 (2C->C->C->1) of cat(F_vi, F_ir))``, ``F = F_ir A + F_vi (1 - A)``.

    [INFER] the mask has 1 channel (broadcast over C), ReLU between the convs.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.mask = nn.Sequential(
            _conv(2 * c, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3), nn.ReLU(inplace=True), _conv(c, 1, 3)
        )

    def forward(self, f_vi: torch.Tensor, f_ir: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(sequential_of_concat([f_vi, f_ir], self.mask))
        return f_ir * a + f_vi * (1.0 - a)


class _ConcatFusion(nn.Module):
    """Ablation "w/o CMF": concat + conv1x1 2C->C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = _conv(2 * channels, channels, 1)

    def forward(self, f_vi: torch.Tensor, f_ir: torch.Tensor) -> torch.Tensor:
        return conv_of_concat([f_vi, f_ir], self.proj)


class LocalFeatureRefinement(nn.Module):
    """LFR, Eq. 9-12, at one level, then ``F^ = conv1x1(cat(f~_vis, f~_ir, F^f))``.

    Edge encoders [INFER]: the source images are resized to the level's size, then
    ``E_vi = conv3x3 (2->C->C->C, ReLU between)`` on cat(vis, |Lap vis|) and ``E_ir`` (1->C->C->C) on |Lap ir|
    where ir is the *misaligned* input IR (the only one available at test time). A disabled branch is
    left out of the concat (ablations "w/o upper/lower branch").
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        use_vis: bool = True,
        use_ir: bool = True,
        temperature: float | None = None,
    ) -> None:
        super().__init__()
        c = channels
        self.kernel_size = kernel_size
        self.use_vis = use_vis
        self.use_ir = use_ir
        if use_vis:
            self.enc_vi = nn.Sequential(
                _conv(2, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3)
            )
        if use_ir:
            self.enc_ir = nn.Sequential(
                _conv(1, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3)
            )
        if use_vis and temperature is not None:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        else:
            self.register_parameter("log_temperature", None)
        self.out = _conv((1 + int(use_vis) + int(use_ir)) * c, c, 1)

    def forward(self, feat: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        """feat (B, C, h, w); vis, ir (B, 1, h, w) source images at this level's size."""
        parts = []
        if self.use_vis:
            e_vi = self.enc_vi(torch.cat([vis, abs_laplacian(vis)], dim=1))
            tau = None if self.log_temperature is None else self.log_temperature.exp()
            parts.append(local_similarity_aggregate(feat, e_vi, self.kernel_size, tau))
        if self.use_ir:
            e_ir = self.enc_ir(abs_laplacian(ir))
            parts.append(similarity_suppress(feat, e_ir))
        parts.append(feat)
        return conv_of_concat(parts, self.out)


class PyramidFeatureFusion(nn.Module):
    """PFFM, Eq. 13-15 [conv counts INFER]. Inputs at h, h/2, h/4; output (B, C, h, w) at the finest level.

    ``M12 = sigmoid(conv3x3(cat(N F2, F1)))``, ``M23 = sigmoid(convs(cat(N F3, F2)))``,
    ``F = convs(cat(N F23, F12))`` with ``convs`` = conv3x3 2C->C, ReLU, conv3x3 C->C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.m12 = _conv(2 * c, c, 3)
        self.m23 = nn.Sequential(_conv(2 * c, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3))
        self.out = nn.Sequential(_conv(2 * c, c, 3), nn.ReLU(inplace=True), _conv(c, c, 3))

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor) -> torch.Tensor:
        up2 = _upsample_nearest(f2, f1.shape[-2:])
        m12 = torch.sigmoid(conv_of_concat([up2, f1], self.m12))
        f12 = f1 * m12 + up2 * (1.0 - m12)
        up3 = _upsample_nearest(f3, f2.shape[-2:])
        m23 = torch.sigmoid(sequential_of_concat([up3, f2], self.m23))
        f23 = f2 * m23 + up3 * (1.0 - m23)
        return sequential_of_concat([_upsample_nearest(f23, f12.shape[-2:]), f12], self.out)


class _DeconvConcatFusion(nn.Module):
    """Ablation "w/o PFFM" (as in the paper): transposed convs up to level 1 + concat + conv1x1 3C->C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        self.up2 = nn.ConvTranspose2d(c, c, 2, stride=2)
        self.up3 = nn.ConvTranspose2d(c, c, 4, stride=4)
        self.proj = _conv(3 * c, c, 1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor) -> torch.Tensor:
        return conv_of_concat([f1, self.up2(f2), self.up3(f3)], self.proj)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels, 3)
        self.conv2 = _conv(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


# --------------------------------------------------------------------------------------------------
# the network


@dataclass
class RFVIFOutput:
    """``fused`` (B, 1, H, W) on the visible grid; ``aligned_ir`` three (B, 1, Hp/2^l, Wp/2^l), l = 1, 2, 3, and
    with ``ir_skip`` a fourth at full resolution (B, 1, Hp, Wp); ``shift`` (B, 2), the ``shift_prior`` estimate
    (dx, dy) in px (``None`` without it). Unpacks as ``fused, aligned_ir``.

    Hp, Wp are H, W rounded up to multiples of 8 (the network replicate-pads the bottom/right internally),
    so for sizes that are multiples of 8 the heads are exactly H/2, H/4, H/8. The alignment loss must
    pad its ground truth the same way (:func:`alignfuse.losses.rfvif.alignment_targets` does).
    """

    fused: torch.Tensor
    aligned_ir: list[torch.Tensor]
    shift: torch.Tensor | None = None

    def __iter__(self):
        return iter((self.fused, self.aligned_ir))

    def __getitem__(self, index: int):
        return (self.fused, self.aligned_ir)[index]


class RFVIF(nn.Module):
    """Registration-free IR/VIS fusion network (RFVIF).

    Args:
        config: an :class:`RFVIFConfig`, a name in :data:`RFVIF_CONFIGS` (``"paper"``, ``"cpu"``), or None
            for the paper-like configuration.

    Shape:
        ir, vis: (B, 1, H, W) in [0, 1], any H, W >= 1 (padded internally to multiples of 8).
        Returns :class:`RFVIFOutput` (a tuple ``(fused, aligned_ir)``).

    Example:
        >>> net = RFVIF("cpu")
        >>> fused, aligned = net(torch.rand(1, 1, 37, 53), torch.rand(1, 1, 37, 53))
        >>> tuple(fused.shape), [tuple(a.shape[-2:]) for a in aligned]
        ((1, 1, 37, 53), [(20, 28), (10, 14), (5, 7)])

    Note:
        Training mode uses BatchNorm batch statistics in the FABs, so it needs B * (Hp/8) * (Wp/8) > 1.
    """

    def __init__(self, config: RFVIFConfig | str | None = None) -> None:
        super().__init__()
        cfg = _resolve_config(config)
        self.config = cfg
        c = cfg.width
        cam_hidden = max(c // cfg.cam_reduction, 4)

        # CMFEM
        self.head_vi = _conv(1, c, 3)
        self.head_ir = _conv(1, c, 3)
        self.msrb_vi = nn.ModuleList(nn.Sequential(*(MSRB(c) for _ in range(n))) for n in cfg.msrb_blocks)
        self.msrb_ir = nn.ModuleList(nn.Sequential(*(MSRB(c) for _ in range(n))) for n in cfg.msrb_blocks)
        self.cm = nn.ModuleList(CrossModulation(c, modulate=cfg.use_cm) for _ in range(3))

        # FDAM + aligned-IR heads [PAPER "conv(1x1) mapping"; INFER no activation]
        if cfg.use_fdam:
            self.fdam = nn.ModuleList(
                FeatureDynamicAlignment(c, cfg.num_fab, cfg.dkg_kernel_sizes, cfg.use_dkg, cam_hidden) for _ in range(3)
            )
        self.align_head = nn.ModuleList(_conv(c, 1, 1) for _ in range(3))
        if cfg.ir_skip:
            self.ir_path = FullResolutionIRAlignment(c, cfg.num_fab, len(cfg.dkg_kernel_sizes))
        if cfg.shift_prior:
            self.shift = GlobalShiftEstimator()
            self.ir_gate = _conv(c, c, 1)
            nn.init.zeros_(self.ir_gate.weight)
            nn.init.zeros_(self.ir_gate.bias)

        # CMF
        self.cmf = nn.ModuleList((ComplementaryMaskFusion(c) if cfg.use_cmf else _ConcatFusion(c)) for _ in range(3))

        # MGFRM: multi-grained mixing [INFER conv1x1 3C->C + ReLU] + LFR
        self.mix = nn.ModuleList(_conv(3 * c, c, 1) for _ in range(3))
        self.lfr = nn.ModuleList(
            LocalFeatureRefinement(c, cfg.lfr_kernel, cfg.use_lfr_vis, cfg.use_lfr_ir, cfg.lfr_temperature)
            for _ in range(3)
        )

        # PFFM, residual blocks, reconstruction [INFER C->C->C/2->1]
        self.pffm = PyramidFeatureFusion(c) if cfg.use_pffm else _DeconvConcatFusion(c)
        self.res_blocks = nn.Sequential(*(_ResBlock(c) for _ in range(cfg.num_res_blocks)))
        half = max(c // 2, 1)
        self.recon = nn.Sequential(
            _conv(2 * c if cfg.vis_skip else c, c, 3), nn.ReLU(inplace=True),
            _conv(c, half, 3), nn.ReLU(inplace=True), _conv(half, 1, 3)
        )
        if cfg.pyramid_head:
            self.pyr_head = nn.Sequential(_conv(c, c, 1), nn.ReLU(inplace=True), _conv(c, PYRAMID_LEVELS, 1))
            nn.init.zeros_(self.pyr_head[2].weight)
            nn.init.zeros_(self.pyr_head[2].bias)  # starts as the average of the two pyramids (+ the contrast term)
            self.pyr_beta = nn.Parameter(torch.full((PYRAMID_LEVELS - 1,), 4.0))
            self.pyr_log_gain = nn.Parameter(torch.zeros(PYRAMID_LEVELS - 1))

    @staticmethod
    def _check_inputs(ir: torch.Tensor, vis: torch.Tensor) -> None:
        for name, t in (("ir", ir), ("vis", vis)):
            if t.ndim != 4 or t.shape[1] != 1:
                raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(t.shape)}")
        if ir.shape != vis.shape:
            raise ValueError(f"ir {tuple(ir.shape)} and vis {tuple(vis.shape)} must have the same shape")

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> RFVIFOutput:
        """(misaligned IR, visible reference) -> (fused (B,1,H,W), [aligned IR at Hp/2, Hp/4, Hp/8])."""
        self._check_inputs(ir, vis)
        cfg = self.config
        h, w = ir.shape[-2:]
        ir_p = pad_to_multiple(ir)
        vis_p = pad_to_multiple(vis)
        shift = None
        if cfg.shift_prior:
            shift = self.shift(ir_p, vis_p)
            ir_p = translate(ir_p, shift * self.shift.gain)

        # CMFEM [INFER: part l+1 consumes the modulated features of level l]
        f_vi = F.relu(self.head_vi(vis_p))
        f_ir = F.relu(self.head_ir(ir_p))
        f_vi_full, f_ir_full = f_vi, f_ir
        cm_vi, cm_ir = [], []
        for level in range(3):
            f_vi, f_ir = self.cm[level](self.msrb_vi[level](f_vi), self.msrb_ir[level](f_ir))
            cm_vi.append(f_vi)
            cm_ir.append(f_ir)

        # FDAM + CMF, per level
        fused_levels, aligned, level1_kernels = [], [], []
        for level in range(3):
            if cfg.use_fdam:
                f_align, kernels = self.fdam[level].forward_with_kernels(cm_vi[level], cm_ir[level])
                if level == 0:  # the ir_skip path reuses them
                    level1_kernels = kernels
            else:
                f_align = cm_ir[level]
            aligned.append(self.align_head[level](f_align))
            fused_levels.append(self.cmf[level](cm_vi[level], f_align))

        # MGFRM
        refined = []
        for level in range(3):
            size = fused_levels[level].shape[-2:]
            mixed = F.relu(conv_of_concat([_resize(f, size) for f in fused_levels], self.mix[level]))
            refined.append(self.lfr[level](mixed, _resize(vis_p, size), _resize(ir_p, size)))

        # PFFM -> residual blocks -> N(x2) -> reconstruction
        feat = self.res_blocks(self.pffm(*refined))
        feat = _upsample_nearest(feat, vis_p.shape[-2:])
        if cfg.ir_skip:
            ir_aligned_full = self.ir_path(f_ir_full, level1_kernels)
            aligned.append(self.ir_path.head(ir_aligned_full))
            f_vi_full = f_vi_full + self.ir_path.gate(ir_aligned_full)
        if cfg.shift_prior:
            f_vi_full = f_vi_full + self.ir_gate(f_ir_full)
        # the first reconstruction conv reads cat(feat, f_vi_full) without building it at inference
        first = conv_of_concat([feat, f_vi_full] if cfg.vis_skip else [feat], self.recon[0])
        if cfg.pyramid_head:
            out = self._pyramid_blend(F.relu(first), ir_p, vis_p)
            return RFVIFOutput(out[..., :h, :w], aligned, shift)
        out = self.recon[1:](first)
        if cfg.output_activation == "sigmoid":
            out = torch.sigmoid(out)
        elif cfg.output_activation == "clamp":
            out = out.clamp(0.0, 1.0)
        return RFVIFOutput(out[..., :h, :w], aligned, shift)

    def pyramid_logits(self, feat: torch.Tensor) -> torch.Tensor:
        """``pyramid_head``: full-resolution features (B, C, H, W) -> IR-weight logits (B, PYRAMID_LEVELS, H, W),
        detail bands fine first, then the base (before pooling to each band's size and the contrast term)."""
        return self.pyr_head(feat)

    def _pyramid_blend(self, feat: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        logits = self.pyramid_logits(feat)
        bands_ir = laplacian_bands(ir, PYRAMID_LEVELS)
        bands_vis = laplacian_bands(vis, PYRAMID_LEVELS)
        n = len(bands_ir)
        fused = []
        for k, (a, b) in enumerate(zip(bands_ir, bands_vis)):
            idx = k if k < n - 1 else PYRAMID_LEVELS - 1  # the base always uses the last map
            logit = logits[:, idx:idx + 1]
            if tuple(logit.shape[-2:]) != tuple(a.shape[-2:]):
                logit = F.adaptive_avg_pool2d(logit, a.shape[-2:])
            if k < n - 1:
                logit = logit + self.pyr_beta[k] * (a.abs() - b.abs()) / (a.abs() + b.abs() + 1e-3)
            wk = torch.sigmoid(logit)
            band = b + wk * (a - b)
            fused.append(band * self.pyr_log_gain[k].exp() if k < n - 1 else band)
        return reconstruct_bands(fused).clamp(0.0, 1.0)

    def fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Only the fused image (B, 1, H, W)."""
        return self(ir, vis).fused


# --------------------------------------------------------------------------------------------------
# cost


def count_params_and_macs(
    model: nn.Module,
    size: int | tuple[int, int] = 256,
    batch: int = 1,
    num_inputs: int = 2,
    in_channels: int = 1,
    on_meta: bool = True,
) -> tuple[int, int]:
    """(number of parameters, MACs of one forward) measured with ``torch.utils.flop_counter``.

    MACs = counted FLOPs / 2; the counter covers conv / linear / matmul only (not activations,
    interpolation, normalisation or the element-wise LFR products). The forward is run on ``num_inputs``
    zero tensors (B, in_channels, H, W). With ``on_meta`` (default) it runs on a ``meta``-device copy of the
    model, so nothing is computed and even the paper configuration at large sizes costs no time.
    """
    h, w = (size, size) if isinstance(size, int) else size
    params = sum(p.numel() for p in model.parameters())
    device = torch.device("meta") if on_meta else next(model.parameters()).device
    net = copy.deepcopy(model).to(device) if on_meta else model
    was_training = net.training
    net.eval()
    inputs = [torch.zeros(batch, in_channels, h, w, device=device) for _ in range(num_inputs)]
    try:
        # with autograd on, convolutions of concatenations run as one conv (``conv_of_concat``), which the counter
        # sees whole; on the meta device no graph memory is spent
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            net(*inputs)
    finally:
        net.train(was_training)
    return params, counter.get_total_flops() // 2
