"""Shipped weights: safetensors tensors + a JSON sidecar with the constructor config.

``NAME.safetensors`` holds only tensors (no pickle, safe to load from anywhere) and ``NAME.json``
holds ``{"architecture": ..., "config": {...}, "training": {...}}`` so a model can be rebuilt
from the two files alone. Training checkpoints (``training/loop.py``) are a different, resumable
format and are never shipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import UserError

__all__ = ["save_weights", "load_weights", "WEIGHTS_DIR", "WeightsError"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


class WeightsError(UserError):
    """Missing, unreadable or mismatched weights; the message names the file."""


def save_weights(module: nn.Module, path: Path, architecture: str, config: dict[str, Any],
                 training: dict[str, Any] | None = None) -> None:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar, each atomically."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"architecture": architecture})
    os.replace(tmp, path)
    sidecar = path.with_suffix(".json")
    tmp_json = sidecar.with_name(sidecar.name + ".tmp")
    tmp_json.write_text(json.dumps({"architecture": architecture, "config": config, "training": training or {}},
                                   indent=1, default=str))
    os.replace(tmp_json, sidecar)


def load_weights(path: Path, architecture: str | None = None,
                 device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, sidecar) from ``path``; checks the architecture name when given."""
    path = Path(path).with_suffix(".safetensors")
    sidecar = path.with_suffix(".json")
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    if not sidecar.exists():
        raise WeightsError(f"{sidecar}: config sidecar not found (needed to rebuild the model)")
    meta = json.loads(sidecar.read_text())
    if architecture is not None and meta.get("architecture") != architecture:
        raise WeightsError(f"{path}: holds a {meta.get('architecture')!r} model, expected {architecture!r}")
    try:
        state = load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: cannot read weights ({exc})") from exc
    return state, meta
