"""Raster input and output at the edges of planetcd.

Everything that touches a raster file lives here: opening with one-line errors,
windowed reads with a validity (nodata) mask, robust intensity scaling, and
atomic GeoTIFF writing that copies the source profile so that the CRS and the
transform carry over to every output.

Arrays are ``float32`` of shape ``(bands, rows, cols)``; masks are ``bool`` of
shape ``(rows, cols)`` and ``True`` where a pixel holds data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from .errors import InputError, OutputExistsError

PathLike = str | os.PathLike

#: Percentiles (of valid pixels) mapped to 0 and 1 by :func:`scale_intensity`.
ROBUST_PERCENTILES = (0.5, 99.5)

#: Smallest magnitude of a float fill value: ISIS special pixels (NULL -3.4028227e38, LRS, LIS, HIS, HRS) and
#: ±FLT_MAX, the nodata of map-projected float products that often reach a GeoTIFF without their nodata tag.
#: No physical value (I/F, DN, radiance) comes near it, so such pixels are missing whatever the tag says.
FLOAT_FILL_MAGNITUDE = 3.4e38
#: The ISIS NULL of 32-bit float cubes, the fill of map-projected ISIS products.
ISIS_NULL = float(np.float32(-3.4028227e38))


def implicit_fill(ds) -> float | None:
    """The fill value a raster without a nodata tag most likely holds, for resampling it without smearing it.

    ``float32``: the ISIS NULL (:data:`ISIS_NULL`); a signed integer type: its lowest value (-32768 for
    int16); otherwise (unsigned types, whose fill 0 :func:`missing_pixels` handles) ``None``. ``None`` too
    when the raster declares a nodata value.
    """
    if ds.nodata is not None:
        return None
    dtype = np.dtype(ds.dtypes[0])
    if dtype == np.float32:
        return ISIS_NULL
    if dtype.kind == "i":
        return float(np.iinfo(dtype).min)
    return None


def open_raster(path: PathLike) -> rasterio.io.DatasetReader:
    """Open a raster for reading, turning every failure into an :class:`InputError`.

    Parameters
    ----------
    path : str or path-like
        Any format GDAL reads: GeoTIFF, PNG, PGM, JPEG, JP2, ISIS cubes, PDS...

    Returns
    -------
    rasterio.io.DatasetReader
        The open dataset; close it (or use it as a context manager).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a raster that GDAL can read ({_first_line(exc)})") from None
    if ds.width < 1 or ds.height < 1 or ds.count < 1:
        ds.close()
        raise InputError(f"{path}: raster is empty")
    return ds


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_gdal_error(exc: BaseException) -> bool:
    """True for the errors rasterio raises when GDAL fails (``RasterioIOError``, ``CPLE_*``, ...)."""
    return any(cls.__module__.split(".")[0] == "rasterio" for cls in type(exc).__mro__ if cls is not object)


def read_error(ds, exc: BaseException) -> InputError:
    """A one-line :class:`InputError` naming the file for a GDAL failure while reading pixels of ``ds``."""
    detail = exc.__cause__ if exc.__cause__ is not None and "previous exception" in str(exc) else exc
    source = getattr(ds, "src_dataset", None) or ds  # a WarpedVRT names its source file
    name = str(getattr(source, "name", "") or "raster")
    return InputError(f"{name}: cannot read pixels, the file is truncated or corrupt ({_first_line(detail)})")


@contextlib.contextmanager
def read_errors_named(ds):
    """While reading pixels of ``ds``: a GDAL failure (:func:`is_gdal_error`) becomes :func:`read_error`'s one-line
    :class:`InputError`; any other error passes unchanged."""
    try:
        yield
    except Exception as exc:
        if is_gdal_error(exc):  # GDAL may fail only now, on a block past the end of a truncated file
            raise read_error(ds, exc) from None
        raise


def is_georeferenced(ds) -> bool:
    """True when the dataset has a CRS and a non-identity transform."""
    return ds.crs is not None and not ds.transform.is_identity


def data_bands(ds) -> list[int]:
    """1-based indexes of the bands of ``ds`` that hold image data: every band but alpha bands.

    An alpha band (a gray + alpha PNG, an RGBA GeoTIFF, a WarpedVRT's added alpha) is a mask, not data:
    GDAL already turns it into the mask of the other bands (:func:`read_window`'s validity). When every
    band is tagged alpha, all bands are returned.
    """
    from rasterio.enums import ColorInterp

    interp = tuple(getattr(ds, "colorinterp", ()) or ())
    bands = [i + 1 for i in range(ds.count) if i >= len(interp) or interp[i] != ColorInterp.alpha]
    return bands or list(range(1, ds.count + 1))


def pixel_to_map(transform, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ``x, y`` of pixel positions (fractional ``rows, cols``; 0.5 = a pixel centre) through an affine transform."""
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    return (transform.a * cols + transform.b * rows + transform.c, transform.d * cols + transform.e * rows + transform.f)


def read_window(
    ds,
    window: Window | None = None,
    *,
    bands: Sequence[int] | None = None,
    out_shape: tuple[int, int] | None = None,
    boundless: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window as float32 with its validity mask.

    Parameters
    ----------
    ds : rasterio dataset (or WarpedVRT)
    window : rasterio.windows.Window, optional
        Pixel window; the whole raster when omitted.
    bands : sequence of int, optional
        1-based band indexes; all data bands (:func:`data_bands`: alpha bands left out) when omitted.
    out_shape : (rows, cols), optional
        Decimated read (nearest neighbour), used for quick looks and statistics.
    boundless : bool
        Allow windows that extend past the raster; outside pixels are invalid
        (read as the intersection and padded, so WarpedVRTs work too).

    Returns
    -------
    data : ndarray, float32, shape (bands, rows, cols)
        Pixel values; invalid pixels hold 0.
    valid : ndarray, bool, shape (rows, cols)
        ``True`` where every band holds data (GDAL mask, nodata value, an alpha band's 0, NaN, float fill values of
        magnitude :data:`FLOAT_FILL_MAGNITUDE` or more, such as the ISIS NULL of a raster without nodata tag,
        and the lowest value of a signed integer type, such as int16's -32768, the nodata of HRSC products).

    Raises
    ------
    InputError
        When GDAL fails to read the pixels (a truncated or corrupt file), naming the file.
    """
    image_bands = data_bands(ds)
    indexes = list(bands) if bands is not None else image_bands
    if boundless and window is not None and out_shape is None:
        return _read_boundless(ds, window, indexes)
    alpha = [b for b in range(1, ds.count + 1) if b not in image_bands and b not in indexes]
    kwargs = {"window": window}
    alpha_kwargs = dict(kwargs)
    if out_shape is not None:
        kwargs["out_shape"] = (len(indexes), *out_shape)
        alpha_kwargs["out_shape"] = (len(alpha), *out_shape)
    with read_errors_named(ds):
        data = ds.read(indexes, masked=False, fill_value=0, **kwargs).astype(np.float32, copy=False)
        masks = ds.read_masks(indexes, **kwargs)
        if alpha:  # GDAL derives the mask from alpha for files, not for a WarpedVRT's added alpha
            masks = np.concatenate([masks, ds.read(alpha, masked=False, **alpha_kwargs)])
    return _as_read(ds, data, masks, indexes)


def _as_read(ds, data: np.ndarray, masks: np.ndarray, indexes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_window`'s ``(data, valid)`` of float32 ``data`` read from bands ``indexes`` of ``ds``, given
    ``masks``: GDAL's masks of those bands, then the values of the alpha bands not among them. ``data`` is
    changed in place (its invalid pixels set to 0)."""
    with np.errstate(invalid="ignore"):
        valid = np.all(masks > 0, axis=0) & np.all(np.abs(data) < FLOAT_FILL_MAGNITUDE, axis=0)  # NaN fails too
    for k, index in enumerate(indexes):  # a signed integer band's lowest value is its fill (-32768 for int16)
        dtype = np.dtype(ds.dtypes[index - 1])
        if dtype.kind == "i":
            valid &= data[k] != np.float32(np.iinfo(dtype).min)
    data[:, ~valid] = 0.0
    return data, valid


def _read_boundless(ds, window: Window, indexes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may extend past the raster (works on WarpedVRTs, which refuse boundless reads)."""
    row0, col0 = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    data = np.zeros((len(indexes), height, width), np.float32)
    valid = np.zeros((height, width), bool)
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + height, ds.height), min(col0 + width, ds.width)
    if r1 > r0 and c1 > c0:
        part, part_valid = read_window(ds, Window(c0, r0, c1 - c0, r1 - r0), bands=indexes)
        data[:, r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = part
        valid[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = part_valid
    return data, valid


#: A float fill pixel (:data:`FLOAT_FILL_MAGNITUDE`) that takes part, at any weight down to 1e-8 of an output
#: pixel, in an area-average read (:func:`read_average`) leaves at least this magnitude: no physical value
#: comes near it either.
AVERAGED_FILL_MAGNITUDE = FLOAT_FILL_MAGNITUDE * 1e-8


def read_average(ds, band: int, out_shape: tuple[int, int]) -> np.ma.MaskedArray:
    """A band read decimated by GDAL's area average, masked where it holds no ground.

    Masked: GDAL's mask (the nodata tag, an alpha band); the likely fill of a band without either
    (:func:`implicit_fill`: the ISIS NULL of float32, -32768 of int16), which takes no part in the average,
    as a tagged nodata; and output pixels of a float band that another float fill pixel fed (magnitude
    :data:`AVERAGED_FILL_MAGNITUDE` or more, or not finite): an ISIS LRS, LIS, HIS or HRS pixel, which no tag
    covers. Either would otherwise read as present, extremely dark ground.

    Parameters
    ----------
    ds : rasterio dataset opened from a file
    band : int
        1-based band index.
    out_shape : (rows, cols)

    Returns
    -------
    numpy.ma.MaskedArray, float32, shape ``out_shape``
    """
    from rasterio.enums import MaskFlags, Resampling

    fill = implicit_fill(ds)
    if fill is not None and MaskFlags.all_valid in ds.mask_flag_enums[band - 1]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(_nodata_vrt(ds, band, fill)) as vrt:
                return read_average(vrt, 1, out_shape)
    read = ds.read(band, out_shape=tuple(out_shape), resampling=Resampling.average, masked=True).astype(np.float32)
    if np.dtype(ds.dtypes[band - 1]).kind == "f":
        with np.errstate(invalid="ignore"):
            fed = ~(np.abs(read.data) < AVERAGED_FILL_MAGNITUDE)
        read.mask = np.ma.getmaskarray(read) | fed
    return read


def _nodata_vrt(ds, band: int, nodata: float) -> str:
    """A VRT document of one band of the file of ``ds`` that declares ``nodata``."""
    from xml.sax.saxutils import escape

    gdal_type = {"int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64", "float32": "Float32",
                 "float64": "Float64"}[ds.dtypes[band - 1]]
    return (f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><VRTRasterBand dataType="{gdal_type}" '
            f'band="1"><NoDataValue>{nodata!r}</NoDataValue><SimpleSource><SourceFilename relativeToVRT="0">'
            f'{escape(str(ds.name))}</SourceFilename><SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>'
            '</VRTDataset>')


def central_window(height: int, width: int, size: int) -> Window:
    """The central window of at most ``size`` x ``size`` pixels."""
    h, w = min(height, size), min(width, size)
    return Window((width - w) // 2, (height - h) // 2, w, h)


def overview_shape(height: int, width: int, max_pixels: int = 2_000_000) -> tuple[int, int]:
    """Shape of a decimated read holding at most ``max_pixels`` pixels."""
    factor = max(1.0, float(np.sqrt(height * width / max_pixels)))
    return max(1, int(round(height / factor))), max(1, int(round(width / factor)))


def robust_range(
    data: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = ROBUST_PERCENTILES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band low and high percentiles of the valid pixels.

    Parameters
    ----------
    data : ndarray, shape (bands, rows, cols)
    valid : ndarray of bool, shape (rows, cols)

    Returns
    -------
    low, high : ndarray, float32, shape (bands,)
        ``high > low`` always holds (a flat band gets ``high = low + 1``).

    Raises
    ------
    InputError
        When no pixel is valid.
    """
    if not np.any(valid):
        raise InputError("image has no valid pixels (all nodata)")
    values = band_values(data, valid)
    low, high = np.percentile(values, percentiles, axis=1).astype(np.float32)
    flat = ~(high > low)
    high[flat] = low[flat] + 1.0
    return low, high


def missing_pixels(data: np.ndarray, valid: np.ndarray | None = None, nodata: float | None = None,
                   zero_is_data: bool = False) -> np.ndarray:
    """The one missing-pixel rule of planetcd: where a pixel holds no ground.

    A pixel is missing when it lies outside ``valid`` (the GDAL mask of
    :func:`read_window`, which covers the nodata tag and NaN), is not finite,
    equals ``nodata``, is a float fill value (magnitude :data:`FLOAT_FILL_MAGNITUDE`
    or more: ISIS special pixels, ±FLT_MAX), or is exactly 0 in any band (the fill of CTX,
    HRSC and LROC products and of map-projected footprints whose nodata is not declared)
    unless ``zero_is_data`` (an image whose values straddle 0, where 0 is no fill: :func:`zeros_are_data`).

    Parameters
    ----------
    data : ndarray, shape (bands, rows, cols) or (rows, cols)
    valid : ndarray of bool, shape (rows, cols), optional
    nodata : float, optional
    zero_is_data : bool
        0 is an ordinary value of this image (signed data around 0), not its fill.

    Returns
    -------
    ndarray of bool, shape (rows, cols)
        ``True`` where the pixel is missing.
    """
    data = np.asarray(data)
    stack = data[None] if data.ndim == 2 else data
    with np.errstate(invalid="ignore"):
        ok = np.abs(stack) < FLOAT_FILL_MAGNITUDE  # False for NaN and ±inf too
    if not zero_is_data:
        ok &= stack != 0
    ok = np.all(ok, axis=0)
    if nodata is not None and np.isfinite(nodata):
        ok &= np.all(stack != nodata, axis=0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    return ~ok


#: A value that 0 outnumbers this many times over its nearest neighbours in the histogram is a fill
#: (:func:`zeros_are_data`).
ZERO_SPIKE = 3.0


def zeros_are_data(data: np.ndarray, valid: np.ndarray | None = None, nodata: float | None = None) -> bool:
    """Whether 0 is an ordinary value of an image rather than its fill (:func:`missing_pixels`).

    True when the present values straddle 0 (some negative, some positive: a DN offset removed, an
    int16 product with negative values, a difference image) and 0 is no spike in their histogram: it
    holds at most :data:`ZERO_SPIKE` times the mean count of the nearest negative and the nearest
    positive value. A fill is a spike (a collar of zeros among continuous float values, or among
    integers), so it stays missing; unsigned and positive data — every CTX, HRSC, LROC DN image —
    keep 0 as fill.

    Parameters
    ----------
    data : ndarray, shape (bands, rows, cols) or (rows, cols)
        A (decimated) read of the whole image.
    valid, nodata
        As :func:`missing_pixels`.

    Returns
    -------
    bool
    """
    data = np.asarray(data)
    stack = data[None] if data.ndim == 2 else data
    values = stack[:, ~missing_pixels(stack, valid, nodata, zero_is_data=True)].ravel()
    negative, positive = values[values < 0], values[values > 0]
    if not len(negative) or not len(positive):
        return False
    zeros = np.count_nonzero(values == 0)
    neighbours = (np.count_nonzero(values == negative.max()) + np.count_nonzero(values == positive.min())) / 2
    return bool(zeros <= ZERO_SPIKE * max(neighbours, 1.0))


def saturated_pixels(data: np.ndarray, missing: np.ndarray, dtype) -> np.ndarray:
    """Where an integer band holds its saturation: its highest present value, when the present pixels pile up
    there (more than :data:`ZERO_SPIKE` times the count of the next lower value): a clipped bright slope, a
    saturated plateau, the hot pixels of a 12-bit product (4095). ``False`` everywhere for float bands.

    Parameters
    ----------
    data : ndarray, shape (rows, cols)
        A (decimated) read of the band.
    missing : ndarray of bool, shape (rows, cols)
        As :func:`missing_pixels`.
    dtype
        The band's data type in the file.
    """
    out = np.zeros(data.shape, bool)
    values = data[~missing]
    if np.dtype(dtype).kind not in "ui" or not values.size:
        return out
    top = values.max()
    below = values[values < top]
    if not below.size or np.count_nonzero(values == top) <= ZERO_SPIKE * np.count_nonzero(values == below.max()):
        return out
    return (data == top) & ~missing


@dataclass(frozen=True)
class IntensityStats:
    """Robust intensity statistics of one image, per band: the one home of both network scalings.

    Attributes
    ----------
    low, high : ndarray, float32, shape (bands,)
        The :data:`ROBUST_PERCENTILES` of the present pixels (``high > low`` always).
    mean : ndarray, float64, shape (bands,)
        Mean raw value of the present pixels (the crater UNet's fill value).
    unit_mean : ndarray, float32, shape (bands,)
        Mean of the present pixels after :meth:`unit` (the VGG trunk's fill value).
    impulse_step : ndarray, float32, shape (bands,), or None
        Raw step by which a pixel must stand out of its neighbours to be clipped as an impulse before
        :meth:`unit` (:func:`impulse_steps`, :func:`suppress_impulses`); None: no clipping.
    """

    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    unit_mean: np.ndarray
    impulse_step: np.ndarray | None = None

    def unit(self, data: np.ndarray) -> np.ndarray:
        """``low..high`` → ``0..1`` (clipped), per band: the VGG trunk's input range. Shape kept, float32."""
        return scale_intensity(data, self.low, self.high)

    def signed(self, data: np.ndarray, band: int = 0) -> np.ndarray:
        """``low..high`` of ``band`` (0-based) → ``-1..1`` (clipped): DeLatte et al.'s UNet input range."""
        low, high = float(self.low[band]), float(self.high[band])
        scaled = (np.asarray(data, np.float32) - np.float32(low)) / np.float32(high - low)
        return np.clip(scaled, 0.0, 1.0) * 2.0 - 1.0


def band_values(stack: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``stack[:, where]``: the values ``(bands, n)`` of the pixels ``where`` (rows, cols) holds, in raster order.

    One band (the usual case) is indexed as a 2-D array, which numpy does about ten times faster than the
    mixed slice-and-mask index: the same values in the same layout, so the same statistics to the last bit.
    Several bands keep ``stack[:, where]`` (numpy lays that copy out band-interleaved, and a mean's summation
    order follows the layout)."""
    if stack.shape[0] == 1:
        return stack[0][where][None]
    return stack[:, where]


def intensity_stats(data: np.ndarray, missing: np.ndarray, percentiles: tuple[float, float] = ROBUST_PERCENTILES,
                    max_values: int | None = None) -> IntensityStats:
    """:class:`IntensityStats` of the present pixels of an array.

    Parameters
    ----------
    data : ndarray, shape (bands, rows, cols) or (rows, cols)
    missing : ndarray of bool, shape (rows, cols)
        As :func:`missing_pixels`.
    max_values : int, optional
        Decimate the present pixels to about this many (for big in-memory images).

    Raises
    ------
    InputError
        When no pixel is present.
    """
    data = np.asarray(data, np.float32)
    stack = data[None] if data.ndim == 2 else data
    present = ~np.asarray(missing, bool)
    if not np.any(present):
        raise InputError("image has no valid pixels (all nodata, NaN or zero)")
    # One band with every pixel present (the segmenter's usual case): the raster-order view, no boolean-indexed
    # copies; the same values in the same order, so the same statistics. (With several bands numpy lays the
    # indexed copy out band-interleaved, and the mean's summation order, so its last bits, would differ.)
    everywhere = stack.shape[0] == 1 and bool(present.all())

    def present_values(array: np.ndarray) -> np.ndarray:
        return array.reshape(array.shape[0], -1) if everywhere else band_values(array, present)

    def moments(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = present_values(array)
        if max_values is not None and values.shape[1] > max_values:
            values = values[:, :: values.shape[1] // max_values]
        low, high = np.percentile(values, percentiles, axis=1).astype(np.float32)
        flat = ~(high > low)
        high[flat] = low[flat] + 1.0
        return low, high, values.mean(axis=1).astype(np.float64)

    low, high, mean = moments(stack)
    steps = crop_impulse_steps(stack, present, low, high)
    # Impulses (hot pixels) are no part of the image's range: 0.5 % of them at a 10-bit product's 1023 held its
    # 99.5 percentile and squeezed the ground into a fifth of the scale. Without them, the statistics again.
    clipped, n_impulses = suppress_impulses(stack, steps, present)
    if n_impulses:
        stack = clipped
        low, high, mean = moments(stack)
        steps = crop_impulse_steps(stack, present, low, high)
    unit_mean = present_values(scale_intensity(stack, low, high)).mean(axis=1)
    return IntensityStats(low, high, mean, unit_mean.astype(np.float32), steps)


def dataset_stats(ds, bands: Sequence[int] | None = None, max_pixels: int = 2_000_000) -> IntensityStats:
    """:class:`IntensityStats` of a dataset from a decimated read of at most ``max_pixels`` pixels.

    0 counts as a value when the read's zeros are data (:func:`zeros_are_data`: signed data around 0), as the
    fill otherwise (:func:`missing_pixels`).

    Raises
    ------
    InputError
        When no pixel is present (all nodata, NaN or zero), naming the file.
    """
    return decimated_stats(ds, bands, max_pixels).stats


@dataclass(frozen=True)
class DecimatedRead:
    """A decimated read of a dataset and the statistics measured on it (:func:`decimated_stats`).

    Attributes
    ----------
    data : ndarray, float32, shape (bands, h, w)
    missing : ndarray of bool, shape (h, w)
        Pixels holding no ground (:func:`missing_pixels`).
    zero_is_data : bool
        0 is a value of this image, not its fill (:func:`zeros_are_data`).
    stats : IntensityStats
        Of the present pixels, with the impulse steps of the full-resolution central crop
        (:func:`dataset_impulse_steps`).
    crop : ndarray, float32, shape (bands, rows, cols), optional
        That central crop (:data:`IMPULSE_CROP` px, read as :func:`read_window` reads) when the read was of all
        data bands, so that :func:`central_impulse_count` need not read it again; ``None`` otherwise.
    crop_present : ndarray of bool, shape (rows, cols), optional
        Where ``crop`` holds ground (:func:`missing_pixels`, with ``zero_is_data``); ``None`` with ``crop``.
    """

    data: np.ndarray
    missing: np.ndarray
    zero_is_data: bool
    stats: IntensityStats
    crop: np.ndarray | None = None
    crop_present: np.ndarray | None = None


def decimated_stats(ds, bands: Sequence[int] | None = None, max_pixels: int = 2_000_000,
                    name: str | None = None) -> DecimatedRead:
    """The one decimated read behind an image's statistics (:func:`dataset_stats`, and the overview of
    :func:`planetcd.change.preparation.image_overview`): at most ``max_pixels`` pixels, whether 0 is data
    decided on it, :func:`intensity_stats` of its present pixels, the impulse steps at full resolution (on the
    central crop, kept in the result when ``bands`` is omitted, for :func:`central_impulse_count`).

    Raises
    ------
    InputError
        When no pixel is present (all nodata, NaN or zero), naming ``name`` (default: the file).
    """
    data, valid = read_window(ds, bands=bands, out_shape=overview_shape(ds.height, ds.width, max_pixels))
    zero_is_data = zeros_are_data(data, valid, ds.nodata)
    missing = missing_pixels(data, valid, ds.nodata, zero_is_data)
    if missing.all():
        raise InputError(f"{name or ds.name}: image has no valid pixels (all nodata, NaN or zero)")
    stats = intensity_stats(data, missing)
    # Not in Saha & Zhu: the steps of the impulses (hot and dead pixels) the readers clip, from the noise at
    # full resolution (a decimated read averages noise, not hot pixels, away).
    crop, present = _central_crop(ds, bands, zero_is_data)
    stats = _with_crop_steps(stats, crop, present)
    if bands is not None:  # central_impulse_count reads all data bands
        crop = present = None
    return DecimatedRead(data, missing, zero_is_data, stats, crop, present)


#: Side (px) of the full-resolution central crop whose noise sets an image's impulse steps
#: (:func:`crop_impulse_steps`, :func:`dataset_impulse_steps`).
IMPULSE_CROP = 512


def crop_impulse_steps(data: np.ndarray, present: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """:func:`impulse_steps` of a full-resolution ``(bands, rows, cols)`` array, on its central crop of
    :data:`IMPULSE_CROP` px with the missing pixels (``present`` False) at each band's mean, so that the edge
    of a fill is no noise. Float32 ``(bands,)``."""
    rows, cols = central_window(*data.shape[-2:], IMPULSE_CROP).toslices()
    crop = np.asarray(data[..., rows, cols], np.float32)
    crop = crop[None] if crop.ndim == 2 else crop
    seen = np.asarray(present, bool)[rows, cols]
    if seen.any() and not seen.all():
        crop = fill_invalid(crop, seen, crop[:, seen].mean(axis=1))
    return impulse_steps(crop, low, high)


def dataset_impulse_steps(ds, stats: IntensityStats, bands: Sequence[int] | None = None,
                          zero_is_data: bool = False) -> IntensityStats:
    """``stats`` with its :attr:`~IntensityStats.impulse_step` measured on the dataset at full resolution (a
    decimated read averages noise, not hot pixels, away): :func:`crop_impulse_steps` of its central crop."""
    return _with_crop_steps(stats, *_central_crop(ds, bands, zero_is_data))


def _central_crop(ds, bands: Sequence[int] | None, zero_is_data: bool) -> tuple[np.ndarray, np.ndarray]:
    """The full-resolution central crop (:data:`IMPULSE_CROP` px) of ``ds``, as :func:`read_window` reads it,
    and where it holds ground (:func:`missing_pixels`)."""
    crop, valid = read_window(ds, central_window(ds.height, ds.width, IMPULSE_CROP), bands=bands)
    return crop, ~missing_pixels(crop, valid, ds.nodata, zero_is_data)


def _with_crop_steps(stats: IntensityStats, crop: np.ndarray, present: np.ndarray) -> IntensityStats:
    """``stats`` with the impulse steps of a central crop (:func:`dataset_impulse_steps`)."""
    from dataclasses import replace

    if not present.any():  # the central crop is fill: keep the steps of the data the statistics came from
        return stats
    return replace(stats, impulse_step=crop_impulse_steps(crop, present, stats.low, stats.high))


def scale_intensity(data: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map ``low..high`` to ``0..1`` per band and clip; shape is kept, float32."""
    low = np.asarray(low, np.float32).reshape(-1, 1, 1)
    high = np.asarray(high, np.float32).reshape(-1, 1, 1)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32, copy=False)


#: A pixel is an impulse (:func:`suppress_impulses`) when it stands out of its neighbours by more than this many
#: times the image's noise level (:func:`impulse_steps`): white noise never does (the odds are below 1e-20), a hot
#: pixel of a 12-bit product does by hundreds.
IMPULSE_NOISE_FACTOR = 10.0
#: ... and by more than this share of the image's robust range (``low..high``), so that an image with almost no
#: noise (an 8-bit product whose flat ground is one value) keeps its sharp single-pixel details.
IMPULSE_RANGE_SHARE = 0.5
#: Neighbour (of 8) a pixel is compared with: the 3rd brightest (darkest), so a hot pixel, a pair and a line of
#: them one pixel wide are caught, and a feature of three or more pixels around the centre is left alone.
IMPULSE_RANK = 3


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of white noise in a ``(rows, cols)`` image (Immerkær 1996, fast estimate), in its units."""
    from scipy import ndimage

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    response = ndimage.convolve(np.asarray(image, np.float64), kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).mean() / 6.0) if response.size else 0.0


def impulse_steps(data: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per band, the step (in the data's units) by which a pixel must stand out of its neighbours to be an
    impulse: the larger of :data:`IMPULSE_NOISE_FACTOR` x the band's noise (:func:`noise_sigma` of ``data``,
    a full-resolution read: decimation averages noise away) and :data:`IMPULSE_RANGE_SHARE` x ``high - low``.
    ``data``: ``(bands, rows, cols)`` or ``(rows, cols)``; returns float32 ``(bands,)``."""
    stack = np.asarray(data, np.float32)
    stack = stack[None] if stack.ndim == 2 else stack
    noise = np.array([noise_sigma(np.nan_to_num(band)) for band in stack], np.float32)
    spread = np.broadcast_to(np.asarray(high, np.float32) - np.asarray(low, np.float32), noise.shape)
    return np.maximum(IMPULSE_NOISE_FACTOR * noise, IMPULSE_RANGE_SHARE * spread).astype(np.float32)


def suppress_impulses(image: np.ndarray, steps, valid: np.ndarray | None = None,
                      rank: int = IMPULSE_RANK) -> tuple[np.ndarray, int]:
    """Clip the impulses of an image: hot and dead pixels, cosmic-ray hits, a line of them.

    A pixel is an impulse when it is brighter than the ``rank``-th brightest of its 8 neighbours by more than
    its band's ``step`` (or darker than the ``rank``-th darkest by as much); it is set to that neighbour's value.
    Ground seen through a camera's point-spread function makes no such step, a hot pixel does; at different
    places on two dates hot pixels read as change in every patch they fell in (0.1 % of hot pixels in a
    12-bit pair raised τ over a new crater's score). A rule on each pixel and its neighbours, with steps fixed
    per image (:func:`impulse_steps`), so every tile and window of an image gets the same answer.

    Parameters
    ----------
    image : ndarray, shape (rows, cols) or (bands, rows, cols)
        Raw intensities (before scaling: clipping to a range would hide how far a hot pixel stands out).
    steps : float or array of shape (bands,)
        Least step per band, in the image's units (:func:`impulse_steps`).
    valid : ndarray of bool, shape (rows, cols), optional
        Pixels holding ground; only they are changed and only they serve as neighbours' stand-ins
        (the others may hold anything, so they are set to the pixel's own value first).
    rank : int
        Which neighbour, 1..8 (default :data:`IMPULSE_RANK`).

    Returns
    -------
    image : ndarray, same shape
        A copy with the impulses clipped (the input itself when there is none).
    n_impulses : int
        Pixels changed (over all bands).
    """
    from scipy import ndimage

    data = np.asarray(image)
    if data.ndim == 2:
        out, n = suppress_impulses(data[None], steps, valid, rank)
        return (out[0] if n else data), n
    if not 1 <= rank <= 8:
        raise ValueError(f"rank must be 1..8, got {rank}")
    steps = np.broadcast_to(np.asarray(steps, np.float64), (data.shape[0],))
    out, total = data, 0
    for b, band in enumerate(data):
        step = float(steps[b])
        if not np.isfinite(step) or step <= 0:
            continue
        work = band.astype(np.float32, copy=False)
        if valid is not None and not valid.all():
            work = np.where(valid, work, np.float32(0))
        if not np.isfinite(work).all():
            work = np.nan_to_num(work)
        # A cheap necessary condition first: an impulse whose brighter-or-equal neighbours (at most rank - 1) are
        # no brighter than it (the hot pixels of one product saturate alike) is this far from its 3 x 3 mean.
        local = ndimage.uniform_filter(work, 3, mode="nearest")
        local -= work
        candidate = np.abs(local, out=local) > np.float32(step * (9 - 2 * (rank - 1)) / 9 * 0.999)
        if valid is not None:
            candidate &= valid
        if not candidate.any():
            continue
        rows, cols = np.nonzero(candidate)
        padded = np.pad(work, 1, mode="edge")
        pad_valid = None if valid is None else np.pad(valid, 1, mode="edge")
        stack = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    values = padded[rows + 1 + dy, cols + 1 + dx]
                    if pad_valid is not None:  # a neighbour without ground stands in as the pixel itself
                        values = np.where(pad_valid[rows + 1 + dy, cols + 1 + dx], values, work[rows, cols])
                    stack.append(values)
        neighbours = np.sort(np.stack(stack, axis=1), axis=1)
        value = work[rows, cols]
        high, low = neighbours[:, 8 - rank], neighbours[:, rank - 1]
        hot, dead = value - high > step, low - value > step
        if not (hot.any() or dead.any()):
            continue
        if out is data:
            out = data.copy()
        out[b, rows[hot], cols[hot]] = high[hot]
        out[b, rows[dead], cols[dead]] = low[dead]
        total += int(hot.sum() + dead.sum())
    return out, total


#: Rows per strip of :func:`write_impulse_free_copy` (one strip and its two halo rows are in memory at a time).
IMPULSE_COPY_ROWS = 512


def central_impulse_count(ds, read: DecimatedRead) -> int:
    """How many impulses (:func:`suppress_impulses`, at the steps of ``read``) the full-resolution central crop
    (:data:`IMPULSE_CROP` px) of ``ds`` holds, over its data bands.

    ``read`` is :func:`decimated_stats` of ``ds``; the crop it holds (:attr:`DecimatedRead.crop`, the one its
    impulse steps were measured on) is counted, and read from ``ds`` only when it holds none.
    """
    if read.crop is not None and read.crop_present is not None:
        crop, present = read.crop, read.crop_present
    else:
        crop, present = _central_crop(ds, None, read.zero_is_data)
    return suppress_impulses(crop, read.stats.impulse_step, present)[1] if present.any() else 0


def write_impulse_free_copy(ds, path: str | os.PathLike, steps: np.ndarray, zero_is_data: bool = False) -> int:
    """Write a GeoTIFF copy of ``ds`` with the impulses of its data bands clipped (:func:`suppress_impulses`).

    The copy keeps the grid, CRS, data type, nodata, band kinds (alpha) and a per-dataset mask, so it can
    stand in for ``ds`` wherever ``ds`` would be resampled: a resampling spreads each hot pixel over its
    neighbours, after which no rule on single pixels finds it. Read (each strip once, all bands) and written in
    strips of :data:`IMPULSE_COPY_ROWS` rows (with one halo row each side, so every pixel sees its 8 neighbours).

    Parameters
    ----------
    ds : rasterio dataset opened from a file
    path : path of the GeoTIFF to write
    steps : ndarray of shape (data bands,)
        Impulse steps in ``ds``'s units (:attr:`IntensityStats.impulse_step`).
    zero_is_data : bool
        0 is a value of ``ds``, not its fill (:func:`zeros_are_data`).

    Returns
    -------
    int
        Pixels clipped (over all bands).
    """
    from rasterio.enums import ColorInterp, MaskFlags

    bands = data_bands(ds)
    alpha = any(c == ColorInterp.alpha for c in tuple(ds.colorinterp or ()))
    dataset_mask = ds.nodata is None and not alpha and any(MaskFlags.per_dataset in f for f in ds.mask_flag_enums)
    profile = {"driver": "GTiff", "width": ds.width, "height": ds.height, "count": ds.count,
               "dtype": ds.dtypes[0], "crs": ds.crs, "transform": ds.transform, "nodata": ds.nodata,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER"}
    others = [b for b in range(1, ds.count + 1) if b not in bands]  # the alpha bands
    total = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.colorinterp = ds.colorinterp
        for row in range(0, ds.height, IMPULSE_COPY_ROWS):
            top, bottom = max(row - 1, 0), min(row + IMPULSE_COPY_ROWS + 1, ds.height)
            strip = Window(0, top, ds.width, bottom - top)
            with read_errors_named(ds):  # the strip's pixels are read once: written as read, and as read_window reads
                raw = ds.read(window=strip)
                masks = ds.read_masks(bands, window=strip)
            if others:
                masks = np.concatenate([masks, raw[[b - 1 for b in others]]])
            data, valid = _as_read(ds, raw[[b - 1 for b in bands]].astype(np.float32, copy=False), masks, bands)
            present = ~missing_pixels(data, valid, ds.nodata, zero_is_data)
            clipped, n = suppress_impulses(data, steps, present)
            inner = slice(row - top, row - top + min(IMPULSE_COPY_ROWS, ds.height - row))
            if n:
                changed = clipped != data
                for k, band in enumerate(bands):
                    raw[band - 1][changed[k]] = clipped[k][changed[k]].astype(raw.dtype)
                total += int(np.count_nonzero(changed[:, inner]))  # the halo rows are another strip's
            out = Window(0, row, ds.width, inner.stop - inner.start)
            dst.write(raw[:, inner], window=out)
            if dataset_mask:
                dst.write_mask(ds.dataset_mask(window=strip)[inner], window=out)
    return total


def map_distinct_bands(fn, bands: np.ndarray) -> np.ndarray:
    """``fn`` applied to each band of ``(bands, rows, cols)``, stacked; a band that copies an earlier one
    (a gray image as RGB, :func:`to_three_bands`) is computed once and copied."""
    out: list[np.ndarray] = []
    for b, band in enumerate(bands):
        same = next((k for k in range(b) if np.array_equal(bands[k], band)), None)
        out.append(out[same] if same is not None else fn(band))
    return np.stack(out)


def to_three_bands(data: np.ndarray) -> np.ndarray:
    """Make a 3-band image for ImageNet networks.

    One band is repeated; two bands are averaged then repeated; three or more
    bands keep the first three (``(3, rows, cols)`` float32 out).
    """
    if data.shape[0] == 3:
        return data
    if data.shape[0] > 3:
        return data[:3]
    gray = data.mean(axis=0, keepdims=True) if data.shape[0] == 2 else data
    return np.repeat(gray, 3, axis=0)


def fill_invalid(data: np.ndarray, valid: np.ndarray, value: float | np.ndarray | None = None) -> np.ndarray:
    """Replace invalid pixels by ``value`` (default: the mean of the valid pixels, per band)."""
    if np.all(valid):
        return data
    out = data.copy()
    if value is None:
        value = band_values(data, valid).mean(axis=1) if np.any(valid) else np.zeros(data.shape[0], np.float32)
    value = np.broadcast_to(np.asarray(value, np.float32), (data.shape[0],))
    for band in range(data.shape[0]):
        out[band][~valid] = value[band]
    return out


# --------------------------------------------------------------------------- outputs


def check_writable(paths: Sequence[PathLike], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if any output exists and ``overwrite`` is false."""
    if overwrite:
        return
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"{existing[0]} exists{more}")


def check_output_places(files: Sequence[PathLike] = (), folders: Sequence[PathLike] = ()) -> None:
    """Raise :class:`~planetcd.errors.InputError` when an output could not be written where it is asked for.

    Checked before any work, so that a long run does not end in a traceback at
    its first write: a file output must not be a folder, a folder output must
    not be a file, and the nearest existing folder above each must be writable
    by this process. Nothing is created.

    Parameters
    ----------
    files : sequence of str or os.PathLike
        Output files (``--json``, ``--scores``, ...).
    folders : sequence of str or os.PathLike
        Output folders (``-o OUTDIR``); missing ones are created later by the writers.
    """
    for path, folder in [(Path(p), False) for p in files] + [(Path(p), True) for p in folders]:
        if folder and path.exists() and not path.is_dir():
            raise InputError(f"cannot write into {path}: it is a file, not a folder")
        if not folder and path.is_dir():
            raise InputError(f"cannot write {path}: it is a folder")
        place = path if folder and path.is_dir() else path.parent
        while not place.exists() and place != place.parent:
            place = place.parent
        if not place.is_dir():
            raise InputError(f"cannot write {path}: {place} is a file, not a folder")
        if not os.access(place, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {path}: the folder {place} is not writable")


@contextlib.contextmanager
def removed_on_failure(files: Sequence[PathLike], folders: Sequence[PathLike] = ()) -> Iterator[None]:
    """On any failure (exception, interrupt) inside the block, remove those of ``files`` that did not exist
    before it, and those of ``folders`` it created that are left empty: the same command then works again,
    without ``--overwrite``, once the cause is fixed. Files that existed before are left as they are."""
    new_files = [Path(f) for f in files if not Path(f).exists()]
    new_folders = [Path(d) for d in folders if not Path(d).exists()]
    try:
        yield
    except BaseException:
        for path in new_files:
            path.unlink(missing_ok=True)
        for folder in sorted(new_folders, key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A failure (exception, interrupt) removes the temporary file, so an output
    is either complete or absent, never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # GDAL and pyogrio want to create the file themselves
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(str(tmp) + ".aux.xml")):
            if leftover.exists():
                leftover.unlink()


def geotiff_profile(source_profile: dict, *, dtype: str, count: int = 1, nodata=None) -> dict:
    """A tiled, compressed GeoTIFF profile that keeps the source's CRS, transform and size."""
    profile = {
        "driver": "GTiff",
        "width": source_profile["width"],
        "height": source_profile["height"],
        "count": count,
        "dtype": dtype,
        "crs": source_profile.get("crs"),
        "transform": source_profile.get("transform"),
        "nodata": nodata,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    if profile["width"] < 256 or profile["height"] < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    if dtype.startswith("float"):
        profile["predictor"] = 3
    return profile


@contextlib.contextmanager
def geotiff_writer(path: PathLike, profile: dict) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a GeoTIFF for (windowed) writing; it appears at ``path`` only when complete."""
    with atomic_output(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                yield dst


def write_geotiff(path: PathLike, array: np.ndarray, source_profile: dict, *, nodata=None) -> None:
    """Write a whole ``(rows, cols)`` or ``(bands, rows, cols)`` array on the source grid, atomically."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    profile = geotiff_profile(source_profile, dtype=array.dtype.name, count=array.shape[0], nodata=nodata)
    with geotiff_writer(path, profile) as dst:
        dst.write(array)
