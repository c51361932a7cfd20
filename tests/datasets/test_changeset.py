"""The canonical change-set layout: round trips, refusals, mixed sizes, nothing half-written."""

import numpy as np
import pytest

from planetcd.datasets import changeset as cs_module
from planetcd.datasets.changeset import ChangeSet, read_changeset, write_changeset
from planetcd.errors import InputError, OutputExistsError


def _set(n=4, shape=(1, 20, 30), dtype=np.uint8, splits=True):
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 256, (n, *shape)).astype(dtype)
    post = rng.integers(0, 256, (n, *shape)).astype(dtype)
    labels = np.array([i % 2 for i in range(n)])
    return ChangeSet([f"p{i}" for i in range(n)], pre, post, labels,
                     ["train", "test", "test", "val"][:n] if splits else None, "toy")


@pytest.mark.parametrize("fmt, dtype", [("png", np.uint8), ("png", np.uint16), ("tif", np.float32)])
def test_round_trip(tmp_path, fmt, dtype):
    original = _set(dtype=dtype)
    write_changeset(tmp_path / "set", original, fmt=fmt)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["labels.csv", "post", "pre"]
    assert (tmp_path / "set" / "labels.csv").read_text().splitlines()[:2] == ["id,label,split", "p0,0,train"]
    back = read_changeset(tmp_path / "set")
    assert back.ids == original.ids and back.splits == original.splits
    assert back.pre.dtype == np.float32 and back.pre.shape == (4, 1, 20, 30)
    np.testing.assert_array_equal(back.pre, original.pre.astype(np.float32))
    np.testing.assert_array_equal(back.post, original.post.astype(np.float32))
    np.testing.assert_array_equal(back.labels, original.labels)
    test_only = read_changeset(tmp_path / "set", split="test")
    assert test_only.ids == ["p1", "p2"] and list(test_only.labels) == [1, 0]
    assert not list(tmp_path.glob(".*"))  # no staging folder left


def test_labels_without_split_and_multiband(tmp_path):
    write_changeset(tmp_path / "s", _set(shape=(3, 16, 16), splits=False))
    assert (tmp_path / "s" / "labels.csv").read_text().splitlines()[0] == "id,label"
    back = read_changeset(tmp_path / "s")
    assert back.splits is None and back.pre.shape == (4, 3, 16, 16)
    with pytest.raises(InputError, match="no split column"):
        back.subset("test")


def test_refuses_to_overwrite(tmp_path):
    write_changeset(tmp_path / "s", _set())
    before = (tmp_path / "s" / "labels.csv").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_changeset(tmp_path / "s", _set(n=2))
    assert (tmp_path / "s" / "labels.csv").stat().st_mtime_ns == before
    write_changeset(tmp_path / "s", _set(n=2), overwrite=True)
    assert len(read_changeset(tmp_path / "s")) == 2
    assert len(list((tmp_path / "s" / "pre").iterdir())) == 2  # the old pairs are gone


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(path, image, driver):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, image, driver)

    real = cs_module._write_image
    monkeypatch.setattr(cs_module, "_write_image", failing)
    with pytest.raises(OSError):
        write_changeset(tmp_path / "s", _set())
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == []


def _write_raw(folder, name, array):
    cs_module._write_image(folder / name, array, "PNG")


def test_mixed_sizes_are_refused(tmp_path):
    root = tmp_path / "mixed"
    write_changeset(root, _set(n=3))
    _write_raw(root / "pre", "p2.png", np.full((1, 24, 30), 100, np.uint8))
    _write_raw(root / "post", "p2.png", np.full((1, 24, 30), 100, np.uint8))
    with pytest.raises(InputError, match="pair 'p2' is 30x24 px.*pair 'p0' is 30x20 px.*one size"):
        read_changeset(root)
    _write_raw(root / "post", "p2.png", np.full((1, 20, 30), 100, np.uint8))
    with pytest.raises(InputError, match="pair 'p2': pre is 30x24 px, 1 band but post is 30x20 px"):
        read_changeset(root)


@pytest.mark.parametrize("labels, message", [
    ("id,label\np0,2\n", "not 0 or 1"),
    ("name,label\np0,1\n", "needs columns id and label"),
    ("id,label\n", "no pairs"),
    ("id,label\np0,1\np0,0\n", "more than once"),
    ("id,label\nmissing,1\n", "no pre image for pair 'missing'"),
])
def test_bad_labels(tmp_path, labels, message):
    write_changeset(tmp_path / "s", _set(n=1))
    (tmp_path / "s" / "labels.csv").write_text(labels)
    with pytest.raises(InputError, match=message):
        read_changeset(tmp_path / "s")


def test_missing_parts(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        read_changeset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="labels.csv"):
        read_changeset(tmp_path / "empty")
    with pytest.raises(InputError, match="one entry per pair"):
        write_changeset(tmp_path / "w", ChangeSet(["a"], np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), np.array([0, 1])))
