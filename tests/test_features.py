import numpy as np
import pytest
import torch

from planetcd import features
from planetcd.errors import WeightsError, WeightsNotFoundError
from planetcd.features import CONV_INDEX, VGGFeatures, load_vgg16_state, receptive_radius, resolve_vgg16_weights

TORCHVISION_FEATURE_KEYS = {f"features.{i}.{p}" for i in CONV_INDEX for p in ("weight", "bias")}


def _random_vgg_state(classifier: bool = False) -> dict:
    torch.manual_seed(0)
    model = VGGFeatures(layer=13, pretrained=False)
    state = {f"features.{k}": v.clone() for k, v in model.features.state_dict().items()}
    if classifier:  # what torchvision's full file also holds
        state["classifier.0.weight"] = torch.zeros(4096, 25088)
        state["classifier.0.bias"] = torch.zeros(4096)
    return state


def test_state_dict_keys_are_torchvisions():
    model = VGGFeatures(layer=13, pretrained=False)
    assert {f"features.{k}" for k in model.features.state_dict()} == TORCHVISION_FEATURE_KEYS


@pytest.mark.parametrize("layer,stride,channels", [(1, 1, 64), (4, 2, 128), (6, 4, 256), (10, 8, 512), (13, 16, 512)])
def test_output_shape_per_layer(layer, stride, channels):
    model = VGGFeatures(layer=layer, pretrained=False)
    out = model(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, channels, 64 // stride, 96 // stride)
    assert (model.stride, model.channels) == (stride, channels)


def test_receptive_radius_of_conv3_2():
    # conv3_2 sees 32 x 32 input pixels
    assert receptive_radius(6) == 17


@pytest.mark.parametrize("classifier", [False, True])
def test_loads_features_only_and_full_torchvision_files(tmp_path, classifier):
    state = _random_vgg_state(classifier)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    model = VGGFeatures(layer=6, weights=path)
    torch.testing.assert_close(model.features[12].weight, state["features.12.weight"])
    assert not any(p.requires_grad for p in model.parameters())


def test_wrong_shape_is_refused(tmp_path):
    state = _random_vgg_state()
    state["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"features.5.weight has shape \(128, 32, 3, 3\)"):
        load_vgg16_state(path, layer=6)


def test_missing_layers_and_garbage_are_refused(tmp_path):
    state = {k: v for k, v in _random_vgg_state().items() if not k.startswith("features.12")}
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(WeightsError, match="missing features.12"):
        load_vgg16_state(tmp_path / "short.pth", layer=6)
    (tmp_path / "junk.pth").write_text("not weights")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        load_vgg16_state(tmp_path / "junk.pth")


def test_resolution_order(tmp_path, monkeypatch):
    explicit, env, hub = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    hub.parent.mkdir(parents=True)
    for p in (explicit, env, hub):
        p.write_bytes(b"x")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("PLANETCD_VGG16_WEIGHTS", str(env))
    assert resolve_vgg16_weights(explicit) == explicit
    assert resolve_vgg16_weights() == env
    monkeypatch.delenv("PLANETCD_VGG16_WEIGHTS")
    assert resolve_vgg16_weights() == hub
    hub.unlink()

    calls = []

    def offline(url, dst, prefix):
        calls.append((url, prefix))
        raise OSError("network unreachable")

    monkeypatch.setattr(features, "_download", offline)
    with pytest.raises(WeightsNotFoundError, match="PLANETCD_VGG16_WEIGHTS") as info:
        resolve_vgg16_weights()
    assert calls == [("https://download.pytorch.org/models/vgg16-397923af.pth", "397923af")]
    assert info.value.exit_code == 2
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        monkeypatch.setenv("PLANETCD_VGG16_WEIGHTS", str(tmp_path / "nope.pth"))
        resolve_vgg16_weights()


def test_real_weights_are_imagenet_vgg16(vgg_weights):
    model = VGGFeatures(layer=6, weights=vgg_weights)
    np.testing.assert_allclose(model.features[0].bias[:4].numpy(), [0.4034, 0.3778, 0.4644, -0.3228], atol=1e-4)


def test_cached_trunk_loads_each_configuration_once_per_process(vgg_weights, monkeypatch):
    from planetcd.features import cached_trunk, clear_trunk_cache, trunk_cache_info

    clear_trunk_cache()
    a = cached_trunk(6, True, vgg_weights, "cpu")
    monkeypatch.setenv("PLANETCD_VGG16_WEIGHTS", str(vgg_weights))
    assert cached_trunk(6, weights=None, device="cpu") is a  # None resolves to the same file: one entry
    assert cached_trunk(6, False, vgg_weights, "cpu") is not a and not cached_trunk(6, False, vgg_weights, "cpu").relu
    info = trunk_cache_info()
    assert (info.misses, info.currsize) == (2, 2)
    clear_trunk_cache()
    assert cached_trunk(6, True, vgg_weights, "cpu") is not a


def test_a_missing_gpu_is_named_as_the_api_argument(monkeypatch):
    from planetcd.errors import PlanetcdError
    from planetcd.features import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PlanetcdError, match="device='cuda'"):
        pick_device("cuda")
