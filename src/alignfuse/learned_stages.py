"""Learned stages built from weights files, for the registry's ``REGISTRAR+FUSER`` grid and the network pipelines.

The registry imports this module, never :mod:`alignfuse.model_pipelines` (which registers pipelines
into the registry and builds them from these pieces), so the two do not import each other.
Every factory takes ``weights_dir``: the folder holding ``NAME.safetensors`` + ``NAME.json`` under the
shipped names (:data:`WEIGHT_NAMES`), ``None`` for the shipped weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import checkpoints
from .stages import luminance
from .tiling import tiled

__all__ = ["WEIGHT_NAMES", "weights_path", "weights_available", "NetFuser", "load_difn", "load_pwf", "LEARNED_FUSERS"]

# shipped weight names per network
WEIGHT_NAMES = {"cpstn": "cpstn_cpu", "mrrn": "mrrn_cpu", "difn": "difn_cpu", "rfvif": "rfvif_cpu", "pwf": "pwf_cpu",
                "rfvif-paper": "rfvif_paper_cpu"}  # the same RFVIF net trained with the paper's loss (Eq. 18)


def weights_path(net: str, weights_dir: str | Path | None) -> Path:
    """Where the weights of ``net`` are read from: ``weights_dir`` (or the shipped folder) / shipped name."""
    folder = Path(weights_dir) if weights_dir else checkpoints.WEIGHTS_DIR
    return folder / f"{WEIGHT_NAMES[net]}.safetensors"


def weights_available(*nets: str) -> bool:
    """True when the weights of every one of ``nets`` ship with the package."""
    return all(weights_path(n, None).exists() for n in nets)


class NetFuser(nn.Module):
    """Fuser stage around a (ir, vis) -> fused network; eval mode, no gradients, tiled on large images.

    Args:
        net: the network; ``output`` names the attribute of its result holding the fused image.
        tile, overlap: images larger than ``tile`` px in a direction are fused in overlapping tiles
            (:func:`alignfuse.tiling.tiled`), which bounds peak memory.
    """

    def __init__(self, net: nn.Module, output: str | None = None, tile: int = 1024, overlap: int = 32) -> None:
        super().__init__()
        # channels-last weights: oneDNN's convolutions on these narrow nets run ~1.4x faster on CPU
        # (benchmarks/bench_speed.py; outputs equal within 4e-7)
        self.net = net.eval().to(memory_format=torch.channels_last)
        self.output = output
        self.tile, self.overlap = tile, overlap

    def _fuse(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        out = self.net(ir, vis)
        return getattr(out, self.output) if self.output else out

    @torch.no_grad()
    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return tiled(self._fuse, ir, luminance(vis), self.tile, self.overlap)


def load_difn(weights_dir: str | Path | None = None) -> nn.Module:
    from .models.difn import DIFN

    state, meta = checkpoints.load_weights(weights_path("difn", weights_dir), architecture="difn")
    net = DIFN(**meta["config"])
    net.load_state_dict(state)
    return net.eval()


def load_pwf(weights_dir: str | Path | None = None) -> nn.Module:
    from .models.pwf import PWFNet

    state, meta = checkpoints.load_weights(weights_path("pwf", weights_dir), architecture="pwf")
    net = PWFNet(**meta["config"])
    net.load_state_dict(state)
    return net.eval()


# learned fusers usable in the registrar+fuser grid (e.g. `eccgrad+difn`): name -> factory(weights_dir)
LEARNED_FUSERS: dict[str, Callable[[str | Path | None], nn.Module]] = {
    "difn": lambda weights_dir=None: NetFuser(load_difn(weights_dir)),
    "pwf": lambda weights_dir=None: NetFuser(load_pwf(weights_dir), output="fused"),
}
