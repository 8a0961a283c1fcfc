"""Convolution of a channel concatenation without building it (the inference path of DIFN and RFVIF)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["conv_of_concat", "sequential_of_concat"]


def conv_of_concat(pieces: Sequence[torch.Tensor], conv: nn.Conv2d) -> torch.Tensor:
    """``conv(torch.cat(pieces, 1))``; pieces (B, C_i, H, W).

    With autograd on, or for a conv that is not stride-1, undilated, ungrouped and zero-padded, it is
    exactly that. Otherwise (inference) it is computed as the sum of one
    convolution per piece (a 1x1 one as a matmul), never building the concatenation: concatenating
    channels of channels-last tensors is a strided copy, and on CPU this path runs DIFN ~1.4x and RFVIF
    ~1.06x faster at 640x480 (``benchmarks/bench_speed.py``), outputs equal within float rounding (~3e-7).
    """
    plain = conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
    if torch.is_grad_enabled() or len(pieces) == 1 or not plain:
        return conv(torch.cat(list(pieces), dim=1) if len(pieces) > 1 else pieces[0])
    if sum(piece.shape[1] for piece in pieces) != conv.in_channels:
        raise ValueError(f"pieces have {[pc.shape[1] for pc in pieces]} channels, the convolution takes {conv.in_channels}")
    if conv.weight.shape[-2:] == (1, 1) and conv.padding == (0, 0):
        return _pointwise_of_concat(pieces, conv)
    out, start = None, 0
    for piece in pieces:
        w = conv.weight[:, start:start + piece.shape[1]]
        y = F.conv2d(piece, w, conv.bias if start == 0 else None, padding=conv.padding)
        start += piece.shape[1]
        out = y if out is None else out.add_(y)
    assert out is not None
    return out


def _pointwise_of_concat(pieces: Sequence[torch.Tensor], conv: nn.Conv2d) -> torch.Tensor:
    """1x1 ``conv`` of the concatenated pieces as one accumulating matmul chain over (B*H*W, C_i) rows;
    returns a channels-last (B, C_out, H, W). (oneDNN's 1x1 convolution is slower on these shapes.)"""
    b, _, h, w = pieces[0].shape
    weight = conv.weight[:, :, 0, 0].t()  # (C_in, C_out)
    out, start = None, 0
    for piece in pieces:
        rows = piece.permute(0, 2, 3, 1).reshape(-1, piece.shape[1])  # a view for channels-last pieces
        w_piece = weight[start:start + piece.shape[1]]
        start += piece.shape[1]
        out = rows @ w_piece if out is None else out.addmm_(rows, w_piece)
    assert out is not None
    if conv.bias is not None:
        out.add_(conv.bias)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def sequential_of_concat(pieces: Sequence[torch.Tensor], seq: nn.Sequential) -> torch.Tensor:
    """``seq(torch.cat(pieces, 1))`` for a Sequential whose first layer is a convolution: that convolution by
    :func:`conv_of_concat`, the rest as usual."""
    return seq[1:](conv_of_concat(pieces, seq[0]))
