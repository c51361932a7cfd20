"""Preparation of change-detection inputs: a pair opened as rasters, each image's statistics and overview, network-ready windows.

Every read of ``detect`` goes through :func:`read_present`, so one rule
(:func:`planetcd.raster.missing_pixels`: outside the GDAL mask, NaN, or exactly
0, the fill of planetary products that declare no nodata) decides which pixels
hold ground; intensities are scaled by :class:`planetcd.raster.IntensityStats`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
from rasterio.io import MemoryFile
from rasterio.windows import Window

from ..errors import InputError
from ..raster import (
    IntensityStats,
    decimated_stats,
    fill_invalid,
    missing_pixels,
    open_raster,
    to_three_bands,
)

#: Pixels of the decimated read that gives an image's statistics and overview.
OVERVIEW_PIXELS = 1_000_000


@dataclass
class ImageOverview:
    """One image of a pair as ``detect`` sees it: intensity statistics and a decimated view."""

    stats: IntensityStats
    overview: np.ndarray  #: decimated image scaled to 0..1, missing pixels at the mean, (bands, h, w)
    overview_valid: np.ndarray  #: (h, w) bool, pixels holding ground
    #: 0 is an ordinary value of this image, not its fill (:func:`planetcd.raster.zeros_are_data`); the
    #: image's readers must say so too (:class:`~planetcd.change.register.AlignedReader`)
    zero_is_data: bool = False


def image_overview(ds, name: str) -> ImageOverview:
    """Statistics and overview of a dataset from one decimated read of about :data:`OVERVIEW_PIXELS` pixels.

    The statistics are :func:`planetcd.raster.dataset_stats`'s at that size (the same read, the same
    rule), kept together with the overview they were computed from. Whether 0 is a value or the fill
    (:func:`planetcd.raster.zeros_are_data`: signed data around 0) is decided on the same read.

    Raises
    ------
    InputError
        When no pixel holds ground.
    """
    read = decimated_stats(ds, max_pixels=OVERVIEW_PIXELS, name=name)
    present = ~read.missing
    overview = fill_invalid(read.stats.unit(read.data), present, read.stats.unit_mean)
    return ImageOverview(read.stats, overview, present, read.zero_is_data)


def shared_overview(pre: ImageOverview, post: ImageOverview) -> np.ndarray:
    """Where both overviews (of images on one grid) hold ground, ``(h, w)`` bool.

    Raises
    ------
    InputError
        When they share no pixel: the footprints of the data do not overlap (even if the rasters' bounds do).
    """
    shared = pre.overview_valid & post.overview_valid
    if not shared.any():
        raise InputError("pre and post share no ground: the footprints of their data do not overlap")
    return shared


def read_present(reader, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """A window ``(bands, h, w)`` float32 of an :class:`~planetcd.change.register.AlignedReader` and where it holds
    ground ``(h, w)`` (:func:`~planetcd.raster.missing_pixels`, with the reader's ``zero_is_data``)."""
    data, valid = reader.read(window)
    return data, ~missing_pixels(data, valid, zero_is_data=getattr(reader, "zero_is_data", False))


def prepare(data: np.ndarray, valid: np.ndarray, stats: IntensityStats) -> np.ndarray:
    """Raw window ``(bands, h, w)`` -> network input ``(3, h, w)`` in ``0..1``, invalid pixels at the mean."""
    return to_three_bands(fill_invalid(stats.unit(data), valid, stats.unit_mean))


def prepare_pair(pre_data, pre_valid, post_data, post_valid, pre_stats: IntensityStats,
                 post_stats: IntensityStats) -> np.ndarray:
    """Both windows as a network batch ``(2, 3, h, w)``.

    Where post has no data it takes pre's pixels (and where pre has none, both
    take pre's mean), so footprint edges and nodata holes read as no change.
    """
    pre = prepare(pre_data, pre_valid, pre_stats)
    post = prepare(post_data, post_valid, post_stats)
    both = pre_valid & post_valid
    return np.stack([pre, np.where(both, post, pre)])


@contextlib.contextmanager
def open_input(obj, name: str):
    """Open a path, or wrap an array ``(rows, cols)`` / ``(bands, rows, cols)`` as an in-memory raster (NaN: nodata)."""
    if isinstance(obj, np.ndarray):
        array = obj[None] if obj.ndim == 2 else obj
        if array.ndim != 3 or array.size == 0:
            raise InputError(f"{name}: expected an array of shape (rows, cols) or (bands, rows, cols)")
        array = array.astype(np.float32)
        profile = {"driver": "GTiff", "width": array.shape[2], "height": array.shape[1], "count": array.shape[0],
                   "dtype": "float32", "nodata": np.nan}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with MemoryFile() as mem:
                with mem.open(**profile) as dst:
                    dst.write(array)
                with mem.open() as ds:
                    yield ds
        return
    with open_raster(obj) as ds:
        yield ds
