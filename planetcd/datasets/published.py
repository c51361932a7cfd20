"""Loaders for the published planetary change sets, in the layouts public code uses for them.

The sets of Kerner et al. (2019) — HiRISE recurring slope lineae, CTX new
impacts, LROC — are distributed in two layouts that public code reads; each
loader returns the same :class:`~planetcd.datasets.changeset.ChangeSet` as
the canonical layout.

MarsBench (``Change_Classification_CTX`` / ``Change_Classification_HiRISE``)
    ``ROOT/annotation.csv`` with columns ``file_id, feature_name, label,
    split``; the before image of a row is ``ROOT/data/SPLIT/FEATURE_NAME/FILE_ID``
    and its after image the same path with ``before`` replaced by ``after``
    (in the file name). ``label`` is 1 for changed.

Saha & Zhu's public script (``testHiriseDcva.py``)
    An image folder with ``*before*`` files, each with an ``after`` twin whose
    name replaces the last ``before`` with ``after``; the pair id is the file
    name up to three characters before ``before`` (``ID_0_before.jpg`` → ``ID``).
    Labels are files named ``ID.jpg`` in ``change/`` (changed) and
    ``no_change/`` (unchanged) folders.

:func:`load_any` picks the layout of a folder by what it holds.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .changeset import IMAGE_SUFFIXES, ChangeSet, read_changeset, stack_pairs

__all__ = ["load_marsbench_change", "load_saha_folders", "load_any", "detect_layout"]

MARSBENCH_COLUMNS = ("file_id", "feature_name", "label", "split")


def _label(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{where}: label {value!r} is not 0 or 1") from None
    if number not in (0.0, 1.0):
        raise InputError(f"{where}: label {value!r} is not 0 or 1 (only binary change labels are read)")
    return int(number)


def load_marsbench_change(
    root: str | os.PathLike, split: str | None = None, annotation: str | os.PathLike | None = None
) -> ChangeSet:
    """A MarsBench change-classification set (``Change_Classification_CTX`` / ``_HiRISE`` layout).

    Parameters
    ----------
    root : path-like
        The data set folder (MarsBench's ``data_dir``), holding ``data/`` and ``annotation.csv``.
    split : str, optional
        ``train``, ``val`` or ``test``; every row when omitted.
    annotation : path-like, optional
        The annotation CSV (default ``ROOT/annotation.csv``; MarsBench's few-shot and
        partition CSVs have the same columns).

    Returns
    -------
    ChangeSet
        Ids are the before file names without ``before`` and suffix, prefixed with
        the split and feature folder when needed to stay unique.
    """
    root = Path(root)
    annotation = Path(annotation) if annotation is not None else root / "annotation.csv"
    if not annotation.is_file():
        raise InputError(f"{annotation}: no such file (a MarsBench change set needs annotation.csv)")
    with open(annotation, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in MARSBENCH_COLUMNS if c not in fields]
        if missing:
            raise InputError(f"{annotation}: missing column(s) {', '.join(missing)} (found: {', '.join(fields)})")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if split is not None:
        splits_found = sorted({r["split"] for r in rows})
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise InputError(f"{annotation}: no row in split {split!r} (splits: {', '.join(splits_found)})")
    if not rows:
        raise InputError(f"{annotation}: no rows")
    ids, pre_paths, post_paths, labels, splits = [], [], [], [], []
    for line, row in enumerate(rows, start=2):
        file_id = row["file_id"]
        if "before" not in file_id:
            raise InputError(f"{annotation}, line {line}: file_id {file_id!r} has no 'before' to find its after image")
        before = root / "data" / row["split"] / row["feature_name"] / file_id
        after = before.with_name(before.name.replace("before", "after"))
        for path in (before, after):
            if not path.is_file():
                raise InputError(f"{path}: no such file (listed in {annotation.name}, line {line})")
        stem = Path(file_id).stem.replace("before", "").strip("_-. ")
        ids.append(stem or Path(file_id).stem)
        pre_paths.append(before)
        post_paths.append(after)
        labels.append(_label(row["label"], f"{annotation}, line {line}"))
        splits.append(row["split"])
    if len(set(ids)) != len(ids):
        ids = [f"{s}/{r['feature_name']}/{i}" for s, r, i in zip(splits, rows, ids)]
    pre, post = stack_pairs(ids, pre_paths, post_paths, str(root))
    return ChangeSet(ids, pre, post, np.asarray(labels, np.int64), splits, root.resolve().name)


def _saha_ids(name: str) -> list[str]:
    """Candidate pair ids of a ``*before*`` file name: Saha's rule (3 characters before 'before'), then a lenient one."""
    at = name.find("before")
    return [name[: at - 3], name[:at].rstrip("_-. ")]


def _label_names(folder: Path) -> set[str]:
    return {p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.is_file()}


def load_saha_folders(images: str | os.PathLike, labels: str | os.PathLike | None = None) -> ChangeSet:
    """A set in the layout of Saha & Zhu's public script.

    Parameters
    ----------
    images : path-like
        Folder with ``*before*`` images and their ``after`` twins (jpg, png or tif).
    labels : path-like, optional
        Folder holding ``change/`` and ``no_change/`` with one ``ID.jpg`` per pair
        (default: ``images``).

    Returns
    -------
    ChangeSet
        Ids sorted; no splits.
    """
    images = Path(images)
    labels = Path(labels) if labels is not None else images
    if not images.is_dir():
        raise InputError(f"{images}: no such folder")
    folders = {name: labels / name for name in ("change", "no_change")}
    for folder in folders.values():
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder (the Saha layout needs change/ and no_change/)")
    changed, unchanged = _label_names(folders["change"]), _label_names(folders["no_change"])
    both = changed & unchanged
    if both:
        raise InputError(f"{labels}: pair {sorted(both)[0]!r} is in both change/ and no_change/")
    befores = sorted(p for p in images.iterdir()
                     if p.is_file() and "before" in p.name and p.suffix.lower() in IMAGE_SUFFIXES)
    if not befores:
        raise InputError(f"{images}: no *before* images")
    ids, pre_paths, post_paths, values = [], [], [], []
    for before in befores:
        after = before.with_name("after".join(before.name.rsplit("before", 1)))
        if not after.is_file():
            raise InputError(f"{after}: no such file (the after image of {before.name})")
        candidates = _saha_ids(before.name)
        pair_id = next((c for c in candidates if c in changed or c in unchanged), None)
        if pair_id is None:
            raise InputError(f"{before.name}: pair {candidates[0]!r} is in neither change/ nor no_change/")
        ids.append(pair_id)
        pre_paths.append(before)
        post_paths.append(after)
        values.append(1 if pair_id in changed else 0)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{images}: more than one before image for pair {dup!r}")
    pre, post = stack_pairs(ids, pre_paths, post_paths, str(images))
    return ChangeSet(ids, pre, post, np.asarray(values, np.int64), None, images.resolve().name)


def detect_layout(directory: str | os.PathLike) -> str:
    """``canonical`` (labels.csv), ``marsbench`` (annotation.csv) or ``saha`` (change/ and no_change/)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such folder")
    if (directory / "labels.csv").is_file():
        return "canonical"
    if (directory / "annotation.csv").is_file():
        return "marsbench"
    if (directory / "change").is_dir() and (directory / "no_change").is_dir():
        return "saha"
    raise InputError(
        f"{directory}: not a change set (expected labels.csv, a MarsBench annotation.csv, or change/ and no_change/)"
    )


def load_any(
    directory: str | os.PathLike,
    layout: str = "auto",
    split: str | None = None,
    labels_dir: str | os.PathLike | None = None,
) -> ChangeSet:
    """Load a set in any supported layout (``auto`` detects it; see :func:`detect_layout`)."""
    if layout == "auto":
        layout = "saha" if labels_dir is not None else detect_layout(directory)
    if layout == "canonical":
        return read_changeset(directory, split=split)
    if layout == "marsbench":
        return load_marsbench_change(directory, split=split)
    if layout == "saha":
        result = load_saha_folders(directory, labels_dir)
        if split is not None:
            raise InputError("the Saha layout has no splits; drop --split")
        return result
    raise InputError(f"unknown layout {layout!r}")
