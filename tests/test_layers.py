"""planetcd.layers: the fast 2 x 2 max pooling is F.max_pool2d exactly."""

import pytest
import torch
import torch.nn.functional as F

from planetcd.layers import MaxPool2x2, max_pool2x2


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
