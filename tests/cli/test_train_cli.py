"""``planetcd train`` on a tiny synthetic set of PNG images with CSV and VOC labels."""

from __future__ import annotations

import csv

import numpy as np
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
