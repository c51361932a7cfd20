"""Layers shared by planetcd's networks (the VGG-16 trunk, the crater UNets), with a fast CPU inference path.

A function and an ``nn.Module`` for each operation, one implementation (as kornia does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["max_pool2x2", "MaxPool2x2", "conv2d_relu", "conv_relu_stack", "fused_conv_relu_available"]


def _convolution_pointwise():
    """oneDNN's convolution with a fused element-wise post-op (the kernel PyTorch's own compiler uses), or None."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


_CONV_POINTWISE = _convolution_pointwise()


def fused_conv_relu_available() -> bool:
    """Whether this torch build has the fused oneDNN convolution + ReLU that :func:`conv2d_relu` uses on CPU."""
    return _CONV_POINTWISE is not None and torch.backends.mkldnn.enabled


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


def _fused_dtype(x: torch.Tensor, conv: nn.Conv2d) -> torch.dtype | None:
    """The dtype the fused kernel would run in, or None where :func:`conv2d_relu` must take the plain path."""
    if (x.device.type != "cpu" or x.dim() != 4 or not fused_conv_relu_available() or type(conv) is not nn.Conv2d
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str)):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in conv.parameters())):
        return None  # training: the fused kernel has no backward
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    return dtype if dtype in (torch.float32, torch.bfloat16) else None


def conv2d_relu(x: torch.Tensor, conv: nn.Conv2d, fused: bool | None = None) -> torch.Tensor:
    """``relu(conv(x))``: a 2-D convolution followed by a ReLU, ``(B, Cin, H, W)`` → ``(B, Cout, H', W')``.

    On CPU without autograd (inference) the ReLU runs inside oneDNN's convolution as a post-op, so the
    convolution's output is written once instead of written, then read and written again by the ReLU.
    The values are the same as ``F.relu(conv(x))`` in the same precision (the same convolution kernel; a
    ReLU is exact). Under CPU bfloat16 autocast the input and weights are cast to bfloat16 as autocast would.
    On a 2-core Intel Xeon with AMX (2026-12-02, ``benchmarks/bench_ops.py``) in bfloat16 channels-last the
    fused call takes 51 against 90 ms for VGG-16's conv1_1 on a 1088² tile and 102 against 139 ms for
    conv1_2; in float32 it saves 1–14 %. Elsewhere (CUDA, training, a build without oneDNN) it is the plain pair.

    Parameters
    ----------
    x : Tensor, shape (B, Cin, H, W)
    conv : nn.Conv2d
        Its weight, bias, stride, padding (numbers, zeros), dilation and groups are used.
    fused : bool, optional
        ``None`` (default): fused wherever it can be; ``False``: always the plain pair (for comparisons).
    """
    dtype = None if fused is False else _fused_dtype(x, conv)
    if dtype is None:
        return F.relu(conv(x), inplace=True)
    weight = conv.weight.to(dtype)
    bias = None if conv.bias is None else conv.bias.to(dtype)
    try:
        return _CONV_POINTWISE(x.to(dtype), weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                               conv.groups, "relu", [], "")
    except RuntimeError:  # a case this oneDNN build does not take: the plain pair gives the same values
        return F.relu(conv(x), inplace=True)


def conv_relu_stack(stack: nn.Sequential, x: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
    """Run a ``Sequential`` of layers, each ``Conv2d`` directly followed by a ``ReLU`` as :func:`conv2d_relu`.

    The same result as ``stack(x)``; the modules (and so the state-dict keys, e.g. torchvision's
    ``features.0.weight``) stay as they are.
    """
    layers = list(stack)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
            x = conv2d_relu(x, layer, fused)
            i += 2
        else:
            x = layer(x)
            i += 1
    return x
