"""The canonical bi-temporal patch layout: labelled pre/post pairs in one folder.

Layout
------
::

    DIR/pre/ID.png        (or .tif / .tiff / .jpg / .jpeg; one image per pair)
    DIR/post/ID.png       (same ID, any of the same extensions)
    DIR/labels.csv        header ``id,label`` or ``id,label,split``; label 1 = changed, 0 = unchanged

Every pair of a set has the same size (rows, cols) and band count; a set
whose pairs differ is refused with an :class:`~planetcd.errors.InputError`
naming the first offending pair. ``planetcd evaluate`` reads this layout and
``planetcd benchmark make`` writes it; the published-set loaders
(:mod:`planetcd.datasets.published`) return the same :class:`ChangeSet`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..raster import atomic_output, check_writable, missing_pixels, open_raster, read_window

__all__ = ["ChangeSet", "read_changeset", "write_changeset", "read_image", "stack_pairs", "IMAGE_SUFFIXES"]

#: Image file suffixes the layout accepts, in the order they are looked up.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class ChangeSet:
    """Labelled bi-temporal patch pairs, all of one size.

    Attributes
    ----------
    ids : list of str, length n
    pre, post : ndarray, float32, shape (n, bands, rows, cols)
        Raw intensities as stored (no scaling).
    labels : ndarray, int64, shape (n,)
        1 = changed, 0 = unchanged.
    splits : list of str or None
        Split name per pair (``train``/``val``/``test``...) when the source has one.
    name : str
        A short name for reports (the folder name by default).
    """

    ids: list[str]
    pre: np.ndarray
    post: np.ndarray
    labels: np.ndarray
    splits: list[str] | None = None
    name: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, split: str) -> ChangeSet:
        """The pairs of one split (``InputError`` when the set has no splits or none of that name)."""
        if self.splits is None:
            raise InputError(f"{self.name or 'data set'}: has no split column")
        keep = [i for i, s in enumerate(self.splits) if s == split]
        if not keep:
            names = ", ".join(sorted(set(self.splits)))
            raise InputError(f"{self.name or 'data set'}: no pair in split {split!r} (splits: {names})")
        return ChangeSet(
            [self.ids[i] for i in keep], self.pre[keep], self.post[keep], self.labels[keep],
            [self.splits[i] for i in keep], self.name,
        )

    def write(self, directory: str | os.PathLike, fmt: str = "png", overwrite: bool = False) -> Path:
        """Write the set in the canonical layout (see :func:`write_changeset`)."""
        return write_changeset(directory, self, fmt=fmt, overwrite=overwrite)


# --------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike) -> np.ndarray:
    """One patch image as float32 ``(bands, rows, cols)`` (raw values; nodata pixels read as 0).

    Raises
    ------
    InputError
        When no pixel holds data (:func:`planetcd.raster.missing_pixels`: all nodata, NaN or zero).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_raster(path) as ds:
            data, valid = read_window(ds)
            if missing_pixels(data, valid, ds.nodata).all():
                raise InputError(f"{path}: image has no valid pixels (all nodata, NaN or zero)")
    return data


def stack_pairs(ids: list[str], pre_paths: list[Path], post_paths: list[Path], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Read pre/post images into two ``(n, bands, rows, cols)`` float32 stacks, refusing mixed sizes."""
    if not ids:
        raise InputError(f"{where}: no pairs")
    pre_list, post_list = [], []
    shape = None
    for pair_id, pre_path, post_path in zip(ids, pre_paths, post_paths):
        pre, post = read_image(pre_path), read_image(post_path)
        if pre.shape != post.shape:
            raise InputError(
                f"{where}: pair {pair_id!r}: pre is {_describe(pre.shape)} but post is {_describe(post.shape)}"
            )
        if shape is None:
            shape, first = pre.shape, pair_id
        elif pre.shape != shape:
            raise InputError(
                f"{where}: pair {pair_id!r} is {_describe(pre.shape)} but pair {first!r} is {_describe(shape)}; "
                "every pair of a set must have one size"
            )
        pre_list.append(pre)
        post_list.append(post)
    return np.stack(pre_list), np.stack(post_list)


def _describe(shape: tuple[int, ...]) -> str:
    bands, rows, cols = shape
    return f"{cols}x{rows} px, {bands} band{'s' if bands != 1 else ''}"


def _find_image(folder: Path, pair_id: str, what: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{pair_id}{suffix}", folder / f"{pair_id}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise InputError(f"{folder}: no {what} image for pair {pair_id!r} ({'/'.join(s[1:] for s in IMAGE_SUFFIXES)})")


def _parse_label(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: label {value!r} is not 0 or 1") from None
    if number not in (0.0, 1.0):
        raise InputError(f"{where}: label {value!r} is not 0 or 1")
    return int(number)


def read_labels_csv(path: Path) -> tuple[list[str], np.ndarray, list[str] | None]:
    """``id,label[,split]`` rows of a labels file -> ids, labels (int64), splits or None."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (a change set needs labels.csv with columns id,label[,split])")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "id" not in fields or "label" not in fields:
            raise InputError(f"{path}: needs columns id and label (found: {', '.join(fields) or 'nothing'})")
        has_split = "split" in fields
        ids, labels, splits = [], [], []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get("id"):
                raise InputError(f"{path}, line {line}: empty id")
            ids.append(row["id"])
            labels.append(_parse_label(row["label"], f"{path}, line {line}"))
            if has_split:
                splits.append(row.get("split", ""))
    if not ids:
        raise InputError(f"{path}: no pairs listed")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{path}: id {dup!r} listed more than once")
    return ids, np.asarray(labels, np.int64), (splits if has_split else None)


def read_changeset(directory: str | os.PathLike, split: str | None = None) -> ChangeSet:
    """Read a set in the canonical layout.

    Parameters
    ----------
    directory : path-like
        Folder with ``pre/``, ``post/`` and ``labels.csv``.
    split : str, optional
        Keep only the pairs of this split.

    Returns
    -------
    ChangeSet
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such folder")
    ids, labels, splits = read_labels_csv(directory / "labels.csv")
    for sub in ("pre", "post"):
        if not (directory / sub).is_dir():
            raise InputError(f"{directory}: no {sub}/ folder")
    pre_paths = [_find_image(directory / "pre", i, "pre") for i in ids]
    post_paths = [_find_image(directory / "post", i, "post") for i in ids]
    pre, post = stack_pairs(ids, pre_paths, post_paths, str(directory))
    result = ChangeSet(ids, pre, post, labels, splits, directory.resolve().name)
    return result.subset(split) if split is not None else result


# --------------------------------------------------------------------------- writing

#: Output formats of :func:`write_changeset`: suffix and GDAL driver.
FORMATS = {"png": (".png", "PNG"), "tif": (".tif", "GTiff")}


def _write_image(path: Path, image: np.ndarray, driver: str) -> None:
    """Write one patch deterministically (no timestamps, no side-car files)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    image = np.asarray(image)
    profile = {"driver": driver, "width": image.shape[2], "height": image.shape[1], "count": image.shape[0],
               "dtype": image.dtype.name}
    if driver == "GTiff":
        profile.update(compress="deflate")
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if driver == "PNG":  # PNG is create-copy only in GDAL: write through memory
            from rasterio.io import MemoryFile
            from rasterio.shutil import copy as copy_raster

            with MemoryFile() as mem:
                with mem.open(**{**profile, "driver": "GTiff"}) as dst:
                    dst.write(image)
                with mem.open() as src:
                    copy_raster(src, tmp, driver="PNG")
        else:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(image)
        for extra in tmp.parent.glob(tmp.name + ".aux.xml"):
            extra.unlink()


def _labels_text(ids: list[str], labels: np.ndarray, splits: list[str] | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "label", "split"] if splits is not None else ["id", "label"])
    for k, pair_id in enumerate(ids):
        row = [pair_id, int(labels[k])]
        if splits is not None:
            row.append(splits[k])
        writer.writerow(row)
    return out.getvalue()


def write_changeset(
    directory: str | os.PathLike,
    changeset: ChangeSet,
    fmt: str = "png",
    overwrite: bool = False,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a :class:`ChangeSet` in the canonical layout, all or nothing.

    Parameters
    ----------
    directory : path-like
        Output folder (created if missing).
    changeset : ChangeSet
        Arrays are written with their dtype: ``uint8``/``uint16`` for PNG,
        any for TIFF. Float arrays go to PNG as ``uint8`` after rounding and
        clipping to ``0..255``.
    fmt : {"png", "tif"}
    overwrite : bool
        Replace an existing set (its ``pre/``, ``post/``, ``labels.csv`` and
        ``extra_files``); refused otherwise.
    extra_files : dict, optional
        More text files to write beside ``labels.csv`` (name -> content).

    The set is built in a hidden temporary folder beside ``directory`` and
    moved into place only when complete, so a failure leaves nothing behind.
    """
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    suffix, driver = FORMATS[fmt]
    ids = [str(i) for i in changeset.ids]
    n = len(ids)
    if n == 0:
        raise InputError("nothing to write: the change set is empty")
    if changeset.pre.shape != changeset.post.shape or changeset.pre.ndim != 4 or changeset.pre.shape[0] != n:
        raise InputError(
            f"pre {changeset.pre.shape} and post {changeset.post.shape} must both be (n={n}, bands, rows, cols)"
        )
    if len(changeset.labels) != n or (changeset.splits is not None and len(changeset.splits) != n):
        raise InputError("labels (and splits) must have one entry per pair")
    if len(set(ids)) != n or any(not i or "/" in i or os.sep in i for i in ids):
        raise InputError("pair ids must be unique, non-empty file names")
    extra_files = dict(extra_files or {})
    directory = Path(directory)
    names = ["pre", "post", "labels.csv", *extra_files]
    check_writable([directory / name for name in names], overwrite)
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory} exists and is not a folder", replaceable=False)

    def as_written(array: np.ndarray) -> np.ndarray:
        if driver == "PNG" and array.dtype not in (np.uint8, np.uint16):
            return np.clip(np.round(array), 0, 255).astype(np.uint8)
        return array

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".part", dir=directory.parent))
    try:
        for sub, stack in (("pre", changeset.pre), ("post", changeset.post)):
            (staging / sub).mkdir()
            for k, pair_id in enumerate(ids):
                _write_image(staging / sub / f"{pair_id}{suffix}", as_written(stack[k]), driver)
        (staging / "labels.csv").write_text(_labels_text(ids, changeset.labels, changeset.splits), encoding="utf-8")
        for name, text in extra_files.items():
            (staging / name).write_text(text, encoding="utf-8")
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = directory / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
