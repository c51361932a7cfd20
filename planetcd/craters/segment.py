"""Crater segmentation: the one engine from an image to a crater probability map, a mask and a catalogue.

Two functions do the work, and every caller (:func:`segment`, ``planetcd
segment``, :func:`planetcd.monitor.monitor`, on one process or a Dask cluster)
uses them:

* :func:`window_probability` segments one in-memory window already prepared
  for the network (:func:`prepare_window`): overlapping tiles of at most
  ``tile_size`` pixels, blended with :func:`planetcd.tiling.blend_weights` so
  tile seams leave no mark.
* :func:`run_blocks` maps a block function over the halo blocks of
  :func:`planetcd.tiling.halo_tiles` through a runner
  (:class:`planetcd.runners.LocalRunner` by default,
  ``planetcd.distributed.DaskRunner`` on a cluster) and yields the results in
  block order; :func:`segment_block` is the block function of one image.

The sun: :func:`canonical_probability` is the one place where a window is
turned so that its light comes from the left (the canonical frame of
:mod:`planetcd.craters.sun`), segmented, and its probability turned back; it is
used for models whose metadata says ``sun_aware: true``, with the azimuth given
(``sun_azimuth=``) or estimated (:func:`resolve_sun`). Extraction, blocks and
writers always work on the input grid.

Intensities are scaled with statistics of the whole image
(:func:`planetcd.raster.dataset_stats`: the 0.5 and 99.5 percentiles of a
decimated read, as in training) to ``-1..1``; missing pixels
(:func:`planetcd.raster.missing_pixels`) are filled with the present ground mirrored across its
edge (far from it, the local mean turning into the image mean: :func:`mirror_fill`), before the
network sees them.

Memory: a block is segmented in memory, about 30 bytes per pixel of its window
(core and halo): raw, prepared, accumulated and blended float32 planes and
masks (about as much again, for a moment, when some of its pixels are missing:
:func:`mirror_fill`). The default block of :data:`DEFAULT_BLOCK_SIZE` px holds an ordinary CTX
tile (up to 8192 px a side, ~2 GB) in one block, so that its probability is
exactly the whole-image tiled pass; bigger images are cut into blocks whose
halo of ``block_halo`` px gives the network its context across block borders.
The :class:`SegmentResult` holds the whole probability map (4 bytes per pixel).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from ..errors import InputError
from ..precision import autocast, precision_record, resolve_precision
from ..inputs import check_array, check_raster
from ..raster import (
    IntensityStats, atomic_output, check_writable, dataset_stats, intensity_stats, is_georeferenced, missing_pixels,
    open_raster, overview_shape, read_average, read_window, saturated_pixels, suppress_impulses, write_geotiff,
    zeros_are_data,
)
from ..jsonio import json_text
from ..runners import LocalRunner, Runner, resolve_runner
from ..tiling import Tile, blend_weights, halo_tiles, overlapping_tiles
from .catalog import Catalog
from .extract import crater_threshold, extraction_options
from .sun import FALLBACK_AZIMUTH_DEG, canonical_frame, estimate_sun_azimuth, to_canonical

log = logging.getLogger("planetcd.craters.segment")

__all__ = [
    "MIN_SIZE", "MAX_SCALE", "DEFAULT_BLOCK_SIZE", "OUTPUTS", "SegmentResult", "segment", "prepare_window", "mirror_fill", "nearest_present",
    "local_mean",
    "window_probability", "canonical_probability", "parse_sun_azimuth", "image_sun_estimate", "resolve_sun",
    "window_tiles", "predict_tiles", "segment_block", "read_prepared", "image_stats", "run_blocks", "image_probability", "pixel_size_of",
    "merge_scales", "multiscale_craters", "magnified_craters", "catalog_craters", "verify_catalog", "parse_scales", "scale_craters", "scale_min_radius",
    "verifier_pyramid", "centre_missing",
    "read_scaled", "gdal_resample", "resample_array", "read_band", "band_zeros_are_data",
    "PRESENT_ZERO",
]

#: Smallest image side (pixels) that is segmented.
MIN_SIZE = 16
#: Smallest network tile side (pixels).
MIN_TILE = 32
#: Largest resampling factor of the catalogue's extra scales.
MAX_SCALE = 4.0
#: A magnified scale (s > 1) larger than this many pixels is segmented block by block
#: (:func:`magnified_craters`), so that memory stays bounded by the block, not the image.
MAGNIFIED_WINDOW_PIXELS = 64_000_000
#: Block side (input pixels) and halo of the block-wise magnified scale.
MAGNIFIED_BLOCK = 2048
MAGNIFIED_HALO = 64
#: Default block side of :func:`segment` (pixels): an ordinary CTX tile is one block.
DEFAULT_BLOCK_SIZE = 8192
PROB_NAME = "crater_prob.tif"
MASK_NAME = "crater_mask.tif"
CSV_NAME = "craters.csv"
GPKG_NAME = "craters.gpkg"
RUN_NAME = "run.json"
#: Files written by :meth:`SegmentResult.write`.
OUTPUTS = (PROB_NAME, MASK_NAME, CSV_NAME, GPKG_NAME, RUN_NAME)
#: ``sun_azimuth`` value that switches the canonical frame off (and skips the estimate).
SUN_OFF = "none"
#: Longest side of the decimated read the sun estimate runs on (pixels).
SUN_ESTIMATE_MAX_SIDE = 4096
MASK_NODATA = 255


# --------------------------------------------------------------------------- reading a band

#: What a present pixel holding exactly 0 becomes in an image whose zeros are data (signed values around 0,
#: :func:`planetcd.raster.zeros_are_data`): the smallest normal float32, 0 for every computation, so that in
#: the arrays passed on 0 keeps meaning "missing" (:func:`planetcd.raster.missing_pixels`) for every image.
PRESENT_ZERO = np.float32(np.finfo(np.float32).tiny)


def band_zeros_are_data(ds, band: int = 1) -> bool:
    """Whether 0 is an ordinary value of band ``band`` of an open raster, not its fill.

    :func:`planetcd.raster.zeros_are_data` of a decimated read of the whole band (at most 2 Mpx,
    :func:`planetcd.raster.overview_shape`), so that every window of the image follows one rule:
    true for signed data around 0 (an int16 product with negative values), false for every
    unsigned or positive image (CTX, HRSC, LROC), whose 0 is the fill. An unsigned band is answered
    without a read; the others once per file (and its modification time), not once per window.
    """
    if np.dtype(ds.dtypes[band - 1]).kind == "u":
        return False
    try:
        stat = os.stat(ds.name)
        stamp = (stat.st_mtime_ns, stat.st_size)
    except (OSError, TypeError, ValueError):
        stamp = None
    if stamp is None:
        return _zeros_are_data_of(ds, band)
    key = (os.path.abspath(ds.name), band, stamp)
    if key not in _ZEROS_ARE_DATA:
        if len(_ZEROS_ARE_DATA) > 64:
            _ZEROS_ARE_DATA.clear()
        _ZEROS_ARE_DATA[key] = _zeros_are_data_of(ds, band)
    return _ZEROS_ARE_DATA[key]


#: :func:`band_zeros_are_data` of the files seen by this process: (path, band, (mtime, size)) -> bool.
_ZEROS_ARE_DATA: dict[tuple, bool] = {}


def _zeros_are_data_of(ds, band: int) -> bool:
    data, valid = read_window(ds, bands=[band], out_shape=overview_shape(ds.height, ds.width))
    return zeros_are_data(data, valid, ds.nodata)


def read_band(ds, band: int = 1, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One band of a window of an open raster as float32 ``(h, w)``, and its missing mask ``(h, w)`` bool.

    Missing pixels (:func:`planetcd.raster.missing_pixels`: mask, alpha, nodata, NaN, float fill, and 0
    unless the band's zeros are data, :func:`band_zeros_are_data`) hold 0; present pixels that hold 0 (signed
    data) hold :data:`PRESENT_ZERO`, so that the array reads the same to every function that takes 0 as missing.
    """
    raw, valid = read_window(ds, window, bands=[band])
    data = raw[0]
    missing = missing_pixels(data, valid, ds.nodata, band_zeros_are_data(ds, band) if np.any(data == 0) else False)
    return mark_missing(data, missing), missing


def mark_missing(data: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``data`` ``(h, w)`` in :func:`read_band`'s convention, in place: missing pixels 0, present pixels that hold 0
    :data:`PRESENT_ZERO`."""
    data[missing] = 0.0
    data[(data == 0) & ~missing] = PRESENT_ZERO
    return data


# --------------------------------------------------------------------------- one window


#: Width (Gaussian sigma, pixels) of the local mean that fills missing pixels no mirror reaches
#: (:func:`mirror_fill`): wider than most craters the network sees, narrow enough to follow the ground's brightness.
FILL_SIGMA = 8.0
#: Weight of the image mean in :func:`mirror_fill`'s local mean against the local present share (0..1): the
#: local mean turns into the image mean about 2.5 sigmas into a gap.
FILL_MEAN_WEIGHT = 0.01
#: Decimation of the grid :func:`mirror_fill`'s local mean is computed on (a mean over ``FILL_SIGMA`` px
#: varies little over this many pixels; the full grid cost a fifth of a rotated tile's segmentation).
FILL_DECIMATION = 4


def local_mean(data: np.ndarray, missing: np.ndarray, mean: float, sigma: float = FILL_SIGMA,
               decimation: int = FILL_DECIMATION) -> np.ndarray:
    """Gaussian-weighted mean of the present pixels of ``(h, w)`` ``data``, blended into ``mean`` where none are near.

    ``(G*(data·present) + w·mean) / (G*present + w)`` with ``G`` a Gaussian of ``sigma`` px and ``w =``
    :data:`FILL_MEAN_WEIGHT`, computed on the grid of ``decimation`` x ``decimation`` px block means.

    Returns
    -------
    ndarray, float32, shape (ceil(h / decimation), ceil(w / decimation))
        Pixel ``(r, c)`` of the input reads cell ``(r // decimation, c // decimation)``.
    """
    from scipy import ndimage

    f = max(1, int(decimation))
    h, w = data.shape
    pad = ((0, -h % f), (0, -w % f))
    present = np.pad((~missing).astype(np.float32), pad)
    values = np.pad(np.where(missing, np.float32(0.0), data).astype(np.float32, copy=False), pad)
    shape = (present.shape[0] // f, f, present.shape[1] // f, f)
    present, values = present.reshape(shape).mean((1, 3)), values.reshape(shape).mean((1, 3))
    weight = ndimage.gaussian_filter(present, sigma / f, mode="nearest", truncate=3.0)
    local = ndimage.gaussian_filter(values, sigma / f, mode="nearest", truncate=3.0)
    return ((local + np.float32(FILL_MEAN_WEIGHT * mean)) / (weight + np.float32(FILL_MEAN_WEIGHT))).astype(np.float32)


def nearest_present(missing: np.ndarray) -> tuple[np.ndarray, ...]:
    """The missing pixels and the nearest present pixel of each, as ``ndimage.distance_transform_edt(missing,
    return_indices=True)`` gives it: ``rows, cols, nearest_rows, nearest_cols`` (raster order).

    The transform runs on the missing pixels' bounding box grown by one pixel: a pixel beyond that box is
    farther from every missing pixel than the box's edge pixel in its row or column, which is present, so
    every present pixel as near as the nearest (ties included) is in the crop, and the transform picks among
    them as on the whole image (tested). An image's few dead pixels then cost no transform of the whole
    image, and none of its 8 bytes a pixel of fresh memory. ``missing`` must hold a present pixel.
    """
    from scipy import ndimage

    rows, cols = np.nonzero(missing)
    height, width = missing.shape
    crop = (slice(max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, height)),
            slice(max(int(cols.min()) - 1, 0), min(int(cols.max()) + 2, width)))
    near_r, near_c = ndimage.distance_transform_edt(missing[crop], return_distances=False, return_indices=True)
    r, c = rows - crop[0].start, cols - crop[1].start
    return rows, cols, near_r[r, c] + crop[0].start, near_c[r, c] + crop[1].start


def mirror_fill(data: np.ndarray, missing: np.ndarray, mean: float, sigma: float = FILL_SIGMA) -> np.ndarray:
    """Missing pixels of ``(h, w)`` ``data`` filled so that the ground seems to go on past its edge.

    A missing pixel takes the value of the present pixel mirror to it about its nearest present pixel
    (as ``np.pad(mode="reflect")`` extends an image past its border); where that pixel is missing too
    (deep in a gap wider than the ground beside it) or off the window, the :func:`local_mean` of the
    present pixels around it (``sigma`` px), blended smoothly into ``mean`` (the image mean) where none are near.

    A flat fill (the image mean everywhere) puts a brightness and texture step along every nodata
    collar, which the network reads as shading: a line of false craters along the footprint's edge.
    The mirror keeps the edge's texture and brightness, so the network sees the edge as it sees the
    inside. Present pixels are returned unchanged; float32 out. Memory: about 30 bytes per pixel of
    the window while it runs, only when a pixel is missing.
    """
    data = np.asarray(data, np.float32)
    missing = np.asarray(missing, bool)
    if not missing.any():
        return data
    if missing.all():
        return np.full(data.shape, np.float32(mean))
    rows, cols, near_r, near_c = nearest_present(missing)
    mirror_r = 2 * near_r - rows
    mirror_c = 2 * near_c - cols
    inside = (mirror_r >= 0) & (mirror_r < data.shape[0]) & (mirror_c >= 0) & (mirror_c < data.shape[1])
    inside[inside] = ~missing[mirror_r[inside], mirror_c[inside]]
    out = data.copy()
    out[rows[inside], cols[inside]] = data[mirror_r[inside], mirror_c[inside]]
    if not inside.all():
        far_r, far_c = rows[~inside], cols[~inside]
        out[far_r, far_c] = local_mean(data, missing, mean, sigma)[far_r // FILL_DECIMATION, far_c // FILL_DECIMATION]
    return out


def prepare_window(data: np.ndarray, valid: np.ndarray | None, nodata: float | None,
                   stats: IntensityStats) -> tuple[np.ndarray, np.ndarray]:
    """A raw window ``(h, w)`` → the network's input ``(h, w)`` float32 in ``-1..1`` and its missing mask.

    Missing pixels (:func:`planetcd.raster.missing_pixels`) are filled with the present ground mirrored
    across its edge, or far from it the local mean turning into the image mean ``stats.mean``
    (:func:`mirror_fill`: no step along a nodata collar), before the scaling ``stats.signed``. Impulses (hot
    and dead pixels) are clipped first by ``stats.impulse_step`` (:func:`planetcd.raster.suppress_impulses`,
    as ``detect`` clips its reads). ``stats`` holds one band.
    """
    data = np.asarray(data)
    missing = missing_pixels(data, valid, nodata)
    if stats.impulse_step is not None:
        data, _ = suppress_impulses(data, stats.impulse_step[:1], ~missing)
    filled = mirror_fill(data, missing, float(stats.mean[0]))
    return stats.signed(filled), missing


def predict_tiles(model: torch.nn.Module, tiles: np.ndarray, device="cpu", batch_size: int = 4,
                  precision: str | None = None) -> np.ndarray:
    """Probabilities for a stack of prepared tiles ``(n, H, W)`` → ``(n, H, W)`` float32.

    ``precision``: ``"bf16"`` runs the network under bfloat16 autocast, ``"fp32"`` in float32
    (:func:`planetcd.precision.autocast`; None: as the caller's context is); float32 out either way.
    """
    out = np.empty(tiles.shape, np.float32)
    with torch.inference_mode(), autocast(precision, device):
        for i in range(0, len(tiles), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(tiles[i : i + batch_size, None], np.float32)).to(device)
            out[i : i + batch_size] = model(x)[:, 0].float().cpu().numpy()
    return out


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def window_tiles(height: int, width: int, tile_size: int = 512, overlap: int = 64) -> tuple[np.ndarray, int]:
    """The tiles :func:`window_probability` cuts a ``height × width`` window into, and their overlap.

    Squares of ``min(tile_size, height, width)`` pixels overlapping by ``min(overlap, side // 2)``
    (:func:`planetcd.tiling.overlapping_tiles`): ``(n, 4)`` int64 ``row_off, col_off, height, width``.
    """
    tile = min(tile_size, height, width)
    overlap = min(overlap, max(0, tile // 2))
    return overlapping_tiles(height, width, tile, overlap), overlap


def window_probability(model: torch.nn.Module, prepared: np.ndarray, *, tile_size: int = 512, overlap: int = 64,
                       batch_size: int = 4, progress: bool = False, precision: str | None = None,
                       skip: np.ndarray | None = None) -> np.ndarray:
    """Crater probability of one prepared window, segmented in overlapping, blended tiles.

    Parameters
    ----------
    model : torch.nn.Module
        The segmenter (eval mode); it runs where its parameters are.
    prepared : ndarray, float32, shape (h, w)
        Network input in ``-1..1`` (:func:`prepare_window`).
    tile_size, overlap : int
        Tiles are squares of ``min(tile_size, h, w)`` pixels overlapping by
        ``min(overlap, side // 2)`` pixels, the last row and column flush with the edges.
    batch_size : int
        Tiles per network pass (tiles of one row of tiles).
    precision : {"fp32", "bf16"}, optional
        Of the network (:func:`predict_tiles`); None: the caller's context.
    skip : ndarray of bool, shape (n_tiles,), optional
        Tiles of :func:`window_tiles` not to segment (whose pixels nobody reads: the canonical frame's
        fill, :func:`canonical_probability`). Every other pixel's blend is unchanged; pixels only skipped
        tiles cover get 0.

    Returns
    -------
    ndarray, float32, shape (h, w)
        Probabilities in ``0..1`` (missing pixels are not masked here).
    """
    prepared = np.asarray(prepared, np.float32)
    if prepared.ndim != 2:
        raise InputError(f"a window to segment must be (H, W); got shape {prepared.shape}")
    height, width = prepared.shape
    grid, overlap = window_tiles(height, width, tile_size, overlap)
    if skip is not None:
        skip = np.asarray(skip, bool)
        if skip.shape != (len(grid),):
            raise InputError(f"skip must hold one flag per tile ({len(grid)}), got shape {skip.shape}")
        grid = grid[~skip]
    device = _model_device(model)
    # The blend runs in torch on the CPU: the same float32 products, sums and quotient as numpy's, element by
    # element (so the same map), but on every thread and with the canvas zeroed up front rather than page by
    # page on first touch (a turned multi-scale canvas is tens of megapixels).
    acc = torch.zeros((height, width), dtype=torch.float32)
    wsum = torch.zeros((height, width), dtype=torch.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(grid), desc="segmenting", unit="tile", file=sys.stderr, leave=False)
    try:
        for r0 in np.unique(grid[:, 0]):
            row = grid[grid[:, 0] == r0]
            r0, th, tw = int(r0), int(row[0, 2]), int(row[0, 3])
            weights = torch.from_numpy(blend_weights(th, tw, overlap))
            cols = [int(c) for c in row[:, 1]]
            for i in range(0, len(cols), batch_size):
                chunk = cols[i : i + batch_size]
                probs = predict_tiles(model, np.stack([prepared[r0 : r0 + th, c : c + tw] for c in chunk]), device,
                                      batch_size, precision)
                for c, p in zip(chunk, torch.from_numpy(probs)):
                    acc[r0 : r0 + th, c : c + tw] += p * weights
                    wsum[r0 : r0 + th, c : c + tw] += weights
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return acc.div_(wsum.clamp_min_(1e-12)).numpy()


#: Pixels around the canonical frame's footprint whose tiles :func:`canonical_probability` still segments:
#: turning the probability back (bilinear) reads canonical pixels up to √2 px beyond the input's pixel centres.
FOOTPRINT_MARGIN = 2.0


def canonical_probability(model: torch.nn.Module, prepared: np.ndarray, sun_azimuth: float | None = None, *,
                          fill: float | None = None, tile_size: int = 512, overlap: int = 64, batch_size: int = 4,
                          progress: bool = False, precision: str | None = None) -> np.ndarray:
    """Crater probability of one prepared window, segmented in the canonical (light-from-the-left) frame.

    THE place where segmentation meets the sun direction (docs/sun.md): the
    window is turned with :func:`planetcd.craters.sun.to_canonical` so that
    its light comes from the left (an exact ``np.rot90`` when the turn is within
    5° of a multiple of 90°, bilinear resampling otherwise), segmented there
    with :func:`window_probability`, and the probability is turned back onto
    the window's grid (:meth:`~planetcd.craters.sun.CanonicalFrame.array_to_input`). A resampled turn
    puts the window on a larger canvas; its tiles that hold only fill (none of their pixels within
    :data:`FOOTPRINT_MARGIN` of the footprint,
    :meth:`~planetcd.craters.sun.CanonicalFrame.boxes_meet_footprint`) are not segmented: nothing on
    the window's grid reads them, so the result is the same.
    Everything after it (extraction, blocks, writers, CRS) stays on the input grid.

    Parameters
    ----------
    model : torch.nn.Module
    prepared : ndarray, float32, shape (h, w)
        Network input in ``-1..1`` (:func:`prepare_window`).
    sun_azimuth : float, optional
        Where the window's light comes from (degrees clockwise from the top).
        None: no turn (exactly :func:`window_probability`).
    fill : float, optional
        Network input of the canonical pixels outside the window's footprint
        (resampled turns only); default: the window's mean.
    tile_size, overlap, batch_size, progress, precision
        As :func:`window_probability`.

    Returns
    -------
    ndarray, float32, shape (h, w)
    """
    options = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, progress=progress, precision=precision)
    if sun_azimuth is None:
        return window_probability(model, prepared, **options)
    prepared = np.asarray(prepared, np.float32)
    if prepared.ndim != 2:
        raise InputError(f"a window to segment must be (H, W); got shape {prepared.shape}")
    frame = canonical_frame(prepared.shape, sun_azimuth)
    if frame.identity:
        return window_probability(model, prepared, **options)
    fill = float(prepared.mean()) if fill is None else float(fill)
    rotated, frame = to_canonical(prepared, sun_azimuth, fill=fill)
    # Tiles of fill only, farther than the bilinear way back reaches from the footprint, are not segmented.
    tiles, _ = window_tiles(*rotated.shape, tile_size, overlap)
    prob = window_probability(model, rotated, skip=~frame.boxes_meet_footprint(tiles, FOOTPRINT_MARGIN), **options)
    return np.clip(frame.array_to_input(prob), 0.0, 1.0).astype(np.float32, copy=False)


def image_probability(model: torch.nn.Module, image: np.ndarray, *, tile_size: int = 512, overlap: int = 64,
                      batch_size: int = 4, sun_azimuth: float | None = None,
                      precision: str | None = None) -> np.ndarray:
    """Crater probability ``(H, W)`` float32 of a raw in-memory image, as one window.

    Its own statistics (every present pixel) scale it; missing pixels (zero,
    NaN) are filled with its mean and keep the probability computed there.
    ``sun_azimuth``: segment in the canonical frame (:func:`canonical_probability`).
    ``precision``: of the network (:func:`predict_tiles`).
    """
    prepared, fill = prepare_image(image)
    return canonical_probability(model, prepared, sun_azimuth, fill=fill, tile_size=tile_size,
                                 overlap=overlap, batch_size=batch_size, precision=precision)


def prepare_image(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The network input of a raw in-memory image, as :func:`image_probability` segments it.

    Returns
    -------
    prepared : ndarray, shape (H, W), float32
        The image scaled by its own statistics (every present pixel; :func:`prepare_window`).
    fill : float
        The input of a missing pixel (the image mean, scaled).
    """
    image = np.asarray(image, np.float32)
    stats = intensity_stats(image, missing_pixels(image))
    prepared, _ = prepare_window(image, None, None, stats)
    return prepared, _prepared_mean(stats)


def _prepared_mean(stats: IntensityStats) -> float:
    """The network input of a missing pixel (the image mean, scaled): the fill outside a turned window."""
    return float(stats.signed(np.array([stats.mean[0]], np.float32))[0])


# --------------------------------------------------------------------------- the sun


def parse_sun_azimuth(value, what: str = "sun_azimuth") -> float | str | None:
    """``sun_azimuth`` as given → a float in ``[0, 360)``, :data:`SUN_OFF` (``"none"``), or None (estimate).

    Any finite number of degrees is taken modulo 360 (``-90`` → 270, ``450`` → 90);
    text is parsed as a number, or ``"none"``/``"off"`` (no canonical frame, no estimate),
    or ``"auto"``/``"estimate"``/empty (estimate). Anything else is a one-line :class:`InputError`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "auto", "estimate"):
            return None
        if text in ("none", "off"):
            return SUN_OFF
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{what} {value!r}: expected degrees clockwise from the image top (0..360), "
                             "'auto' to estimate it, or 'none'") from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} {value!r}: expected a number of degrees, 'auto' or 'none'") from None
    if not np.isfinite(number):
        raise InputError(f"{what} {value!r}: must be a finite number of degrees")
    return float(number % 360.0)


def image_sun_estimate(image, band: int = 1, max_side: int = SUN_ESTIMATE_MAX_SIDE):
    """:func:`planetcd.craters.sun.estimate_sun_azimuth` of an image (path or ``(H, W)`` array).

    A raster is read decimated so that its longer side is at most ``max_side``
    (area average), and the estimator's own decimation is reduced to match, so
    that it works on about the same 2× working pixels as on the full image.
    Missing pixels: :func:`planetcd.raster.missing_pixels`, and for a raster the saturation of an integer band
    (:func:`planetcd.raster.saturated_pixels`).
    """
    from scipy import ndimage

    if isinstance(image, np.ndarray):
        data, factor = np.asarray(image, np.float32), 1.0
        missing = missing_pixels(data)
    else:
        with open_raster(image) as ds:
            factor = min(1.0, max_side / max(ds.height, ds.width))
            shape = (max(1, int(round(ds.height * factor))), max(1, int(round(ds.width * factor))))
            read = read_average(ds, band, shape)
            data = np.ma.filled(read, 0.0)
            if band_zeros_are_data(ds, band):  # signed data: a present 0 is a value, not the fill
                data[(data == 0) & ~np.ma.getmaskarray(read)] = PRESENT_ZERO
            missing = missing_pixels(data)
            # a saturated plateau's edge is no lit slope (it read as a confident sun from its side); isolated hot
            # pixels stay, as leaving them and their neighbours out would cost more ground than they disturb
            missing |= ndimage.binary_opening(saturated_pixels(data, missing, ds.dtypes[band - 1]), np.ones((3, 3)))
    decimate = max(1, int(round(2 * factor)))
    return estimate_sun_azimuth(data, missing=missing, decimate=decimate)


def resolve_sun(sun_azimuth, meta: dict, image, *, band: int = 1, shape: tuple[int, int] | None = None,
                what: str = "sun_azimuth", name: str = "image") -> tuple[float | None, dict]:
    """Decide the sun azimuth of an image and whether segmentation turns it (the canonical frame).

    Parameters
    ----------
    sun_azimuth : float, str or None
        As given (:func:`parse_sun_azimuth`): degrees, None to estimate, ``"none"`` for no frame.
    meta : dict
        The model's metadata: only a model with ``sun_aware: true`` is run in
        the canonical frame; for the others the azimuth is recorded only.
    image : path or ndarray
        Estimated from when ``sun_azimuth`` is None (:func:`image_sun_estimate`).
    shape : (rows, cols), optional
        The input grid, for the record of the frame.

    Returns
    -------
    rotate : float or None
        The azimuth to give :func:`canonical_probability` (None: no turn).
    record : dict
        JSON-ready: ``sun_azimuth_deg`` (the value used, None when off), ``source``
        (``given``, ``estimated``, ``fallback`` when the estimate was not confident, ``none``),
        ``estimate`` (azimuth, confidence, confident, method) when estimated,
        ``sun_aware_model``, ``canonical_frame`` (bool) and ``frame``
        (:meth:`~planetcd.craters.sun.CanonicalFrame.to_dict`) when turned.
    """
    value = parse_sun_azimuth(sun_azimuth, what)
    aware = bool(meta.get("sun_aware", False))
    record: dict = {"sun_aware_model": aware}
    if value == SUN_OFF:
        record.update(sun_azimuth_deg=None, source="none", canonical_frame=False)
        return None, record
    if value is None:
        est = image_sun_estimate(image, band)
        record["estimate"] = {"azimuth_deg": round(float(est.azimuth_deg), 3),
                              "confidence": round(float(est.confidence), 4), "confident": bool(est.confident),
                              "method": est.method}
        if est.confident:
            azimuth, source = float(est.azimuth_deg), "estimated"
            log.info("%s: sun azimuth estimated at %.1f deg (confidence %.2f)", name, azimuth, est.confidence)
        else:
            azimuth, source = FALLBACK_AZIMUTH_DEG, "fallback"
            (log.warning if aware else log.info)(
                "%s: the sun azimuth estimate (%.1f deg, confidence %.2f) is not confident; using the fallback "
                "%.0f deg (light from the left, no turn); give --%s (%s= in Python) if you know it", name,
                est.azimuth_deg, est.confidence, FALLBACK_AZIMUTH_DEG, what.replace("_", "-"), what)
    else:
        azimuth, source = float(value), "given"
    record.update(sun_azimuth_deg=round(azimuth, 6), source=source, canonical_frame=aware)
    if aware and shape is not None:
        record["frame"] = canonical_frame(shape, azimuth).to_dict()
    return (azimuth if aware else None), record


# --------------------------------------------------------------------------- blocks


def run_blocks(func: Callable, blocks: Iterable[Tile], *, runner: Runner | None = None, progress: bool = False,
               desc: str = "blocks", **shared) -> Iterator:
    """``func(block, **shared)`` for every block through ``runner``, yielded in block order.

    The one block loop of planetcd: :func:`segment` and :func:`planetcd.monitor.monitor`
    run their block functions through it, on this process (``runner=None``) or a cluster.
    ``func`` must be a module-level function (a worker imports it by name).
    """
    from tqdm.auto import tqdm

    blocks = list(blocks)
    with tqdm(total=len(blocks), disable=not progress or len(blocks) < 2, desc=desc, unit="block",
              file=sys.stderr, leave=False) as bar:
        for result in resolve_runner(runner).map(func, blocks, **shared):
            bar.update(1)
            yield result


def read_prepared(source, window: tuple[int, int, int, int], stats: IntensityStats, band: int = 1,
                  scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The network input of one window ``(row, col, height, width)`` of the image, and its missing mask.

    ``source`` is a path (opened here, so a worker reads only its window) or an (H, W) array; the window is
    resampled by ``scale`` (:func:`resample_array`, missing pixels left out) when it is not 1, then scaled with the
    whole image's ``stats`` (:func:`prepare_window`). Shapes: the window's, times ``scale``.
    """
    r, c, h, w = window
    if isinstance(source, np.ndarray):
        data, valid, nodata = source[r : r + h, c : c + w], None, None
    else:
        with open_raster(source) as ds:
            data, missing = read_band(ds, band, Window(c, r, w, h))
            valid, nodata = ~missing, None
    if scale != 1.0:  # missing pixels take no part in the resampling; the resampled ones hold 0
        missing = missing_pixels(data, valid, nodata)
        if stats.impulse_step is not None:  # before the resampling spreads them over their neighbours
            data, _ = suppress_impulses(data, stats.impulse_step[:1], ~missing)
        data, valid, nodata = resample_array(data, scale, missing), None, None
    return prepare_window(data, valid, nodata, stats)


def segment_block(block: Tile, *, source, stats: IntensityStats, model, device: str = "cpu", tta: bool | None = None,
                  band: int = 1, tile_size: int = 512, overlap: int = 64, batch_size: int = 4,
                  tile_progress: bool = False, sun_azimuth: float | None = None,
                  precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Probability and missing mask of one block's core (the block function of :func:`segment`).

    Parameters
    ----------
    block : Tile
        Its read window (core and halo) is segmented; its core is returned.
    source : path or ndarray (H, W)
        The image (a path is opened here, so a worker reads only its window).
    stats : IntensityStats
        Whole-image statistics of the band (:func:`planetcd.raster.dataset_stats`).
    model : str, path or torch.nn.Module
        Loaded once per process with :func:`planetcd.models.cached`.
    tile_progress : bool
        A progress bar over the block's tiles (for a run of one block).
    sun_azimuth : float, optional
        Segment the block's window (core and halo) in the canonical frame
        (:func:`canonical_probability`); None: as it is.
    precision : {"fp32", "bf16"}
        The run's resolved precision of the network (:func:`planetcd.precision.resolve_precision`).

    Returns
    -------
    prob : ndarray, float32, shape (core_h, core_w)
    missing : ndarray of bool, shape (core_h, core_w)
    """
    from .. import models

    prepared, missing = read_prepared(source, block.read, stats, band)
    net = models.cached(model, device, tta)
    prob = canonical_probability(net, prepared, sun_azimuth, fill=_prepared_mean(stats), tile_size=tile_size,
                                 overlap=overlap, batch_size=batch_size, progress=tile_progress, precision=precision)
    ir, ic, ih, iw = block.inner
    return prob[ir : ir + ih, ic : ic + iw], missing[ir : ir + ih, ic : ic + iw]


# --------------------------------------------------------------------------- the result


@dataclass
class SegmentResult:
    """What :func:`segment` found in one image, on the image's grid.

    Attributes
    ----------
    probability : ndarray, float32, shape (H, W)
        Crater probability in ``0..1``; NaN where pixels are missing.
    mask : ndarray, uint8, shape (H, W)
        1 where the probability reaches ``params["prob_threshold"]``, 0 elsewhere, 255 where pixels are missing.
    catalog : Catalog
        The craters (``x_px, y_px, radius_px, confidence``; map and planetocentric
        coordinates and diameters when the image is georeferenced or ``pixel_size_m`` is given).
    params : dict
        The settings used (model, threshold, extraction, scales, tiles, blocks, device).
    profile : dict
        The source's raster profile (size, CRS, transform) the rasters are written with.
    seconds : float
        Wall time of :func:`segment`.
    """

    probability: np.ndarray
    mask: np.ndarray
    catalog: Catalog
    params: dict = field(default_factory=dict)
    profile: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.probability.shape

    @property
    def crater_pixels(self) -> int:
        """Pixels of the mask that are crater (value 1)."""
        return int((self.mask == 1).sum())

    def __len__(self) -> int:
        return len(self.catalog)

    def write(self, outdir: str | os.PathLike, overwrite: bool = False) -> list[Path]:
        """Write ``crater_prob.tif``, ``crater_mask.tif``, ``craters.csv``, ``craters.gpkg`` and ``run.json`` into ``outdir``.

        ``run.json`` holds :attr:`params` (settings, the sun record) and the run time.

        The rasters keep the source's grid (size, CRS, transform); the probability's
        nodata is NaN, the mask's 255. Every file is written under a temporary name
        and all are renamed together at the end, so a failure leaves none of them.

        Raises
        ------
        OutputExistsError
            When an output exists and ``overwrite`` is false (nothing is written).
        """
        outdir = Path(outdir)
        paths = [outdir / name for name in OUTPUTS]
        check_writable(paths, overwrite)
        outdir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            prob_tmp, mask_tmp, csv_tmp, gpkg_tmp, run_tmp = (stack.enter_context(atomic_output(p)) for p in paths)
            write_geotiff(prob_tmp, self.probability.astype(np.float32, copy=False), self.profile, nodata=float("nan"))
            write_geotiff(mask_tmp, self.mask.astype(np.uint8, copy=False), self.profile, nodata=MASK_NODATA)
            self.catalog.to_csv(csv_tmp)
            self.catalog.to_gpkg(gpkg_tmp, layer=Path(GPKG_NAME).stem)
            record = {"command": "segment", "params": self.params, "craters": len(self.catalog),
                      "seconds": round(float(self.seconds), 3)}
            run_tmp.write_text(json_text(record), encoding="utf-8")
        return paths


# --------------------------------------------------------------------------- the pipeline


def pixel_size_of(ds, pixel_size_m: float | None = None) -> float | None:
    """Pixel size of an open raster in metres (projected or geographic CRS), else ``pixel_size_m``.

    The side of a square pixel of the same area (the square root of the transform's determinant, as
    :attr:`planetcd.craters.catalog.Catalog.map_pixel_size`), so that a rotated grid (non-zero rotation
    terms) or non-square pixels (6 × 6.2 m) give their true mean size, not the ``a`` term alone. In a
    geographic CRS (degrees of longitude and latitude on the body's sphere or ellipsoid), the area is
    taken at the image centre: a degree of latitude is ``πR/180`` metres, one of longitude ``cos φ`` of it.
    """
    if ds is None or not is_georeferenced(ds):
        return pixel_size_m
    side = float(np.sqrt(abs(ds.transform.determinant)))
    if ds.crs.is_projected:
        try:
            factor = float(ds.crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - a CRS without known units: assume metres
            factor = 1.0
        return side * factor
    if ds.crs.is_geographic:
        try:
            from pyproj import CRS

            radius = float(CRS.from_user_input(ds.crs.to_wkt()).ellipsoid.semi_major_metre)
        except Exception:  # noqa: BLE001 - no ellipsoid to measure degrees with
            return pixel_size_m
        _, lat = ds.transform * (ds.width / 2.0, ds.height / 2.0)
        metres_per_degree = np.pi * radius / 180.0
        return side * metres_per_degree * float(np.sqrt(max(np.cos(np.deg2rad(lat)), 0.0)))
    return pixel_size_m


@dataclass(frozen=True)
class _Image:
    """An image to segment: its source for the blocks, statistics, profile and georeferencing."""

    source: object  # absolute path (str) or ndarray (H, W) float32
    stats: IntensityStats
    profile: dict
    georef: dict
    name: str
    pixel_size_m: float | None


def image_stats(image, band: int = 1) -> IntensityStats:
    """Whole-image intensity statistics: of every present pixel of an (H, W) array, or of a decimated read of
    a raster's ``band`` (:func:`planetcd.raster.dataset_stats`)."""
    if isinstance(image, np.ndarray):
        data = np.asarray(image, np.float32)
        return intensity_stats(data, missing_pixels(data))
    with open_raster(image) as ds:
        return dataset_stats(ds, bands=[band])


def _open_image(image, band: int, pixel_size_m: float | None) -> _Image:
    if isinstance(image, np.ndarray):
        data = np.asarray(image, np.float32)
        if data.ndim != 2:
            raise InputError(f"image: expected an (H, W) array, got shape {data.shape}")
        check_array(data, min_size=MIN_SIZE, what="image")
        stats = image_stats(data, band)
        profile = {"width": data.shape[1], "height": data.shape[0], "crs": None, "transform": None}
        return _Image(data, stats, profile, {"pixel_size_m": pixel_size_m}, "image", pixel_size_m)
    check_raster(image, min_size=MIN_SIZE, band=band, stats=False)  # the one input check (truncation included)
    with open_raster(image) as ds:
        stats = dataset_stats(ds, bands=[band])
        georef = ({"transform": ds.transform, "crs": ds.crs, "pixel_size_m": pixel_size_m} if is_georeferenced(ds)
                  else {"transform": None, "crs": None, "pixel_size_m": pixel_size_m})
        return _Image(os.path.abspath(image), stats, dict(ds.profile), georef, Path(str(image)).stem,
                      pixel_size_of(ds, pixel_size_m))


#: Keyword arguments of :func:`planetcd.craters.extract.extract_craters` that :func:`segment` accepts as overrides.
EXTRACTION_KEYS = ("method", "min_radius", "max_radius", "match_threshold", "radius_step", "duplicate_mode",
                   "close_gaps", "min_contrast")


def _extraction_overrides(meta: dict, overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(EXTRACTION_KEYS))
    if unknown:
        raise InputError(f"unknown extraction option(s) {', '.join(unknown)} (known: {', '.join(EXTRACTION_KEYS)})")
    out = dict(overrides)
    if "min_contrast" in out:
        value = out["min_contrast"]
        if value is not None and not -1.0 <= value <= 1.0:
            raise InputError(f"min_contrast {value}: must be between -1 and 1")
        if value is None or value <= -1.0:
            out["min_contrast"] = None  # -1 keeps every crater: no screening
        elif meta.get("target", "filled") != "filled":
            raise InputError(f"min_contrast: model {meta.get('name')} draws {meta.get('target')} targets; "
                             "the contrast screens filled discs")
    return out


def _resolve_verifier(meta: dict, verify, verify_threshold: float | None):
    """``(chip verifier or None, its threshold)`` of :func:`segment`'s ``verify`` and ``verify_threshold``."""
    from .. import models

    if verify is False:
        return None, None
    verifier = models.load_verifier(meta) if verify is None or verify is True else models.load_verifier(verify)
    if verifier is None:
        if verify is True:
            raise InputError(f"model {meta.get('name')} has no chip verifier; give a verifier checkpoint or verify=False")
        return None, None
    threshold = float(verifier.metadata.get("threshold", 0.5) if verify_threshold is None else verify_threshold)
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"verify_threshold {threshold}: must be in [0, 1)")
    return verifier, threshold


def _decoy_setting(verifier, value, key: str, check, missing: str) -> float | None:
    """One decoy setting of :func:`segment` (``decoy_fdr``, ``decoy_sigma``): False, or no verifier: None (off);
    None: the verifier's ``key`` (registry) if any; True: the verifier's, which must exist (``missing`` says what
    to give instead); a number: checked by ``check(value, key)``."""
    if verifier is None or value is False:
        return None
    if value is None or value is True:
        found = verifier.metadata.get(key)
        if found is None and value is True:
            raise InputError(f"the chip verifier has no {key}; {missing}")
        return None if found is None else check(found, key)
    return check(value, key)


def _resolve_decoy(verifier, decoy_fdr) -> float | None:
    """The decoy false-discovery limit of :func:`segment`'s ``decoy_fdr`` (None: no decoy pass)."""
    from .verify import check_fdr

    return _decoy_setting(verifier, decoy_fdr, "decoy_fdr", check_fdr, "give a number in (0, 1]")


def _resolve_decoy_sigma(verifier, decoy_sigma) -> float | None:
    """The local-decoy length (px) of :func:`segment`'s ``decoy_sigma`` (None: one threshold for the image)."""
    from .verify import check_sigma

    return _decoy_setting(verifier, decoy_sigma, "decoy_sigma", check_sigma, "give a length in pixels")


def _check_options(tile_size, overlap, batch_size, block_size, block_halo, pixel_size_m) -> None:
    if tile_size < MIN_TILE:
        raise InputError(f"tile_size {tile_size}: must be at least {MIN_TILE} pixels")
    if overlap < 0 or overlap >= tile_size:
        raise InputError(f"overlap {overlap}: must be at least 0 and smaller than tile_size ({tile_size})")
    if batch_size < 1:
        raise InputError(f"batch_size {batch_size}: must be at least 1")
    if block_size < 64 or block_halo < 0:
        raise InputError(f"block_size {block_size} / block_halo {block_halo}: the block must be at least 64 px "
                         "and the halo at least 0")
    if pixel_size_m is not None and not pixel_size_m > 0:
        raise InputError(f"pixel_size_m {pixel_size_m}: must be positive")


def _model_reference(model):
    """What a worker loads: the module as given, a checkpoint by absolute path, or a registry name."""
    if isinstance(model, torch.nn.Module):
        return model
    return os.path.abspath(model) if os.path.isfile(str(model)) else str(model)


def segment(
    image,
    model="ctx-craters",
    *,
    prob_threshold: float | None = None,
    scales=None,
    tile_size: int = 512,
    overlap: int = 64,
    block_size: int = DEFAULT_BLOCK_SIZE,
    block_halo: int = 192,
    batch_size: int = 4,
    band: int = 1,
    pixel_size_m: float | None = None,
    device: str = "auto",
    tta: bool | None = None,
    runner: Runner | None = None,
    progress: bool = False,
    sun_azimuth: float | str | None = None,
    precision: str = "auto",
    verify: bool | str | os.PathLike | None = None,
    verify_threshold: float | None = None,
    decoy_fdr: float | bool | None = None,
    decoy_sigma: float | bool | None = None,
    sun_refine: bool = False,
    **extraction,
) -> SegmentResult:
    """Segment the craters of one image: probability map, mask and crater catalogue.

    Parameters
    ----------
    image : path or ndarray (H, W)
        A raster GDAL reads (GeoTIFF, PNG, PGM, JPEG, ISIS...) or raw intensities.
        Missing pixels (outside the mask, nodata, NaN or 0) get probability NaN.
    model : str, path or torch.nn.Module
        Registry name, ``.pt`` checkpoint path, or a loaded segmenter (:func:`planetcd.models.load`).
    prob_threshold : float, optional
        Crater probability threshold of the mask and the extraction, in (0, 1) (default: the model's).
    scales : sequence of float or str, optional
        Also find craters on the image resampled by these factors (in (0, 4];
        e.g. ``(1, 0.5)`` or ``"1,0.5"``) and merge them with the duplicate
        rule (:func:`multiscale_craters`). Default: the model's ``extraction.scales``.
    tile_size, overlap : int
        Network tiles (pixels; at least 32) and their blended overlap.
    block_size, block_halo : int
        Blocks (pixels) segmented one at a time (memory: about 30 bytes per pixel of
        ``block_size + 2 block_halo`` squared); the unit of work of a runner.
    batch_size : int
        Tiles per network pass.
    band : int
        1-based band of a raster.
    pixel_size_m : float, optional
        Pixel size in metres, for diameters when the image is not georeferenced
        (and for the advice when it differs from the model's).
    device : {"auto", "cpu", "cuda"}
    tta : bool, optional
        Average the network over the four flips of each tile (default: the model's).
    runner : planetcd.runners.Runner, optional
        Who runs the blocks (default: this process; ``planetcd.distributed.DaskRunner`` on a cluster).
    progress : bool
        A progress bar on stderr.
    sun_azimuth : float, "none" or None
        Where the light comes from, degrees clockwise from the image top (0 top, 90 right,
        180 bottom, 270 left; any number is taken modulo 360; docs/sun.md). None: estimated
        from the image (:func:`planetcd.craters.sun.estimate_sun_azimuth`; when not confident,
        one log line and the fallback 270°, no turn). ``"none"``: no estimate, no turn.
        A model whose metadata says ``sun_aware: true`` runs in the canonical frame
        (image turned so the light comes from the left, :func:`canonical_probability`);
        other models (the shipped ``ctx-craters``) are not turned and the azimuth is
        only recorded (``params["sun"]``, ``run.json``).
    precision : {"auto", "fp32", "bf16"}
        Precision of the network, one for the whole run (blocks and other scales): ``bf16`` bfloat16
        autocast, ``fp32`` float32, ``auto`` (default) bf16 where the hardware runs it natively
        (:func:`planetcd.precision.resolve_precision`). Probabilities are float32 either way.
        Recorded in ``params["precision"]`` (run.json).
    verify : bool or path, optional
        The second stage (:func:`verify_catalog`): every crater's chip, cut in the canonical frame, is
        scored by the model's chip verifier (:mod:`planetcd.craters.verify`; registry entry
        ``verifier``) and kept only when the score reaches ``verify_threshold``. None (default): when
        the model has a verifier; False: never; a path: that verifier checkpoint.
    verify_threshold : float, optional
        In ``[0, 1)``; default: the verifier's ``threshold``. Recorded in ``params["verifier"]``. With the
        verifier on and no ``prob_threshold``, craters are extracted at the verifier's ``prob_threshold``
        (the registry's operating point: more candidates, the verifier keeps the craters); the mask stays
        at the model's threshold.
    decoy_fdr : float or bool, optional
        With the verifier, raise its threshold on this image until the *decoys* are at most this share
        of the catalogue (:func:`planetcd.craters.verify.decoy_threshold`): the decoys are the craters
        the same pipeline (every scale, the verifier) finds on the image turned for the opposite sun,
        where real craters look like mounds, so what passes there is the image's own rate of
        crater-like texture (rough and knobby ground). It costs a second segmentation of the image
        (and, while it runs, a second probability map in memory: 4 bytes per pixel).
        In ``(0, 1]``; None (default): the verifier's ``decoy_fdr`` (registry), if any; False: no decoys.
        Needs the sun (a sun-aware model); recorded in ``params["verifier"]["decoys"]``.
    decoy_sigma : float or bool, optional
        With decoys, each crater's verifier threshold comes from the decoys and craters AROUND it, weighted by
        a Gaussian of this length in pixels of the input (:func:`planetcd.craters.verify.local_decoy_thresholds`):
        knobby parts of an image get a strict threshold, smooth parts keep the verifier's own. None (default):
        the verifier's ``decoy_sigma`` (registry), if any, else one threshold for the image; False: one
        threshold for the image (:func:`planetcd.craters.verify.decoy_threshold`).
    sun_refine : bool
        With an estimated sun (confident, not given) and a sun-aware model, the sun is always read back from
        the craters the first pass found (:func:`refined_sun_azimuth`; ``params["sun"]["readback"]``), and a
        warning says when they show it clearly elsewhere. With ``sun_refine`` the image is then segmented
        again in that frame (twice the time on that image; ``source`` becomes ``"refined"``). Off by default:
        on the shipped model's validation tile MC11E-H it moved the sun toward the labels' azimuth and cost
        F1 (docs/sun.md, "Reading the sun back from the craters").
    **extraction
        Overrides of the model's crater extraction (:data:`EXTRACTION_KEYS`), e.g.
        ``min_contrast=0.1`` (``-1`` or ``None``: no contrast screening), ``min_radius=4``.

    Returns
    -------
    SegmentResult
        Write it with ``.write(outdir)``.
    """
    from .. import models
    from ..features import pick_device

    t0 = time.monotonic()
    _check_options(tile_size, overlap, batch_size, block_size, block_halo, pixel_size_m)
    scales = parse_scales(scales)
    source = _open_image(image, band, pixel_size_m)
    torch_device = str(pick_device(device))
    used_precision = resolve_precision(precision, torch_device)
    net = models.cached(model, torch_device, tta)
    meta = net.metadata
    threshold = crater_threshold(meta, prob_threshold)
    overrides = _extraction_overrides(meta, extraction)
    verifier, v_threshold = _resolve_verifier(meta, verify, verify_threshold)
    height, width = source.profile["height"], source.profile["width"]
    rotate, sun_record = resolve_sun(sun_azimuth, meta, source.source, band=band, shape=(height, width),
                                     name=source.name)
    advice = models.pixel_scale_advice(meta, source.pixel_size_m)
    if advice:
        log.warning(advice)
    log.info("model %s (%s%s), threshold %.2f, tiles of %d px overlapping by %d px on %s", meta.get("name"),
             meta.get("arch"), ", flip-averaged" if meta.get("tta") else "", threshold, tile_size, overlap, torch_device)

    decoy_limit = _resolve_decoy(verifier, decoy_fdr)
    decoy_length = _resolve_decoy_sigma(verifier, decoy_sigma) if decoy_limit is not None else None
    blocks = halo_tiles(height, width, block_size, block_halo)
    local = runner is None or isinstance(runner, LocalRunner)

    def probability(azimuth, show_progress):
        """The full-image probability map and missing mask, segmented in the frame of ``azimuth``."""
        prob = np.empty((height, width), np.float32)
        missing = np.empty((height, width), bool)
        parts = run_blocks(segment_block, blocks, runner=runner, progress=show_progress, desc="segment",
                           source=source.source, stats=source.stats, model=net if local else _model_reference(model),
                           device=torch_device, tta=tta, band=band, tile_size=tile_size, overlap=overlap,
                           batch_size=batch_size, tile_progress=show_progress and local and len(blocks) == 1,
                           sun_azimuth=azimuth, precision=used_precision)
        for block, (block_prob, block_missing) in zip(blocks, parts):
            r, c, h, w = block.core
            prob[r : r + h, c : c + w] = block_prob
            missing[r : r + h, c : c + w] = block_missing
        prob[missing] = np.nan
        return prob, missing

    prob, missing = probability(rotate, progress)
    log.info("segmented %dx%d px in %.1f s", height, width, time.monotonic() - t0)

    # With a verifier, candidates are extracted at its own (lower) segmenter threshold unless one is given;
    # the mask keeps the model's threshold.
    extract_threshold = threshold
    if verifier is not None and prob_threshold is None and verifier.metadata.get("prob_threshold") is not None:
        extract_threshold = float(verifier.metadata["prob_threshold"])

    scaled_reads: dict = {}  # the image at each scale, read once for the catalogue, its decoys and the verifier

    def catalogue(p, azimuth):
        return catalog_craters(net, source.source, p, threshold=extract_threshold, scales=scales, overrides=overrides,
                               band=band, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                               sun_azimuth=azimuth, precision=used_precision, scaled_reads=scaled_reads)

    craters = catalogue(prob, rotate)
    if rotate is not None and sun_record.get("source") == "estimated":
        full = full_read(source.source, band, scaled_reads)
        refined, sun_record["readback"] = refined_sun_azimuth(full, craters, rotate, missing)
        sun_record["readback"]["segmented_again"] = bool(refined is not None and sun_refine)
        if refined is not None and not sun_refine:
            log.warning("%s: the craters found read the sun at %.1f deg, %.1f deg from the estimate (%d craters, "
                        "support %.2f), so the estimate may be off: give --sun-azimuth if you know the sun "
                        "(--sun-refine segments again in the craters' frame; docs/sun.md)", source.name, refined,
                        sun_record["readback"]["turn_deg"], sun_record["readback"]["n_craters"],
                        sun_record["readback"]["support"])
        elif refined is not None:
            log.info("%s: the craters found read the sun at %.1f deg, %.1f deg from the estimate: segmenting again "
                     "in that frame", source.name, refined, sun_record["readback"]["turn_deg"])
            rotate = refined
            sun_record.update(sun_azimuth_deg=round(refined, 6), source="refined",
                              frame=canonical_frame((height, width), refined).to_dict())
            prob, missing = probability(rotate, progress)
            craters = catalogue(prob, rotate)
    verifier_record = None
    if verifier is not None:
        checked = len(craters)
        cut, decoy_record, decoys = v_threshold, None, None
        if decoy_limit is not None and rotate is None:
            decoy_record = {"max_fdr": decoy_limit, "skipped": "no sun frame (the model is not sun-aware)"}
            log.info("decoys skipped: the model is not sun-aware")
        elif decoy_limit is not None:
            opposite = (rotate + 180.0) % 360.0
            log.info("decoy pass: the image segmented again under the opposite sun (%.1f deg)", opposite)
            decoys = catalogue(probability(opposite, False)[0], opposite)
        # One read of the image and one pyramid for the catalogue and its decoys.
        radii = np.concatenate([craters[:, 2], decoys[:, 2] if decoys is not None else np.zeros(0)])
        pyramid = (verifier_pyramid(source.source, verifier, float(radii.max()), band, scaled_reads)
                   if len(radii) else None)
        _, scores = verify_catalog(craters, source.source, verifier, v_threshold, sun_azimuth=rotate, band=band,
                                   pyramid=pyramid)
        keep = scores >= cut
        if decoys is not None:
            from .verify import decoy_cut

            _, decoy_scores = verify_catalog(decoys, source.source, verifier, v_threshold, sun_azimuth=opposite,
                                             band=band, pyramid=pyramid)
            # a crater and a decoy that are one feature: the better-scored wins (the other is a mound's echo); then
            # the threshold the winning decoys set, one for the image or (decoy_length) each crater's own
            decided = decoy_cut(craters, scores, decoys, decoy_scores, v_threshold, decoy_limit, decoy_length)
            keep, cut = decided.keep, decided.threshold
            if decoy_length is None:
                threshold_record = None if not np.isfinite(cut) else round(float(cut), 4)
                said = "keep none" if not np.isfinite(cut) else f"{cut:.3g}"
            else:
                limits = cut[decided.won]
                finite = limits[np.isfinite(limits)]
                threshold_record = ({"sigma_px": decoy_length, "min": round(float(finite.min()), 4),
                                     "median": round(float(np.median(finite)), 4),
                                     "max": round(float(finite.max()), 4), "keep_none": int((~np.isfinite(limits)).sum())}
                                    if len(finite) else {"sigma_px": decoy_length, "keep_none": int(len(limits))})
                said = (f"{finite.min():.3g}..{finite.max():.3g} (local, sigma {decoy_length:g} px)" if len(finite)
                        else "keep none")
            decoy_record = {"max_fdr": decoy_limit, "sigma_px": decoy_length, "sun_azimuth_deg": round(opposite, 3),
                            "found": int(len(decoys)), "passing": decided.passing,
                            # local: a crater a decoy beat has no threshold of its own; count those over the floor
                            "lost_to_decoys": int(((scores >= (v_threshold if decoy_length else cut))
                                                   & ~decided.won).sum()),
                            "threshold": threshold_record}
            log.info("decoys (opposite sun): %d found, verifier threshold %.3g -> %s; %d craters lost to a decoy",
                     len(decoys), v_threshold, said, decoy_record["lost_to_decoys"])
        craters = craters[keep]
        verifier_record = {"name": verifier.metadata.get("name", str(verify)), "threshold": v_threshold,
                           "prob_threshold": extract_threshold, "checked": int(checked), "kept": int(len(craters)),
                           "decoys": decoy_record}
        log.info("chip verifier: kept %d of %d craters (threshold %s)", len(craters), checked,
                 f"{cut:.3g}" if np.ndim(cut) == 0 else "local")
    catalog = Catalog.from_pixels(craters, name=source.name, **source.georef)
    catalog.metadata = {"command": "segment", "model": str(meta.get("name", model)), "sun": sun_record,
                        "verifier": verifier_record}
    mask = (prob >= threshold).astype(np.uint8)
    mask[missing] = MASK_NODATA
    params = {
        "image": str(image) if not isinstance(image, np.ndarray) else "array", "model": str(meta.get("name", model)),
        "tta": bool(meta.get("tta", False)), "tta_flips": meta.get("tta_flips"), "prob_threshold": threshold,
        "extraction": {**extraction_options(meta, extract_threshold), **overrides},
        "scales": list(scales or meta.get("extraction", {}).get("scales", [1.0])), "tile_size": tile_size,
        "overlap": overlap, "block_size": block_size, "block_halo": block_halo, "batch_size": batch_size,
        "band": band, "device": torch_device, "pixel_size_m": source.pixel_size_m, "sun": sun_record,
        "precision": precision_record(precision, used_precision), "verifier": verifier_record,
    }
    return SegmentResult(prob, mask, catalog, params, source.profile, time.monotonic() - t0)


#: Least turn (degrees) between the estimated sun and the sun read back from the first pass's craters for
#: :func:`segment` to segment again (``sun_refine``). The sun-aware training turns its crops by up to ±20°,
#: so the network tolerates an estimate a little off, and finds craters whose shading shows the true sun.
SUN_REFINE_MIN_TURN = 15.0
#: Largest such turn: an estimate farther off lets the network find mounds too, whose shading agrees with the
#: wrong frame, so a larger read-back turn is no evidence.
SUN_REFINE_MAX_TURN = 45.0
#: Share of crater resamples (:data:`SUN_REFINE_RESAMPLES`, bootstrap over the craters) whose read-back lies
#: within :data:`SUN_REFINE_MIN_TURN` of the read-back of all of them: its confidence, the rule of
#: :func:`planetcd.craters.sun.estimate_sun_azimuth`'s (0.9). Few or disagreeing craters (rough, crater-poor
#: ground; craters and mounds mixed) leave the estimate alone.
SUN_REFINE_SUPPORT = 0.9
SUN_REFINE_RESAMPLES = 200
#: Least confidence (mean probability over the crater) of the craters the read-back uses.
SUN_REFINE_MIN_CONFIDENCE = 0.5


def refined_sun_azimuth(image: np.ndarray, craters: np.ndarray, estimate: float,
                        missing: np.ndarray | None = None) -> tuple[float | None, dict]:
    """The sun read back from the craters a first pass found, when it should replace the estimate.

    Not in DeLatte et al. A crater's sun-facing inner wall is dark whatever the network was told:
    :func:`planetcd.craters.sun.azimuth_from_craters` averages the standardised chips of the confident
    craters (:data:`SUN_REFINE_MIN_CONFIDENCE`) and reads where their light comes from. The network, turned
    by an estimate a little off, still finds most craters, and their shading shows the sun the estimate
    missed. Far off (a quarter turn and more) it finds mounds as well, whose shading agrees with the wrong
    frame, so the read-back corrects moderate errors only, and only confident estimates are checked.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        The raw image (missing pixels 0).
    craters : ndarray, shape (n, 4)
        ``x_px, y_px, radius_px, confidence`` of the first pass, on ``image``'s grid.
    estimate : float
        The azimuth the first pass used, degrees.
    missing : ndarray of bool, optional
        Pixels without ground (default: those holding 0).

    Returns
    -------
    azimuth : float or None
        The read-back azimuth when it differs from ``estimate`` by more than :data:`SUN_REFINE_MIN_TURN` and
        at most :data:`SUN_REFINE_MAX_TURN`, and at least :data:`SUN_REFINE_SUPPORT` of
        :data:`SUN_REFINE_RESAMPLES` bootstrap resamples of the craters read it back within
        :data:`SUN_REFINE_MIN_TURN`; else None (keep the estimate).
    record : dict
        ``readback_deg`` (None when no crater was usable), ``n_craters``, ``turn_deg``, ``support`` (that
        share), ``min_turn_deg``, ``max_turn_deg``, ``elsewhere`` (the craters show the sun clearly elsewhere:
        the azimuth is returned).
    """
    from .sun import angle_difference, azimuth_from_chips, crater_sun_chips

    craters = np.asarray(craters, np.float64).reshape(-1, 4)
    image = np.asarray(image)
    missing = (image == 0) if missing is None else missing
    chips = crater_sun_chips(image, craters[craters[:, 3] >= SUN_REFINE_MIN_CONFIDENCE], missing=missing)
    readback = azimuth_from_chips(chips)
    record = {"readback_deg": None, "n_craters": int(len(chips)), "turn_deg": None, "support": 0.0,
              "min_turn_deg": SUN_REFINE_MIN_TURN, "max_turn_deg": SUN_REFINE_MAX_TURN, "elsewhere": False}
    if not np.isfinite(readback):
        return None, record
    counts = np.random.default_rng(0).multinomial(len(chips), np.full(len(chips), 1.0 / len(chips)),
                                                  size=SUN_REFINE_RESAMPLES)
    resampled = azimuth_from_chips(chips, counts)
    support = float(np.mean(np.abs(angle_difference(resampled, readback)) <= SUN_REFINE_MIN_TURN))
    turn = float(angle_difference(readback, estimate))
    elsewhere = SUN_REFINE_MIN_TURN < abs(turn) <= SUN_REFINE_MAX_TURN and support >= SUN_REFINE_SUPPORT
    record.update(readback_deg=round(float(readback), 3), turn_deg=round(turn, 3), support=round(support, 3),
                  elsewhere=bool(elsewhere))
    return (float(readback) % 360.0 if elsewhere else None), record


# --------------------------------------------------------------------------- several scales


def parse_scales(scales) -> tuple[float, ...] | None:
    """Scales of the catalogue: ``"2,1,0.5"`` or a sequence → ``(2.0, 1.0, 0.5)``; each in (0, MAX_SCALE].

    ``None`` or an empty text → ``None`` (the model's scales).
    """
    if scales is None or (isinstance(scales, str) and not scales.strip()):
        return None
    try:
        values = tuple(float(s) for s in (scales.split(",") if isinstance(scales, str) else scales))
    except (TypeError, ValueError):
        raise InputError(f"scales {scales}: expected numbers, e.g. 1,0.5") from None
    if not values or not all(0.0 < s <= MAX_SCALE for s in values):
        raise InputError(f"scales {scales}: every scale must be in (0, {MAX_SCALE:g}]")
    return tuple(dict.fromkeys(values))


def scale_craters(craters: np.ndarray, scale: float) -> np.ndarray:
    """Craters found on a map resampled by ``scale`` → pixels of the full image.

    Pixel ``i`` of the resampled map covers full-image pixels ``i/scale`` to
    ``(i+1)/scale``, so its centre is at ``(i + 0.5)/scale - 0.5``; radii divide by ``scale``.
    """
    out = np.array(craters, dtype=np.float64).reshape(-1, 4)
    out[:, :2] = (out[:, :2] + 0.5) / scale - 0.5
    out[:, 2] /= scale
    return out


def scale_min_radius(scale: float, min_radius: float, coarse_min_radius: float | None = None) -> float:
    """Smallest crater radius on a map resampled by ``scale``, in that map's pixels.

    ``min_radius`` at the full scale, the same size (``min_radius × scale``)
    above it, and ``coarse_min_radius`` (default ``min_radius``) below it.
    """
    if scale > 1.0:
        return min_radius * scale
    if scale < 1.0:
        return min_radius if coarse_min_radius is None else coarse_min_radius
    return min_radius


#: Present pixels :func:`clip_impulses` samples for an image's range.
IMPULSE_STATS_VALUES = 250_000


def clip_impulses(data: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray:
    """A raw (H, W) image with its impulses (hot and dead pixels) clipped by its own steps
    (:func:`planetcd.raster.intensity_stats`' ``impulse_step``, :func:`planetcd.raster.suppress_impulses`): what
    :func:`prepare_window` does to a window, for an image read whole that is resampled or cut into verifier
    chips before any window is prepared. ``missing``: default :func:`planetcd.raster.missing_pixels`."""
    missing = missing_pixels(data) if missing is None else missing
    if missing.all():
        return data
    steps = intensity_stats(data, missing, max_values=IMPULSE_STATS_VALUES).impulse_step
    return suppress_impulses(data, steps[:1], ~missing)[0]


def read_scaled(path, scale: float, band: int = 1) -> np.ndarray:
    """Band ``band`` of a raster resampled by ``scale`` (area average below 1, bilinear above), float32, shape
    ``round(rows × scale), round(cols × scale)``; missing pixels hold 0.

    The band is read whole at full resolution as float32 (:func:`planetcd.raster.read_window`), its impulses
    clipped (:func:`clip_impulses`, before a resampling spreads them), its missing
    pixels (:func:`read_band`: mask, alpha, nodata, NaN, zero unless zeros are data) are set aside, and GDAL
    resamples it in float32 (:func:`gdal_resample`). So the result depends neither on the file's data
    type (GDAL resamples 8- and 16-bit bands in their own type, rounding each pixel: a band × 257 would
    give another image), nor on the file's internal overviews (GDAL reads a reduced size from them),
    and missing pixels do not leak into their neighbours (no dark rim along a nodata collar). An output
    pixel is missing when every input pixel it draws on is. Memory: about 8 bytes per input pixel while
    it runs.
    """
    with open_raster(path) as ds:
        data, missing = read_band(ds, band)
    data = clip_impulses(data, missing)
    return data if scale == 1.0 else rescale_read(data, scale)


def rescale_read(data: np.ndarray, scale: float) -> np.ndarray:
    """:func:`read_scaled` at ``scale`` from its result at scale 1 (``data``, left unchanged): the same resampling,
    without reading and clipping the image again. Missing pixels are those holding 0 (:func:`read_band`)."""
    missing = data == 0
    shape = (max(1, int(round(data.shape[0] * scale))), max(1, int(round(data.shape[1] * scale))))
    data = np.where(missing, np.float32(np.nan), data)
    out = gdal_resample(data, shape, "bilinear" if scale > 1 else "average")
    out_missing = np.isnan(out)
    out[out_missing] = 0.0
    out[(out == 0) & ~out_missing] = PRESENT_ZERO  # signed data: a resampled 0 is a value
    return out


def gdal_resample(values: np.ndarray, shape: tuple[int, int], resampling: str = "average") -> np.ndarray:
    """An ``(H, W)`` float array resampled by GDAL to ``shape``, in float32, NaN being nodata.

    GDAL's own ``average`` or ``bilinear`` (as ``rasterio``'s decimated reads), run on an in-memory float32
    copy: no rounding to an integer type, NaN pixels take no part. Output pixels that only NaN pixels
    feed are NaN.
    """
    import warnings

    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    values = np.asarray(values, np.float32)
    profile = {"driver": "GTiff", "width": values.shape[1], "height": values.shape[0], "count": 1,
               "dtype": "float32", "nodata": float("nan")}
    with warnings.catch_warnings(), MemoryFile() as memory:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memory.open(**profile) as dst:
            dst.write(values, 1)
        with memory.open() as src:
            out = src.read(1, out_shape=tuple(int(v) for v in shape), resampling=Resampling[resampling])
    return out.astype(np.float32, copy=False)


def resample_array(image: np.ndarray, scale: float, missing: np.ndarray | None = None) -> np.ndarray:
    """An in-memory image resampled by ``scale`` (bilinear, anti-aliased below 1), float32.

    ``missing`` (bool, the image's shape; :func:`planetcd.raster.missing_pixels`): those pixels take no
    part (the resampling is normalised by the resampled share of present pixels, so a nodata collar
    leaves no dark rim); an output pixel less than half of which is present is missing and holds 0.
    """
    from skimage.transform import resize

    image = np.asarray(image, np.float32)
    shape = (max(1, int(round(image.shape[0] * scale))), max(1, int(round(image.shape[1] * scale))))

    def resized(array: np.ndarray) -> np.ndarray:
        return resize(array, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)

    if missing is None or not np.any(missing):
        return resized(image)
    missing = np.asarray(missing, bool)
    present = resized((~missing).astype(np.float32))
    values = resized(np.where(missing, np.float32(0.0), image))
    ok = present >= 0.5
    return np.where(ok, values / np.where(ok, present, np.float32(1.0)), np.float32(0.0)).astype(np.float32)


def multiscale_craters(
    model: torch.nn.Module,
    image,
    scales,
    extract: Callable[[np.ndarray, float], np.ndarray],
    *,
    full_craters: np.ndarray | None = None,
    min_radius: float = 3.0,
    coarse_min_radius: float | None = None,
    band: int = 1,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    sun_azimuth: float | None = None,
    precision: str | None = None,
    magnified_block: int | None = None,
    scaled_reads: dict | None = None,
) -> np.ndarray:
    """Craters found on the image at several scales, merged with the duplicate rule.

    The network sees craters of a limited size range; big craters are found by
    segmenting the image again at ``scales`` below 1 (resampled by area
    average), small ones at scales above 1 (bilinear upsampling: the network
    sees them bigger), extracting craters there, and bringing them back to
    full-image pixels (:func:`scale_craters`).  The lists are merged with
    :func:`planetcd.craters.match.suppress_duplicates` (DeepMoon rule; the
    higher confidence wins).  A scale ``s`` costs ``s²`` times the network
    time of the full image and holds the resampled image and its map in memory
    (each is one window of :func:`image_probability`).

    Parameters
    ----------
    image : path of a raster, or an (H, W) array (raw intensities)
    scales : floats in (0, MAX_SCALE]; 1 is the full image
    extract : callable ``(prob, min_radius) -> (n, 4)`` craters (``x, y, radius, confidence``) in the map's pixels
    full_craters : the full-scale craters when already extracted (used for scale 1)
    min_radius : smallest radius at scale 1, in pixels; at a scale above 1 the same size
        (``min_radius × s`` pixels of the upsampled map)
    coarse_min_radius : smallest radius at scales below 1, in pixels of the resampled map (default ``min_radius``)
    sun_azimuth : segment every scale in the canonical frame (:func:`canonical_probability`; a resampling
        by a scale keeps the light direction); None: as it is
    precision : of the network (:func:`predict_tiles`); None: the caller's context
    magnified_block : int, optional
        Segment the scales above 1 block by block (:func:`magnified_craters`) with blocks of this side
        (input pixels). Default: only when the magnified image would exceed
        :data:`MAGNIFIED_WINDOW_PIXELS`, with blocks of :data:`MAGNIFIED_BLOCK`.
    scaled_reads : dict, optional
        The image at each scale as the network takes it (``(PREPARED, scale) ->`` :func:`prepare_image`'s
        ``(prepared, fill)``; a raster's whole read at scale 1, impulses clipped, under :data:`FULL_READ`,
        the other scales resampled from it), filled here and read again by a later call on the same image:
        :func:`segment` passes one to the catalogue, to its decoys and to the verifier's pyramid, so the image
        is read and clipped once, and resampled and scaled once per scale.

    Returns
    -------
    ndarray (n, 4), float64, sorted by decreasing confidence.
    """
    found: dict[float, np.ndarray] = {}
    rows, cols = _image_shape(image)
    for s in scales:
        s = float(s)
        if s == 1.0 and full_craters is not None:
            found[s] = np.asarray(full_craters, np.float64).reshape(-1, 4)
            continue
        if s > 1.0 and (magnified_block is not None or s * s * rows * cols > MAGNIFIED_WINDOW_PIXELS):
            found[s] = magnified_craters(model, image, s, extract, min_radius=min_radius, band=band,
                                         block=magnified_block or MAGNIFIED_BLOCK, tile_size=tile_size, overlap=overlap,
                                         batch_size=batch_size, sun_azimuth=sun_azimuth, precision=precision)
            log.info("scale %g: %d craters (block by block)", s, len(found[s]))
            continue
        prepared = None if scaled_reads is None else scaled_reads.get((PREPARED, s))
        if prepared is TOO_SMALL:  # said once, by the first call on this image (the decoy pass is the second)
            continue
        if prepared is None:
            if isinstance(image, np.ndarray) and s == 1.0:
                data = image
            else:
                full = full_read(image, band, scaled_reads)
                data = full if s == 1.0 else rescale_read(full, s)
            if min(data.shape) < MIN_SIZE:
                log.warning("scale %g: image of %dx%d px is too small to segment; skipped", s, *data.shape)
                if scaled_reads is not None:
                    scaled_reads[(PREPARED, s)] = TOO_SMALL
                continue
            prepared = prepare_image(data)
            if scaled_reads is not None:
                scaled_reads[(PREPARED, s)] = prepared
        prob = canonical_probability(model, prepared[0], sun_azimuth, fill=prepared[1], tile_size=tile_size,
                                     overlap=overlap, batch_size=batch_size, precision=precision)
        found[s] = extract(prob, scale_min_radius(s, min_radius, coarse_min_radius))
        log.info("scale %g: %d craters", s, len(found[s]))
    return merge_scales(found)


def _image_shape(image) -> tuple[int, int]:
    """``(rows, cols)`` of an (H, W) array, or of a raster from its header."""
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    with open_raster(image) as ds:
        return int(ds.height), int(ds.width)


def magnified_craters(
    model: torch.nn.Module,
    image,
    scale: float,
    extract: Callable[[np.ndarray, float], np.ndarray],
    *,
    min_radius: float = 3.0,
    band: int = 1,
    block: int = MAGNIFIED_BLOCK,
    halo: int = MAGNIFIED_HALO,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    sun_azimuth: float | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """Craters of the image magnified by ``scale`` (> 1), segmented block by block.

    The whole-image path of :func:`multiscale_craters` would hold the
    magnified image and its map (``scale²`` times the image) in memory; here
    every block of ``block`` input pixels, with a ``halo`` of input pixels on
    each side, is read, magnified (:func:`resample_array`), scaled with the
    statistics of the whole image (so blocks agree with each other), segmented
    in the canonical frame, and its craters whose centres lie in the block's
    core are kept. Memory: one magnified block.

    Parameters
    ----------
    image : path of a raster, or an (H, W) array (raw intensities)
    scale : float, > 1
    extract : callable ``(prob, min_radius) -> (n, 4)`` craters in the map's pixels
    min_radius : smallest radius in input pixels (``min_radius × scale`` in the magnified map)
    block, halo : int
        Core side and halo of the blocks, input pixels. A crater is seen whole when its
        diameter is at most the halo.

    Returns
    -------
    ndarray (n, 4), float64: craters in the pixels of the image magnified by ``scale`` (as
    :func:`merge_scales` takes them).
    """
    if scale <= 1.0:
        raise InputError(f"magnified_craters: scale must be above 1, got {scale}")
    height, width = _image_shape(image)
    stats = image_stats(image, band)
    fill = _prepared_mean(stats)
    parts = []
    for tile in halo_tiles(height, width, int(block), int(halo)):
        r0, c0 = tile.read[:2]
        prepared, _ = read_prepared(image, tile.read, stats, band, scale)
        if min(prepared.shape) < MIN_SIZE:
            continue
        prob = canonical_probability(model, prepared, sun_azimuth, fill=fill, tile_size=tile_size, overlap=overlap,
                                     batch_size=batch_size, precision=precision)
        craters = np.asarray(extract(prob, scale_min_radius(scale, min_radius)), np.float64).reshape(-1, 4)
        if not len(craters):
            continue
        craters[:, 0] += c0 * scale  # the block's magnified pixels -> the whole magnified image's
        craters[:, 1] += r0 * scale
        cr, cc, ch, cw = tile.core
        centre = scale_craters(craters, scale)  # input pixels, to test the core
        core = ((centre[:, 0] >= cc - 0.5) & (centre[:, 0] < cc + cw - 0.5)
                & (centre[:, 1] >= cr - 0.5) & (centre[:, 1] < cr + ch - 0.5))
        parts.append(craters[core])
    return np.vstack(parts) if parts else np.zeros((0, 4))


def catalog_craters(
    model: torch.nn.Module,
    image,
    prob: np.ndarray,
    *,
    threshold: float | None = None,
    scales=None,
    overrides: dict | None = None,
    band: int = 1,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    sun_azimuth: float | None = None,
    precision: str | None = None,
    scaled_reads: dict | None = None,
) -> np.ndarray:
    """The craters of an image as :func:`segment` lists them, from its full-image probability map.

    The model's registry extraction (:func:`planetcd.craters.extract.extraction_options`,
    ``threshold`` and ``overrides`` of its keyword arguments replacing the
    model's) runs on ``prob``, and on the image at the model's other scales
    (``extraction.scales``, or ``scales``) through :func:`multiscale_craters`.

    Parameters
    ----------
    model : segmenter with a ``metadata`` dict (:func:`planetcd.models.load`)
    image : path of a raster, or an (H, W) array (raw intensities)
    prob : ndarray, shape (H, W)
        The full-image probability (NaN: no data; it counts as 0, and a crater whose centre is there,
        at any scale, is dropped: :func:`centre_missing`).
    sun_azimuth : float, optional
        The other scales are segmented in the canonical frame (as ``prob`` was); None: as they are.
    precision : {"fp32", "bf16"}, optional
        Of the network at the other scales (as ``prob``'s); None: the caller's context.
    scaled_reads : dict, optional
        The image at the other scales, shared between calls on the same image (:func:`multiscale_craters`).

    Returns
    -------
    ndarray (n, 4), float64: ``x_px, y_px, radius_px, confidence`` in full-image pixels.
    """
    from .extract import extract_craters

    options = extraction_options(model.metadata, threshold)
    options.update(overrides or {})
    min_radius = options.pop("min_radius")
    ext = model.metadata.get("extraction", {})

    def extract(p, min_r):
        return extract_craters(np.nan_to_num(p, nan=0.0), min_radius=min_r, **options)

    craters = extract(prob, min_radius)
    scales = tuple(float(s) for s in (scales or ext.get("scales", [1.0])))
    if scales != (1.0,):
        craters = multiscale_craters(model, image, scales, extract, full_craters=craters if 1.0 in scales else None,
                                     min_radius=min_radius, coarse_min_radius=ext.get("coarse_min_radius"), band=band,
                                     tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                                     sun_azimuth=sun_azimuth, precision=precision, scaled_reads=scaled_reads)
    return craters[~centre_missing(craters, prob)]


def centre_missing(craters: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Whether each crater's centre pixel is missing (NaN in ``prob``, as :func:`segment` marks no data).

    ``craters`` ``(n, >=2)``: ``x_px, y_px`` in ``prob``'s pixels (a centre just outside the grid reads
    the nearest edge pixel). Returns ``(n,)`` bool. A crater whose centre holds no ground is not one (the
    scales other than 1 see the image resampled, not its mask).
    """
    craters = np.asarray(craters, np.float64)
    if not len(craters):
        return np.zeros(0, bool)
    rows = np.clip(np.round(craters[:, 1]), 0, prob.shape[0] - 1).astype(np.int64)
    cols = np.clip(np.round(craters[:, 0]), 0, prob.shape[1] - 1).astype(np.int64)
    return np.isnan(prob[rows, cols])


#: Key of :func:`multiscale_craters`' ``scaled_reads`` under which a raster's whole read at full resolution,
#: impulses clipped (:func:`read_scaled` at scale 1), is kept: the other scales and the verifier's pyramid
#: are made from it.
FULL_READ = "full"
#: Key (with the scale: ``(PREPARED, scale)``) of :func:`multiscale_craters`' ``scaled_reads`` under which the
#: image at that scale is kept as the network takes it (:func:`prepare_image`): the decoy pass segments the
#: same input under the opposite sun.
PREPARED = "prepared"
#: What ``scaled_reads[(PREPARED, scale)]`` holds for a scale whose image is too small to segment.
TOO_SMALL = "too small"


def full_read(image, band: int = 1, scaled_reads: dict | None = None) -> np.ndarray:
    """:func:`read_scaled` of a raster at scale 1, taken from ``scaled_reads[FULL_READ]`` when it is there (and
    stored there when it was not): an image is read and clipped once for all its scales and the verifier.

    ``image``: a path, or an ``(H, W)`` array of raw intensities, which is put in the same form
    (:func:`array_as_read`), so that an image segments the same as an array and as a file.
    """
    full = None if scaled_reads is None else scaled_reads.get(FULL_READ)
    if full is None:
        full = array_as_read(image) if isinstance(image, np.ndarray) else read_scaled(image, 1.0, band)
        if scaled_reads is not None and full.size <= MAGNIFIED_WINDOW_PIXELS:
            # kept for the other calls only while it is small: a larger image is read again when needed, so
            # that it is not held (4 bytes a pixel) through the decoy pass and the magnified blocks
            scaled_reads[FULL_READ] = full
    return full


def array_as_read(image: np.ndarray) -> np.ndarray:
    """An ``(H, W)`` array of raw intensities as :func:`read_scaled` gives a raster at scale 1: float32, impulses
    clipped (:func:`clip_impulses`), missing pixels (:func:`planetcd.raster.missing_pixels`) 0 and present
    zeros :data:`PRESENT_ZERO` (:func:`read_band`'s convention)."""
    data = np.array(image, np.float32)
    missing = missing_pixels(data)
    return mark_missing(clip_impulses(data, missing), missing)


def verifier_pyramid(image, verifier, max_radius: float, band: int = 1,
                     scaled_reads: dict | None = None) -> list[np.ndarray]:
    """The box-mean pyramid a chip verifier cuts its chips from, deep enough for craters up to ``max_radius`` px.

    ``image``: path of a raster (band ``band``) or an (H, W) array of raw intensities, read whole; impulses are
    clipped (:func:`clip_impulses`: a hot pixel would set a chip's contrast) and missing pixels filled as for the
    segmenter (:func:`mirror_fill`). A deeper pyramid gives
    the same chips to smaller craters, so one pyramid serves several catalogues of the image.
    """
    from .verify import CHIP_SIZE, image_pyramid, pyramid_levels_for, verifier_contexts

    data = full_read(image, band, scaled_reads)
    meta = getattr(verifier, "metadata", {}) or {}
    levels = pyramid_levels_for(float(max_radius), int(meta.get("chip_size", CHIP_SIZE)),
                                max(verifier_contexts(verifier)))
    missing = missing_pixels(data)
    if missing.any() and not missing.all():  # the segmenter's fill (no step along a collar), not a flat mean
        data = mirror_fill(data, missing, float(data[~missing].mean()))
        missing = None
    return image_pyramid(data, levels, missing)


def verify_catalog(craters: np.ndarray, image, verifier, threshold: float, *, sun_azimuth: float | None = None,
                   band: int = 1, pyramid: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the craters a chip verifier accepts (:mod:`planetcd.craters.verify`): the second stage of :func:`segment`.

    Parameters
    ----------
    craters : ndarray, shape (n, 4)
        ``x_px, y_px, radius_px, confidence`` on the image's grid (:func:`catalog_craters`).
    image : path of a raster, or an (H, W) array (raw intensities)
        Read whole (band ``band``, missing pixels filled with the mean) into a
        box-mean pyramid: 4/3 × 4 bytes per pixel, beside the probability map.
    verifier : planetcd.craters.verify.ChipVerifier
    threshold : float
        Verifier probability a crater needs, in ``[0, 1)``.
    sun_azimuth : float, optional
        The image's sun (chips are cut in its canonical frame, light from the left); None: the input axes.
    pyramid : list of ndarray, optional
        :func:`verifier_pyramid` of ``image`` already made (deep enough for these craters); ``image`` is
        then not read.

    Returns
    -------
    kept : ndarray, shape (m, 4)
        The accepted craters, in the input order.
    scores : ndarray, shape (n,)
        The verifier probability of every input crater.
    """
    from .verify import verify_craters

    craters = np.asarray(craters, np.float64).reshape(-1, 4)
    if not len(craters):
        return craters, np.zeros(0)
    if pyramid is None:
        pyramid = verifier_pyramid(image, verifier, float(craters[:, 2].max()), band)
    frame = canonical_frame(pyramid[0].shape, sun_azimuth) if sun_azimuth is not None else None
    scores = verify_craters(verifier, pyramid, craters, frame)
    return craters[scores >= threshold], scores


def merge_scales(found) -> np.ndarray:
    """``{scale: craters in that map's pixels}`` → one list in full-image pixels, duplicates removed.

    Uses :func:`planetcd.craters.match.suppress_duplicates` (DeepMoon rule, the
    higher confidence wins); sorted by decreasing confidence.
    """
    from .match import suppress_duplicates

    parts = [scale_craters(c, s) for s, c in found.items()]
    craters = np.vstack(parts) if parts else np.zeros((0, 4))
    if len(craters) > 1:
        craters = craters[suppress_duplicates(craters, craters[:, 3])]
    return craters[np.argsort(-craters[:, 3], kind="stable")].reshape(-1, 4)
