"""Readers for crater label files in pixel coordinates.

Every reader returns the same contract: a float64 array of shape ``(n, 3)``
with columns ``x_px, y_px, radius_px`` (x to the right, y down, in pixels of
the labelled image). Missing, empty-but-garbled or unreadable files raise
:class:`planetcd.errors.InputError` with a one-line message.

Formats
-------
- Pascal-VOC XML boxes (CTX MC11-East, ``../shared/data/ctx-mc11e``): centre
  is the box centre, radius ``(w + h) / 4``.
- PyCDA CSV (``../shared/data/hrsc-pycda``): columns ``long`` (x px), ``lat``
  (y px), ``diameter`` (px).
- Robbins & Hynek (2012) THEMIS tiles (``../shared/data/robbins-themis``):
  columns ``LONG_X_PX``, ``LAT_Y_PX``, ``RAD_PX``.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["read_voc_boxes", "read_voc_confidence", "read_pycda_csv", "read_robbins_csv", "read_pixel_csv", "read_csv_columns"]


def _existing(path: str | PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return path


def read_voc_boxes(path: str | PathLike) -> np.ndarray:
    """Craters from a Pascal-VOC XML file of bounding boxes.

    Parameters
    ----------
    path : path-like
        VOC annotation (``<object><bndbox><xmin>…``).

    Returns
    -------
    ndarray, float64, shape (n, 3)
        ``x_px, y_px, radius_px``: box centre and ``(width + height) / 4``.
        VOC boxes are given by their corner pixel coordinates, so the centre is
        ``(xmin + xmax) / 2`` and the width ``xmax - xmin``.
    """
    path = _existing(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a readable Pascal-VOC XML file ({exc})") from None
    if root.tag != "annotation":
        raise InputError(f"{path}: not a Pascal-VOC annotation (root element <{root.tag}>)")
    rows = []
    for number, box in enumerate(root.iter("bndbox")):
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise InputError(f"{path}: box {number + 1} lacks numeric xmin/ymin/xmax/ymax") from None
        if xmax < xmin or ymax < ymin:
            raise InputError(f"{path}: box {number + 1} has xmax < xmin or ymax < ymin")
        rows.append(((xmin + xmax) / 2, (ymin + ymax) / 2, ((xmax - xmin) + (ymax - ymin)) / 4))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def read_voc_confidence(path: str | PathLike) -> np.ndarray:
    """The ``<confidence>`` of every box of a Pascal-VOC XML file, in :func:`read_voc_boxes`' order.

    In the clustered MC11-East labels it is the number of the six annotators
    who marked the crater (1..6).

    Returns
    -------
    ndarray, float64, shape (n,)
        NaN for a box without a numeric ``<confidence>`` (e.g. the expert labels).
    """
    path = _existing(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a readable Pascal-VOC XML file ({exc})") from None
    values = []
    for obj in root.iter("object"):
        if obj.find("bndbox") is None:
            continue
        try:
            values.append(float(obj.findtext("confidence")))
        except (TypeError, ValueError):
            values.append(float("nan"))
    return np.array(values, dtype=np.float64)


def read_csv_columns(path: str | PathLike, columns: tuple[str, ...]) -> list[np.ndarray]:
    """Named float64 columns of a CSV file (any line endings: ``\\n``, ``\\r\\n`` or old Mac ``\\r``).

    Returns one array of shape (n,) per name; raises :class:`InputError` on a
    missing column or a non-numeric value.
    """
    path = _existing(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as text ({exc})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path}: empty file")
    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader)]
    missing = [name for name in columns if name not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(header)})")
    index = [header.index(name) for name in columns]
    values = []
    for line_number, row in enumerate(reader, start=2):
        try:
            values.append([float(row[i]) for i in index])
        except (IndexError, ValueError):
            raise InputError(f"{path}: line {line_number} is not numeric in {', '.join(columns)}") from None
    array = np.array(values, dtype=np.float64).reshape(-1, len(columns))
    return [array[:, k] for k in range(len(columns))]


def read_pixel_csv(path: str | PathLike, x: str, y: str, radius: str | None = None, diameter: str | None = None) -> np.ndarray:
    """Craters from any CSV with pixel centre columns and a radius or diameter column.

    Parameters
    ----------
    path : path-like
    x, y : str
        Column names of the centre (pixels).
    radius, diameter : str, optional
        Exactly one: the column holding the radius or the diameter (pixels).

    Returns
    -------
    ndarray, float64, shape (n, 3)
        ``x_px, y_px, radius_px``.
    """
    if (radius is None) == (diameter is None):
        raise ValueError("give exactly one of radius= or diameter=")
    path = _existing(path)
    cx, cy, size = read_csv_columns(path, (x, y, radius or diameter))
    r = size if radius is not None else size / 2.0
    if np.any(r < 0) or not np.all(np.isfinite(np.stack([cx, cy, r]))):
        raise InputError(f"{path}: negative or non-finite crater sizes/positions")
    return np.stack([cx, cy, r], axis=1)


def read_pycda_csv(path: str | PathLike) -> np.ndarray:
    """Craters from a PyCDA label CSV (``long``, ``lat``, ``diameter``, all in pixels).

    Returns
    -------
    ndarray, float64, shape (n, 3)
        ``x_px = long``, ``y_px = lat``, ``radius_px = diameter / 2``.
    """
    return read_pixel_csv(path, "long", "lat", diameter="diameter")


def read_robbins_csv(path: str | PathLike) -> np.ndarray:
    """Craters from a Robbins & Hynek (2012) THEMIS tile CSV (pixel columns).

    Returns
    -------
    ndarray, float64, shape (n, 3)
        ``x_px = LONG_X_PX``, ``y_px = LAT_Y_PX``, ``radius_px = RAD_PX``.
    """
    return read_pixel_csv(path, "LONG_X_PX", "LAT_Y_PX", radius="RAD_PX")
