"""DIFN: UMF-CMGR's dual-path interaction fusion network (official ``FusionNet``, spec §1.3).

Per modality: conv3x3 1->C + LReLU(0.2) head and one residual dense block (3 dense layers,
growth C, bias-free convs, 1x1 local fusion, residual add); then the interaction fusion module
(IFM), a 3x3 conv 2C->C and a 3x3 conv C->1 tail. Everything is at full resolution, so any
H x W works. Module names match the official ones (``conv1_1``, ``ir_path.0.dense_layers`` ...,
``fuse.query_conv``, ``fuse_res``, ``out_conv``) so official weights load directly.

Deliberate changes:

* the official ``FuseModule()`` is built with its default width 64 whatever ``nfeats`` is (any
  other width crashes); here the IFM takes ``nfeats``;
* output activation: the official ``Tanh`` gives [-1, 1] while inputs/targets are [0, 1] (saving
  clips negatives). ``out_act='sigmoid'`` (default) or ``'tanh01'`` ((tanh + 1) / 2) map to
  [0, 1] for training; ``'tanh_clip'`` = clamp(tanh, 0, 1) reproduces official inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from alignfuse.errors import UnknownNameError
from alignfuse.models.concat_conv import conv_of_concat

__all__ = ["DIFN_CONFIGS", "RDB", "FuseModule", "PaperFuseModule", "DIFN", "build_difn", "conv_of_concat"]

DIFN_CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {"nfeats": 64},  # official FusionNet(64): 0.629 M params
    "cpu": {"nfeats": 16},  # spec §5: ~1.2 s/iter at batch 8 @128^2 on 2 cores
    # all DIFN layers run at full resolution, so cost ~ nfeats^2 (trained in docs/RESULTS.md §2.5, not shipped)
    "fast": {"nfeats": 8},
}


class _DenseLayer(nn.Module):
    """Weights of one dense layer: conv3x3 (bias-free) C_in -> growth; :class:`RDB` applies it."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, kernel_size=3, padding=1, bias=False)


class RDB(nn.Module):
    """Residual dense block: n dense layers, 1x1 (bias-free) fusion back to C, + input. (B, C, H, W).

    Dense layer k sees the concatenation of the input and every earlier layer's output,
    relu(conv3x3(cat(x, g_1 .. g_{k-1}))) -> g_k; the 1x1 conv fuses cat(x, g_1 .. g_n).
    """

    def __init__(self, channels: int, n_dense: int = 3, growth: int = 64) -> None:
        super().__init__()
        layers, c = [], channels
        for _ in range(n_dense):
            layers.append(_DenseLayer(c, growth))
            c += growth
        self.dense_layers = nn.Sequential(*layers)
        self.conv_1x1 = nn.Conv2d(c, channels, kernel_size=1, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.dense_layers:
            feats.append(torch.relu_(conv_of_concat(feats, layer.conv)))  # conv backward does not need its output
        return conv_of_concat(feats, self.conv_1x1) + x


class FuseModule(nn.Module):
    """IFM as coded: A = sigmoid(conv3(x) * conv3(p)); learned per-pixel mixing of f and f*A.

    x_out = x * g1[0] + (x * A) * g1[1] with g1 = conv3x3 2C->2 (cat(x, x * A)); same for p with g2.
    (The paper's Eq. 5-6 is :class:`PaperFuseModule`; g = (1, 1) reproduces its f * (1 + A).)

    Shape: x (IR features), p (VIS features): (B, C, H, W) -> two (B, C, H, W).
    """

    def __init__(self, in_dim: int = 64) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim, 3, 1, 1, bias=True)
        self.key_conv = nn.Conv2d(in_dim, in_dim, 3, 1, 1, bias=True)
        self.gamma1 = nn.Conv2d(in_dim * 2, 2, 3, 1, 1, bias=True)
        self.gamma2 = nn.Conv2d(in_dim * 2, 2, 3, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att = torch.sigmoid(self.query_conv(x) * self.key_conv(p))
        x_a, p_a = x * att, p * att
        # two-channel gains as contiguous planes: a channel slice of a channels-last tensor broadcasts slowly
        g1 = conv_of_concat([x, x_a], self.gamma1).contiguous()
        g2 = conv_of_concat([p, p_a], self.gamma2).contiguous()
        return torch.addcmul(x * g1[:, 0:1], x_a, g1[:, 1:2]), torch.addcmul(p * g2[:, 0:1], p_a, g2[:, 1:2])


class PaperFuseModule(nn.Module):
    """IFM as written in the paper (Eq. 5-6): A = sigmoid(conv1(x) * conv1(p)); f * (1 + A)."""

    def __init__(self, in_dim: int = 64) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim, 1, bias=True)
        self.key_conv = nn.Conv2d(in_dim, in_dim, 1, bias=True)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att = torch.sigmoid(self.query_conv(x) * self.key_conv(p))
        return x * (1.0 + att), p * (1.0 + att)


_OUT_ACTS = ("sigmoid", "tanh01", "tanh_clip")


class DIFN(nn.Module):
    """Dual-path interaction fusion network.

    Args:
        nfeats: feature width C (official 64).
        n_dense: dense layers per RDB (official 3).
        growth: dense growth rate; ``None`` = ``nfeats`` (official).
        ifm: ``'official'`` (:class:`FuseModule`, 3x3 convs + learned mixing) or ``'paper'``
            (:class:`PaperFuseModule`, 1x1 convs, f * (1 + A)). The rest is identical.
        out_act: ``'sigmoid'`` | ``'tanh01'`` | ``'tanh_clip'`` (see module docstring).

    Shape:
        ir, vis: (B, 1, H, W) in [0, 1] -> fused (B, 1, H, W) in [0, 1].
    """

    def __init__(
        self,
        nfeats: int = 64,
        n_dense: int = 3,
        growth: int | None = None,
        ifm: str = "official",
        out_act: str = "sigmoid",
    ) -> None:
        super().__init__()
        if ifm not in ("official", "paper"):
            raise ValueError(f"ifm must be 'official' or 'paper', got {ifm!r}")
        if out_act not in _OUT_ACTS:
            raise ValueError(f"out_act must be one of {_OUT_ACTS}, got {out_act!r}")
        growth = nfeats if growth is None else growth
        self.config = {"nfeats": nfeats, "n_dense": n_dense, "growth": growth, "ifm": ifm, "out_act": out_act}
        self.out_act = out_act
        self.conv1_1 = nn.Sequential(nn.Conv2d(1, nfeats, 3, 1, 1), nn.LeakyReLU(0.2))  # IR head
        self.conv2_1 = nn.Sequential(nn.Conv2d(1, nfeats, 3, 1, 1), nn.LeakyReLU(0.2))  # VIS head
        self.ir_path = nn.Sequential(RDB(nfeats, n_dense, growth))
        self.vi_path = nn.Sequential(RDB(nfeats, n_dense, growth))
        self.fuse = FuseModule(nfeats) if ifm == "official" else PaperFuseModule(nfeats)  # width bug fixed
        self.fuse_res = nn.Conv2d(nfeats * 2, nfeats, 3, 1, 1)
        self.out_conv = nn.Conv2d(nfeats, 1, 3, 1, 1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        if ir.ndim != 4 or ir.shape[1] != 1 or vis.shape != ir.shape:
            raise ValueError(f"ir and vis must both be (B, 1, H, W), got {tuple(ir.shape)} and {tuple(vis.shape)}")
        f_ir = self.ir_path(self.conv1_1(ir))
        f_vi = self.vi_path(self.conv2_1(vis))
        f_ir, f_vi = self.fuse(f_ir, f_vi)
        out = self.out_conv(conv_of_concat([f_ir, f_vi], self.fuse_res))
        if self.out_act == "sigmoid":
            return torch.sigmoid(out)
        if self.out_act == "tanh01":
            return (torch.tanh(out) + 1.0) * 0.5
        return torch.tanh(out).clamp(0.0, 1.0)


def build_difn(config: str | Mapping[str, Any] = "paper", **overrides: Any) -> DIFN:
    """DIFN from a named config in :data:`DIFN_CONFIGS` (or a dict), with keyword overrides."""
    if isinstance(config, str):
        if config not in DIFN_CONFIGS:
            raise UnknownNameError(f"unknown DIFN config {config!r}; choose from {sorted(DIFN_CONFIGS)}")
        config = DIFN_CONFIGS[config]
    return DIFN(**{**dict(config), **overrides})
