"""Layers shared by planetcd's networks (the VGG-16 trunk, the crater UNets), with a fast CPU inference path.

A function and an ``nn.Module`` for each operation, one implementation (as kornia does).
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["max_pool2x2", "MaxPool2x2", "conv2d_relu", "conv_relu_stack", "fused_conv_relu_available",
           "upsample_conv2d_relu_add", "plain_ops"]


def _convolution_pointwise():
    """oneDNN's convolution with a fused element-wise post-op (the kernel PyTorch's own compiler uses), or None."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


_CONV_POINTWISE = _convolution_pointwise()

#: Set by :func:`plain_ops`: every function here takes its plain PyTorch ops.
_PLAIN_OPS = contextvars.ContextVar("planetcd_plain_ops", default=False)


@contextlib.contextmanager
def plain_ops():
    """Within this context every function of this module runs the plain PyTorch ops it stands for.

    ``F.max_pool2d``, ``F.relu(conv(x))``, ``F.interpolate`` then the convolution: the reference the fast
    paths are tested against, and the networks' speed floors of ``benchmarks/bench_detect.py --floors``
    (what the hardware gives the standard ops, a floor that planetcd's own fast paths do not move).
    """
    token = _PLAIN_OPS.set(True)
    try:
        yield
    finally:
        _PLAIN_OPS.reset(token)


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
    if x.device.type != "cpu" or x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad) or _PLAIN_OPS.get():
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
    if (x.device.type != "cpu" or x.dim() != 4 or not fused_conv_relu_available() or _PLAIN_OPS.get()
            or type(conv) is not nn.Conv2d
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
    bias = None if conv.bias is None else conv.bias.to(dtype)
    return _fused_conv_relu(x.to(dtype), conv.weight.to(dtype), bias, list(conv.padding), list(conv.stride),
                            list(conv.dilation), conv.groups)


def _fused_conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
                     stride: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    """oneDNN's convolution with the ReLU as its post-op; where this build's kernel refuses the case, the plain
    ``F.relu(F.conv2d(...))`` on the same tensors (the same values)."""
    try:
        return _CONV_POINTWISE(x, weight, bias, padding, stride, dilation, groups, "relu", [], "")
    except RuntimeError:
        return F.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups), inplace=True)


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


def _phase_matrices(kernel_size: int, phase: int, span: int | None = None) -> tuple[torch.Tensor, int]:
    """Which low-resolution tap each tap of a ``kernel_size`` kernel reads after a nearest 2 x upsampling.

    Output pixel ``2 i + phase`` of the upsampled image's convolution reads upsampled pixel ``2 i + phase + t``
    for ``t`` in ``-p..p`` (``p = kernel_size // 2``), which is low-resolution pixel ``i + (phase + t) // 2``.
    Returns the ``(taps, kernel_size)`` 0/1 matrix that sums each kernel tap into its low-resolution tap, and the
    low-resolution offset of the first tap. ``span``: the taps run from ``-span`` to ``span`` (both phases
    in one kernel) instead of the phase's own ``p + 1``.
    """
    p = kernel_size // 2
    first = -span if span is not None else (phase - p) // 2
    taps = 2 * span + 1 if span is not None else p + 1
    matrix = torch.zeros(taps, kernel_size)
    for t in range(-p, p + 1):
        matrix[(phase + t) // 2 - first, t + p] = 1.0
    return matrix, first


#: The sub-pixel kernels of each convolution :func:`upsample_conv2d_relu_add` has run, with the weight's
#: version and dtype they were made from (made again when the weight changes; dropped with the module).
_SUB_PIXEL_CACHE: "weakref.WeakKeyDictionary[nn.Conv2d, tuple]" = weakref.WeakKeyDictionary()


def _sub_pixel_weights(conv: nn.Conv2d, dtype: torch.dtype) -> tuple[int, list[tuple[torch.Tensor, int]], torch.Tensor | None]:
    """``(span, [(kernel, first row) for row phases 0, 1], bias)`` of :func:`upsample_conv2d_relu_add`'s path.

    Each kernel has output channels ``(column phase b, channel c)``, in ``dtype``: in channels-last memory a
    row of its map is a row of the upsampled result (pixel ``2 j + b``)."""
    params = [conv.weight] + ([] if conv.bias is None else [conv.bias])
    # Tensors made under inference mode keep no version counter: their kernels are made on every call.
    key = None if any(t.is_inference() for t in params) else (tuple((t._version, t.data_ptr()) for t in params), dtype)
    cached = _SUB_PIXEL_CACHE.get(conv)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    k = conv.kernel_size[0]
    span = (k // 2 + 1) // 2  # the columns of both phases read low-resolution taps -span..span
    weight = conv.weight.detach().float()
    columns = [_phase_matrices(k, b, span)[0] for b in (0, 1)]
    phases = []
    for a in (0, 1):
        rows, first = _phase_matrices(k, a)
        kernel = torch.cat([torch.einsum("pk,oikl,ql->oipq", rows, weight, cols) for cols in columns])
        phases.append((kernel.to(dtype), first))
    bias = None if conv.bias is None else conv.bias.detach().to(dtype).repeat(2)
    if key is not None:
        _SUB_PIXEL_CACHE[conv] = (key, (span, phases, bias))
    return span, phases, bias


def _upsample_fast_path(x: torch.Tensor, conv: nn.Conv2d, skip: torch.Tensor) -> torch.dtype | None:
    """The dtype of :func:`upsample_conv2d_relu_add`'s sub-pixel path, or None where it takes the plain ops."""
    dtype = _fused_dtype(x, conv)
    k = conv.kernel_size
    if (dtype is None or k[0] != k[1] or k[0] % 2 != 1 or tuple(conv.padding) != (k[0] // 2,) * 2
            or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1):
        return None
    batch, _, h, w = x.shape
    if (skip.shape != (batch, conv.out_channels, 2 * h, 2 * w) or skip.dtype != dtype
            or not x.is_contiguous(memory_format=torch.channels_last)
            or not skip.is_contiguous(memory_format=torch.channels_last)):
        return None
    return dtype


def upsample_conv2d_relu_add(x: torch.Tensor, conv: nn.Conv2d, skip: torch.Tensor, inplace: bool = False,
                             fused: bool | None = None) -> torch.Tensor:
    """``relu(conv(upsample(x))) + skip``: the decoder step of a U-Net with additive skips.

    ``upsample`` is the nearest-neighbour 2 x upsampling (``F.interpolate(x, scale_factor=2, mode="nearest")``).

    On CPU inference, with channels-last tensors, the upsampled image is never made: a convolution of a
    nearest-upsampled image is, for each of the two output rows a 2 x 2 block of pixels holds, a convolution
    of ``x`` itself whose kernel sums the taps that read the same low-resolution pixel (the sub-pixel
    identity). Both column phases of a row phase go into one convolution with twice the output channels,
    the ReLU fused into it, whose output is, in channels-last memory, exactly that row of the upsampled
    result; it is added into the skip's rows with one strided pass. For a 3 x 3 kernel that is 24 instead
    of 36 multiply-adds per output pixel and channel pair, no upsampled copy and no separate ReLU pass.
    The values equal the plain ops' up to rounding (the kernel's taps are summed before the products);
    ``tests/test_layers.py`` bounds the difference. On the 2-core Intel Xeon with AMX (2026-12-02,
    ``benchmarks/bench_ops.py``, best of 7) the symmetric U-Net's last decoder step (24 → 16 channels,
    8 x 256² → 512²) takes 38.5 ms against 92.4 ms in bfloat16, 81 against 151 ms in float32.

    Parameters
    ----------
    x : Tensor, shape (B, Cin, H, W)
    conv : nn.Conv2d
        Odd square kernel, padding ``kernel_size // 2``, stride 1 (anything else takes the plain ops).
    skip : Tensor, shape (B, Cout, 2H, 2W)
    inplace : bool
        Whether the sum may be written into ``skip``. The sub-pixel path writes there, so it runs only with
        ``inplace=True``; under autograd the plain ops make a new tensor whatever this says.
    fused : bool, optional
        ``None`` (default): the sub-pixel path wherever it can run; ``False``: always the plain ops.

    Returns
    -------
    Tensor, shape (B, Cout, 2H, 2W)
    """
    dtype = None if fused is False or not inplace else _upsample_fast_path(x, conv, skip)
    if dtype is None:
        y = conv2d_relu(F.interpolate(x, scale_factor=2, mode="nearest"), conv, fused)
        return y.add_(skip) if inplace and not torch.is_grad_enabled() else y + skip
    span, phases, bias = _sub_pixel_weights(conv, dtype)
    xd = x.to(dtype)
    batch, _, h, w = x.shape
    cout = conv.out_channels
    for a, (phase_weight, first) in enumerate(phases):
        out = _fused_conv_relu(xd, phase_weight, bias, [span, span], [1, 1], [1, 1], 1)
        out = out.contiguous(memory_format=torch.channels_last)
        start = first + span  # output row of low-resolution row 0 of this phase
        row = out.as_strided((batch, cout, h, 2 * w), (out.stride(0), 1, out.stride(2), cout),
                             out.storage_offset() + start * out.stride(2))
        skip[:, :, a::2, :].add_(row)
    return skip
