"""Run an image-to-image network tile by tile so peak memory depends on the tile, not the image.

Each tile is extended by ``overlap`` pixels on every side (clipped at the image border), processed,
and only its central part is written back. For a network whose receptive field radius is at most
``overlap`` the result equals the untiled output; for networks with global pooling (RFVIF's
dynamic kernels and channel attention) tiles see less context, a small documented difference.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["tiled"]


def tiled(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor,
          tile: int = 1024, overlap: int = 32) -> torch.Tensor:
    """``fn(a, b) -> (B, C, H, W)`` evaluated on tiles of ``a``, ``b`` (B, Ca|Cb, H, W).

    Images no larger than ``tile`` in both directions go through ``fn`` in one call.
    """
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap})")
    h, w = a.shape[-2:]
    if h <= tile and w <= tile:
        return fn(a, b)
    out: torch.Tensor | None = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - overlap, 0), max(x0 - overlap, 0)
            yb, xb = min(y1 + overlap, h), min(x1 + overlap, w)
            piece = fn(a[..., ya:yb, xa:xb], b[..., ya:yb, xa:xb])
            if out is None:
                out = piece.new_empty(*piece.shape[:2], h, w)
            out[..., y0:y1, x0:x1] = piece[..., y0 - ya:y0 - ya + (y1 - y0), x0 - xa:x0 - xa + (x1 - x0)]
    assert out is not None
    return out
