"""The change-detection pipeline: Saha & Zhu's patch method on rasters of any size.

``detect(pre, post)`` reads both images window by window, co-registers post
onto pre, computes each image's VGG-16 feature map once (tiles with a halo, so
tile seams do not exist in the features), pools it per patch, scores each
patch pair by the L1 norm of the pooled difference and thresholds the scores
with τ calibrated on pseudo-unchanged pairs. Memory is bounded by the tile
size and the number of patches, not by the image size.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.io import MemoryFile
from rasterio.windows import Window

from ..errors import InputError
from ..features import VGGFeatures, pick_device, run_trunk
from ..raster import (
    fill_invalid,
    open_raster,
    overview_shape,
    pixel_to_map,
    read_window,
    robust_range,
    scale_intensity,
    to_three_bands,
)
from ..tiling import halo_tiles, patch_grid
from .register import AlignedReader, estimate_shift, post_on_pre_grid, undo_displacement
from . import methods as nn_methods
from .methods import NN_SMOOTH, match_resolution, nn_change_map, noise_sigma, top_up_noise
from .scores import PatchPooler, change_scores, patch_cells, pool_patches, upsample_cells
from .threshold import (
    choose_patches,
    kmeans_threshold,
    margin_for,
    pseudo_pair_from_region,
    sample_shifts,
    self_calibrated_threshold,
)

log = logging.getLogger(__name__)

#: Largest crop (pixels per side) used to estimate the global shift.
REGISTRATION_CROP = 1024
#: Patches with less than this fraction of valid pixels (in both images) get no score.
MIN_VALID_FRACTION = 0.5
#: Memory (bytes) the main pass may keep of pre's feature map for the ``nn`` pseudo pairs (one crop window
#: per pair, 2 MB at the defaults): those pairs need no second trunk pass on their pre crop. 0 turns it off.
PSEUDO_REUSE_BYTES = 256 * 2**20


@dataclass
class ImageStats:
    """Robust intensity range and fill value of one image, from a decimated read."""

    low: np.ndarray
    high: np.ndarray
    fill: np.ndarray  #: mean of valid pixels after scaling, per band
    overview: np.ndarray  #: decimated image scaled to 0..1, (bands, h, w)
    overview_valid: np.ndarray


def image_stats(ds, name: str) -> ImageStats:
    data, valid = read_window(ds, out_shape=overview_shape(ds.height, ds.width, 1_000_000))
    if not np.any(valid):
        raise InputError(f"{name}: image has no valid pixels (all nodata)")
    low, high = robust_range(data, valid)
    scaled = scale_intensity(data, low, high)
    fill = scaled[:, valid].mean(axis=1)
    return ImageStats(low, high, fill, fill_invalid(scaled, valid, fill), valid)


def prepare(data: np.ndarray, valid: np.ndarray, stats: ImageStats) -> np.ndarray:
    """Raw window ``(bands, h, w)`` -> network input ``(3, h, w)`` in ``0..1``, invalid pixels at the mean."""
    return to_three_bands(fill_invalid(scale_intensity(data, stats.low, stats.high), valid, stats.fill))


def prepare_pair(pre_data, pre_valid, post_data, post_valid, pre_stats, post_stats) -> np.ndarray:
    """Both windows as a network batch ``(2, 3, h, w)``.

    Where post has no data it takes pre's pixels (and where pre has none, both
    take pre's mean), so footprint edges and nodata holes read as no change.
    """
    pre = prepare(pre_data, pre_valid, pre_stats)
    post = prepare(post_data, post_valid, post_stats)
    both = pre_valid & post_valid
    return np.stack([pre, np.where(both, post, pre)])


@dataclass
class ChangeResult:
    """What :func:`detect` found, on the pre image's pixel grid.

    Attributes
    ----------
    patches : ndarray, int64, shape (n, 4)
        ``row_off, col_off, height, width`` of each patch, pixels.
    change_score : ndarray, float64, shape (n,)
        ρ per patch (NaN where less than half the patch is valid in both images).
    tau : float
        Threshold τ; a patch is changed when ``change_score > tau``.
    changed : ndarray of bool, shape (n,)
    valid_fraction : ndarray, shape (n,)
        Fraction of each patch valid in both images.
    displacement : (dy, dx)
        Estimated displacement of post relative to pre, pixels (undone before scoring).
    """

    patches: np.ndarray
    change_score: np.ndarray
    tau: float
    changed: np.ndarray
    valid_fraction: np.ndarray
    displacement: tuple[float, float]
    registration_error: float
    shape: tuple[int, int]
    crs: object = None
    transform: object = None
    pseudo_scores: np.ndarray | None = None
    pixelwise: dict[int, np.ndarray] | None = None
    pixelwise_threshold: float | None = None
    params: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    overview_pre: np.ndarray | None = None
    overview_post: np.ndarray | None = None

    @property
    def ratio(self) -> np.ndarray:
        """``change_score / tau`` per patch."""
        return self.change_score / self.tau if self.tau > 0 else np.full_like(self.change_score, np.inf)

    @property
    def profile(self) -> dict:
        return {"width": self.shape[1], "height": self.shape[0], "crs": self.crs, "transform": self.transform}

    def candidates(self) -> dict[str, np.ndarray]:
        """The patch table ranked by ρ (best first), scored patches only.

        Columns ``rank, row_off, col_off, height, width, x, y, score, ratio,
        changed``; ``x, y`` are the map coordinates of the patch centre in the
        source CRS (pixel coordinates when the image has no georeferencing).
        """
        scored = np.flatnonzero(np.isfinite(self.change_score))
        order = scored[np.argsort(-self.change_score[scored], kind="stable")]
        p = self.patches[order]
        rows = p[:, 0] + p[:, 2] / 2.0
        cols = p[:, 1] + p[:, 3] / 2.0
        if self.transform is not None:
            x, y = pixel_to_map(self.transform, rows, cols)
        else:
            x, y = cols, rows
        return {
            "rank": np.arange(1, len(order) + 1),
            "row_off": p[:, 0],
            "col_off": p[:, 1],
            "height": p[:, 2],
            "width": p[:, 3],
            "x": x,
            "y": y,
            "score": self.change_score[order],
            "ratio": self.ratio[order],
            "changed": self.changed[order],
            "patch_index": order,
        }

    def write(self, outdir: str | os.PathLike, overwrite: bool = False, quicklook: bool = True) -> list[Path]:
        """Write every output into ``outdir`` (see :mod:`planetcd.change.outputs`)."""
        from .outputs import write_outputs

        return write_outputs(self, outdir, overwrite=overwrite, quicklook=quicklook)


@contextlib.contextmanager
def _open_input(obj, name: str):
    """Open a path, or wrap an array ``(rows, cols)`` / ``(bands, rows, cols)`` as an in-memory raster."""
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


def _central_window(height: int, width: int, size: int) -> Window:
    h, w = min(height, size), min(width, size)
    return Window((width - w) // 2, (height - h) // 2, w, h)


def _register(pre_ds, post_grid, pre_stats: ImageStats, post_stats: ImageStats) -> tuple[tuple[float, float], float]:
    window = _central_window(pre_ds.height, pre_ds.width, REGISTRATION_CROP)
    pre, pre_valid = read_window(pre_ds, window)
    post, post_valid = read_window(post_grid, window)
    pre = scale_intensity(pre, pre_stats.low, pre_stats.high).mean(axis=0)
    post = scale_intensity(post, post_stats.low, post_stats.high).mean(axis=0)
    return estimate_shift(pre, post, pre_valid, post_valid)


def _valid_counts(valid: np.ndarray, patches: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid-pixel counts of patch parts inside a mask placed at ``(row0, col0)``: (patch indexes, counts)."""
    h, w = valid.shape
    r0 = np.clip(patches[:, 0] - row0, 0, h)
    c0 = np.clip(patches[:, 1] - col0, 0, w)
    r1 = np.clip(patches[:, 0] + patches[:, 2] - row0, 0, h)
    c1 = np.clip(patches[:, 1] + patches[:, 3] - col0, 0, w)
    hit = np.flatnonzero((r1 > r0) & (c1 > c0))
    integral = np.pad(valid.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    r0, c0, r1, c1 = r0[hit], c0[hit], r1[hit], c1[hit]
    return hit, integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


@dataclass(frozen=True)
class PairSpec:
    """A picklable description of a pair for per-tile work elsewhere (another process or machine).

    Holds what :func:`detect` decided before the tile loop: paths, displacement
    of post, intensity statistics, and the trunk and scoring options. A worker
    rebuilds a :class:`TileContext` from it (opening the rasters and loading the
    trunk once) and runs :func:`detect_tile`.
    """

    pre: str
    post: str
    displacement: tuple[float, float]
    pre_stats: ImageStats
    post_stats: ImageStats
    layer: int
    relu: bool
    weights: str | None
    method: str
    nn_radius: int
    pooling: str
    device: str
    capture: np.ndarray | None = None  #: (m, 4) cell windows of pre's feature map to return (:class:`TilePartial`)


@dataclass
class TileContext:
    """What :func:`detect_tile` needs: readers on pre's grid, statistics, the trunk, the patch grid and options."""

    pre_reader: AlignedReader
    post_reader: AlignedReader
    pre_stats: ImageStats
    post_stats: ImageStats
    trunk: VGGFeatures
    device: torch.device
    patches: np.ndarray  #: (n, 4) row_off, col_off, height, width, pixels
    cells: np.ndarray  #: (n, 4) the patches in feature cells (:func:`planetcd.change.scores.patch_cells`)
    method: str
    nn_radius: int
    pooling: str
    capture: np.ndarray | None = None  #: (m, 4) ``row, col, height, width`` cell windows of pre's map to copy out


@dataclass
class TilePartial:
    """One tile's contribution to the per-patch pooling and valid-pixel counts.

    Attributes
    ----------
    hit : ndarray, int64, shape (k,)
        Patches whose cell window meets the tile's core.
    pooled : ndarray, float32, shape (2, k, C) or (1, k, 1)
        Pre and post partial pooling (``paper``: max, or sums for ``avg``) or the
        partial max of the nn disagreement (``nn``) over the core cells in each patch.
    cell_counts : ndarray, int64, shape (k,)
        Cells pooled per patch.
    valid_hit, valid_counts : ndarray, int64
        Patches meeting the core's pixels, and their pixels valid in both images.
    captured : list of (j, row, col, values)
        The parts of the context's capture windows inside the core: window ``j``'s cells from
        ``(row, col)`` (relative to the window) are ``values`` ``(C, h, w)`` of pre's feature map.
    """

    hit: np.ndarray
    pooled: np.ndarray
    cell_counts: np.ndarray
    valid_hit: np.ndarray
    valid_counts: np.ndarray
    captured: list = field(default_factory=list)


def _partial_pool(cells: np.ndarray, maps: np.ndarray, row0: int, col0: int, pooling: str):
    """Pool feature maps ``(B, C, h, w)`` (first cell at ``(row0, col0)``) over the patch windows they meet."""
    _, _, h, w = maps.shape
    hit = np.flatnonzero((cells[:, 0] < row0 + h) & (cells[:, 2] > row0) & (cells[:, 1] < col0 + w) & (cells[:, 3] > col0))
    poolers = [PatchPooler(cells[hit], maps.shape[1], pooling) for _ in range(maps.shape[0])]
    for pooler, features in zip(poolers, maps):
        pooler.add(features, row0, col0)
    return hit, np.stack([p.acc for p in poolers]), poolers[0].count


def detect_tile(ctx: TileContext, tile) -> TilePartial:
    """Features of one halo tile of both images, pooled per patch over the tile's core.

    Reads the tile's window of pre and of registered post, runs the trunk once
    on the pair, and returns partial pooled vectors (``paper``) or the partial
    worst nn disagreement (``nn``) of the patches the core meets, with the
    patches' valid-pixel counts. :func:`merge_tile` adds them up; merging all
    tiles in any process gives the same result as the whole-image pass.
    """
    s = ctx.trunk.stride
    height, width = ctx.pre_reader.height, ctx.pre_reader.width
    r, c, h, w = tile.read
    window = Window(c, r, w, h)
    pre_data, pre_valid = ctx.pre_reader.read(window)
    post_data, post_valid = ctx.post_reader.read(window)
    both = pre_valid & post_valid
    batch = prepare_pair(pre_data, pre_valid, post_data, post_valid, ctx.pre_stats, ctx.post_stats)
    if ctx.method == "nn":  # both dates low-passed alike, as in methods.nn_scores
        batch = match_resolution(batch)
    feats = run_trunk(ctx.trunk, batch, ctx.device)
    cr0, cc0 = tile.core[0] // s, tile.core[1] // s
    cr1 = min(-(-(tile.core[0] + tile.core[2]) // s), height // s)
    cc1 = min(-(-(tile.core[1] + tile.core[3]) // s), width // s)
    lr0, lc0 = cr0 - r // s, cc0 - c // s
    if ctx.method == "nn":
        disagreement = nn_change_map(torch.from_numpy(feats[:1]), torch.from_numpy(feats[1:]), ctx.nn_radius)
        core = disagreement.numpy()[:, None, lr0 : lr0 + cr1 - cr0, lc0 : lc0 + cc1 - cc0]
        hit, pooled, counts = _partial_pool(ctx.cells, core, cr0, cc0, "max")
    else:
        core = feats[:, :, lr0 : lr0 + cr1 - cr0, lc0 : lc0 + cc1 - cc0]
        hit, pooled, counts = _partial_pool(ctx.cells, core, cr0, cc0, ctx.pooling)
    ir, ic, ih, iw = tile.inner
    valid_hit, valid_counts = _valid_counts(both[ir : ir + ih, ic : ic + iw], ctx.patches, tile.core[0], tile.core[1])
    captured = []
    if ctx.capture is not None:
        for j, (wr, wc, wh, ww) in enumerate(ctx.capture):
            r0, r1 = max(wr, cr0), min(wr + wh, cr1)
            c0, c1 = max(wc, cc0), min(wc + ww, cc1)
            if r1 > r0 and c1 > c0:
                block = feats[0, :, r0 - r // s : r1 - r // s, c0 - c // s : c1 - c // s]
                captured.append((j, r0 - wr, c0 - wc, np.array(block)))
    return TilePartial(hit, pooled, counts, valid_hit, valid_counts, captured)


class _Captures:
    """Windows of pre's feature map assembled from the tiles' :attr:`TilePartial.captured` parts."""

    def __init__(self, windows: np.ndarray, patch_index: np.ndarray, channels: int):
        self.windows = windows
        self.patch_index = patch_index
        self.maps = [np.zeros((channels, int(h), int(w)), np.float32) for _, _, h, w in windows]
        self.filled = np.zeros(len(windows), np.int64)

    def add(self, j: int, row: int, col: int, values: np.ndarray) -> None:
        self.maps[j][:, row : row + values.shape[1], col : col + values.shape[2]] = values
        self.filled[j] += values.shape[1] * values.shape[2]

    def complete(self) -> dict[int, np.ndarray]:
        """``{patch index: pre's feature map over its pseudo-pair crop}`` of the windows every tile part reached."""
        whole = self.filled == self.windows[:, 2] * self.windows[:, 3]
        return {int(i): m for i, m, ok in zip(self.patch_index, self.maps, whole) if ok}


def merge_tile(partial: TilePartial, pre_pool: PatchPooler, post_pool: PatchPooler, nn_pool: PatchPooler,
               valid_pixels: np.ndarray, captures: _Captures | None = None) -> None:
    """Add one tile's :class:`TilePartial` into the whole-image poolers, valid-pixel counts and captures (in place)."""
    if captures is not None:
        for j, row, col, values in partial.captured:
            captures.add(j, row, col, values)
    hit = partial.hit
    pools = [nn_pool] if partial.pooled.shape[0] == 1 else [pre_pool, post_pool]
    for pool, values in zip(pools, partial.pooled):
        if pool.pooling == "max":
            pool.acc[hit] = np.maximum(pool.acc[hit], values)
        else:
            pool.acc[hit] += values
        pool.count[hit] += partial.cell_counts
    valid_pixels[partial.valid_hit] += partial.valid_counts


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="tile", leave=False, dynamic_ncols=True)


def detect(
    pre,
    post,
    *,
    patch_size: int = 100,
    stride: int | None = None,
    layer: int = 6,
    pooling: str = "max",
    method: str = "paper",
    nn_radius: int = 2,
    threshold: str | float = "pseudo",
    percentile: float = 95.0,
    max_shift: float = 10.0,
    noise_std: float = 0.02,
    n_pseudo: int = 100,
    register: bool = True,
    pixelwise: bool = False,
    relu: bool = True,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    tile_size: int = 1024,
    seed: int = 0,
    progress: bool = False,
    trunk: VGGFeatures | None = None,
    tile_runner=None,
) -> ChangeResult:
    """Detect changed patches between a pre and a post image.

    Parameters
    ----------
    pre, post : path or ndarray
        Rasters GDAL can read (GeoTIFF, PNG, ...), or arrays ``(rows, cols)`` /
        ``(bands, rows, cols)`` (NaN = nodata). Georeferenced rasters on
        different grids are resampled onto pre's grid.
    patch_size : int
        Patch side, pixels (paper: 100 for LROC/HiRISE, 150 for CTX).
    stride : int, optional
        Step between patches, pixels (default ``patch_size``).
    layer : int
        VGG-16 conv layer 1..13 (paper: 6 = conv3_2).
    pooling : {"max", "avg"}
        Global pooling per patch (paper: max).
    method : {"paper", "nn"}
        ``paper``: ρ = L1 norm of the pooled feature difference (Saha & Zhu).
        ``nn``: the worst nearest-neighbour feature disagreement in the patch
        (see :mod:`planetcd.change.methods`): shift-tolerant, sensitive to small new objects.
    nn_radius : int
        Search radius of ``nn`` in feature cells (stride 4 px at layer 6).
    threshold : "pseudo", "kmeans" or float
        τ from pseudo-unchanged pairs (paper), k-means (k = 2) on ρ, or fixed.
    percentile : float
        Percentile of pseudo-pair scores taken as τ (paper: 95).
    max_shift : float
        Largest shift per axis in pseudo pairs, pixels (paper: 10).
    noise_std : float
        Gaussian noise of pseudo pairs on the ``0..1`` intensity scale.
    n_pseudo : int
        Number of pseudo-unchanged pairs.
    register : bool
        Estimate and undo the global shift by phase correlation.
    pixelwise : bool
        Also compute deep change vector magnitude maps inside changed patches.
    relu : bool
        Use the ReLU output of the layer (default) rather than the raw conv output.
    weights : path, optional
        VGG-16 weights (see :func:`planetcd.features.resolve_vgg16_weights`).
    device : {"auto", "cpu", "cuda"}
    tile_size : int
        Side of the tiles the feature maps are computed in, pixels. Each tile is read with a halo
        whose features are computed and dropped (20 px at conv3_2; ``method="nn"`` adds its search
        radius, smoothing and low-pass: 40 px at the defaults): at 1024 px that is 8 % (nn 16 %) more
        trunk work than the image's pixels, at 512 px 16 % (34 %). Memory grows with the square of the
        side (docs/performance.md).
    seed : int
        Seed of the pseudo-pair draw; the same inputs and seed give the same result.
    progress : bool
        Show a progress bar on stderr.
    trunk : VGGFeatures, optional
        A loaded trunk to reuse across calls (``layer``, ``relu`` and ``weights`` are then ignored).
    tile_runner : callable, optional
        ``tile_runner(spec, tiles, patches, cells)`` yields the :class:`TilePartial` of every tile, in
        tile order (:func:`detect_tile` run wherever it likes, e.g. on a Dask cluster:
        :mod:`planetcd.distributed`). Needs ``pre`` and ``post`` as paths. Default: a local loop.

    Returns
    -------
    ChangeResult
    """
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    stride = patch_size if stride is None else int(stride)
    from ..inputs import check_pair  # the one input check: missing, truncated, empty, too small, no overlap
    check_pair(pre, post, min_size=patch_size, size_of=f"one {patch_size} px patch")
    if method not in ("paper", "nn"):
        raise InputError(f"method must be 'paper' or 'nn', got {method!r}")
    if isinstance(threshold, str) and threshold not in ("pseudo", "kmeans"):
        try:
            threshold = float(threshold)
        except ValueError:
            raise InputError(f"threshold must be 'pseudo', 'kmeans' or a number, got {threshold!r}") from None
    rng = np.random.default_rng(seed)
    if tile_runner is not None and (isinstance(pre, np.ndarray) or isinstance(post, np.ndarray)):
        raise InputError("a tile runner (distributed detect) needs pre and post as raster paths, not arrays")

    with contextlib.ExitStack() as stack:
        pre_ds = stack.enter_context(_open_input(pre, "pre"))
        post_ds = stack.enter_context(_open_input(post, "post"))
        height, width = pre_ds.height, pre_ds.width
        if height < patch_size or width < patch_size:
            raise InputError(f"pre image ({width}x{height} px) is smaller than one {patch_size} px patch")
        post_grid = stack.enter_context(post_on_pre_grid(pre_ds, post_ds))
        pre_stats = image_stats(pre_ds, "pre")
        post_stats = image_stats(post_grid, "post")
        if trunk is None:  # before any heavy work, so a weights problem is reported at once
            trunk = VGGFeatures(layer=layer, weights=weights, relu=relu)

        t0 = time.perf_counter()
        displacement, reg_error = (0.0, 0.0), float("nan")
        if register:
            displacement, reg_error = _register(pre_ds, post_grid, pre_stats, post_stats)
            log.info("post is displaced by dy=%.2f, dx=%.2f px relative to pre", *displacement)
        timings["register_s"] = time.perf_counter() - t0
        pre_reader = AlignedReader(pre_ds)
        post_reader = AlignedReader(post_grid, displacement)

        torch_device = pick_device(device)
        trunk = trunk.to(torch_device)
        s = trunk.stride
        halo = -(-trunk.halo // s) * s
        if method == "nn":
            halo += (nn_radius + NN_SMOOTH) * s  # the neighbour search and the box average look past each core cell
            halo += -(-int(np.ceil(4 * nn_methods.NN_BLUR)) // s) * s  # and the low-pass (truncated at 4 σ)
        patches = patch_grid(height, width, patch_size, stride)
        cells = patch_cells(patches, s, height // s, width // s)
        pre_pool = PatchPooler(cells, trunk.channels, pooling)
        post_pool = PatchPooler(cells, trunk.channels, pooling)
        nn_pool = PatchPooler(cells, 1, "max")
        valid_pixels = np.zeros(len(patches), np.int64)

        captures = None
        if threshold == "pseudo" and method == "nn":
            # Residual misregistration after global registration is small: pseudo shifts stay inside the search radius.
            max_shift = min(max_shift, nn_radius * s / 2)
            captures = _plan_captures(patches, halo, s, max_shift, height, width, n_pseudo, rng, pre_stats, post_stats,
                                      trunk.channels)
        capture = None if captures is None else captures.windows

        tiles = halo_tiles(height, width, tile_size, halo, align=s)
        n_pixelwise = 0
        bar = _progress(len(tiles) + (1 if threshold == "pseudo" else 0), progress, "detect")
        t0 = time.perf_counter()
        if tile_runner is None:
            context = TileContext(pre_reader, post_reader, pre_stats, post_stats, trunk, torch_device, patches, cells,
                                  method, nn_radius, pooling, capture)
            partials = (detect_tile(context, tile) for tile in tiles)
        else:
            spec = PairSpec(str(pre), str(post), displacement, pre_stats, post_stats, trunk.layer, trunk.relu,
                            str(trunk.weights_path) if trunk.weights_path is not None else None, method, nn_radius,
                            pooling, str(torch_device), capture)
            partials = tile_runner(spec, tiles, patches, cells)
        for partial in partials:  # merged in tile order, so any runner gives the same result
            merge_tile(partial, pre_pool, post_pool, nn_pool, valid_pixels, captures)
            bar.update(1)
        timings["features_s"] = time.perf_counter() - t0
        pre_maps = {} if captures is None else captures.complete()
        captures = None

        valid_fraction = valid_pixels / (patches[:, 2] * patches[:, 3])
        scored = valid_fraction >= MIN_VALID_FRACTION
        if not np.any(scored):
            raise InputError("no patch has enough valid pixels in both images (do the images overlap?)")
        if method == "nn":
            pre_vectors = None
            change_score = np.where(scored, nn_pool.result()[:, 0].astype(np.float64), np.nan)
        else:
            pre_vectors = pre_pool.result()
            change_score = np.where(scored, change_scores(pre_vectors, post_pool.result()), np.nan)

        t0 = time.perf_counter()
        pseudo_scores = None
        n_reused = 0
        if threshold == "pseudo":
            nn_options = None
            if method == "nn":  # the noise is brought up to post's level, measured on a central crop
                nn_options = {"radius": nn_radius, "post_noise": _post_noise(post_reader, post_stats), "pre_maps": pre_maps}
            pseudo_scores, n_reused = _pseudo_scores(
                trunk, torch_device, pre_reader, pre_stats, patches, valid_fraction, halo, pooling,
                n_pseudo, max_shift, noise_std, rng, pre_vectors, nn_options,
            )
            tau = self_calibrated_threshold(pseudo_scores, percentile)
            bar.update(1)
        elif threshold == "kmeans":
            tau = kmeans_threshold(change_score[scored], seed=seed)
        else:
            tau = float(threshold)
        bar.close()
        pre_maps = None
        timings["threshold_s"] = time.perf_counter() - t0
        changed = np.where(scored, change_score > tau, False)
        log.info("tau = %.4g; %d of %d patches changed", tau, int(changed.sum()), int(scored.sum()))

        pixel_maps, pixel_tau = None, None
        if pixelwise:
            t0 = time.perf_counter()
            pixel_maps, pixel_tau = _pixelwise(trunk, torch_device, pre_reader, post_reader, pre_stats, post_stats,
                                               patches, np.flatnonzero(changed), halo)
            n_pixelwise = len(pixel_maps)
            timings["pixelwise_s"] = time.perf_counter() - t0

        overview_post = post_stats.overview
        if register:
            factor = (height / overview_post.shape[1], width / overview_post.shape[2])
            overview_post, _ = undo_displacement(
                overview_post, post_stats.overview_valid, (displacement[0] / factor[0], displacement[1] / factor[1])
            )
        crs = pre_ds.crs
        transform = pre_ds.transform

    timings["total_s"] = time.perf_counter() - t_start
    params = {
        "method": method, "nn_radius": nn_radius if method == "nn" else None,
        "patch_size": patch_size, "stride": stride, "layer": getattr(trunk, "layer", layer), "pooling": pooling,
        "threshold": threshold if isinstance(threshold, str) else float(threshold), "percentile": percentile,
        "max_shift": max_shift, "noise_std": noise_std, "n_pseudo": n_pseudo, "register": register,
        "pixelwise": pixelwise, "relu": getattr(trunk, "relu", relu), "tile_size": tile_size, "seed": seed,
        "device": str(torch_device), "weights": str(getattr(trunk, "weights_path", None)),
        "pre": str(pre) if not isinstance(pre, np.ndarray) else "<array>",
        "post": str(post) if not isinstance(post, np.ndarray) else "<array>",
        "n_pixelwise_patches": n_pixelwise,
        "n_pseudo_pre_reused": n_reused,
    }
    return ChangeResult(
        patches=patches, change_score=change_score, tau=tau, changed=changed, valid_fraction=valid_fraction,
        displacement=displacement, registration_error=reg_error, shape=(height, width),
        crs=crs, transform=transform if (crs is not None and not transform.is_identity) else None,
        pseudo_scores=pseudo_scores, pixelwise=pixel_maps, pixelwise_threshold=pixel_tau,
        params=params, timings=timings, overview_pre=pre_stats.overview, overview_post=overview_post,
    )


def _region_window(patch: np.ndarray, pad: int) -> Window:
    return Window(int(patch[1]) - pad, int(patch[0]) - pad, int(patch[3]) + 2 * pad, int(patch[2]) + 2 * pad)


def _batches(items: np.ndarray, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _post_noise(post_reader, post_stats: ImageStats) -> float:
    """Noise level (0..1 scale, :func:`~planetcd.change.methods.noise_sigma`) of post, on a central crop."""
    window = _central_window(post_reader.height, post_reader.width, 512)
    post, _ = read_window(post_reader.dataset, window)  # not interpolated: interpolation smooths noise
    return noise_sigma(scale_intensity(post, post_stats.low, post_stats.high).mean(axis=0))


def _pseudo_geometry(patches: np.ndarray, context: int, s: int, max_shift: float, height: int, width: int):
    """Where pseudo pairs are cut: ``margin, crop_h, crop_w, origin_r, origin_c, interior``.

    Each pseudo-post crop keeps ``context`` pixels around its patch and starts on the feature grid
    (``origin``, pixels); ``interior`` marks patches whose crop and shift margin lie inside the image.
    """
    margin = margin_for(max_shift)
    h, w = int(patches[0, 2]), int(patches[0, 3])
    crop_h = -(-(h + 2 * context) // s) * s + s
    crop_w = -(-(w + 2 * context) // s) * s + s
    origin_r = (patches[:, 0] - context) // s * s
    origin_c = (patches[:, 1] - context) // s * s
    interior = (origin_r - margin >= 0) & (origin_c - margin >= 0) & \
               (origin_r + crop_h + margin <= height) & (origin_c + crop_w + margin <= width)
    return margin, crop_h, crop_w, origin_r, origin_c, interior


def _pseudo_pool(valid_fraction: np.ndarray, interior: np.ndarray) -> tuple[np.ndarray, bool]:
    """Patches pseudo pairs may be drawn from, and whether they are all interior ones."""
    usable = valid_fraction >= 0.99
    if np.any(usable & interior):
        return usable & interior, True  # context from real terrain, not from beyond the image edge
    if not np.any(usable):
        usable = valid_fraction >= MIN_VALID_FRACTION
    return usable, False


def _guess_valid_fraction(pre_stats: ImageStats, post_stats: ImageStats, patches: np.ndarray, height: int,
                          width: int) -> np.ndarray:
    """Each patch's fraction of pixels valid in both images, estimated from the two overviews."""
    both = pre_stats.overview_valid & post_stats.overview_valid
    if pre_stats.overview_valid.shape != post_stats.overview_valid.shape:
        return np.ones(len(patches))
    oh, ow = both.shape
    r0 = patches[:, 0] * oh // height
    c0 = patches[:, 1] * ow // width
    r1 = np.maximum(-(-(patches[:, 0] + patches[:, 2]) * oh // height), r0 + 1)
    c1 = np.maximum(-(-(patches[:, 1] + patches[:, 3]) * ow // width), c0 + 1)
    integral = np.pad(both.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    counts = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return counts / ((r1 - r0) * (c1 - c0))


def _plan_captures(patches, context, s, max_shift, height, width, n_pairs, rng, pre_stats, post_stats,
                   channels) -> _Captures | None:
    """Crop windows of pre's feature map for the ``nn`` pseudo pairs, to be kept by the main pass.

    The pairs are drawn after the main pass (the draw depends on each patch's valid fraction); here the
    same draw is made on a copy of ``rng`` with valid fractions estimated from the overviews. Where the
    guess is right (images without nodata: always) the pair's pre crop needs no trunk pass; where it is
    wrong the crop is computed as before. The scores are the same either way (up to float rounding).
    """
    _, crop_h, crop_w, origin_r, origin_c, interior = _pseudo_geometry(patches, context, s, max_shift, height, width)
    usable, _ = _pseudo_pool(_guess_valid_fraction(pre_stats, post_stats, patches, height, width), interior)
    per_window = 4 * channels * (crop_h // s) * (crop_w // s)
    if not np.any(usable) or PSEUDO_REUSE_BYTES < per_window:
        return None
    guess = np.unique(choose_patches(len(patches), n_pairs, copy.deepcopy(rng), usable))
    guess = guess[interior[guess]][: PSEUDO_REUSE_BYTES // per_window]
    if len(guess) == 0:
        return None
    windows = np.stack([origin_r[guess] // s, origin_c[guess] // s, np.full(len(guess), crop_h // s),
                        np.full(len(guess), crop_w // s)], axis=1).astype(np.int64)
    return _Captures(windows, guess, channels)


def _pseudo_scores(trunk, device, pre_reader, stats, patches, valid_fraction, context, pooling,
                   n_pairs, max_shift, noise_std, rng, pre_vectors, nn_options=None,
                   batch_size: int = 8) -> tuple[np.ndarray, int]:
    """ρ of pseudo-unchanged pairs drawn from the pre image (read window by window).

    Each pseudo-post crop keeps ``context`` pixels of real surroundings and
    starts on the feature grid, so for patches away from the image edge its
    pooled vector compares directly with the pre vector already pooled from
    the full-image feature map (``pre_vectors``): one network pass per pair.
    Near the edge (tiny images) both halves are computed from crops.

    With ``nn_options`` (``radius``, ``post_noise``, ``pre_maps``) the pairs get the ``nn``
    method's nuisances (gamma, blur, noise up to post's measured level) and are scored by the
    worst nearest-neighbour disagreement inside the patch. ``pre_maps`` holds, for some patches, pre's
    feature map over the crop kept by the main pass (:func:`_plan_captures`): the map of the same pixels,
    so those pairs run the trunk on their post crop only. Its cells near the crop edge differ from a
    crop's (they saw real context, not padding), but the halo keeps them out of the patch's scores.

    Returns the scores and the number of pairs that reused a pre map.
    """
    from scipy import ndimage

    s = trunk.stride
    height, width = pre_reader.height, pre_reader.width
    h, w = int(patches[0, 2]), int(patches[0, 3])
    margin, crop_h, crop_w, origin_r, origin_c, interior = _pseudo_geometry(patches, context, s, max_shift, height,
                                                                            width)
    usable, inside = _pseudo_pool(valid_fraction, interior)
    reuse = inside and nn_options is None
    pre_maps = {} if nn_options is None else nn_options.get("pre_maps") or {}
    n_reused = 0
    index = choose_patches(len(patches), n_pairs, rng, usable)
    shifts = sample_shifts(n_pairs, max_shift, rng)
    scores = []
    for batch in _batches(np.arange(n_pairs), batch_size):
        pre_crops, post_crops, inner = [], [], []
        for k in batch:
            i = index[k]
            window = Window(int(origin_c[i]) - margin, int(origin_r[i]) - margin, crop_w + 2 * margin, crop_h + 2 * margin)
            data, valid = pre_reader.read(window)
            region = prepare(data, valid, stats)
            if nn_options is None:
                a, b = pseudo_pair_from_region(region, margin, tuple(shifts[k]), noise_std, rng)
            else:
                gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
                blur = float(rng.uniform(0.0, 1.0))
                seen = ndimage.gaussian_filter(region**gamma, (0, blur, blur))
                # noise before the shift, as in a real post image that co-registration then interpolates
                seen = top_up_noise(seen, nn_options["post_noise"], rng)
                _, b = pseudo_pair_from_region(seen, margin, tuple(shifts[k]), 0.0, rng)
                a = region[:, margin:-margin, margin:-margin]
            post_crops.append(b)
            if not reuse and i not in pre_maps:
                pre_crops.append(a)
            inner.append([patches[i, 0] - origin_r[i], patches[i, 1] - origin_c[i], h, w])
        crops = np.stack(post_crops + pre_crops)
        feats = run_trunk(trunk, crops if nn_options is None else match_resolution(crops), device)
        n = len(batch)
        if nn_options is not None:
            computed = iter(feats[n:])
            pre = np.stack([pre_maps[index[k]] if index[k] in pre_maps else next(computed) for k in batch])
            n_reused += sum(int(index[k] in pre_maps) for k in batch)
            maps = nn_change_map(torch.from_numpy(pre), torch.from_numpy(feats[:n]), nn_options["radius"]).numpy()
            for k in range(n):
                scores.append(float(pool_patches(maps[k][None], np.array([inner[k]]), s, "max")[0, 0]))
            continue
        for k in range(n):
            v_post = pool_patches(feats[k], np.array([inner[k]]), s, pooling)
            v_pre = pre_vectors[index[batch[k]]][None] if reuse else pool_patches(feats[n + k], np.array([inner[k]]), s, pooling)
            scores.append(change_scores(v_pre, v_post)[0])
    return np.asarray(scores), n_reused


def _pixelwise(trunk, device, pre_reader, post_reader, pre_stats, post_stats, patches, changed_index, context,
               batch_size: int = 8) -> tuple[dict[int, np.ndarray], float | None]:
    """Deep change vector analysis inside changed patches.

    Per changed patch: the L2 magnitude of the feature difference per cell,
    upsampled (bilinear) to pixels. Returns ``{patch index: (h, w) float32}``
    and the Otsu threshold of all those magnitudes.
    """
    from skimage.filters import threshold_otsu

    maps: dict[int, np.ndarray] = {}
    s = trunk.stride
    for batch in _batches(changed_index, batch_size):
        crops = []
        for i in batch:
            window = _region_window(patches[i], context)
            pre_data, pre_valid = pre_reader.read(window)
            post_data, post_valid = post_reader.read(window)
            crops += list(prepare_pair(pre_data, pre_valid, post_data, post_valid, pre_stats, post_stats))
        feats = run_trunk(trunk, np.stack(crops), device)
        for k, i in enumerate(batch):
            magnitude = np.sqrt(((feats[2 * k + 1] - feats[2 * k]) ** 2).sum(axis=0))
            h, w = int(patches[i, 2]), int(patches[i, 3])
            full = upsample_cells(magnitude, s, (h + 2 * context, w + 2 * context))
            maps[int(i)] = full[context : context + h, context : context + w]
    if not maps:
        return maps, None
    values = np.concatenate([m.ravel() for m in maps.values()])
    return maps, float(threshold_otsu(values)) if np.ptp(values) > 0 else float(values.max())

