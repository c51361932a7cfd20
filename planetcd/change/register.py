"""Co-registration of the post image onto the pre image's grid.

Two steps: when both rasters are georeferenced, post is resampled onto pre's
grid on the fly (``WarpedVRT``); the remaining global misregistration is then
estimated by phase correlation and undone with sub-pixel interpolation while
reading windows (:class:`AlignedReader`), so no resampled copy of the post
image is ever held whole in memory.

Displacement convention: ``(dy, dx)`` is where post has moved relative to
pre — a ground feature at pre pixel ``(y, x)`` appears at post pixel
``(y + dy, x + dx)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings

import numpy as np
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from scipy import ndimage

from ..errors import InputError
from ..raster import (
    central_impulse_count,
    data_bands,
    decimated_stats,
    implicit_fill,
    is_georeferenced,
    missing_pixels,
    open_raster,
    read_window,
    suppress_impulses,
    write_impulse_free_copy,
)

log = logging.getLogger(__name__)


def estimate_shift(
    pre: np.ndarray,
    post: np.ndarray,
    pre_valid: np.ndarray | None = None,
    post_valid: np.ndarray | None = None,
    upsample_factor: int = 20,
) -> tuple[tuple[float, float], float]:
    """Global displacement of ``post`` relative to ``pre`` by phase correlation.

    Parameters
    ----------
    pre, post : ndarray, shape (rows, cols)
        Single-band images of the same shape (any scale; each is standardised).
    pre_valid, post_valid : ndarray of bool, optional
        Validity masks; invalid pixels are set to the image mean.
    upsample_factor : int
        Sub-pixel precision is ``1 / upsample_factor`` pixel.

    Returns
    -------
    displacement : (dy, dx) in pixels
    error : float
        Phase-correlation error from scikit-image (0 = perfect match, 1 = none).
    """
    from skimage.registration import phase_cross_correlation

    if pre.shape != post.shape:
        raise ValueError(f"shapes differ: {pre.shape} vs {post.shape}")
    window = np.outer(np.hanning(pre.shape[0]), np.hanning(pre.shape[1])).astype(np.float32)

    def prepare(image, valid):
        image = image.astype(np.float32, copy=True)
        valid = np.ones(image.shape, bool) if valid is None else valid
        mean = image[valid].mean() if np.any(valid) else 0.0
        image[~valid] = mean
        image = (image - mean) / (image[valid].std() + 1e-6)
        return image * window

    shift, error, _ = phase_cross_correlation(
        prepare(pre, pre_valid), prepare(post, post_valid), upsample_factor=upsample_factor, normalization=None
    )
    # scikit-image returns the shift that registers post onto pre: the opposite of the displacement.
    return (float(-shift[0]), float(-shift[1])), float(error)


def estimate_shift_overlap(
    pre: np.ndarray,
    post: np.ndarray,
    post_valid: np.ndarray | None = None,
    overlap_ratio: float = 0.25,
    upsample_factor: int = 10,
) -> tuple[float, float]:
    """Displacement of ``post`` relative to ``pre`` when the shift is a large part of the image.

    Phase correlation with a Hann window (:func:`estimate_shift`) weighs the
    borders down, which is where two small patches overlap when the shift is
    large (40 px on a 100 px patch). This uses masked normalised
    cross-correlation over the overlap (Padfield 2012, via scikit-image) for
    the whole-pixel shift, then refines it to sub-pixel by phase correlation
    on the overlapping crops.

    Parameters
    ----------
    pre, post : ndarray, shape (rows, cols)
    post_valid : ndarray of bool, optional
        Pixels of post that hold data.
    overlap_ratio : float
        Smallest overlap (fraction of the image) a candidate shift may leave.

    Returns
    -------
    (dy, dx) in pixels.
    """
    from skimage.registration import phase_cross_correlation

    pre_mask = np.ones(pre.shape, bool)
    post_mask = pre_mask if post_valid is None else post_valid
    found = phase_cross_correlation(pre, post, reference_mask=pre_mask, moving_mask=post_mask,
                                    overlap_ratio=overlap_ratio)
    found = np.asarray(found[0] if isinstance(found, tuple) else found, dtype=float)
    dy, dx = int(round(-found[0])), int(round(-found[1]))
    rows, cols = pre.shape
    r0, r1 = max(0, -dy), min(rows, rows - dy)
    c0, c1 = max(0, -dx), min(cols, cols - dx)
    if min(r1 - r0, c1 - c0) >= 16:
        crop_valid = None if post_valid is None else post_valid[r0 + dy : r1 + dy, c0 + dx : c1 + dx]
        (fy, fx), _ = estimate_shift(pre[r0:r1, c0:c1], post[r0 + dy : r1 + dy, c0 + dx : c1 + dx],
                                     None, crop_valid, upsample_factor=upsample_factor)
        if abs(fy) < 2 and abs(fx) < 2:  # a refinement, not a new answer
            return float(dy + fy), float(dx + fx)
    return float(dy), float(dx)


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def shift_image(data: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Move the content of ``(bands, rows, cols)`` images by ``shift = (dy, dx)`` pixels (cubic spline).

    The same result as ``scipy.ndimage.shift(data, (0, dy, dx), order=3,
    mode="nearest")`` (to float rounding; the tests check it), and much faster:
    a constant shift makes the spline evaluation a separable 4-tap filter,
    so after the (fast, recursive) spline prefilter each axis is four
    weighted slices instead of a 16-tap evaluation at every pixel's
    coordinates.

    Returns
    -------
    ndarray, shape of ``data``, dtype of ``data`` when floating (else float64)
    """
    pad = max(12, int(np.ceil(max(abs(shift[0]), abs(shift[1])))) + 3)  # scipy pre-pads 'nearest' by 12 too
    coeffs = np.pad(data, ((0, 0), (pad, pad), (pad, pad)), mode="edge").astype(np.float64)
    for axis in (1, 2):
        coeffs = ndimage.spline_filter1d(coeffs, order=3, axis=axis, mode="nearest")
    for axis, amount in ((1, shift[0]), (2, shift[1])):
        whole = int(np.floor(-amount))
        weights = _cubic_bspline(np.array([1, 0, -1, -2]) + (-amount - whole))
        length = data.shape[axis]
        moved = np.zeros(coeffs.shape[:axis] + (length,) + coeffs.shape[axis + 1 :])
        for tap, weight in zip((-1, 0, 1, 2), weights):
            index = [slice(None)] * 3
            index[axis] = slice(pad + whole + tap, pad + whole + tap + length)
            moved += weight * coeffs[tuple(index)]
        coeffs = moved
    return coeffs.astype(data.dtype if np.issubdtype(data.dtype, np.floating) else np.float64, copy=False)


def shifted_copy(patch: np.ndarray, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A standalone patch ``(bands, h, w)`` (``0..1``) displaced by ``shift`` px, with no surroundings to draw on.

    Cubic spline; the strip the shift uncovers has no source and is invalid
    (0, never a wrap-around). Returns the data (float32, clipped to ``0..1``)
    and its validity ``(h, w)``.
    """
    moved = ndimage.shift(patch, (0.0, *shift), order=3, mode="constant", cval=np.nan, prefilter=True)
    valid_src = np.ones(patch.shape[1:], np.float32)
    valid = ndimage.shift(valid_src, shift, order=1, mode="constant", cval=0.0) > 0.999
    moved = np.where(valid[None], moved, 0.0)
    return np.clip(moved, 0, 1).astype(np.float32), valid


def undo_displacement(
    data: np.ndarray, valid: np.ndarray, frac: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``(bands, rows, cols)`` data so content displaced by ``frac`` pixels moves back (cubic spline)."""
    if frac == (0.0, 0.0):
        return data, valid
    back = (-frac[0], -frac[1])
    data = shift_image(data, back)
    valid = ndimage.shift(valid.astype(np.float32), back, order=1, mode="constant", cval=0.0) > 0.999
    # cubic splines ring for a few pixels next to missing data: those pixels are not trusted either
    valid = ndimage.binary_erosion(valid, iterations=2, border_value=1)
    return data, valid


class AlignedReader:
    """Read windows of the post image on pre's grid with a displacement undone.

    Parameters
    ----------
    dataset : rasterio dataset or WarpedVRT
        Post, already on pre's grid.
    displacement : (dy, dx)
        Displacement of post relative to pre, pixels (undone on read).
    zero_is_data : bool
        0 is an ordinary value of this image, not its fill (signed data around 0:
        :func:`planetcd.raster.zeros_are_data`, decided on the image's overview).
    impulse_step : ndarray of shape (bands,), optional
        Clip the impulses (hot and dead pixels) of each raw read by these steps
        (:func:`planetcd.raster.suppress_impulses`; :attr:`IntensityStats.impulse_step
        <planetcd.raster.IntensityStats>`), before the sub-pixel shift spreads them over their neighbours.
    """

    def __init__(self, dataset, displacement: tuple[float, float] = (0.0, 0.0), zero_is_data: bool = False,
                 impulse_step: np.ndarray | None = None):
        self.dataset = dataset
        self.zero_is_data = bool(zero_is_data)
        self.impulse_step = impulse_step
        self.displacement = (float(displacement[0]), float(displacement[1]))
        self.whole = (int(round(self.displacement[0])), int(round(self.displacement[1])))
        self.frac = (self.displacement[0] - self.whole[0], self.displacement[1] - self.whole[1])
        self.height, self.width, self.count = dataset.height, dataset.width, len(data_bands(dataset))
        self.nodata = dataset.nodata

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Data ``(bands, h, w)`` float32 and validity ``(h, w)`` for a window of pre's grid.

        Validity is :func:`planetcd.raster.missing_pixels`'s rule applied to the raw read (so the outside of
        a footprint, read as 0, stays missing after the sub-pixel shift), eroded by 2 px next to missing
        pixels when a sub-pixel shift is undone.
        """
        pad = 0 if self.frac == (0.0, 0.0) else 2
        src = Window(
            window.col_off + self.whole[1] - pad,
            window.row_off + self.whole[0] - pad,
            window.width + 2 * pad,
            window.height + 2 * pad,
        )
        inside = (
            src.col_off >= 0
            and src.row_off >= 0
            and src.col_off + src.width <= self.width
            and src.row_off + src.height <= self.height
        )
        data, valid = read_window(self.dataset, src, boundless=not inside)
        # Which pixels hold ground is decided before interpolation: the sub-pixel shift turns the exact
        # zeros of a footprint's outside (a raster with no nodata tag) into tiny values that would pass.
        valid = ~missing_pixels(data, valid, self.nodata, self.zero_is_data)
        if self.impulse_step is not None:
            data, _ = suppress_impulses(data, self.impulse_step, valid)
        data, valid = undo_displacement(data, valid, self.frac)
        if pad:
            data = data[:, pad:-pad, pad:-pad]
            valid = valid[pad:-pad, pad:-pad]
        return np.ascontiguousarray(data), valid


def _name(ds, what: str) -> str:
    name = str(getattr(ds, "name", "") or "")
    return f"{what} {name}" if name and not name.startswith("/vsimem/") else what


def _bounds(ds) -> tuple[float, float, float, float]:
    left, bottom, right, top = ds.bounds
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def footprints_overlap(pre_ds, post_ds) -> bool:
    """True when the footprints of two georeferenced rasters share some area (post taken into pre's CRS).

    When post's bounds cannot be taken into pre's CRS the answer is ``True`` (the resampling decides).
    """
    from rasterio.warp import transform_bounds

    a = _bounds(pre_ds)
    b = _bounds(post_ds)
    if pre_ds.crs != post_ds.crs:
        try:
            b = transform_bounds(post_ds.crs, pre_ds.crs, *b, densify_pts=21)
        except Exception:  # noqa: BLE001 - CRSs GDAL cannot relate: let the warp decide
            return True
        if not np.all(np.isfinite(b)):
            return True
        b = (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def grid_relation(pre_ds, post_ds) -> str:
    """How post is put on pre's grid by :func:`post_on_pre_grid` (recorded in run.json).

    Returns
    -------
    str
        ``"same grid"`` (same size, CRS and transform, or both not georeferenced and of one size),
        ``"assumed same grid"`` (one size, only one georeferenced) or ``"resampled"`` (a WarpedVRT).
    """
    pre_geo, post_geo = is_georeferenced(pre_ds), is_georeferenced(post_ds)
    same_size = pre_ds.width == post_ds.width and pre_ds.height == post_ds.height
    if same_size and pre_geo != post_geo:
        return "assumed same grid"
    if same_size and (not pre_geo or (pre_ds.crs == post_ds.crs and pre_ds.transform.almost_equals(post_ds.transform))):
        return "same grid"
    return "resampled"


#: Impulse-free copies of sources this process resampled (:func:`impulse_free_source`): the file's resolved
#: path, size and modification time -> the copy's path (``None``: the file has no impulses to clip).
_IMPULSE_FREE: dict[tuple, str | None] = {}
_IMPULSE_FREE_DIR: list[tempfile.TemporaryDirectory] = []


def _file_key(ds) -> tuple | None:
    name = str(getattr(ds, "name", "") or "")
    try:
        stat = os.stat(name)
    except OSError:  # an in-memory dataset (/vsimem/) or a GDAL path that is no file: no memo
        return None
    return os.path.realpath(name), stat.st_size, stat.st_mtime_ns


def impulse_free_source(ds) -> str | None:
    """Path of a copy of ``ds`` with its impulses (hot and dead pixels) clipped, or ``None`` when there are none.

    Not in Saha & Zhu. Post is clipped on read (:class:`AlignedReader`'s ``impulse_step``), but on another
    grid it is read through a bilinear ``WarpedVRT``, which first spreads each hot pixel over up to 2 x 2 output
    pixels that no single-pixel rule finds again: 0.5 % of hot pixels in a resampled post then read as change
    in most patches. So a source with impulses in its full-resolution central crop
    (:func:`planetcd.raster.central_impulse_count`) is copied once per process with them clipped
    (:func:`planetcd.raster.write_impulse_free_copy`, into a temporary folder removed at exit), and the copy
    is resampled instead. The answer is remembered per file (path, size and modification time).
    """
    key = _file_key(ds)
    if key is not None and key in _IMPULSE_FREE:
        return _IMPULSE_FREE[key]
    read = decimated_stats(ds)
    path = None
    if central_impulse_count(ds, read):
        if not _IMPULSE_FREE_DIR:
            _IMPULSE_FREE_DIR.append(tempfile.TemporaryDirectory(prefix="planetcd-impulse-free-"))
        path = os.path.join(_IMPULSE_FREE_DIR[0].name, f"post-{len(os.listdir(_IMPULSE_FREE_DIR[0].name))}.tif")
        log.info("post has hot or dead pixels and lies on another grid: clipping them before resampling "
                 "(a temporary copy, %s)", path)
        write_impulse_free_copy(ds, path, read.stats.impulse_step, read.zero_is_data)
    if key is not None:
        _IMPULSE_FREE[key] = path
    return path


@contextlib.contextmanager
def post_on_pre_grid(pre_ds, post_ds, clip_impulses: bool = True):
    """Yield post as a dataset on pre's grid (a WarpedVRT when the grids differ).

    Bands are counted without alpha bands (:func:`planetcd.raster.data_bands`): a gray + alpha image pairs
    with a gray one. A post without nodata tag or alpha band is warped so that pre's pixels outside post's
    footprint are masked, not read as 0 (which is ground for an image whose values straddle 0,
    :func:`planetcd.raster.zeros_are_data`): with its likely fill as nodata when it has one
    (:func:`planetcd.raster.implicit_fill`: the ISIS NULL of float32, -32768 of int16, which bilinear
    resampling would otherwise smear into the ground next to it), else with an added alpha band. A post
    with hot or dead pixels is resampled from a copy with them clipped (:func:`impulse_free_source`), unless
    ``clip_impulses`` is False (a check of the pair that reads no pixels).

    Raises
    ------
    InputError
        When the band counts differ, when the sizes differ and the rasters
        cannot be put on one grid (not both georeferenced), or when both are
        georeferenced and their footprints do not overlap.
    """
    from rasterio.enums import ColorInterp

    pre_name, post_name = _name(pre_ds, "pre"), _name(post_ds, "post")
    pre_count, post_count = len(data_bands(pre_ds)), len(data_bands(post_ds))
    if pre_count != post_count:
        raise InputError(f"band counts differ: {pre_name} has {pre_count}, {post_name} has {post_count} (alpha "
                         "bands not counted); give both dates the same bands")
    relation = grid_relation(pre_ds, post_ds)
    if relation != "resampled":
        if relation == "assumed same grid":
            warnings.warn("only one image is georeferenced; assuming both share pre's grid", stacklevel=3)
        yield post_ds
        return
    if not (is_georeferenced(pre_ds) and is_georeferenced(post_ds)):
        raise InputError(
            f"images differ in size ({pre_name}: {pre_ds.width}x{pre_ds.height}, {post_name}: "
            f"{post_ds.width}x{post_ds.height}) and are not both georeferenced, so they cannot be put on one grid"
        )
    if not footprints_overlap(pre_ds, post_ds):
        raise InputError(f"footprints do not overlap: {pre_name} and {post_name} cover different ground")
    log.info("resampling post onto pre's grid (WarpedVRT, bilinear)")
    masked = post_ds.nodata is not None or ColorInterp.alpha in tuple(post_ds.colorinterp or ())
    fill = None if masked else implicit_fill(post_ds)
    fill_options = {} if fill is None else {"src_nodata": fill, "nodata": fill}
    clean = impulse_free_source(post_ds) if clip_impulses else None
    with contextlib.ExitStack() as stack:
        source = post_ds if clean is None else stack.enter_context(open_raster(clean))
        vrt = stack.enter_context(WarpedVRT(
            source,
            crs=pre_ds.crs,
            transform=pre_ds.transform,
            width=pre_ds.width,
            height=pre_ds.height,
            resampling=Resampling.bilinear,
            add_alpha=not masked and fill is None,
            **fill_options,
        ))
        yield vrt
