"""SymmetricUNet / SmallUNet: shapes, padding, parameter counts."""

from __future__ import annotations

import pytest
import torch

from planetcd.craters.unet import (
    FlipAverage,
    flip_average,
    DELATTE_FILTERS,
    PadToMultiple,
    SmallUNet,
    SymmetricUNet,
    build_model,
    count_parameters,
    crop_to,
    pad_to_multiple,
)


def _conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def _expected_symmetric(k: int = 3, mult: float = 1.0, cin: int = 1) -> int:
    """Parameters of the architecture in the issue, counted layer by layer."""
    f = [max(1, int(round(x * mult))) for x in DELATTE_FILTERS]
    bottom = max(1, int(round(128 * mult)))
    total, prev = 0, cin
    for c in f:  # seven down convolutions
        total += _conv_params(prev, c, k)
        prev = c
    total += _conv_params(prev, bottom, k)  # bottom
    prev = bottom
    for c in reversed(f):  # seven up convolutions (additive skips keep widths)
        total += _conv_params(prev, c, k)
        prev = c
    return total + _conv_params(prev, 1, 1)  # final 1x1


def test_default_parameter_count_matches_architecture():
    model = SymmetricUNet()
    assert count_parameters(model) == _expected_symmetric()
    # The default model has 16 convolutions: 7 down, 1 bottom, 7 up, 1 head.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 16
    assert [c.out_channels for c in convs[:7]] == list(DELATTE_FILTERS)
    assert convs[-1].kernel_size == (1, 1)


@pytest.mark.parametrize("k,mult,cin", [(7, 1.0, 1), (11, 0.5, 1), (3, 2.0, 3)])
def test_options_change_parameter_count(k, mult, cin):
    model = SymmetricUNet(in_channels=cin, kernel_size=k, filter_multiple=mult)
    assert count_parameters(model) == _expected_symmetric(k, mult, cin)


@pytest.mark.parametrize("size", [(128, 128), (256, 128), (100, 130), (37, 300)])
def test_output_shape_equals_input_shape(size):
    model = SymmetricUNet(dropout=False).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, *size)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_padding_does_not_leak_into_multiple_sizes():
    """A multiple of 128 is left as it is; other sizes are padded up and cropped back exactly."""
    x = torch.randn(1, 1, 128, 256)
    padded, size = pad_to_multiple(x, 128)
    assert padded.shape == x.shape and size == (128, 256)
    x2 = torch.randn(1, 1, 130, 129)
    padded2, size2 = PadToMultiple(128)(x2)
    assert padded2.shape[-2:] == (256, 256) and size2 == (130, 129)
    assert torch.equal(crop_to(padded2, size2), x2)


def test_small_unet_on_chips():
    model = SmallUNet().eval()
    with torch.no_grad():
        y = model(torch.randn(3, 1, 48, 48))
    assert y.shape == (3, 1, 48, 48)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(c.out_channels for c in convs) == 128  # the bottleneck
    with torch.no_grad():
        assert model(torch.randn(1, 1, 50, 45)).shape == (1, 1, 50, 45)


def test_build_model_and_bad_options():
    assert isinstance(build_model("symmetric", kernel_size=7), SymmetricUNet)
    assert isinstance(build_model("small"), SmallUNet)
    with pytest.raises(ValueError):
        build_model("resnet")
    with pytest.raises(ValueError):
        SymmetricUNet(kernel_size=4)


def test_flip_average_is_the_mean_of_the_four_mirrored_passes():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)  # not mirror-symmetric: the four views differ
    x = torch.rand(2, 1, 16, 20)
    views = [net(x), net(x.flip(3)).flip(3), net(x.flip(2)).flip(2), net(x.flip(2, 3)).flip(2, 3)]
    expected = torch.stack(views).mean(0)
    torch.testing.assert_close(flip_average(net, x), expected)
    assert not torch.allclose(views[0], expected)
    wrapped = FlipAverage(net)
    torch.testing.assert_close(wrapped(x), expected)
    # a mirror-symmetric kernel commutes with the flips: averaging changes nothing
    sym = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        sym.weight.copy_(torch.tensor([[[[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]]]))
    torch.testing.assert_close(flip_average(sym, x), sym(x))
    with pytest.raises(ValueError, match="flips"):
        flip_average(net, x, flips="left-right")


class LightFromTheLeft(torch.nn.Module):
    """A stand-in sun-aware segmenter: answers a rise in brightness from left to right (a crater's far wall
    under light from the left), so a left-right mirror changes its output and an up-down mirror does not undo it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[-1.0, 0.0, 2.0], [-2.0, 0.5, 3.0], [-1.0, 0.0, 1.0]]]]))
        self.metadata = {"threshold": 0.5, "sun_aware": True}

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def test_tta_of_a_sun_aware_model_averages_only_the_identity_and_the_up_down_mirror():
    torch.manual_seed(1)
    net = LightFromTheLeft().eval()
    x = torch.rand(2, 1, 16, 20)
    with torch.no_grad():
        identity, up_down = net(x), net(x.flip(2)).flip(2)
        left_right = net(x.flip(3)).flip(3)
        assert (left_right - identity).abs().max() > 0.05  # the mirror that turns craters into mounds matters
        wrapped = FlipAverage(net)  # the mirror set follows the model's metadata
        assert wrapped.flips == "light-axis"
        torch.testing.assert_close(wrapped(x), (identity + up_down) / 2, rtol=0, atol=1e-7)
        four = FlipAverage(net, flips="all")(x)
        assert (four - wrapped(x)).abs().max() > 1e-3
    net.metadata = {"threshold": 0.5}  # an old model keeps the four flips
    assert FlipAverage(net).flips == "all"


def test_models_load_wraps_in_flip_average_on_request(untrained_unet):
    import planetcd.models as models

    path = untrained_unet(seed=0)
    plain = models.load(path)
    assert plain.metadata["tta"] is False and not isinstance(plain, FlipAverage)
    tta = models.load(path, tta=True)
    assert isinstance(tta, FlipAverage) and tta.metadata["tta"] is True and not tta.training
    x = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(tta(x), flip_average(plain, x))
    assert tta.metadata["tta_flips"] == "all" and plain.metadata["tta_flips"] is None


def test_models_load_averages_a_sun_aware_checkpoint_over_the_light_axis_mirror_only(tmp_path):
    import planetcd.models as models
    from planetcd.craters.unet import save_checkpoint

    torch.manual_seed(3)
    net = SymmetricUNet(filter_multiple=0.5)
    save_checkpoint(tmp_path / "sun.pt", net, "symmetric", {"target": "filled", "threshold": 0.5, "sun_aware": True})
    plain = models.load(tmp_path / "sun.pt")
    tta = models.load(tmp_path / "sun.pt", tta=True)
    assert isinstance(tta, FlipAverage) and tta.flips == "light-axis" and tta.metadata["tta_flips"] == "light-axis"
    x = torch.rand(1, 1, 128, 128)
    with torch.no_grad():
        identity, up_down, left_right = plain(x), plain(x.flip(2)).flip(2), plain(x.flip(3)).flip(3)
        assert (left_right - identity).abs().max() > 1e-4
        torch.testing.assert_close(tta(x), (identity + up_down) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: SymmetricUNet(dropout=False), lambda: SmallUNet(dropout=0.0)])
def test_inference_path_equals_the_autograd_path(make):
    """Inference (fused conv + ReLU, skips added in place) gives exactly what the training graph computes."""
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(2, 1, 96, 80)
    with torch.inference_mode():
        fast = net(x)
    xg = x.clone().requires_grad_(True)
    slow = net(xg)
    slow.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert torch.equal(fast, slow.detach())


def test_channels_last_inference_is_the_autograd_path_up_to_rounding():
    """In channels-last on CPU the decoder runs in sub-pixel form (planetcd.layers.upsample_conv2d_relu_add)."""
    torch.manual_seed(0)
    net = SymmetricUNet(dropout=False).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 96, 80).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = net(x)
    slow = net(x.clone().requires_grad_(True))
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-6)
    assert float(fast.std()) > 0.05  # a map with structure, not a constant
