"""CPSTN: the CycleGAN that translates visible images into pseudo-infrared (UMF-CMGR stage 1).

Architecture as configured in the official code (spec §1.1): a plain CycleGAN ResNet generator
(reflection padding, InstanceNorm affine=False, **no U-Net skips** although the paper says
"UNet-like"), PatchGAN discriminators (70x70, n_layers=3), normal(0, 0.02) init and an image
pool of 50. Module names follow the CycleGAN code (``model.N``, ``conv_block``) so official
checkpoints load without renaming.

Domains: A = VIS (RGB, 3 channels), B = IR (1 channel). G_A: A -> B (pseudo-IR), G_B: B -> A.
Networks work on [-1, 1] tensors; :class:`CPSTNTranslator` is the [0, 1] stage wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from alignfuse.errors import UnknownNameError
from alignfuse.stages import luminance

__all__ = [
    "CPSTN_CONFIGS",
    "ResnetBlock",
    "ResnetGenerator",
    "PatchDiscriminator",
    "init_weights",
    "ImagePool",
    "CPSTNNets",
    "build_cpstn",
    "CPSTNTranslator",
]

# ngf/ndf: base widths of generator/discriminator; n_blocks: ResNet blocks at H/4.
CPSTN_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {"ngf": 64, "n_blocks": 9, "ndf": 64},  # official resnet_9blocks, 11.37 M params per G
    "cpu": {"ngf": 16, "n_blocks": 4, "ndf": 16},  # spec §5 shrink for 2-core CPU training
    "tiny": {"ngf": 4, "n_blocks": 1, "ndf": 4},  # tests and smoke runs
    # issue 18: resize-convolution upsampling (nearest x2 + 3x3 conv: no checkerboard of the stride-2
    # transposed convolutions) and 6 residual blocks for more context
    "cpu-resize": {"ngf": 16, "n_blocks": 6, "ndf": 16, "upsample": "resize"},
}


def _norm(ch: int) -> nn.Module:
    # CycleGAN "instance": no affine parameters, no running stats (statistics per image always).
    return nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + [RP1, conv3x3, IN, ReLU, RP1, conv3x3, IN](x); (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=True),
            _norm(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=True),
            _norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator (spec §1.1), input and output in [-1, 1].

    RP3-conv7 (ngf) -> 2 x [conv3 s2] (2ngf, 4ngf) -> n_blocks ResnetBlocks -> 2 x [convT3 s2]
    -> RP3-conv7 (out_ch) -> tanh. Conv biases on (InstanceNorm has no affine). ``upsample="resize"`` replaces
    each transposed convolution by nearest x2 upsampling + RP1-conv3 (Odena et al. 2016: the uneven overlap of
    stride-2 transposed kernels is what draws the checkerboard).

    Shape:
        x: (B, in_ch, H, W) with H, W multiples of 4 -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 1, ngf: int = 64, n_blocks: int = 9,
                 upsample: str = "transpose") -> None:
        super().__init__()
        if upsample not in ("transpose", "resize"):
            raise UnknownNameError(f"upsample must be 'transpose' or 'resize', got {upsample!r}")
        self.in_ch, self.out_ch = in_ch, out_ch
        # what a weights sidecar needs to rebuild it (:meth:`from_config`)
        self.config = {"ngf": ngf, "n_blocks": n_blocks, "upsample": upsample, "in_ch": in_ch, "out_ch": out_ch}
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, kernel_size=7, padding=0, bias=True),
            _norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                _norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            if upsample == "transpose":
                up: list[nn.Module] = [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2,
                                                          padding=1, output_padding=1, bias=True)]
            else:
                up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                      nn.Conv2d(ngf * mult, ngf * mult // 2, kernel_size=3, bias=True)]
            layers += [*up, _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], in_ch: int, out_ch: int) -> "ResnetGenerator":
        """From a CPSTN config or a weights sidecar's ``config`` (``ngf``, ``n_blocks``, optional ``upsample``)."""
        return cls(in_ch, out_ch, config["ngf"], config["n_blocks"], config.get("upsample", "transpose"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ValueError(f"expected (B, {self.in_ch}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"H and W must be multiples of 4 (got {tuple(x.shape[-2:])}); pad first")
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN ("basic", n_layers=3: 70x70 receptive field). Returns raw logits.

    Shape:
        x: (B, in_ch, H, W) -> (B, 1, h, w); 256x256 -> 30x30.
    """

    def __init__(self, in_ch: int = 1, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=2, padding=1, bias=True),
                _norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=True),
            _norm(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """CycleGAN ``init_type='normal'``: conv/linear weights N(0, gain), biases 0; norms N(1, gain).

    Returns ``net`` (modified in place). ``generator`` makes the init reproducible without
    touching the global RNG.
    """
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                m.weight.normal_(0.0, gain, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            with torch.no_grad():
                m.weight.normal_(1.0, gain, generator=generator)
                m.bias.zero_()
    return net


class ImagePool:
    """History of generated images for discriminator updates (Shrivastava et al.; CycleGAN).

    While fewer than ``pool_size`` images are stored, each queried image is stored and returned.
    Afterwards each image is, with probability 1/2, swapped with a random stored one (the stored
    one is returned, the new one kept), else returned as is. ``pool_size=0`` disables the pool.
    """

    def __init__(self, pool_size: int = 50, generator: torch.Generator | None = None) -> None:
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.generator = generator

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) fakes -> (B, C, H, W) mix of current and past fakes (detached)."""
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(0, self.pool_size, (), generator=self.generator))
                old = self.images[idx].clone()
                self.images[idx] = image.clone()
                out.append(old)
            else:
                out.append(image)
        return torch.cat(out, 0)


class CPSTNNets(nn.Module):
    """The four CPSTN networks: ``g_a`` VIS->IR, ``g_b`` IR->VIS, ``d_a`` judges IR, ``d_b`` judges VIS."""

    def __init__(self, g_a: ResnetGenerator, g_b: ResnetGenerator, d_a: PatchDiscriminator, d_b: PatchDiscriminator):
        super().__init__()
        self.g_a, self.g_b, self.d_a, self.d_b = g_a, g_b, d_a, d_b


def build_cpstn(
    config: str | Mapping[str, int] = "cpu",
    vis_channels: int = 3,
    ir_channels: int = 1,
    generator: torch.Generator | None = None,
) -> CPSTNNets:
    """Build and normal(0.02)-initialise G_A, G_B, D_A, D_B from a named config or a dict."""
    cfg = _config(config)
    nets = CPSTNNets(
        ResnetGenerator.from_config(cfg, vis_channels, ir_channels),
        ResnetGenerator.from_config(cfg, ir_channels, vis_channels),
        PatchDiscriminator(ir_channels, cfg["ndf"]),
        PatchDiscriminator(vis_channels, cfg["ndf"]),
    )
    init_weights(nets, generator=generator)
    return nets


def _config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, str):
        if config not in CPSTN_CONFIGS:
            raise UnknownNameError(f"unknown CPSTN config {config!r}; choose from {sorted(CPSTN_CONFIGS)}")
        return dict(CPSTN_CONFIGS[config])
    return dict(config)


def _pad_to_multiple(x: torch.Tensor, multiple: int, mode: str) -> torch.Tensor:
    """Pad bottom/right so H, W are multiples of ``multiple``; reflect falls back to replicate if too small."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflection needs pad < size
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class CPSTNTranslator(nn.Module):
    """Stage wrapper around G_A: ``vis (B, 1|3, H, W) in [0, 1] -> pseudo-IR (B, 1, H, W) in [0, 1]``.

    Maps [0, 1] -> [-1, 1], pads bottom/right to a multiple of 4 (``pad_mode`` 'reflect' or
    'replicate'), runs G_A, crops back and maps to [0, 1]. Grey VIS is repeated to the
    generator's input channels; RGB VIS given to a 1-channel generator is reduced to luminance.
    Deviation: the official test script resizes (bicubic) to a multiple of 4 instead of padding;
    padding keeps the pseudo-IR on the exact VIS pixel grid, which registration needs.

    Args:
        generator: a trained :class:`ResnetGenerator` (VIS -> IR); ``None`` builds a fresh
            normal(0.02)-initialised one from ``config``.
        config: CPSTN config name or dict (used only when ``generator`` is None).
        vis_channels: generator input channels when building (3 = RGB VIS, as in the paper).
    """

    def __init__(
        self,
        generator: ResnetGenerator | None = None,
        config: str | Mapping[str, int] = "cpu",
        vis_channels: int = 3,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        if pad_mode not in ("reflect", "replicate"):
            raise ValueError(f"pad_mode must be 'reflect' or 'replicate', got {pad_mode!r}")
        if generator is None:
            cfg = _config(config)
            generator = init_weights(ResnetGenerator.from_config(cfg, vis_channels, 1))
        if generator.out_ch != 1:
            raise ValueError(f"the VIS->IR generator must output 1 channel, got {generator.out_ch}")
        self.generator = generator
        self.pad_mode = pad_mode

    def forward(self, vis: torch.Tensor) -> torch.Tensor:
        if vis.ndim != 4 or vis.shape[1] not in (1, 3):
            raise ValueError(f"vis must be (B, 1|3, H, W), got {tuple(vis.shape)}")
        in_ch = self.generator.in_ch
        if vis.shape[1] != in_ch:
            if vis.shape[1] == 1:
                vis = vis.expand(-1, in_ch, -1, -1)
            elif in_ch == 1:
                vis = luminance(vis)
            else:
                raise ValueError(f"cannot feed {vis.shape[1]}-channel VIS to a {in_ch}-channel generator")
        h, w = vis.shape[-2:]
        x = _pad_to_multiple(vis * 2.0 - 1.0, 4, self.pad_mode)
        y = self.generator(x)[..., :h, :w]
        return ((y + 1.0) * 0.5).clamp(0.0, 1.0)
