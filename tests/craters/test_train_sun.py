"""Sun-aware training: canonical frame per image, light-keeping mirrors, mound hard negatives, confidence weights, bf16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from planetcd.craters import sun
from planetcd.craters.targets import confidence_weights, disk_values, filled_circles
from planetcd.craters.train import (
    LabelledImage,
    MoundBank,
    TrainConfig,
    augment_batch,
    canonical_image,
    image_sun_azimuth,
    load_checkpoint,
    loss_fn,
    resolve_precision,
    train,
)


def shaded_craters(size: int, craters: np.ndarray, azimuth: float, elevation: float = 30.0, mounds: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
    """Lambertian image (-1..1 scaled) of bowls (and optional domes) lit from ``azimuth`` (clockwise from the top)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    height = np.zeros((size, size))
    for sign, items in ((-1.0, craters), (1.0, mounds if mounds is not None else np.zeros((0, 3)))):
        for x, y, r in items:
            d2 = ((xx - x) ** 2 + (yy - y) ** 2) / r**2
            height += sign * 0.6 * r * np.where(d2 < 1, 1 - d2, 0.0)
    hy, hx = np.gradient(height)
    a, e = math.radians(azimuth), math.radians(elevation)
    lx, ly, lz = math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)
    shade = (-hx * lx - hy * ly + lz) / np.sqrt(1 + hx**2 + hy**2)
    shade += np.random.default_rng(seed).normal(0, 0.01, shade.shape)
    return (np.clip(shade, 0, 1) * 2 - 1).astype(np.float32)


def random_craters(n: int, size: int, rng, radius=(5.0, 10.0)) -> np.ndarray:
    return np.column_stack([rng.uniform(15, size - 15, n), rng.uniform(15, size - 15, n), rng.uniform(*radius, n)])


def left_right_asymmetry(img: torch.Tensor, center: float, radius: float) -> torch.Tensor:
    """Mean brightness of the right half of the disk minus the left half, per image of (B, 1, H, W)."""
    h = img.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij")
    disk = (xx - center) ** 2 + (yy - center) ** 2 < radius**2
    right, left = disk & (xx > center), disk & (xx < center)
    return img[:, 0][:, right].mean(1) - img[:, 0][:, left].mean(1)


def test_a_crater_lit_from_the_left_is_dark_on_its_left_wall():
    img = shaded_craters(64, np.array([[32.0, 32.0, 12.0]]), azimuth=270.0)
    assert float(left_right_asymmetry(torch.from_numpy(img)[None, None], 32, 12)) > 0.3
    az, used = sun.azimuth_from_craters(img, np.array([[32.0, 32.0, 12.0]]))
    assert used == 1 and abs(sun.angle_difference(az, 270.0)) < 20


@pytest.mark.parametrize("flips, flipped_share", [("light-axis", (0.0, 0.0)), ("all", (0.3, 0.7))])
def test_light_axis_mirror_keeps_the_light_direction_and_all_flips_do_not(flips, flipped_share):
    img = torch.from_numpy(shaded_craters(96, np.array([[48.0, 48.0, 14.0]]), azimuth=270.0))[None, None].repeat(40, 1, 1, 1)
    tgt = torch.from_numpy(filled_circles([[48.0, 48.0, 14.0]], (96, 96)).astype(np.float32))[None, None].repeat(40, 1, 1, 1)
    xa, ya = augment_batch(img, tgt, 64, torch.Generator().manual_seed(3), rotation=20.0, zoom=0.1, flips=flips,
                           brightness=0.0, contrast=0.0)
    asym = left_right_asymmetry(xa, 31.5, 10.0)
    share = float((asym < 0).float().mean())
    assert flipped_share[0] <= share <= flipped_share[1]
    # the up-down mirror is drawn too: light-axis outputs are not all the same picture
    if flips == "light-axis":
        assert float((xa - xa[:1]).abs().amax(dim=(1, 2, 3)).max()) > 0.1
    with pytest.raises(ValueError, match="flips"):
        augment_batch(img, tgt, 64, torch.Generator(), flips="left-right")


def test_extra_target_channels_are_resampled_not_thresholded():
    x = torch.zeros(2, 1, 80, 80)
    y = torch.stack([torch.zeros(80, 80), torch.full((80, 80), 0.25)])[None].repeat(2, 1, 1, 1)
    _, ya = augment_batch(x, y, 48, torch.Generator().manual_seed(0))
    assert ya.shape == (2, 2, 48, 48)
    assert torch.allclose(ya[:, 1], torch.tensor(0.25))


def test_canonical_image_turns_pixels_craters_and_target_with_the_given_azimuth():
    rng = np.random.default_rng(0)
    craters = random_craters(12, 128, rng)
    raw = shaded_craters(128, craters, azimuth=0.0)  # light from the top
    im = LabelledImage.from_arrays("t", raw, craters, prepared=True, confidence=np.arange(1, 13) % 6 + 1)
    c_im, record = canonical_image(im, azimuth=0.0)
    assert record["source"] == "given" and record["frame"]["quarter_turns"] == 3
    np.testing.assert_array_equal(c_im.image, np.rot90(raw, -3))
    np.testing.assert_allclose(c_im.frame.craters_to_input(c_im.craters), craters, atol=1e-9)
    np.testing.assert_array_equal(c_im.target, filled_circles(c_im.craters, c_im.image.shape))
    # after the turn the craters are lit from the left: labels now read 270
    az, _ = sun.azimuth_from_craters(c_im.image, c_im.craters)
    assert abs(sun.angle_difference(az, 270.0)) < 20
    # confidence weights: 1/3, 2/3 inside craters of 1 and 2 annotators, 1 elsewhere
    assert c_im.weight.min() == pytest.approx(1 / 3, abs=1e-6) and c_im.weight[c_im.target == 0].min() == 1.0


def test_azimuth_sources_given_labels_estimated():
    rng = np.random.default_rng(1)
    craters = random_craters(20, 160, rng)
    raw = shaded_craters(160, craters, azimuth=180.0)  # from the bottom
    im = LabelledImage.from_arrays("t", raw, craters, prepared=True)
    az, source, details = image_sun_azimuth(im)
    assert source == "labels" and details["label_craters"] == 20 and abs(sun.angle_difference(az, 180.0)) < 20
    assert image_sun_azimuth(im, 100.0)[:2] == (100.0, "given")
    im.sun_azimuth = 90.0
    assert image_sun_azimuth(im)[:2] == (90.0, "given")
    bare = LabelledImage.from_arrays("u", raw, np.zeros((0, 3)), prepared=True)
    assert image_sun_azimuth(bare)[1] in ("estimated", "fallback")
    # a resampled turn: outside the turned image weighs 0, craters round-trip
    c_im, record = canonical_image(im, azimuth=300.0)
    assert record["frame"]["quarter_turns"] is None
    assert c_im.weight.min() == 0.0 and c_im.weight.max() == 1.0
    np.testing.assert_allclose(c_im.frame.craters_to_input(c_im.craters), craters, atol=1e-6)


def test_mound_bank_turns_crater_chips_and_pastes_them_as_negatives():
    craters = np.array([[40.0, 40.0, 8.0], [100.0, 60.0, 6.0]])
    img = shaded_craters(140, craters, azimuth=270.0)
    im = LabelledImage.from_arrays("t", img, craters, prepared=True)
    bank = MoundBank([im], min_radius=4, max_radius=32)
    assert len(bank) == 2
    chip = bank.chips[0]
    half = chip.shape[0] // 2
    np.testing.assert_array_equal(chip, img[40 - half : 40 + half + 1, 40 - half : 40 + half + 1][::-1, ::-1])
    # a turned crater is bright on its left wall: like a mound lit from the left
    mound = shaded_craters(2 * half + 1, np.zeros((0, 3)), 270.0, mounds=np.array([[half, half, 8.0]]))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    assert float(left_right_asymmetry(t(chip), half, 8)) < -0.3
    assert float(left_right_asymmetry(t(mound), half, 8)) < -0.3
    # pasting: target 0 and weight 1 under the chip, level matched, the rest untouched
    canvas = np.full((120, 120), 0.4, np.float32)
    target = np.stack([np.zeros((120, 120), np.float32), np.full((120, 120), 0.5, np.float32)])
    target[0, :10, :10] = 1.0
    n = bank.paste(canvas, target, 3, np.random.default_rng(0), region=(30, 30, 60, 60))
    assert n == 3
    changed = canvas != np.float32(0.4)
    assert changed.any() and not changed[:14].any() and not changed[:, :14].any()  # centres >= 30, half-side <= 16
    assert target[0, :10, :10].min() == 1.0 and (target[1] == 1.0).any()
    assert abs(float(canvas.mean()) - 0.4) < 0.05
    mask = MoundBank.blend_mask(16, 8.0)
    assert mask[16, 16] == 1.0 and mask[16, 16 + 12] == 1.0 and mask[16, 0] == 0.0 and 0 < mask[16, 16 + 14] < 1


def test_confidence_weights_and_disk_values():
    craters = np.array([[10.0, 10.0, 4.0], [12.0, 10.0, 4.0], [30.0, 30.0, 3.0]])
    target = filled_circles(craters, (40, 40))
    w = confidence_weights(craters, [1, 2, np.nan], target)
    assert w[10, 6] == pytest.approx(1 / 3) and w[10, 15] == pytest.approx(2 / 3)
    assert w[10, 11] == pytest.approx(2 / 3)  # overlapping: the more confident crater wins
    assert w[30, 30] == 1.0 and w[0, 0] == 1.0
    v = disk_values(craters[:1], [5.0], (20, 20), fill=-1)
    assert v[10, 10] == 5 and v[0, 0] == -1
    with pytest.raises(ValueError):
        disk_values(craters, [1.0], (20, 20))


@pytest.mark.parametrize("name", ["bce", "dice", "focal"])
def test_weighted_losses_ignore_zero_weight_pixels(name):
    crit = loss_fn(name)
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2] = 1
    logits = torch.where(target > 0, 5.0, -5.0)
    bad = logits.clone()
    bad[..., 3] = 5.0  # wrong on column 3
    weight = torch.ones_like(target)
    weight[..., 3] = 0.0
    assert float(crit(bad, target, weight)) == pytest.approx(float(crit(logits, target, weight)), abs=1e-6)
    assert float(crit(bad, target)) > float(crit(logits, target)) + 1e-3
    assert float(crit(logits, target, torch.ones_like(target))) == pytest.approx(float(crit(logits, target)), rel=1e-5)


def test_precision_choice():
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ValueError):
        resolve_precision("fp16")


def _shaded_set(names, azimuths, size=128, seed=0):
    out = []
    for k, (name, az) in enumerate(zip(names, azimuths)):
        rng = np.random.default_rng(seed + k)
        craters = random_craters(14, size, rng)
        img = shaded_craters(size, craters, az, seed=k)
        out.append(LabelledImage.from_arrays(name, img, craters, prepared=True, confidence=rng.integers(1, 7, len(craters))))
    return out


def test_sun_aware_training_records_the_frame_and_learns(tmp_path):
    train_set = _shaded_set(["a", "b"], [270.0, 0.0])
    val_set = _shaded_set(["v"], [90.0], seed=10)
    cfg = TrainConfig.sun_aware_recipe(filter_multiple=0.5, crop=64, crops_per_epoch=16, batch_size=4, epochs=3, patience=5,
                                       val_tile=128, precision="bf16", sun_azimuths={"b": 0.0}, threads=2,
                                       hard_negative_radius=(4.0, 16.0), lr_schedule="constant",
                                       confidence_weights=True)  # the option, off in the recipe, still trains
    result = train(train_set, val_set, cfg, tmp_path)
    assert result["epochs_run"] == 3 and np.isfinite(result["history"][-1]["train_loss"])
    _, payload = load_checkpoint(tmp_path / "best.pt")
    assert payload["sun_aware"] is True and payload["canonical_azimuth_deg"] == 270.0
    azimuths = payload["sun_azimuths"]
    assert azimuths["b"]["source"] == "given" and azimuths["b"]["azimuth_deg"] == 0.0
    assert azimuths["a"]["source"] == "labels" and abs(sun.angle_difference(azimuths["a"]["azimuth_deg"], 270.0)) < 20
    assert azimuths["v"]["source"] == "labels" and abs(sun.angle_difference(azimuths["v"]["azimuth_deg"], 90.0)) < 20
    assert payload["augmentation_flips"] == "light-axis" and payload["hard_negatives"]["mounds"] > 0
    assert payload["precision"] == "bf16" and payload["train_config"]["confidence_weights"] is True
    with pytest.raises(ValueError, match="sun_azimuths"):
        train(train_set, val_set, TrainConfig(sun_aware=True, epochs=1, sun_azimuths={"zz": 1.0}), tmp_path / "x")


def test_old_recipe_is_unchanged_by_the_new_defaults(tmp_path):
    """Default TrainConfig: no turn, all flips, no weights; same result as before the sun-aware options existed."""
    cfg = TrainConfig()
    assert not cfg.sun_aware and cfg.flips == "all" and cfg.hard_negative_rate == 0 and not cfg.confidence_weights
    assert cfg.precision == "fp32" and not cfg.channels_last
    torch.manual_seed(0)
    x = torch.randn(3, 1, 90, 90)
    y = (torch.rand(3, 1, 90, 90) > 0.5).float()
    a = augment_batch(x, y, 48, torch.Generator().manual_seed(5))
    b = augment_batch(x, y, 48, torch.Generator().manual_seed(5), flips=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_vgg16_unet_shapes_frozen_blocks_and_checkpoint_round_trip(tmp_path):
    from planetcd.craters.unet import VGG16UNet, build_model, load_checkpoint as load_ckpt, save_checkpoint

    model = build_model("vgg16-unet", frozen_blocks=2, decoder=8)
    x = torch.rand(2, 1, 70, 50) * 2 - 1
    assert model(x).shape == (2, 1, 70, 50)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == [f"features.{i}.{w}" for i in (0, 2, 5, 7) for w in ("weight", "bias")]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.forward_logits(x).mean().backward()
    opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert not torch.equal(before["features.10.weight"], after["features.10.weight"])
    save_checkpoint(tmp_path / "v.pt", model, "vgg16-unet")
    again, payload = load_ckpt(tmp_path / "v.pt")
    assert isinstance(again, VGG16UNet) and payload["config"] == {"in_channels": 1, "frozen_blocks": 2, "decoder": 8}
    model.eval()
    torch.testing.assert_close(again(x), model(x))


def test_vgg16_unet_starts_from_the_imagenet_weights():
    import os
    from pathlib import Path

    path = Path(os.environ.get("PLANETCD_VGG16_WEIGHTS", "/nonexistent"))
    if not path.is_file():
        pytest.skip("no ImageNet VGG-16 weights ($PLANETCD_VGG16_WEIGHTS)")
    from planetcd.craters.unet import VGG16UNet

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = VGG16UNet(decoder=8, pretrained=str(path))
    torch.testing.assert_close(model.features[0].weight, state["features.0.weight"].float())
    torch.testing.assert_close(model.features[28].bias, state["features.28.bias"].float())


def test_voc_confidence_is_read_in_box_order(tmp_path):
    from planetcd.craters.train import read_label_confidence, read_labels

    box = "<object><name>crater</name><bndbox><xmin>{0}</xmin><ymin>{0}</ymin><xmax>{1}</xmax><ymax>{1}</ymax></bndbox>{2}</object>"
    xml = "<annotation>" + box.format(10, 20, "<confidence>4</confidence>") + box.format(30, 34, "") + "</annotation>"
    path = tmp_path / "t.xml"
    path.write_text(xml)
    assert read_labels(path).shape == (2, 3)
    conf = read_label_confidence(path)
    assert conf[0] == 4.0 and np.isnan(conf[1])
    path.write_text("<annotation>" + box.format(10, 20, "") + "</annotation>")
    assert read_label_confidence(path) is None  # no confidences at all (e.g. expert labels)


def test_vgg16_unet_with_a_frozen_imagenet_encoder_is_saved_without_it(tmp_path, vgg_weights):
    from planetcd.craters.unet import VGG16UNet, load_checkpoint as load_ckpt, save_checkpoint
    from planetcd.errors import WeightsError

    model = VGG16UNet(frozen_blocks=5, decoder=8, pretrained=str(vgg_weights)).eval()
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    save_checkpoint(tmp_path / "v.pt", model, "vgg16-unet")
    payload = torch.load(tmp_path / "v.pt", weights_only=True)
    assert not any(k.startswith("features.") for k in payload["state_dict"])  # the encoder is not in the file
    assert len(payload["imagenet_frozen"]["keys"]) == 26
    again, _ = load_ckpt(tmp_path / "v.pt", vgg_weights=vgg_weights)
    torch.testing.assert_close(again(x), model(x))
    assert again.imagenet_frozen  # saved again, it stays compact

    # other encoder weights than the ones it was trained with: refused, not silently used
    state = torch.load(vgg_weights, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    state["features.0.bias"] = state["features.0.bias"] + 1.0
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not the ones"):
        load_ckpt(tmp_path / "v.pt", vgg_weights=tmp_path / "other.pth")

    # a frozen encoder that is not ImageNet's (no pretrained weights) is saved whole
    random_encoder = VGG16UNet(frozen_blocks=5, decoder=8)
    save_checkpoint(tmp_path / "r.pt", random_encoder, "vgg16-unet")
    assert "imagenet_frozen" not in torch.load(tmp_path / "r.pt", weights_only=True)


def test_vgg16_unet_of_three_blocks(tmp_path, vgg_weights):
    from planetcd.craters.unet import VGG16UNet, load_checkpoint as load_ckpt, save_checkpoint

    model = VGG16UNet(frozen_blocks=2, decoder=4, depth=3, pretrained=str(vgg_weights)).eval()
    assert model.stride == 8 and model.config["depth"] == 3
    assert not hasattr(model, "dec4") and len(model.features) == 16  # conv1_1 .. relu3_3
    x = torch.rand(1, 1, 37, 45) * 2 - 1
    assert model(x).shape == (1, 1, 37, 45)
    save_checkpoint(tmp_path / "v3.pt", model, "vgg16-unet")
    again, payload = load_ckpt(tmp_path / "v3.pt", vgg_weights=vgg_weights)
    assert payload["config"] == {"in_channels": 1, "frozen_blocks": 2, "decoder": 4, "depth": 3}
    assert len(payload["imagenet_frozen"]["keys"]) == 8  # blocks 1-2 come from the ImageNet file
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ValueError, match="depth"):
        VGG16UNet(depth=2)
    with pytest.raises(ValueError, match="frozen_blocks"):
        VGG16UNet(depth=3, frozen_blocks=4)
