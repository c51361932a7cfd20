"""Loaders for the published change sets, each on a tiny fixture built in its exact layout."""

import csv
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile
from rasterio.shutil import copy as copy_raster

from planetcd.datasets.published import detect_layout, load_any, load_marsbench_change, load_saha_folders
from planetcd.errors import InputError


def _write(path, array, driver):
    """Write a uint8 (rows, cols) image with GDAL's PNG or JPEG driver (create-copy through memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1, "dtype": "uint8"}
    with warnings.catch_warnings(), MemoryFile() as mem:
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with mem.open(**profile) as dst:
            dst.write(array[None])
        with mem.open() as src:
            copy_raster(src, path, driver=driver, **({"QUALITY": 100} if driver == "JPEG" else {}))
    for extra in path.parent.glob(path.name + ".aux.xml"):
        extra.unlink()


def _patch(seed, size=32):
    # Smooth content so that JPEG at quality 100 keeps it within a few grey levels.
    yy, xx = np.mgrid[:size, :size]
    return (100 + 60 * np.sin(xx / 5 + seed) * np.cos(yy / 7 - seed)).astype(np.uint8)


@pytest.fixture
def marsbench_root(tmp_path):
    """MarsBench's Change_Classification_CTX layout: ROOT/annotation.csv, ROOT/data/SPLIT/FEATURE/FILE_ID."""
    root = tmp_path / "change_classification_ctx"
    rows = [
        ("B01_000123_1234_XN_13N234W_impact_3_before.png", "impact", 1, "train"),
        ("B01_000123_1234_XN_13N234W_plain_7_before.png", "no_impact", 0, "train"),
        ("G05_020202_2020_XI_02S100W_impact_1_before.png", "impact", 1, "test"),
        ("G05_020202_2020_XI_02S100W_plain_2_before.png", "no_impact", 0, "test"),
        ("G05_020202_2020_XI_02S100W_plain_4_before.png", "no_impact", 0, "val"),
    ]
    for k, (file_id, feature, _, split) in enumerate(rows):
        folder = root / "data" / split / feature
        _write(folder / file_id, _patch(k), "PNG")
        _write(folder / file_id.replace("before", "after"), _patch(k) // 2 + k, "PNG")
    with open(root / "annotation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_id", "feature_name", "label", "split"])
        writer.writerows(rows)
    return root, rows


def test_marsbench_layout(marsbench_root):
    root, rows = marsbench_root
    data = load_marsbench_change(root)
    assert len(data) == 5 and data.name == "change_classification_ctx"
    assert data.ids[0] == "B01_000123_1234_XN_13N234W_impact_3"
    assert list(data.labels) == [1, 0, 1, 0, 0]
    assert data.splits == ["train", "train", "test", "test", "val"]
    assert data.pre.shape == (5, 1, 32, 32) and data.pre.dtype == np.float32
    np.testing.assert_array_equal(data.pre[2, 0], _patch(2))
    np.testing.assert_array_equal(data.post[2, 0], _patch(2) // 2 + 2)
    test = load_marsbench_change(root, split="test")
    assert list(test.labels) == [1, 0] and test.splits == ["test", "test"]
    assert detect_layout(root) == "marsbench"
    assert load_any(root, split="val").ids == ["G05_020202_2020_XI_02S100W_plain_4"]


def test_marsbench_errors(marsbench_root):
    root, rows = marsbench_root
    with pytest.raises(InputError, match="no row in split 'holdout'"):
        load_marsbench_change(root, split="holdout")
    after = root / "data" / "test" / "impact" / rows[2][0].replace("before", "after")
    after.unlink()
    with pytest.raises(InputError, match="no such file"):
        load_marsbench_change(root)
    (root / "annotation.csv").write_text("file_id,label,split\nx_before.png,1,test\n")
    with pytest.raises(InputError, match="missing column.*feature_name"):
        load_marsbench_change(root)


@pytest.fixture
def saha_folders(tmp_path):
    """Saha & Zhu's layout: *before*/*after* JPEGs in one folder; change/ and no_change/ hold ID.jpg files."""
    images = tmp_path / "garni_029213_029780_siamese" / "grayscale"
    labels = tmp_path / "garni_029213_029780_signdiff_lcn"
    pairs = {"garni_029213_029780_5_12": 1, "garni_029213_029780_6_12": 0, "garni_029213_029780_9_3": 1}
    for k, (pair_id, label) in enumerate(sorted(pairs.items())):
        _write(images / f"{pair_id}_0_before.jpg", _patch(k), "JPEG")
        _write(images / f"{pair_id}_0_after.jpg", _patch(k + 10), "JPEG")
        _write(labels / ("change" if label else "no_change") / f"{pair_id}.jpg", _patch(k), "JPEG")
    return images, labels, pairs


def test_saha_layout(saha_folders):
    images, labels, pairs = saha_folders
    data = load_saha_folders(images, labels)
    assert data.ids == sorted(pairs)
    assert list(data.labels) == [pairs[i] for i in data.ids]
    assert data.splits is None and data.pre.shape == (3, 1, 32, 32)
    assert np.abs(data.pre[0, 0] - _patch(0)).max() <= 3  # JPEG, quality 100
    assert np.abs(data.post[0, 0] - _patch(10)).max() <= 3
    assert load_any(images, labels_dir=labels).ids == data.ids
    assert load_any(images, layout="saha", labels_dir=labels).ids == data.ids


def test_saha_errors(saha_folders):
    images, labels, pairs = saha_folders
    (labels / "change" / "garni_029213_029780_9_3.jpg").unlink()
    with pytest.raises(InputError, match="neither change/ nor no_change/"):
        load_saha_folders(images, labels)
    (images / "garni_029213_029780_5_12_0_after.jpg").unlink()
    with pytest.raises(InputError, match="after image"):
        load_saha_folders(images, labels)
    with pytest.raises(InputError, match="change/ and no_change/"):
        load_saha_folders(images, images)


def test_unknown_folder(tmp_path):
    with pytest.raises(InputError, match="not a change set"):
        detect_layout(tmp_path)
