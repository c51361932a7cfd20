"""planetcd.layers: the fast 2 x 2 max pooling is F.max_pool2d exactly; the fused conv + ReLU is F.relu(conv(x));
the sub-pixel decoder step is relu(conv(upsample(x))) + skip up to rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import planetcd.layers as layers
from planetcd.layers import (MaxPool2x2, conv2d_relu, conv_relu_stack, fused_conv_relu_available, max_pool2x2,
                             plain_ops, upsample_conv2d_relu_add)


@pytest.mark.parametrize("shape", [(2, 5, 9, 7), (1, 3, 8, 8), (1, 64, 33, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2x2_is_max_pool2d(shape, dtype, channels_last):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = max_pool2x2(x)
        assert torch.equal(fast, F.max_pool2d(x, 2))
        assert torch.equal(MaxPool2x2()(x), fast)


def test_max_pool2x2_trains_like_max_pool2d():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    max_pool2x2(x).sum().backward()
    expected = torch.zeros_like(x)
    y = x.detach().clone().requires_grad_(True)
    F.max_pool2d(y, 2).sum().backward()
    assert torch.equal(x.grad, y.grad) and not torch.equal(x.grad, expected)


# --------------------------------------------------------------------------- conv2d_relu


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the calls that reach the fused kernel (None where this build has none)."""
    if not fused_conv_relu_available():
        return None
    calls = []
    kernel = layers._CONV_POINTWISE

    def counting(*args):
        calls.append(args[7])
        return kernel(*args)

    monkeypatch.setattr(layers, "_CONV_POINTWISE", counting)
    return calls


@pytest.mark.parametrize("conv_args", [dict(padding=1), dict(padding=2, dilation=2), dict(stride=2, padding=0),
                                       dict(padding=1, groups=2, bias=False)])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-autocast"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_relu_is_relu_of_conv(conv_args, precision, channels_last, fused_calls):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, **conv_args).eval()
    x = torch.randn(2, 4, 17, 13)
    if precision == "bf16":
        conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
        expected = F.relu(conv(x))
        got = conv2d_relu(x, conv)
        plain = conv2d_relu(x, conv, fused=False)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected) and torch.equal(plain, expected)
    assert (got > 0).any() and (got == 0).any()
    if fused_calls is not None:
        assert fused_calls == ["relu"]  # the fused kernel ran once; fused=False did not reach it


def test_conv2d_relu_trains_through_the_plain_pair(fused_calls):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    conv2d_relu(x, conv).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    if fused_calls is not None:
        assert fused_calls == []


def test_conv_relu_stack_is_the_sequential():
    torch.manual_seed(0)
    stack = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), layers.MaxPool2x2(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 5, 3, padding=1)).eval()
    x = torch.randn(1, 3, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = stack(x)
        got = conv_relu_stack(stack, x)
    # Equal up to float rounding: oneDNN's fused kernel may sum in another order on some CPUs (bit-equal on an
    # Intel Xeon with AMX, not on an AMD EPYC with AVX-512 BF16).
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got < 0).any()  # the last conv has no ReLU, and none was added


def test_conv2d_relu_falls_back_when_the_fused_kernel_refuses(monkeypatch):
    def refuse(*args):
        raise RuntimeError("not supported here")

    monkeypatch.setattr(layers, "_CONV_POINTWISE", refuse)
    monkeypatch.setattr(layers, "fused_conv_relu_available", lambda: True)
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.inference_mode():
        assert torch.equal(conv2d_relu(x, conv), F.relu(conv(x)))


# --------------------------------------------------------------------------- upsample_conv2d_relu_add


def _plain_decoder_step(x, conv, skip):
    """What the symmetric U-Net's decoder computed before the sub-pixel path (conv2d_relu: tested above)."""
    return conv2d_relu(F.interpolate(x, scale_factor=2, mode="nearest"), conv) + skip


@pytest.fixture
def no_upsampling(monkeypatch):
    """Makes F.interpolate fail, so a test knows the sub-pixel path (which never upsamples) ran."""
    def refuse(*args, **kwargs):
        raise AssertionError("the plain path ran")

    monkeypatch.setattr(layers.F, "interpolate", refuse)


@pytest.mark.skipif(not fused_conv_relu_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
@pytest.mark.parametrize("bias", [True, False])
def test_upsample_conv2d_relu_add_is_the_plain_decoder_step_in_fp32(kernel_size, bias):
    torch.manual_seed(kernel_size)
    conv = nn.Conv2d(6, 5, kernel_size, padding=kernel_size // 2, bias=bias).eval()
    x = torch.randn(2, 6, 9, 7).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(2, 5, 18, 14).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = _plain_decoder_step(x, conv, skip)
        into = skip.clone()
        got = upsample_conv2d_relu_add(x, conv, into, inplace=True)
    assert got.data_ptr() == into.data_ptr()  # written into the skip's memory
    assert (got != skip).any() and (got == skip).any()  # some outputs are past the ReLU's zero, some not
    # the kernel's taps are summed before the products: equal up to float32 rounding
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not fused_conv_relu_available(), reason="this torch build has no oneDNN")
def test_upsample_conv2d_relu_add_never_upsamples_and_is_close_in_bf16(no_upsampling):
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 16, 3, padding=1).eval()
    x = torch.randn(2, 24, 16, 12).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(2, 16, 32, 24).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True)
        up = x.repeat_interleave(2, 2).repeat_interleave(2, 3)  # the nearest upsampling, F.interpolate refused
        expected = (conv2d_relu(up, conv) + skip).float()
    assert got.dtype == torch.bfloat16
    # bfloat16 keeps 8 bits: the two roundings of the kernel's taps differ by a few units in the last place
    scale = float(expected.abs().max())
    assert float((got.float() - expected).abs().max()) <= 2 ** -6 * scale
    assert float((got.float() - expected).abs().mean()) <= 2 ** -10 * scale


def test_upsample_conv2d_relu_add_takes_the_plain_ops_for_training_and_other_layouts():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    skip = torch.randn(1, 4, 12, 12)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    got = upsample_conv2d_relu_add(x, conv, skip, inplace=True)  # autograd: a new tensor, skip untouched
    got.sum().backward()
    assert x.grad is not None and conv.weight.grad.abs().sum() > 0
    assert torch.equal(got.detach(), _plain_decoder_step(x, conv, skip).detach())
    with torch.inference_mode():
        xn = x.detach()  # contiguous (not channels-last): the plain ops, the same values exactly
        assert torch.equal(upsample_conv2d_relu_add(xn, conv, skip.clone(), inplace=True),
                           _plain_decoder_step(xn, conv, skip))
        before = skip.clone()
        xl = xn.contiguous(memory_format=torch.channels_last)
        sl = skip.contiguous(memory_format=torch.channels_last)
        out = upsample_conv2d_relu_add(xl, conv, sl)  # inplace=False: a new tensor
        assert torch.equal(sl, before) and torch.equal(out, _plain_decoder_step(xl, conv, sl))
        strided = nn.Conv2d(3, 4, 3, padding=1, stride=2)  # not a decoder step's shape: plain ops (and their error)
        with pytest.raises(RuntimeError):
            upsample_conv2d_relu_add(xl, strided, sl.clone(), inplace=True)


def test_upsample_conv2d_relu_add_follows_a_changed_weight():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    skip = torch.zeros(1, 4, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        first = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True)
    with torch.no_grad():
        conv.weight.mul_(-1.0)  # the cached sub-pixel kernels must not survive this
    with torch.inference_mode():
        second = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True)
        torch.testing.assert_close(second, _plain_decoder_step(x, conv, skip), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)


# --------------------------------------------------------------------------- plain_ops


def test_plain_ops_runs_the_standard_ops_and_restores_the_fast_paths(fused_calls, monkeypatch):
    pools = []
    max_pool2d = F.max_pool2d
    monkeypatch.setattr(layers.F, "max_pool2d", lambda *a, **k: pools.append(1) or max_pool2d(*a, **k))
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(1, 4, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with plain_ops():
            relu_conv = conv2d_relu(x, conv)
            pooled = max_pool2x2(x)
            step = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True)
        assert pools == [1] and torch.equal(pooled, max_pool2d(x, 2))
        assert torch.equal(relu_conv, F.relu(conv(x)))
        assert torch.equal(step, F.relu(conv(F.interpolate(x, scale_factor=2, mode="nearest"))) + skip)
        if fused_calls is not None:
            assert fused_calls == []  # neither the fused kernel nor the sub-pixel path ran
            conv2d_relu(x, conv)  # outside the context the fast path is back
            assert fused_calls == ["relu"]
        max_pool2x2(x)
        assert pools == [1]


@pytest.mark.skipif(not fused_conv_relu_available(), reason="this torch build has no oneDNN")
def test_upsample_conv2d_relu_add_takes_a_layer_made_under_inference_mode():
    """Inference tensors keep no version counter: the sub-pixel kernels are not cached for them, and still right."""
    torch.manual_seed(0)
    with torch.inference_mode():
        conv = nn.Conv2d(3, 4, 3, padding=1).eval().to(memory_format=torch.channels_last)
        x = torch.randn(1, 3, 6, 6).contiguous(memory_format=torch.channels_last)
        skip = torch.zeros(1, 4, 12, 12).contiguous(memory_format=torch.channels_last)
        first = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True)
        torch.testing.assert_close(first, _plain_decoder_step(x, conv, skip), rtol=1e-5, atol=1e-5)
        conv.weight.mul_(-1.0)
        second = upsample_conv2d_relu_add(x, conv, skip.clone(), inplace=True)
        torch.testing.assert_close(second, _plain_decoder_step(x, conv, skip), rtol=1e-5, atol=1e-5)
