"""``planetcd train`` on a tiny synthetic set of PNG images with CSV and VOC labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from planetcd.cli import main
from planetcd.craters.targets import synthetic_dots
from planetcd.craters.unet import load_checkpoint


def _write_set(folder, seed, n=2):
    imgs, _, craters = synthetic_dots(n, 128, seed=seed)
    paths = []
    for i, (img, cr) in enumerate(zip(imgs, craters)):
        stem = f"dots{seed}_{i}"
        Image.fromarray((np.clip(img, 0, 1) * 254 + 1).astype(np.uint8)).save(folder / f"{stem}.png")
        with open(folder / f"{stem}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["long", "lat", "diameter"])
            for x, y, r in cr:
                w.writerow([x, y, 2 * r])
        paths.append(folder / f"{stem}.png")
    return paths


def test_train_cli_writes_checkpoint_log_and_curves(tmp_path):
    train = _write_set(tmp_path, 1)
    val = _write_set(tmp_path, 2, n=1)
    out = tmp_path / "run"
    args = [*map(str, train), "--val", str(val[0]), "-o", str(out), "--filter-multiple", "0.5", "--crop", "64",
            "--crops-per-epoch", "8", "--batch-size", "4", "--epochs", "2", "--val-tile", "128", "-q"]
    res = CliRunner().invoke(main, ["train", *args])
    assert res.exit_code == 0, res.output
    for name in ("best.pt", "log.csv", "curves.png", "config.json"):
        assert (out / name).exists(), name
    model, payload = load_checkpoint(out / "best.pt")
    assert payload["train_images"] == ["dots1_0", "dots1_1"] and payload["val_images"] == ["dots2_0"]
    res = CliRunner().invoke(main, ["train", *args])
    assert res.exit_code != 0 and "exists" in res.output


def test_train_cli_refuses_overlapping_split_and_missing_labels(tmp_path):
    train = _write_set(tmp_path, 3)
    res = CliRunner().invoke(main, ["train", str(train[0]), "--val", str(train[0]), "-o", str(tmp_path / "o"), "-q"])
    assert res.exit_code != 0 and "split by image" in res.output
    (tmp_path / "dots3_1.csv").unlink()
    res = CliRunner().invoke(main, ["train", str(train[1]), "-o", str(tmp_path / "o2"), "-q"])
    assert res.exit_code != 0 and "no label file" in res.output


def test_train_cli_refuses_a_bad_zoom_range(tmp_path):
    train = _write_set(tmp_path, 4)
    for bad in ("2,1", "0,2", "1.5", "a,b"):
        res = CliRunner().invoke(main, ["train", str(train[0]), "-o", str(tmp_path / "o"), "--zoom-range", bad, "-q"])
        assert res.exit_code != 0 and "--zoom-range" in res.output and "Traceback" not in res.output
        assert not (tmp_path / "o").exists()


_TINY = ["--filter-multiple", "0.5", "--crop", "64", "--crops-per-epoch", "8", "--batch-size", "4", "--epochs", "1",
         "--val-tile", "128", "-q"]


def test_train_cli_sun_aware_recipe_reaches_the_checkpoint(tmp_path):
    train = _write_set(tmp_path, 5)
    val = _write_set(tmp_path, 6, n=1)
    out = tmp_path / "run"
    args = [*map(str, train), "--val", str(val[0]), "-o", str(out), "--recipe", "sun-aware",
            "--sun-azimuth", "dots5_0.png=90", "--sun-azimuth", "-60", "--precision", "fp32",
            "--hard-negative-rate", "0.5", "--no-channels-last", *_TINY]
    res = CliRunner().invoke(main, ["train", *args])
    assert res.exit_code == 0, res.output
    _, payload = load_checkpoint(out / "last.pt")
    assert payload["sun_aware"] is True and payload["augmentation_flips"] == "light-axis"
    assert payload["precision"] == "fp32" and payload["hard_negatives"]["rate"] == 0.5
    suns = payload["sun_azimuths"]
    assert suns["dots5_0"]["source"] == "given" and suns["dots5_0"]["azimuth_deg"] == 90.0
    for name in ("dots5_1", "dots6_0"):  # the plain value: every image not named, validation too
        assert suns[name]["source"] == "given" and suns[name]["azimuth_deg"] == 300.0
    config = payload["train_config"]
    # the recipe's fields, except those given on the command line
    assert config["confidence_weights"] is False and config["lr_schedule"] == "cosine" and config["monitor"] == "val_f1"
    assert config["positive_fraction"] == 0.5 and config["channels_last"] is False and config["precision"] == "fp32"
    assert config["sun_azimuths"] == {"dots5_0": 90.0, "dots5_1": 300.0, "dots6_0": 300.0}
    # an option of the recipe given explicitly wins; the recipe's precision default is auto
    out2 = tmp_path / "run2"
    args = [*map(str, train), "-o", str(out2), "--recipe", "sun-aware", "--flips", "all", "--lr-schedule", "constant", *_TINY]
    res = CliRunner().invoke(main, ["train", *args])
    assert res.exit_code == 0, res.output
    _, payload = load_checkpoint(out2 / "last.pt")
    assert payload["augmentation_flips"] == "all" and payload["train_config"]["lr_schedule"] == "constant"
    assert payload["train_config"]["precision"] == "auto" and payload["precision"] in ("fp32", "bf16")
    assert payload["train_config"]["channels_last"] is True
    assert {r["source"] for r in payload["sun_azimuths"].values()} <= {"labels", "estimated", "fallback"}


def test_train_cli_old_recipe_takes_the_new_options(tmp_path):
    train = _write_set(tmp_path, 7)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", *map(str, train), "-o", str(out), *_TINY])
    assert res.exit_code == 0, res.output
    _, payload = load_checkpoint(out / "last.pt")
    config = payload["train_config"]
    assert "sun_aware" not in payload and config["sun_aware"] is False and config["flips"] == "all"
    # --precision defaults to auto (issue 16): bf16 where this CPU runs it natively, else fp32
    from planetcd.precision import resolve_precision

    assert config["precision"] == "auto" and payload["precision"] == resolve_precision("auto", "cpu")
    assert not config["channels_last"]
    assert config["hard_negative_rate"] == 0.0 and not config["confidence_weights"] and config["lr_schedule"] == "constant"
    res = CliRunner().invoke(main, ["train", *map(str, train), "-o", str(tmp_path / "run2"), "--flips", "light-axis",
                                    "--precision", "bf16", "--channels-last", "--confidence-weights",
                                    "--hard-negative-rate", "2", *_TINY])
    assert res.exit_code == 0, res.output
    _, payload = load_checkpoint(tmp_path / "run2" / "last.pt")
    config = payload["train_config"]
    assert config["flips"] == "light-axis" and config["precision"] == "bf16" and payload["precision"] == "bf16"
    assert config["channels_last"] and config["confidence_weights"] and config["hard_negative_rate"] == 2.0
    assert config["sun_aware"] is False


def test_train_cli_refuses_bad_sun_azimuths(tmp_path):
    train = _write_set(tmp_path, 8)
    sun = ["--recipe", "sun-aware"]
    for extra, needle in (
        ([*sun, "--sun-azimuth", "west"], "--sun-azimuth"),
        ([*sun, "--sun-azimuth", "nowhere.png=90"], "not one of the training"),
        ([*sun, "--sun-azimuth", "=90"], "IMAGE=DEG"),
        ([*sun, "--sun-azimuth", "dots8_0="], "no degrees"),
        ([*sun, "--sun-azimuth", "dots8_0=nan"], "--sun-azimuth"),
        ([*sun, "--sun-azimuth", "none"], "--sun-azimuth"),
        ([*sun, "--sun-azimuth", "90", "--sun-azimuth", "180"], "only one plain"),
        (["--sun-azimuth", "90"], "--recipe sun-aware"),
        (["--flips", "left-right"], "--flips"),
        (["--precision", "fp16"], "--precision"),
        (["--arch", "vgg16-unet", "--vgg-depth", "3", "--vgg-frozen-blocks", "4"], "--vgg-frozen-blocks"),
    ):
        res = CliRunner().invoke(main, ["train", *map(str, train), "-o", str(tmp_path / "o"), *extra, "-q"])
        assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output, (extra, res.output)
        assert len([line for line in res.output.splitlines() if line.strip()]) <= 3, res.output
        assert not (tmp_path / "o").exists()


@pytest.mark.shared
def test_train_cli_vgg16_unet(tmp_path, vgg_weights, monkeypatch):
    monkeypatch.setenv("PLANETCD_VGG16_WEIGHTS", str(vgg_weights))
    train = _write_set(tmp_path, 9, n=1)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", *map(str, train), "-o", str(out), "--arch", "vgg16-unet",
                                    "--vgg-frozen-blocks", "3", "--vgg-decoder", "8", "--crop", "64", "--crops-per-epoch", "4",
                                    "--batch-size", "2", "--epochs", "1", "--val-tile", "128", "-q"])
    assert res.exit_code == 0, res.output
    model, payload = load_checkpoint(out / "last.pt")
    assert payload["arch"] == "vgg16-unet" and payload["config"] == {"in_channels": 1, "frozen_blocks": 3, "decoder": 8}
    assert len(payload["imagenet_frozen"]["keys"]) == 14  # blocks 1-3 (7 convolutions) come from the ImageNet file
    assert payload["train_config"]["vgg_frozen_blocks"] == 3 and type(model).__name__ == "VGG16UNet"
