"""Whole-image crater segmentation: overlapping tiles, blended, streamed to GeoTIFFs on the input grid.

A raster of any size is read window by window (:func:`planetcd.raster.read_window`),
one row of tiles at a time; tiles overlap by ``overlap`` pixels and their
probabilities are blended with :func:`planetcd.tiling.blend_weights`, so tile
seams leave no mark.  Finished rows are written at once, so memory stays
bounded by one row of tiles.  Intensities are normalized with limits estimated
once for the whole raster (the same percentiles as in training), and missing
pixels (zero, nodata) are replaced by the image mean before the network sees
them, as in DeLatte et al.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from ..errors import InputError
from ..raster import geotiff_profile, geotiff_writer, open_raster, overview_shape, read_window
from ..tiling import blend_weights, overlapping_tiles
from .train import NORM_PERCENTILES, normalize_image

log = logging.getLogger("planetcd.craters.segment")

__all__ = [
    "MIN_SIZE", "ImageStats", "image_stats", "predict_tiles", "segment_array", "segment_raster", "SegmentResult",
    "merge_scales", "multiscale_craters", "catalog_craters", "parse_scales", "scale_craters", "scale_min_radius",
]

#: Smallest image side (pixels) that is segmented.
MIN_SIZE = 16
#: Largest resampling factor of the catalogue's extra scales (``--scales``); a scale s holds s² times the image in memory.
MAX_SCALE = 4.0
PROB_NAME = "crater_prob.tif"
MASK_NAME = "crater_mask.tif"
MASK_NODATA = 255


@dataclass(frozen=True)
class ImageStats:
    """Whole-image normalization: percentile limits and the fill value of missing pixels."""

    low: float
    high: float
    mean: float


def _missing(data: np.ndarray, valid: np.ndarray, nodata) -> np.ndarray:
    """Missing pixels: outside ``valid``, zero, equal to ``nodata`` or not finite."""
    ok = valid & np.isfinite(data) & (data != 0)
    if nodata is not None and np.isfinite(nodata):
        ok &= data != nodata
    return ~ok


def check_input(ds, path, band: int) -> None:
    """Raise :class:`InputError` when an open raster is too small to segment or lacks ``band`` (1-based)."""
    if ds.height < MIN_SIZE or ds.width < MIN_SIZE:
        raise InputError(f"{path}: image of {ds.height}x{ds.width} px is too small (at least {MIN_SIZE}x{MIN_SIZE})")
    if band < 1 or band > ds.count:
        raise InputError(f"{path}: no band {band} (the raster has {ds.count})")


def image_stats(ds, band: int = 1) -> ImageStats:
    """Normalization limits of a dataset's band, from a decimated read of its valid, non-zero pixels."""
    data, valid = read_window(ds, bands=[band], out_shape=overview_shape(ds.height, ds.width))
    values = data[0][~_missing(data[0], valid, ds.nodata)]
    if values.size == 0:
        raise InputError(f"{ds.name}: image has no valid pixels (all nodata or zero)")
    low, high = np.percentile(values, NORM_PERCENTILES)
    if not high > low:
        high = low + 1.0
    return ImageStats(float(low), float(high), float(values.mean()))


def _prepare(data: np.ndarray, missing: np.ndarray, stats: ImageStats) -> np.ndarray:
    data = np.where(missing, np.float32(stats.mean), data).astype(np.float32, copy=False)
    return normalize_image(data, stats.low, stats.high)


def predict_tiles(model: torch.nn.Module, tiles: np.ndarray, device="cpu", batch_size: int = 4) -> np.ndarray:
    """Probabilities for a stack of prepared tiles ``(n, H, W)`` → ``(n, H, W)`` float32."""
    out = np.empty(tiles.shape, np.float32)
    with torch.inference_mode():
        for i in range(0, len(tiles), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(tiles[i : i + batch_size, None], np.float32)).to(device)
            out[i : i + batch_size] = model(x)[:, 0].float().cpu().numpy()
    return out


def _iter_tile_rows(height: int, width: int, tile: int, overlap: int):
    """Tiles grouped by row offset, in order: yields ``(row_off, tile_h, [col_offs], tile_w)``."""
    grid = overlapping_tiles(height, width, tile, overlap)
    for r in np.unique(grid[:, 0]):
        sel = grid[grid[:, 0] == r]
        yield int(r), int(sel[0, 2]), [int(c) for c in sel[:, 1]], int(sel[0, 3])


def _run(
    height: int,
    width: int,
    read: Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]],
    emit: Callable[[int, np.ndarray, np.ndarray], None],
    model: torch.nn.Module,
    *,
    tile: int,
    overlap: int,
    device,
    batch_size: int,
    progress: bool,
) -> None:
    """Stream tile rows: ``read(r, c, h, w)`` gives prepared pixels and the missing mask;
    ``emit(row_off, prob_rows, missing_rows)`` receives finished rows."""
    if overlap >= min(tile, height, width) and min(height, width) > 1:
        overlap = max(0, min(tile, height, width) // 2)
    rows = list(_iter_tile_rows(height, width, tile, overlap))
    n_tiles = sum(len(cols) for _, _, cols, _ in rows)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tiles, desc="segmenting", unit="tile", file=sys.stderr, leave=False)
    buf_start = 0
    acc = np.zeros((0, width), np.float32)
    wsum = np.zeros((0, width), np.float32)
    miss = np.zeros((0, width), bool)
    try:
        for k, (r0, th, cols, tw) in enumerate(rows):
            need = r0 + th - buf_start
            if acc.shape[0] < need:
                grow = need - acc.shape[0]
                acc = np.vstack([acc, np.zeros((grow, width), np.float32)])
                wsum = np.vstack([wsum, np.zeros((grow, width), np.float32)])
                miss = np.vstack([miss, np.zeros((grow, width), bool)])
            weights = blend_weights(th, tw, overlap)
            for i in range(0, len(cols), batch_size):
                chunk = cols[i : i + batch_size]
                stack, masks = zip(*(read(r0, c, th, tw) for c in chunk))
                probs = predict_tiles(model, np.stack(stack), device, batch_size)
                for c, p, m in zip(chunk, probs, masks):
                    rr = slice(r0 - buf_start, r0 - buf_start + th)
                    acc[rr, c : c + tw] += p * weights
                    wsum[rr, c : c + tw] += weights
                    miss[rr, c : c + tw] |= m
                if bar is not None:
                    bar.update(len(chunk))
            done_to = rows[k + 1][0] if k + 1 < len(rows) else height
            n_done = done_to - buf_start
            if n_done > 0:
                prob = (acc[:n_done] / np.maximum(wsum[:n_done], 1e-12)).astype(np.float32)
                emit(buf_start, prob, miss[:n_done].copy())
                acc, wsum, miss = acc[n_done:], wsum[n_done:], miss[n_done:]
                buf_start = done_to
    finally:
        if bar is not None:
            bar.close()


def segment_array(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 64,
    device="cpu",
    batch_size: int = 4,
    prepared: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Crater probability of a whole in-memory image ``(H, W)``, tiled and blended.

    ``image`` is raw (normalized here with whole-image limits, missing pixels =
    zeros and NaNs filled with the mean) unless ``prepared`` is true, in which
    case it is used as is (already in -1..1).
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError("segment_array expects a (H, W) image")
    h, w = image.shape
    if prepared:
        stats = None
        missing = np.zeros_like(image, bool)
        data = image
    else:
        missing = _missing(image, np.ones_like(image, bool), None)
        values = image[~missing]
        if values.size == 0:
            raise InputError("image has no valid pixels")
        low, high = np.percentile(values, NORM_PERCENTILES)
        stats = ImageStats(float(low), float(high if high > low else low + 1), float(values.mean()))
        data = _prepare(image, missing, stats)
    out = np.zeros((h, w), np.float32)

    def read(r, c, th, tw):
        return data[r : r + th, c : c + tw], missing[r : r + th, c : c + tw]

    def emit(r, prob, _miss):
        out[r : r + prob.shape[0]] = prob

    model.eval()
    _run(h, w, read, emit, model, tile=tile, overlap=overlap, device=device, batch_size=batch_size, progress=progress)
    return out


@dataclass
class SegmentResult:
    """Paths written by :func:`segment_raster` and what was found."""

    prob_path: Path
    mask_path: Path
    shape: tuple[int, int]
    crater_pixels: int
    seconds: float


@contextlib.contextmanager
def prob_mask_writers(outdir: Path, profile: dict, width: int, threshold: float):
    """Open ``crater_prob.tif`` and ``crater_mask.tif`` in ``outdir`` for bands of full rows.

    Yields ``(emit, counts)``: ``emit(row, prob, missing)`` writes a band of
    probabilities ``(rows, width)`` starting at ``row`` (NaN and mask 255 where
    ``missing``; mask 1 where the probability reaches ``threshold``) and adds
    its crater pixels to ``counts["crater"]``. Both files appear only when the
    block ends without an error (:func:`planetcd.raster.geotiff_writer`).
    """
    prob_profile = geotiff_profile(profile, dtype="float32", nodata=float("nan"))
    mask_profile = geotiff_profile(profile, dtype="uint8", nodata=MASK_NODATA)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    counts = {"crater": 0}
    with geotiff_writer(outdir / PROB_NAME, prob_profile) as prob_dst, geotiff_writer(outdir / MASK_NAME, mask_profile) as mask_dst:

        def emit(r, prob, miss):
            mask = (prob >= threshold).astype(np.uint8)
            mask[miss] = MASK_NODATA
            prob = prob.copy()
            prob[miss] = np.nan
            counts["crater"] += int((mask == 1).sum())
            win = Window(0, r, width, prob.shape[0])
            prob_dst.write(prob[None], window=win)
            mask_dst.write(mask[None], window=win)

        yield emit, counts


def segment_raster(
    path,
    outdir,
    model: torch.nn.Module,
    *,
    threshold: float = 0.5,
    tile: int = 512,
    overlap: int = 64,
    device="cpu",
    batch_size: int = 4,
    band: int = 1,
    progress: bool = False,
) -> SegmentResult:
    """Segment a raster file window by window; write ``crater_prob.tif`` and ``crater_mask.tif`` in ``outdir``.

    Both outputs are on the input's grid (size, CRS, transform).  Missing
    pixels get probability NaN (the file's nodata) and mask value 255 (nodata);
    elsewhere the mask is 1 where the probability reaches ``threshold``.
    Outputs appear only when complete.
    """
    import time

    from ..inputs import check_raster  # the one input check: missing, truncated, empty, too small, no band
    check_raster(path, min_size=MIN_SIZE, band=band)
    t0 = time.monotonic()
    outdir = Path(outdir)
    with open_raster(path) as ds:
        check_input(ds, path, band)
        stats = image_stats(ds, band)
        nodata = ds.nodata
        src_profile = ds.profile
        h, w = ds.height, ds.width

        def read(r, c, th, tw):
            data, valid = read_window(ds, Window(c, r, tw, th), bands=[band])
            missing = _missing(data[0], valid, nodata)
            return _prepare(data[0], missing, stats), missing

        model.eval()
        with prob_mask_writers(outdir, src_profile, w, threshold) as (emit, counts):
            _run(h, w, read, emit, model, tile=tile, overlap=overlap, device=device, batch_size=batch_size, progress=progress)
    return SegmentResult(outdir / PROB_NAME, outdir / MASK_NAME, (h, w), counts["crater"], time.monotonic() - t0)


# --------------------------------------------------------------------------- several scales


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    """``"2,1,0.5"`` → ``(2.0, 1.0, 0.5)``; every scale in (0, MAX_SCALE]. ``None``/empty → ``None``."""
    if text is None or not str(text).strip():
        return None
    try:
        scales = tuple(float(s) for s in str(text).split(","))
    except ValueError:
        raise InputError(f"--scales {text}: expected comma-separated numbers, e.g. 1,0.5") from None
    if not all(0.0 < s <= MAX_SCALE for s in scales):
        raise InputError(f"--scales {text}: every scale must be in (0, {MAX_SCALE:g}]")
    return tuple(dict.fromkeys(scales))


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


def read_scaled(path, scale: float, band: int = 1) -> np.ndarray:
    """Band ``band`` of a raster resampled by ``scale`` (area average below 1, bilinear above), float32;
    missing pixels hold 0."""
    from rasterio.enums import Resampling

    with open_raster(path) as ds:
        shape = (max(1, int(round(ds.height * scale))), max(1, int(round(ds.width * scale))))
        resampling = Resampling.bilinear if scale > 1 else Resampling.average
        data = ds.read(band, out_shape=shape, resampling=resampling, masked=True).astype(np.float32)
        return np.ma.filled(data, 0.0)


def resample_array(image: np.ndarray, scale: float) -> np.ndarray:
    """An in-memory image resampled by ``scale`` (bilinear, anti-aliased below 1, as :func:`read_scaled`)."""
    from skimage.transform import resize

    image = np.asarray(image, np.float32)
    shape = (max(1, int(round(image.shape[0] * scale))), max(1, int(round(image.shape[1] * scale))))
    return resize(image, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


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
    tile: int = 512,
    overlap: int = 64,
    device="cpu",
    batch_size: int = 4,
) -> np.ndarray:
    """Craters found on the image at several scales, merged with the duplicate rule.

    The network sees craters of a limited size range; big craters are found by
    segmenting the image again at ``scales`` below 1 (resampled by area
    average), small ones at scales above 1 (bilinear upsampling: the network
    sees them bigger), extracting craters there, and bringing them back to
    full-image pixels (:func:`scale_craters`).  The lists are merged with
    :func:`planetcd.craters.match.suppress_duplicates` (DeepMoon rule; the
    higher confidence wins).  A scale ``s`` costs ``s²`` times the network
    time of the full image and holds the resampled image and its map in memory.

    Parameters
    ----------
    image : path of a raster, or an (H, W) array (raw intensities)
    scales : floats in (0, MAX_SCALE]; 1 is the full image
    extract : callable ``(prob, min_radius) -> (n, 4)`` craters (``x, y, radius, confidence``) in the map's pixels
    full_craters : the full-scale craters when already extracted (used for scale 1)
    min_radius : smallest radius at scale 1, in pixels; at a scale above 1 the same size
        (``min_radius × s`` pixels of the upsampled map)
    coarse_min_radius : smallest radius at scales below 1, in pixels of the resampled map (default ``min_radius``)

    Returns
    -------
    ndarray (n, 4), float64, sorted by decreasing confidence.
    """
    found: dict[float, np.ndarray] = {}
    for s in scales:
        s = float(s)
        if s == 1.0 and full_craters is not None:
            found[s] = np.asarray(full_craters, np.float64).reshape(-1, 4)
            continue
        if isinstance(image, np.ndarray):
            data = image if s == 1.0 else resample_array(image, s)
        else:
            data = read_scaled(image, s, band)
        if min(data.shape) < MIN_SIZE:
            log.warning("scale %g: image of %dx%d px is too small to segment; skipped", s, *data.shape)
            continue
        prob = segment_array(model, data, tile=tile, overlap=overlap, device=device, batch_size=batch_size)
        found[s] = extract(prob, scale_min_radius(s, min_radius, coarse_min_radius))
        log.info("scale %g: %d craters", s, len(found[s]))
    return merge_scales(found)


def catalog_craters(
    model: torch.nn.Module,
    image,
    prob: np.ndarray,
    *,
    threshold: float | None = None,
    scales=None,
    overrides: dict | None = None,
    band: int = 1,
    tile: int = 512,
    overlap: int = 64,
    device="cpu",
    batch_size: int = 4,
) -> np.ndarray:
    """The craters of an image as ``planetcd segment`` lists them, from its full-image probability map.

    The model's registry extraction (:func:`planetcd.craters.extract.extraction_options`,
    ``threshold`` and ``overrides`` of its keyword arguments replacing the
    model's) runs on ``prob``, and on the image at the model's other scales
    (``extraction.scales``, or ``scales``) through :func:`multiscale_craters`.

    Parameters
    ----------
    model : segmenter with a ``metadata`` dict (:func:`planetcd.models.load`)
    image : path of a raster, or an (H, W) array (raw intensities)
    prob : ndarray, shape (H, W)
        The full-image probability (NaN counts as 0).

    Returns
    -------
    ndarray (n, 4), float64: ``x_px, y_px, radius_px, confidence`` in full-image pixels.
    """
    from .extract import extract_craters, extraction_options

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
                                     tile=tile, overlap=overlap, device=device, batch_size=batch_size)
    return craters


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
