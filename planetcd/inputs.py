"""The one input check of planetcd: rasters, image pairs, crater lists and crater counts, each refused in one line.

Every command (detect, segment, monitor, train, evaluate, match, age) and its
library entry point calls these before any heavy work (a network loaded, an
output written), so that a bad input is reported at once, as one
:class:`~planetcd.errors.InputError` naming the file:

- a raster that is missing, a folder, not readable by GDAL, empty, or truncated
  (GDAL often opens a cut file and fails only on the blocks past the cut, so
  a few blocks spread over the raster, the last one included, are read);
- a raster without any valid pixel (all nodata, NaN or zero: the rule of
  :func:`planetcd.raster.missing_pixels`);
- a raster smaller than one patch or tile, or without the band asked for;
- a pair whose band counts differ or whose footprints do not overlap
  (:func:`planetcd.change.register.post_on_pre_grid`);
- a crater list without position or radius columns, a count file that holds no counts.

A raster that passed is remembered for the process (by its resolved path, size and modification time, and
the options of the check): ``monitor`` checks its pair and then calls ``detect``, which checks it again;
the second check costs nothing. A file that changes on disk is checked again.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import InputError

PathLike = str | os.PathLike

#: Blocks read per raster by :func:`probe_blocks` (the first, the last and some in between).
PROBE_BLOCKS = 5


@dataclass(frozen=True)
class RasterInfo:
    """What :func:`check_raster` learnt of a raster (or an array) that passed.

    Attributes
    ----------
    path : Path or None
        The file (``None`` for an array).
    height, width, count : int
        Size in pixels and number of bands.
    georeferenced : bool
        The raster has a CRS and a non-identity transform.
    crs, transform
        rasterio CRS and Affine (``None`` when not georeferenced).
    nodata : float or None
    """

    path: Path | None
    height: int
    width: int
    count: int
    georeferenced: bool = False
    crs: object = None
    transform: object = None
    nodata: float | None = None


def _label(path, what: str) -> str:
    return str(path) if path is not None else what


def _check_size(label: str, height: int, width: int, min_size: int, size_of: str | None) -> None:
    size_of = size_of or f"{min_size}x{min_size} px"
    if height < min_size or width < min_size:
        raise InputError(f"{label}: image of {width}x{height} px is too small (smaller than {size_of})")


def probe_blocks(ds, n: int = PROBE_BLOCKS) -> None:
    """Read ``n`` blocks spread over ``ds`` (the first and the last among them) at full resolution.

    Raises
    ------
    InputError
        When GDAL fails on one of them (a truncated or corrupt file), naming the file.
    """
    from rasterio.windows import Window

    from .raster import read_window

    block_h, block_w = (int(v) for v in ds.block_shapes[0])
    block_h, block_w = max(1, min(block_h, ds.height)), max(1, min(block_w, ds.width))
    rows, cols = -(-ds.height // block_h), -(-ds.width // block_w)
    total = rows * cols
    for k in sorted({int(round(v)) for v in np.linspace(0, total - 1, min(n, total))}):
        r, c = divmod(k, cols)
        r0, c0 = r * block_h, c * block_w
        read_window(ds, Window(c0, r0, min(block_w, ds.width - c0), min(block_h, ds.height - r0)))


def check_array(array, *, min_size: int = 1, what: str = "image", size_of: str | None = None) -> RasterInfo:
    """Check an in-memory image ``(rows, cols)`` or ``(bands, rows, cols)`` (NaN = nodata).

    Raises
    ------
    InputError
        Wrong shape, smaller than ``min_size`` or no finite pixel; the message names ``what``.
    """
    array = np.asarray(array)
    stack = array[None] if array.ndim == 2 else array
    if stack.ndim != 3 or stack.size == 0:
        raise InputError(f"{what}: expected an array of shape (rows, cols) or (bands, rows, cols), got {array.shape}")
    _check_size(what, stack.shape[1], stack.shape[2], min_size, size_of)
    if stack.dtype.kind in "fc" and not np.any(np.isfinite(stack)):
        raise InputError(f"{what}: image has no valid pixels (all NaN)")
    if not np.any(stack):
        raise InputError(f"{what}: image has no valid pixels (all zero)")
    return RasterInfo(None, stack.shape[1], stack.shape[2], stack.shape[0])


def check_raster(
    path,
    *,
    min_size: int = 1,
    band: int | None = None,
    what: str = "image",
    size_of: str | None = None,
    probe: bool = True,
    stats: bool = True,
) -> RasterInfo:
    """The one check of a raster input, before any heavy work.

    Parameters
    ----------
    path : path or ndarray
        A raster GDAL reads (an array goes to :func:`check_array`).
    min_size : int
        Smallest height and width, pixels (one patch, one tile...).
    band : int, optional
        1-based band that must exist.
    what : str
        What the raster is, for messages about arrays (``"pre"``, ``"image"``).
    size_of : str, optional
        What ``min_size`` is, in words (``"one 100 px patch"``; default ``"NxN px"``).
    probe : bool
        Read a few blocks at full resolution (:func:`probe_blocks`) to find truncated files.
    stats : bool
        Refuse rasters without any valid pixel (:func:`planetcd.raster.dataset_stats`).

    Returns
    -------
    RasterInfo

    Raises
    ------
    InputError
        Missing, a folder, unreadable, empty, truncated, too small, no such band, or no valid pixel.
    """
    if isinstance(path, np.ndarray):
        return check_array(path, min_size=min_size, what=what, size_of=size_of)
    key = _check_key(path, (min_size, band, probe, stats))
    if key is not None and key in _PASSED:
        return replace(_PASSED[key], path=Path(path))  # the name this caller gave
    info = _check_raster_file(path, min_size=min_size, band=band, size_of=size_of, probe=probe, stats=stats)
    if key is not None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.pop(next(iter(_PASSED)))
        _PASSED[key] = info
    return info


#: Rasters that passed :func:`check_raster` in this process: ``(resolved path, size, mtime, options) -> RasterInfo``.
_PASSED: dict = {}
_PASSED_MAX = 64


def _check_key(path, options: tuple) -> tuple | None:
    """The memo key of a raster file's check, or None (not a plain file, or unreadable metadata)."""
    try:
        resolved = os.path.realpath(os.fspath(path))
        st = os.stat(resolved)
    except (OSError, TypeError, ValueError):
        return None
    if not os.path.isfile(resolved):
        return None
    return (resolved, st.st_size, st.st_mtime_ns, options)


def _check_raster_file(path, *, min_size: int, band: int | None, size_of: str | None, probe: bool,
                       stats: bool) -> RasterInfo:
    """:func:`check_raster` of a file, without the memo."""
    from .raster import dataset_stats, is_georeferenced, open_raster

    with open_raster(path) as ds:
        _check_size(str(path), ds.height, ds.width, min_size, size_of)
        if band is not None and not 1 <= band <= ds.count:
            raise InputError(f"{path}: no band {band} (the raster has {ds.count})")
        if probe:
            probe_blocks(ds)
        if stats:
            dataset_stats(ds, bands=None if band is None else [band])
        georef = is_georeferenced(ds)
        return RasterInfo(Path(path), ds.height, ds.width, ds.count, georef, ds.crs if georef else None,
                          ds.transform if georef else None, ds.nodata)


def check_pair(
    pre,
    post,
    *,
    min_size: int = 1,
    band: int | None = None,
    size_of: str | None = None,
) -> tuple[RasterInfo, RasterInfo]:
    """Check a pre/post pair: each raster (:func:`check_raster`), then that they can share pre's grid.

    Raises
    ------
    InputError
        As :func:`check_raster` for either image; band counts that differ; sizes that differ
        when the images are not both georeferenced; footprints that do not overlap.
    """
    pre_info = check_raster(pre, min_size=min_size, band=band, what="pre", size_of=size_of)
    post_info = check_raster(post, min_size=min_size, band=band, what="post", size_of=size_of)
    if isinstance(pre, np.ndarray) or isinstance(post, np.ndarray):
        if pre_info.count != post_info.count:
            raise InputError(f"band counts differ: pre has {pre_info.count}, post has {post_info.count}")
        if (pre_info.height, pre_info.width) != (post_info.height, post_info.width):
            raise InputError(f"pre ({pre_info.width}x{pre_info.height} px) and post ({post_info.width}x"
                             f"{post_info.height} px) arrays differ in size; arrays must share one grid")
        return pre_info, post_info
    from .change.register import post_on_pre_grid
    from .raster import open_raster

    with open_raster(pre) as pre_ds, open_raster(post) as post_ds, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run itself says it once
        with post_on_pre_grid(pre_ds, post_ds, clip_impulses=False):
            pass
    return pre_info, post_info


def check_crater_table(path, *, need: str = "positions", **options):
    """Read a crater list (:func:`planetcd.craters.catalog.read_catalog`) that must hold positions and sizes.

    Parameters
    ----------
    path : path
    need : {"positions", "sizes"}
        ``positions``: pixel positions and radii, or lon/lat and diameters (to match);
        ``sizes``: diameters only (to count).
    **options
        Georeferencing of pixel lists, as :func:`~planetcd.craters.catalog.read_catalog`.

    Returns
    -------
    Catalog

    Raises
    ------
    InputError
        Missing or unreadable file, or a list without the columns asked for.
    """
    from .craters.catalog import read_catalog

    catalog = read_catalog(path, **options)
    has_px = len(catalog) == 0 or not (np.all(np.isnan(catalog.x_px)) or np.all(np.isnan(catalog.radius_px)))
    has_geo = catalog.lon_deg is not None and catalog.lat_deg is not None and catalog.diameter_km is not None
    if need == "positions" and not (has_px or has_geo):
        raise InputError(f"{path}: no crater positions with radii (x_px, y_px, radius_px or lon, lat, diameter)")
    if need == "sizes" and not (has_px or catalog.diameter_km is not None):
        raise InputError(f"{path}: no crater sizes (radius_px or diameter_km column)")
    return catalog


def check_counts(path, area_km2: float | None = None, **options):
    """Read crater counts for dating (:func:`planetcd.craters.catalog.read_counts`) and refuse empty ones.

    Raises
    ------
    InputError
        A file that holds no counts (not a crater list, no diameters, no area), or no crater at all.
    """
    from .craters.catalog import read_counts

    if area_km2 is not None and not area_km2 > 0:
        raise InputError(f"area_km2 must be positive, got {area_km2}")
    counts = read_counts(path, area_km2, **options)
    if len(counts) == 0:
        raise InputError(f"{path}: no craters")
    return counts
