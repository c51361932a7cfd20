"""Layers shared by planetcd's networks (the VGG-16 trunk, the crater UNets), with a fast CPU inference path.

A function and an ``nn.Module`` for each operation, one implementation (as kornia does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["max_pool2x2", "MaxPool2x2"]


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 max pooling with stride 2, ``(B, C, H, W)`` → ``(B, C, H // 2, W // 2)``: ``F.max_pool2d(x, 2)`` exactly.

    On CPU without autograd it takes the maximum of the even and odd rows, then of the even and odd columns
    (two element-wise passes over strided views). In bfloat16 channels-last, the trunk's layout, that is
    faster than ``F.max_pool2d`` on the 2-core development machine (``benchmarks/bench_ops.py``: 56 against
    63 ms for 64 x 1088², 4.2 against 34 ms for 128 x 544²); the values are the same (a maximum is exact).
    Elsewhere (CUDA, training) it is ``F.max_pool2d``.
    """
    if x.device.type != "cpu" or x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad):
        return F.max_pool2d(x, 2)
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2  # an odd last row or column is dropped, as max_pool2d does
    rows = torch.maximum(x[:, :, 0:h:2, :w], x[:, :, 1:h:2, :w])
    return torch.maximum(rows[:, :, :, 0::2], rows[:, :, :, 1::2])


class MaxPool2x2(nn.MaxPool2d):
    """:func:`max_pool2x2` as a module: an ``nn.MaxPool2d(2, 2)`` (no state) with the fast CPU path."""

    def __init__(self) -> None:
        super().__init__(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2x2(x)
