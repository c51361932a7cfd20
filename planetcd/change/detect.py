"""The change-detection pipeline ``detect``: Saha & Zhu's patch method (or ``nn``) on rasters of any size.

``detect(pre, post)`` reads both images window by window, co-registers post
onto pre, computes each image's VGG-16 feature map once (tiles with a halo, so
tile seams do not exist in the features), pools it per patch, scores each
patch pair by the L1 norm of the pooled difference and thresholds the scores
with τ calibrated on pseudo-unchanged pairs (:mod:`planetcd.change.calibration`).
Memory is bounded by the tile size and the number of patches, not by the image size.

The tiles go through a runner (:mod:`planetcd.runners`): here, one after the
other, or anywhere else (a Dask cluster: ``planetcd.distributed.DaskRunner``)
as :func:`detect_tile_task`, which needs only a picklable :class:`DetectSpec`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from rasterio.windows import Window

from ..errors import InputError
from ..features import VGGFeatures, cached_trunk, pick_device, run_trunk
from ..precision import precision_record, resolve_precision
from ..raster import IntensityStats, central_window, open_raster
from ..runners import LocalRunner, Runner, resolve_runner
from ..tiling import Tile, box_sums, halo_tiles, patch_grid
from .calibration import (
    MIN_VALID_FRACTION,
    Captures,
    NNCalibration,
    plan_captures,
    post_noise,
    pseudo_scores,
)
from .outputs import ChangeResult
from .preparation import image_overview, open_input, prepare_pair, read_present, shared_overview
from .nn import (
    NN_BLUR,
    NN_SMOOTH,
    RELIT_ANISOTROPY,
    TRANSFER_RADII,
    NNPatchScorer,
    match_resolution,
    nn_change_window,
    nn_score_record,
    relight_image,
    transfer_anisotropy,
)
from .pixelwise import pixelwise_maps
from .register import AlignedReader, estimate_shift, post_on_pre_grid, undo_displacement
from .scores import PatchPooler, change_scores, patch_cells, windows_meeting
from .threshold import (
    EMPIRICAL_K,
    EMPIRICAL_MIN_PATCHES,
    PSEUDO_TOLERANCE,
    TAU_POLICIES,
    PseudoSample,
    combine_thresholds,
    empirical_threshold,
    kmeans_threshold,
    self_calibrated_threshold,
    threshold_spread,
)

log = logging.getLogger(__name__)

#: Largest crop (pixels per side) used to estimate the global shift.
REGISTRATION_CROP = 1024


def registration_window(height: int, width: int, shared: np.ndarray | None = None) -> Window:
    """The crop of at most :data:`REGISTRATION_CROP` px per side the global shift is estimated on.

    The central crop, unless less than half of it is ground both dates see (``shared``: an overview
    ``(h, w)`` of that ground, any decimation): then the crop is centred on the shared ground's centroid.
    """
    window = central_window(height, width, REGISTRATION_CROP)
    if shared is None or not shared.any():
        return window
    fy, fx = shared.shape[0] / height, shared.shape[1] / width
    r0, c0 = int(window.row_off * fy), int(window.col_off * fx)
    inside = shared[r0 : r0 + max(1, int(window.height * fy)), c0 : c0 + max(1, int(window.width * fx))]
    if inside.mean() >= 0.5:
        return window
    rows, cols = np.nonzero(shared)
    cy, cx = (rows.mean() + 0.5) / fy, (cols.mean() + 0.5) / fx
    row = int(np.clip(round(cy - window.height / 2), 0, height - window.height))
    col = int(np.clip(round(cx - window.width / 2), 0, width - window.width))
    return Window(col, row, window.width, window.height)


def register_pair(pre_ds, post_grid, pre_stats: IntensityStats, post_stats: IntensityStats,
                  shared: np.ndarray | None = None,
                  zero_is_data: tuple[bool, bool] = (False, False)) -> tuple[tuple[float, float], float]:
    """Displacement ``(dy, dx)`` of post (on pre's grid) relative to pre, and its error.

    Estimated by phase correlation on :func:`registration_window`, on the ground both dates see only
    (pixels missing in either image are filled with the mean in both). ``zero_is_data``: for pre and
    post, whether 0 is a value rather than the fill (:func:`planetcd.raster.zeros_are_data`).
    """
    window = registration_window(pre_ds.height, pre_ds.width, shared)
    pre, pre_valid = read_present(AlignedReader(pre_ds, zero_is_data=zero_is_data[0],
                                                 impulse_step=pre_stats.impulse_step), window)
    post, post_valid = read_present(AlignedReader(post_grid, zero_is_data=zero_is_data[1],
                                                  impulse_step=post_stats.impulse_step), window)
    both = pre_valid & post_valid
    if not both.any():
        raise InputError("the images share no ground with data in both (do their footprints overlap?)")
    return estimate_shift(pre_stats.unit(pre).mean(axis=0), post_stats.unit(post).mean(axis=0), both, both)


#: Side of the windows, pixels, on which the residual misregistration is measured (``max_shift="auto"``).
LOCAL_WINDOW = 256
#: Most windows measured for the residual misregistration.
LOCAL_SAMPLES = 16
#: Quantile of the local shifts' magnitudes taken as the residual misregistration (robust to a few bad windows).
LOCAL_QUANTILE = 80.0
#: Smallest pseudo-pair shift of ``max_shift="auto"``, pixels: ``nn`` 4 (its search radius of 2 cells at stride 4,
#: halved), ``paper`` 10 (the paper's value).
AUTO_MIN_SHIFT = {"nn": 4.0, "paper": 10.0}


def local_shifts(pre_reader: AlignedReader, post_reader: AlignedReader, pre_stats: IntensityStats,
                 post_stats: IntensityStats, shared: np.ndarray, window: int = LOCAL_WINDOW,
                 samples: int = LOCAL_SAMPLES) -> np.ndarray:
    """Residual shifts ``(m, 2)`` (dy, dx) of post as read by ``post_reader`` (its displacement undone), px.

    Phase correlation on up to ``samples`` windows of ``window`` px spread evenly over the ground both
    dates see (``shared``: an overview ``(h, w)``; windows at least 90 % shared); empty when none fits.
    """
    height, width = pre_reader.height, pre_reader.width
    size = min(window, height, width)
    fy, fx = shared.shape[0] / height, shared.shape[1] / width
    rows = np.arange(0, height - size + 1, max(1, size // 2))
    cols = np.arange(0, width - size + 1, max(1, size // 2))
    candidates = []
    for r in rows:
        for c in cols:
            part = shared[int(r * fy) : max(int(r * fy) + 1, int((r + size) * fy)),
                          int(c * fx) : max(int(c * fx) + 1, int((c + size) * fx))]
            if part.mean() >= 0.9:
                candidates.append((int(r), int(c)))
    if not candidates:
        return np.zeros((0, 2))
    pick = np.unique(np.linspace(0, len(candidates) - 1, min(samples, len(candidates))).round().astype(int))
    found = []
    for k in pick:
        r, c = candidates[k]
        win = Window(c, r, size, size)
        pre, pre_valid = read_present(pre_reader, win)
        post, post_valid = read_present(post_reader, win)
        both = pre_valid & post_valid
        if both.mean() < 0.9:
            continue
        shift, _ = estimate_shift(pre_stats.unit(pre).mean(axis=0), post_stats.unit(post).mean(axis=0), both, both)
        found.append(shift)
    return np.array(found).reshape(-1, 2)


def auto_shift(residual: float, method: str) -> float:
    """The pseudo-pair shift of ``max_shift="auto"``: the residual misregistration + 1 px, rounded up to
    0.5 px, at least :data:`AUTO_MIN_SHIFT` of the method."""
    return float(max(AUTO_MIN_SHIFT[method], np.ceil(2 * (residual + 1.0)) / 2))


def _valid_counts(valid: np.ndarray, patches: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid-pixel counts of patch parts inside a mask placed at ``(row0, col0)``: (patch indexes, counts)."""
    h, w = valid.shape
    r0 = np.clip(patches[:, 0] - row0, 0, h)
    c0 = np.clip(patches[:, 1] - col0, 0, w)
    r1 = np.clip(patches[:, 0] + patches[:, 2] - row0, 0, h)
    c1 = np.clip(patches[:, 1] + patches[:, 3] - col0, 0, w)
    hit = np.flatnonzero((r1 > r0) & (c1 > c0))
    return hit, box_sums(valid, np.stack([r0[hit], c0[hit], r1[hit] - r0[hit], c1[hit] - c0[hit]], axis=1))


@dataclass(frozen=True)
class DetectSpec:
    """A picklable description of one ``detect`` run's pair for per-tile work in any process.

    Holds what :func:`detect` decided before the tile loop: paths, displacement
    of post, intensity statistics, and the trunk and scoring options.
    :func:`detect_tile_task` rebuilds a :class:`TileContext` from it (opening the
    rasters, the trunk from :func:`planetcd.features.cached_trunk`).
    """

    pre: str
    post: str
    displacement: tuple[float, float]
    pre_stats: IntensityStats
    post_stats: IntensityStats
    layer: int
    relu: bool
    weights: str | None
    method: str
    nn_radius: int
    pooling: str
    device: str
    capture: np.ndarray | None = None  #: (m, 4) cell windows of pre's feature map to return (:class:`TilePartial`)
    precision: str = "fp32"  #: the run's resolved precision of the trunk (:func:`planetcd.precision.resolve_precision`)
    relight: bool = False  #: ``nn``: relight each pre tile to post's look (:func:`detect_tile`)
    #: pre's and post's 0 is a value, not the fill (:func:`planetcd.raster.zeros_are_data`)
    zero_is_data: tuple[bool, bool] = (False, False)


@dataclass
class TileContext:
    """What :func:`detect_tile` needs: readers on pre's grid, statistics, the trunk, the patch grid and options."""

    pre_reader: AlignedReader
    post_reader: AlignedReader
    pre_stats: IntensityStats
    post_stats: IntensityStats
    trunk: VGGFeatures
    device: torch.device
    patches: np.ndarray  #: (n, 4) row_off, col_off, height, width, pixels
    cells: np.ndarray  #: (n, 4) the patches in feature cells (:func:`planetcd.change.scores.patch_cells`)
    method: str
    nn_radius: int
    pooling: str
    capture: np.ndarray | None = None  #: (m, 4) ``row, col, height, width`` cell windows of pre's map to copy out
    precision: str | None = None  #: the trunk's precision, ``"fp32"`` or ``"bf16"`` (None: the caller's context)
    relight: bool = False  #: ``nn``: relight the pre window to post's look before the trunk


@dataclass
class TilePartial:
    """One tile's contribution to the per-patch pooling and valid-pixel counts.

    Attributes
    ----------
    hit : ndarray, int64, shape (k,)
        Patches whose cell window meets the tile's core.
    pooled : ndarray, float32, shape (2, k, C)
        Pre and post partial pooling (``paper``: max, or sums for ``avg``) over the core cells in each patch
        (``nn``: empty, shape (2, 0, 1): its core's map is ``nn_map``).
    cell_counts : ndarray, int64, shape (k,)
        Cells pooled per patch.
    valid_hit, valid_counts : ndarray, int64
        Patches meeting the core's pixels, and their pixels valid in both images.
    captured : list of (j, row, col, values)
        The parts of the context's capture windows inside the core: window ``j``'s cells from
        ``(row, col)`` (relative to the window) are ``values`` ``(C, h, w)`` of pre's feature map.
    transfer : ndarray, shape (radial bins, angles), or None
        With relighting: the transfer pre's window was relit by (:func:`~planetcd.change.nn.fit_transfer`).
    shared : float
        Fraction of the window's pixels both images see (what the transfer was fitted on).
    """

    hit: np.ndarray
    pooled: np.ndarray
    cell_counts: np.ndarray
    valid_hit: np.ndarray
    valid_counts: np.ndarray
    captured: list = field(default_factory=list)
    transfer: np.ndarray | None = None
    shared: float = 0.0
    #: ``nn``: the nn disagreement map ``(h, w)`` of the core's cells, first cell at ``nn_origin`` (row, col)
    nn_map: np.ndarray | None = None
    nn_origin: tuple[int, int] = (0, 0)


def _partial_pool(cells: np.ndarray, maps: np.ndarray, row0: int, col0: int, pooling: str):
    """Pool feature maps ``(B, C, h, w)`` (first cell at ``(row0, col0)``) over the patch windows they meet."""
    _, _, h, w = maps.shape
    hit = windows_meeting(cells, row0, col0, h, w)
    poolers = [PatchPooler(cells[hit], maps.shape[1], pooling) for _ in range(maps.shape[0])]
    for pooler, features in zip(poolers, maps):
        pooler.add(features, row0, col0)
    return hit, np.stack([p.acc for p in poolers]), poolers[0].count


def tile_residual(pre: np.ndarray, post: np.ndarray, both: np.ndarray) -> tuple[float, float]:
    """The displacement ``(dy, dx)`` px left between a tile's pre and registered post ``(bands, h, w)``, for the
    transfer fit only (:func:`~planetcd.change.nn.relight_image`): a residual shift turns the cross-spectrum's
    phase and would read as another sun. Phase correlation on the shared ground ``both`` (as
    :func:`register_pair`); (0, 0) with little shared ground or a shift over a quarter of the window.
    """
    if both.mean() < 0.25:
        return 0.0, 0.0
    shift, _ = estimate_shift(pre.mean(0), post.mean(0), both, both)
    if not np.all(np.isfinite(shift)) or max(abs(shift[0]), abs(shift[1])) > min(both.shape) / 4:
        return 0.0, 0.0
    return float(shift[0]), float(shift[1])


#: Side (pixels) of the central crop of the registration window on which :func:`window_anisotropy` decides.
RELIGHT_GATE_CROP = 512


def window_anisotropy(pre_reader, post_reader, pre_stats: IntensityStats, post_stats: IntensityStats,
                      shared: np.ndarray | None = None) -> float:
    """Whether a pair shows another sun, decided once before ``detect``'s tile loop.

    :func:`~planetcd.change.nn.transfer_anisotropy` of the transfer fitted (robustly, with the residual
    shift undone: :func:`~planetcd.change.nn.relight_image`, :func:`tile_residual`) on
    the central :data:`RELIGHT_GATE_CROP` px of :func:`registration_window`, registered post against pre. Above
    :data:`~planetcd.change.nn.RELIT_ANISOTROPY`, ``nn`` relights every tile; below it the pair is taken
    as lit by one sun and ``nn`` runs exactly as ``nn-unlit``, at its cost.
    """
    window = registration_window(pre_reader.height, pre_reader.width, shared)
    h, w = min(int(window.height), RELIGHT_GATE_CROP), min(int(window.width), RELIGHT_GATE_CROP)
    window = Window(int(window.col_off) + (int(window.width) - w) // 2, int(window.row_off) + (int(window.height) - h) // 2, w, h)
    pre_data, pre_valid = read_present(pre_reader, window)
    post_data, post_valid = read_present(post_reader, window)
    both = pre_valid & post_valid
    if both.mean() < RELIGHT_MIN_SHARED:
        return float("inf")  # too little shared ground to tell: relight tile by tile
    batch = prepare_pair(pre_data, pre_valid, post_data, post_valid, pre_stats, post_stats)
    _, transfer = relight_image(batch[0], batch[1], both, tile_residual(batch[0], batch[1], both))
    return float(transfer_anisotropy(transfer))


def detect_tile(ctx: TileContext, tile) -> TilePartial:
    """Features of one halo tile of both images, pooled per patch over the tile's core.

    Reads the tile's window of pre and of registered post, runs the trunk once
    on the pair (``nn`` with ``ctx.relight``: pre's window — core and halo — first relit to post's look
    by the transfer fitted on the window's shared ground, :func:`~planetcd.change.nn.relight_image`;
    where post has no data it takes the relit pre, so no change), and returns partial pooled vectors
    (``paper``) of the patches the core meets or the core's nn disagreement map (``nn``), with the
    patches' valid-pixel counts. :func:`merge_tile` adds them up; merging all
    tiles in any process gives the same result as the whole-image pass.
    """
    s = ctx.trunk.stride
    height, width = ctx.pre_reader.height, ctx.pre_reader.width
    r, c, h, w = tile.read
    window = Window(c, r, w, h)
    pre_data, pre_valid = read_present(ctx.pre_reader, window)
    post_data, post_valid = read_present(ctx.post_reader, window)
    both = pre_valid & post_valid
    batch = prepare_pair(pre_data, pre_valid, post_data, post_valid, ctx.pre_stats, ctx.post_stats)
    transfer = None
    if ctx.method == "nn" and ctx.relight:  # pre as post's sun shows it (a tile's transfer; the halo hides seams)
        lit, transfer = relight_image(batch[0], batch[1], both, tile_residual(batch[0], batch[1], both))
        batch = np.stack([lit, np.where(both[None], batch[1], lit)])
    if ctx.method == "nn":  # both dates low-passed alike, as in nn.nn_scores
        batch = match_resolution(batch)
    feats = run_trunk(ctx.trunk, batch, ctx.device, ctx.precision, contiguous=ctx.method != "nn")
    cr0, cc0 = tile.core[0] // s, tile.core[1] // s
    cr1 = min(-(-(tile.core[0] + tile.core[2]) // s), height // s)
    cc1 = min(-(-(tile.core[1] + tile.core[3]) // s), width // s)
    lr0, lc0 = cr0 - r // s, cc0 - c // s
    if ctx.method == "nn":
        disagreement = nn_change_window(torch.from_numpy(feats[:1]), torch.from_numpy(feats[1:]), ctx.nn_radius,
                                        (lr0, lc0, cr1 - cr0, cc1 - cc0))  # the core's cells only
        nn_map = disagreement.numpy()[0]
        hit, pooled, counts = np.zeros(0, np.int64), np.zeros((2, 0, 1), np.float32), np.zeros(0, np.int64)
    else:
        nn_map = None
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
    return TilePartial(hit, pooled, counts, valid_hit, valid_counts, captured, transfer, float(both.mean()),
                       nn_map, (int(cr0), int(cc0)))


def detect_tile_task(tile: Tile, *, spec: DetectSpec, patches: np.ndarray, cells: np.ndarray) -> TilePartial:
    """One tile of :func:`detect` in any process: open the pair from ``spec``, run :func:`detect_tile`.

    The work function runners map over the tiles (``runner.map(detect_tile_task, tiles, spec=...,
    patches=..., cells=...)``); the trunk comes from the process's cache, so a worker loads it once.
    """
    trunk = cached_trunk(spec.layer, spec.relu, spec.weights, spec.device)
    with open_raster(spec.pre) as pre_ds, open_raster(spec.post) as post_ds, post_on_pre_grid(pre_ds, post_ds) as grid:
        context = TileContext(AlignedReader(pre_ds, zero_is_data=spec.zero_is_data[0],
                                            impulse_step=spec.pre_stats.impulse_step),
                              AlignedReader(grid, spec.displacement, zero_is_data=spec.zero_is_data[1],
                                            impulse_step=spec.post_stats.impulse_step), spec.pre_stats,
                              spec.post_stats, trunk, torch.device(spec.device), patches, cells, spec.method,
                              spec.nn_radius, spec.pooling, spec.capture, spec.precision, spec.relight)
        return detect_tile(context, tile)


def _tile_here(tile: Tile, *, context: TileContext) -> TilePartial:
    """One tile of :func:`detect` in this process, with the readers and trunk already open."""
    return detect_tile(context, tile)


def merge_tile(partial: TilePartial, pre_pool: PatchPooler, post_pool: PatchPooler, nn_scorer: NNPatchScorer,
               valid_pixels: np.ndarray, captures: Captures | None = None) -> None:
    """Add one tile's :class:`TilePartial` into the whole-image poolers (``nn``: the patch scorer), valid-pixel
    counts and captures (in place)."""
    if captures is not None:
        for j, row, col, values in partial.captured:
            captures.add(j, row, col, values)
    if partial.nn_map is not None:  # nn: the core's disagreement map, nothing pooled
        nn_scorer.add(partial.nn_map, *partial.nn_origin)
    hit = partial.hit
    for pool, values in zip([pre_pool, post_pool], partial.pooled if partial.nn_map is None else []):
        if pool.pooling == "max":
            pool.acc[hit] = np.maximum(pool.acc[hit], values)
        else:
            pool.acc[hit] += values
        pool.count[hit] += partial.cell_counts
    valid_pixels[partial.valid_hit] += partial.valid_counts


#: Default side (px) of :func:`detect`'s feature tiles. The result does not depend on it (the halo makes the
#: tiled feature map the whole image's); 512 px holds about 0.7 x the peak memory of 1024 px at the same speed
#: on the development machine: its temporaries need fewer fresh pages from the kernel, which pays for the halo
#: (docs/performance.md, "Seventh pass").
TILE_SIZE = 512
#: Default tile side (px) when ``nn`` relights pre's tiles: each tile's transfer is fitted on its window, so
#: the side is part of the method there. 1024 px, the side the relighting was developed and measured with;
#: 512 px windows flagged 10 unchanged patches of 115 against 4 on the real-like pair of seed 1
#: (``benchmarks/real_like_pair.py``; seed 2: 1 against 2).
RELIT_TILE_SIZE = 1024


#: The methods of :func:`detect`: ``nn`` (relights pre to post's look), ``nn-unlit`` (``nn`` without the
#: relighting: the ``nn`` of before it, exactly) and ``paper``.
DETECT_METHODS = ("nn", "nn-unlit", "paper")
#: Tiles whose window is less than this fraction shared ground do not count in the pair's anisotropy
#: (:func:`relight_record`), unless no tile reaches it.
RELIGHT_MIN_SHARED = 0.25


def relight_record(transfers: list[np.ndarray], shared: list[float]) -> dict:
    """What the relighting of ``detect``'s ``nn`` found, for :attr:`ChangeResult.relight` and run.json.

    Parameters
    ----------
    transfers : list of ndarray, shape (radial bins, angles)
        The transfer each tile's pre window was relit by (:func:`~planetcd.change.nn.fit_transfer`).
    shared : list of float
        Each tile window's fraction of ground both dates see.

    Returns
    -------
    dict
        ``relit`` (True: pre's tiles were relit), ``anisotropy`` (the median over tiles with at least
        :data:`RELIGHT_MIN_SHARED` shared ground of :func:`~planetcd.change.nn.transfer_anisotropy`),
        ``anisotropy_threshold`` (:data:`~planetcd.change.nn.RELIT_ANISOTROPY`), ``pseudo_relit``
        (the pair shows another sun: its pseudo pairs are relit too), ``tiles`` (how many counted, and
        the anisotropy's min and max over them), ``transfer`` (the element-wise median of their transfers,
        rows = radial bins between ``radii_cycles_per_px``, columns = directions over 0..180°).
    """
    if not transfers:
        return {"relit": True, "anisotropy": None, "anisotropy_threshold": RELIT_ANISOTROPY, "pseudo_relit": False,
                "tiles": {"n": 0}, "transfer": None}
    stack, shared = np.stack(transfers), np.asarray(shared)
    keep = shared >= RELIGHT_MIN_SHARED
    if not keep.any():
        keep = shared > 0
    if not keep.any():
        keep[:] = True
    values = transfer_anisotropy(stack[keep])
    anisotropy = float(np.median(values))
    return {
        "relit": True,
        "anisotropy": round(anisotropy, 4),
        "anisotropy_threshold": RELIT_ANISOTROPY,
        "pseudo_relit": bool(anisotropy > RELIT_ANISOTROPY),
        "tiles": {"n": int(keep.sum()), "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)},
        "transfer": {"radii_cycles_per_px": [round(r, 4) for r in TRANSFER_RADII], "n_angles": int(stack.shape[2]),
                     "median": np.round(np.median(stack[keep], axis=0), 3).tolist()},
    }


def inputs_record(pre_ds, post_ds, zero_is_data: tuple[bool, bool] = (False, False)) -> dict:
    """What ``detect`` read of each date and how post was put on pre's grid, for run.json (``parameters.inputs``).

    Parameters
    ----------
    pre_ds, post_ds : rasterio datasets
        The opened inputs (post as given, before any resampling).
    zero_is_data : (bool, bool)
        Whether 0 was taken as a value of pre and of post (:func:`planetcd.raster.zeros_are_data`).

    Returns
    -------
    dict
        ``pre`` and ``post``: size, data type, bands read (alpha left out), nodata, georeferenced, pixel size
        and CRS (WKT, for post only when it differs from pre's), and ``zero_is_data``; ``post_on_pre_grid``:
        ``"same grid"``, ``"assumed same grid"`` or ``"resampled"`` (WarpedVRT, bilinear:
        :func:`~planetcd.change.register.grid_relation`).
    """
    from ..raster import data_bands, is_georeferenced
    from .register import grid_relation

    def one(ds, zero: bool, crs: bool) -> dict:
        geo = is_georeferenced(ds)
        record = {"width": ds.width, "height": ds.height, "dtype": ds.dtypes[0], "bands": data_bands(ds),
                  "nodata": None if ds.nodata is None else float(ds.nodata), "georeferenced": geo,
                  "pixel_size": [float(v) for v in ds.res] if geo else None, "zero_is_data": zero}
        if crs:
            record["crs"] = ds.crs.to_wkt() if geo else None
        return record

    relation = grid_relation(pre_ds, post_ds)
    return {"pre": one(pre_ds, zero_is_data[0], False),
            "post": one(post_ds, zero_is_data[1], relation == "resampled" and post_ds.crs != pre_ds.crs),
            "post_on_pre_grid": "resampled (WarpedVRT, bilinear)" if relation == "resampled" else relation}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


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
    method: str = "nn",
    nn_radius: int = 2,
    tau: str | float = "both",
    percentile: float = 95.0,
    max_shift: float | str = "auto",
    noise_std: float = 0.02,
    n_pseudo: int = 100,
    pseudo_tolerance: float | None = PSEUDO_TOLERANCE,
    register: bool = True,
    pixelwise: bool = False,
    relu: bool = True,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    tile_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
    trunk: VGGFeatures | None = None,
    runner: Runner | None = None,
    precision: str = "auto",
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
    method : {"nn", "nn-unlit", "paper"}
        ``nn`` (default): the nearest-neighbour feature disagreement, each patch scored by its most
        prominent compact peak (:func:`~planetcd.change.nn.nn_patch_scores`; see :mod:`planetcd.change.nn`):
        shift-tolerant, sensitive to small new objects; the most accurate label-free method on every preset
        of the latest reporting seed of docs/benchmarks.md. When the registration window shows another sun
        (:func:`window_anisotropy`, decided once before the tile loop; otherwise ``nn`` runs exactly as
        ``nn-unlit``), each tile of pre (core and halo) is first relit
        to post's look by the direction x frequency transfer fitted on the tile's shared ground
        (:func:`~planetcd.change.nn.relight_image`); when the tiles agree (their median
        :func:`~planetcd.change.nn.transfer_anisotropy` over :data:`~planetcd.change.nn.RELIT_ANISOTROPY`)
        the pseudo pairs are relit the same way (their nuisances, :data:`~planetcd.change.nuisance.PSEUDO_NUISANCE`,
        include another sun), otherwise they are as without relighting. Recorded in
        :attr:`ChangeResult.relight` and run.json (``relight``). ``nn-unlit``: ``nn`` without the
        relighting (the ``nn`` of before it, exactly). ``paper``: ρ = L1 norm of the pooled feature
        difference (Saha & Zhu; with ``tau="pseudo", max_shift=10`` the faithful reproduction).
    nn_radius : int
        Search radius of ``nn`` in feature cells (stride 4 px at layer 6).
    tau : {"both", "pseudo", "empirical", "kmeans"} or float
        The change threshold τ, chosen without labels: ``pseudo`` from pseudo-unchanged pairs (the paper),
        ``empirical`` from the pair's own scores (median + 3 · 1.4826 · MAD,
        :func:`~planetcd.change.threshold.empirical_threshold`), ``both`` the larger of the two
        (:func:`~planetcd.change.threshold.combine_thresholds`; the pseudo τ alone with fewer than 20 scored
        patches), ``kmeans`` k-means (k = 2) on ρ, or a fixed number. Both label-free values are in
        :attr:`ChangeResult.thresholds` and run.json.
    percentile : float
        Percentile of pseudo-pair scores taken as τ (paper: 95).
    max_shift : "auto" or float
        Largest shift per axis in pseudo pairs, pixels (paper: 10). ``"auto"`` (default): measured on the
        pair — after the global registration, phase correlation on up to 16 windows of 256 px over the
        shared ground (:func:`local_shifts`); the 80th percentile of their magnitudes is the residual
        misregistration r, and the pseudo shifts go up to r + 1 px (:func:`auto_shift`; at least 4 px for
        ``nn``, 10 px for ``paper``), the ``nn`` search radius to at least twice that. Recorded in
        :attr:`ChangeResult.misregistration` and run.json.
    noise_std : float
        Gaussian noise of pseudo pairs on the ``0..1`` intensity scale.
    n_pseudo : int
        Most pseudo-unchanged pairs (all of them with ``pseudo_tolerance=None``).
    pseudo_tolerance : float or None
        The pseudo pairs are a sequential sample (:class:`~planetcd.change.threshold.PseudoSample`):
        :data:`~planetcd.change.threshold.PSEUDO_FIRST` (40) pairs, then
        :data:`~planetcd.change.threshold.PSEUDO_STEP` (20) more at a time, up to ``n_pseudo``, until
        τ's bootstrap spread (:func:`~planetcd.change.threshold.threshold_spread`: the 5-95 % range of
        the bootstrap pseudo τ) is at most ``pseudo_tolerance`` times τ (default
        :data:`~planetcd.change.threshold.PSEUDO_TOLERANCE` = 0.10), or — ``tau="both"`` — its top is
        under the empirical τ (then τ is the empirical one whatever more pairs would say), or no patch's
        score lies inside that range (every patch is flagged alike wherever τ falls in it; not with a
        tolerance of 0). None: all
        ``n_pseudo`` pairs (drawn in image order, as before the sequential sample). Recorded in
        ``thresholds["pseudo_sample"]`` (run.json).
    register : bool
        Estimate and undo the global shift by phase correlation.
    pixelwise : bool
        Also compute deep change vector magnitude maps inside changed patches.
    relu : bool
        Use the ReLU output of the layer (default) rather than the raw conv output.
    weights : path, optional
        VGG-16 weights (see :func:`planetcd.features.resolve_vgg16_weights`).
    device : {"auto", "cpu", "cuda"}
    tile_size : int, optional
        Side of the tiles the feature maps are computed in, pixels. Each tile is read with a halo
        whose features are computed and dropped (20 px at conv3_2; ``method="nn"`` adds its search
        radius, smoothing and low-pass: 40 px at the defaults): at 512 px that is up to 16 % (nn 34 %) more
        trunk work than the image's pixels, at 1024 px 8 % (16 %). Memory grows with the square of the side.
        None (default): :data:`TILE_SIZE` (512), or :data:`RELIT_TILE_SIZE` (1024) when ``nn`` relights
        pre's tiles, since each tile's transfer is fitted on its own window (docs/performance.md,
        "Seventh pass"). The side used is in ``params["tile_size"]``.
    seed : int
        Seed of the pseudo-pair draw; the same inputs and seed give the same result.
    progress : bool
        Show a progress bar on stderr.
    trunk : VGGFeatures, optional
        A loaded trunk (``layer``, ``relu`` and ``weights`` are then ignored); default: the process's
        cached one (:func:`planetcd.features.cached_trunk`).
    runner : Runner, optional
        Who runs the tiles (:mod:`planetcd.runners`). Default: a :class:`~planetcd.runners.LocalRunner`,
        here, with the open rasters and ``trunk``. Any other runner (``planetcd.distributed.DaskRunner``)
        gets :func:`detect_tile_task` with a :class:`DetectSpec` and needs ``pre`` and ``post`` as paths
        it can open. Tiles are merged in order, so every runner gives the same result.
    precision : {"auto", "fp32", "bf16"}
        Precision of the VGG trunk, one for the whole run (main pass, pseudo pairs, pixelwise maps):
        ``bf16`` runs it under bfloat16 autocast, ``fp32`` in float32, ``auto`` (default) bf16 where the
        hardware runs it natively (:func:`planetcd.precision.resolve_precision`). Features are cast back
        to float32 at once, so scores and τ are computed in float32/float64. Recorded in
        ``params["precision"]`` (run.json).

    Returns
    -------
    ChangeResult
    """
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    shift_policy = max_shift
    stride = patch_size if stride is None else int(stride)
    from ..inputs import check_pair  # the one input check: missing, truncated, empty, too small, no overlap
    check_pair(pre, post, min_size=patch_size, size_of=f"one {patch_size} px patch")
    if method not in DETECT_METHODS:
        raise InputError(f"method must be 'nn', 'nn-unlit' or 'paper', got {method!r}")
    kind = "paper" if method == "paper" else "nn"
    relight = method == "nn"  # nn-unlit: the nn of before the relighting, exactly
    if pseudo_tolerance is not None and not pseudo_tolerance >= 0:  # NaN and negative numbers fail
        raise InputError(f"pseudo_tolerance must be a number >= 0 or None, got {pseudo_tolerance!r}")
    sample = None if pseudo_tolerance is None else PseudoSample(tolerance=float(pseudo_tolerance))
    if isinstance(tau, str) and tau not in TAU_POLICIES:
        try:
            tau = float(tau)
        except ValueError:
            raise InputError(f"tau must be 'pseudo', 'empirical', 'both', 'kmeans' or a number, got {tau!r}") from None
    policy = tau
    rng = np.random.default_rng(seed)
    runner = resolve_runner(runner)
    here = isinstance(runner, LocalRunner)
    if not here and (isinstance(pre, np.ndarray) or isinstance(post, np.ndarray)):
        raise InputError(f"runner={runner!r} runs tiles elsewhere: pass pre and post as raster paths, not arrays")

    with contextlib.ExitStack() as stack:
        pre_ds = stack.enter_context(open_input(pre, "pre"))
        post_ds = stack.enter_context(open_input(post, "post"))
        height, width = pre_ds.height, pre_ds.width
        if height < patch_size or width < patch_size:
            raise InputError(f"pre image ({width}x{height} px) is smaller than one {patch_size} px patch")
        post_grid = stack.enter_context(post_on_pre_grid(pre_ds, post_ds))
        pre_image = image_overview(pre_ds, "pre")
        post_image = image_overview(post_grid, "post")
        pre_stats, post_stats = pre_image.stats, post_image.stats
        shared = shared_overview(pre_image, post_image)  # refuses data footprints that do not overlap
        zero_is_data = (pre_image.zero_is_data, post_image.zero_is_data)
        inputs = inputs_record(pre_ds, post_ds, zero_is_data)
        torch_device = pick_device(device)
        used_precision = resolve_precision(precision, torch_device)
        if trunk is None:  # before any heavy work, so a weights problem is reported at once
            trunk = cached_trunk(layer, relu, weights, torch_device)

        t0 = time.perf_counter()
        displacement, reg_error = (0.0, 0.0), float("nan")
        if register:
            displacement, reg_error = register_pair(pre_ds, post_grid, pre_stats, post_stats, shared, zero_is_data)
            log.info("post is displaced by dy=%.2f, dx=%.2f px relative to pre", *displacement)
        timings["register_s"] = time.perf_counter() - t0
        pre_reader = AlignedReader(pre_ds, zero_is_data=zero_is_data[0], impulse_step=pre_stats.impulse_step)
        post_reader = AlignedReader(post_grid, displacement, zero_is_data=zero_is_data[1],
                                    impulse_step=post_stats.impulse_step)
        trunk = trunk.to(torch_device)
        s = trunk.stride

        misregistration: dict = {"global_px": list(displacement) if register else None}
        if isinstance(max_shift, str):
            if max_shift != "auto":
                raise InputError(f"max_shift must be 'auto' or a number of pixels, got {max_shift!r}")
            t0 = time.perf_counter()
            local = local_shifts(pre_reader, post_reader, pre_stats, post_stats, shared)
            magnitude = np.max(np.abs(local), axis=1) if len(local) else np.zeros(0)
            residual = float(np.percentile(magnitude, LOCAL_QUANTILE)) if len(local) else 0.0
            max_shift = auto_shift(residual, kind)
            if kind == "nn":  # the search reaches twice the pseudo shifts, as at the defaults (2 cells, 4 px)
                nn_radius = max(nn_radius, int(np.ceil(2 * max_shift / s)))
            misregistration.update(
                local_px=local.round(2).tolist(), residual_px=residual, residual_quantile=LOCAL_QUANTILE,
                max_shift_px=max_shift, nn_radius=nn_radius if kind == "nn" else None)
            log.info("residual misregistration %.2f px (%d windows): pseudo shifts up to %.1f px%s", residual,
                     len(local), max_shift, f", nn radius {nn_radius} cells" if kind == "nn" else "")
            timings["misregistration_s"] = time.perf_counter() - t0
        else:
            max_shift = float(max_shift)
        halo = -(-trunk.halo // s) * s
        if kind == "nn":
            halo += (nn_radius + NN_SMOOTH) * s  # the neighbour search and the box average look past each core cell
            halo += -(-int(np.ceil(4 * NN_BLUR)) // s) * s  # and the low-pass (truncated at 4 σ)
        patches = patch_grid(height, width, patch_size, stride)
        cells = patch_cells(patches, s, height // s, width // s)
        pre_pool = PatchPooler(cells, trunk.channels, pooling)
        post_pool = PatchPooler(cells, trunk.channels, pooling)
        nn_scorer = NNPatchScorer(cells)
        valid_pixels = np.zeros(len(patches), np.int64)

        gate_anisotropy = None
        if relight:  # one sun or two? decided on the registration window; one sun: nn-unlit exactly, at its cost
            t0 = time.perf_counter()
            gate_anisotropy = window_anisotropy(pre_reader, post_reader, pre_stats, post_stats, shared)
            relight = gate_anisotropy > RELIT_ANISOTROPY
            timings["relight_gate_s"] = time.perf_counter() - t0
            log.info("registration window anisotropy %.3f (threshold %.2f): %s", gate_anisotropy, RELIT_ANISOTROPY,
                     "another sun, pre's tiles are relit" if relight else "one sun, no relighting")

        captures = None
        if policy in ("pseudo", "both") and kind == "nn":
            # Residual misregistration after global registration is small: pseudo shifts stay inside the search radius.
            max_shift = min(max_shift, nn_radius * s / 2)
            if not relight:  # relit tiles' pre maps are not the pseudo pairs' pre: those are computed from crops
                captures = plan_captures(patches, halo, s, max_shift, height, width, n_pseudo, rng, pre_image,
                                         post_image, trunk.channels, sequential=sample is not None)
        capture = None if captures is None else captures.windows

        if tile_size is None:
            tile_size = RELIT_TILE_SIZE if relight else TILE_SIZE
        tiles = halo_tiles(height, width, tile_size, halo, align=s)
        n_pixelwise = 0
        bar = _progress(len(tiles) + (1 if policy in ("pseudo", "both") else 0), progress, "detect")
        t0 = time.perf_counter()
        if here:
            context = TileContext(pre_reader, post_reader, pre_stats, post_stats, trunk, torch_device, patches, cells,
                                  kind, nn_radius, pooling, capture, used_precision, relight)
            partials = runner.map(_tile_here, tiles, context=context)
        else:
            spec = DetectSpec(str(pre), str(post), displacement, pre_stats, post_stats, trunk.layer, trunk.relu,
                              str(trunk.weights_path) if trunk.weights_path is not None else None, kind, nn_radius,
                              pooling, str(torch_device), capture, used_precision, relight, zero_is_data)
            partials = runner.map(detect_tile_task, tiles, spec=spec, patches=patches, cells=cells)
        transfers, tile_shared = [], []
        for partial in partials:  # merged in tile order, so any runner gives the same result
            merge_tile(partial, pre_pool, post_pool, nn_scorer, valid_pixels, captures)
            if partial.transfer is not None:
                transfers.append(partial.transfer)
                tile_shared.append(partial.shared)
            bar.update(1)
        timings["features_s"] = time.perf_counter() - t0
        relit = relight_record(transfers, tile_shared) if relight else {"relit": False}
        if gate_anisotropy is not None:  # nn: what the registration window said (nn-unlit records only relit False)
            relit["window_anisotropy"] = round(gate_anisotropy, 4) if np.isfinite(gate_anisotropy) else None
            if not relight:
                relit.update(anisotropy=relit["window_anisotropy"], anisotropy_threshold=RELIT_ANISOTROPY,
                             pseudo_relit=False, decided_on="registration window")
        pre_maps = {} if captures is None else captures.complete()
        captures = None

        valid_fraction = valid_pixels / (patches[:, 2] * patches[:, 3])
        scored = valid_fraction >= MIN_VALID_FRACTION
        if not np.any(scored):
            raise InputError("no patch has enough valid pixels in both images (do the images overlap?)")
        if kind == "nn":
            pre_vectors = None
            change_score = np.where(scored, nn_scorer.result(), np.nan)
        else:
            pre_vectors = pre_pool.result()
            change_score = np.where(scored, change_scores(pre_vectors, post_pool.result()), np.nan)

        t0 = time.perf_counter()
        pseudo = None
        spread = None
        n_reused = 0
        sample_record = None
        tau_pseudo = float("nan")
        tau_empirical = empirical_threshold(change_score[scored])
        if policy in ("pseudo", "both"):
            nn = None
            if kind == "nn":  # the noise is brought up to post's level, measured on a central crop
                nn = NNCalibration(nn_radius, post_noise(post_reader, post_stats), pre_maps,
                                   relight=relit["pseudo_relit"] if relight else False)
            scored_pseudo = pseudo_scores(
                trunk, torch_device, pre_reader, pre_stats, patches, valid_fraction=valid_fraction, context=halo,
                pooling=pooling, n_pairs=n_pseudo, max_shift=max_shift, noise_std=noise_std, rng=rng,
                pre_vectors=pre_vectors, nn=nn, precision=used_precision, sample=sample, percentile=percentile,
                floor=tau_empirical if policy == "both" else None, seed=seed, decide=change_score[scored],
            )
            pseudo, n_reused = scored_pseudo.scores, scored_pseudo.n_reused
            sample_record = scored_pseudo.record(sample)
            log.info("%d of at most %d pseudo pairs (stopped: %s)", len(pseudo), n_pseudo, scored_pseudo.stopped)
            tau = tau_pseudo = self_calibrated_threshold(pseudo, percentile)
            spread = threshold_spread(pseudo, percentile, seed=seed)
            if policy == "both":
                tau = combine_thresholds(tau_pseudo, tau_empirical)
            bar.update(1)
        elif policy == "empirical":
            if not np.isfinite(tau_empirical):
                raise InputError(f"tau='empirical' needs at least {EMPIRICAL_MIN_PATCHES} scored patches, this pair "
                                 f"has {int(scored.sum())}: use tau='pseudo' or a smaller patch size")
            tau = tau_empirical
        elif policy == "kmeans":
            tau = kmeans_threshold(change_score[scored], seed=seed)
        else:
            tau = float(policy)
        bar.close()
        pre_maps = None
        timings["threshold_s"] = time.perf_counter() - t0
        changed = np.where(scored, change_score > tau, False)
        log.info("tau = %.4g; %d of %d patches changed", tau, int(changed.sum()), int(scored.sum()))

        pixel_maps, pixel_tau = None, None
        if pixelwise:
            t0 = time.perf_counter()
            pixel_maps, pixel_tau = pixelwise_maps(trunk, torch_device, pre_reader, post_reader, pre_stats, post_stats,
                                                   patches, np.flatnonzero(changed), halo, precision=used_precision)
            n_pixelwise = len(pixel_maps)
            timings["pixelwise_s"] = time.perf_counter() - t0

        overview_post = post_image.overview
        if register:
            factor = (height / overview_post.shape[1], width / overview_post.shape[2])
            overview_post, _ = undo_displacement(
                overview_post, post_image.overview_valid, (displacement[0] / factor[0], displacement[1] / factor[1])
            )
        crs = pre_ds.crs
        transform = pre_ds.transform

    timings["total_s"] = time.perf_counter() - t_start
    params = {
        "method": method, "nn_radius": nn_radius if kind == "nn" else None,
        "nn_score": nn_score_record() if kind == "nn" else None,
        "patch_size": patch_size, "stride": stride, "layer": getattr(trunk, "layer", layer), "pooling": pooling,
        "tau": policy if isinstance(policy, str) else float(policy), "percentile": percentile,
        "max_shift": max_shift, "max_shift_policy": shift_policy if isinstance(shift_policy, str) else "fixed",
        "noise_std": noise_std, "n_pseudo": n_pseudo, "pseudo_tolerance": pseudo_tolerance, "register": register,
        "pixelwise": pixelwise, "relu": getattr(trunk, "relu", relu), "tile_size": tile_size, "seed": seed,
        "device": str(torch_device), "runner": type(runner).__name__, "weights": str(getattr(trunk, "weights_path", None)),
        "pre": str(pre) if not isinstance(pre, np.ndarray) else "<array>",
        "post": str(post) if not isinstance(post, np.ndarray) else "<array>",
        "n_pixelwise_patches": n_pixelwise,
        "n_pseudo_pre_reused": n_reused,
        "precision": precision_record(precision, used_precision),
        "inputs": inputs,
    }
    return ChangeResult(
        patches=patches, change_score=change_score, tau=tau, changed=changed, valid_fraction=valid_fraction,
        displacement=displacement, registration_error=reg_error, shape=(height, width),
        crs=crs, transform=transform if (crs is not None and not transform.is_identity) else None,
        pseudo_scores=pseudo, pixelwise=pixel_maps, pixelwise_threshold=pixel_tau,
        misregistration=misregistration, relight=relit,
        thresholds={"policy": params["tau"], "pseudo": _finite(tau_pseudo), "empirical": _finite(tau_empirical),
                    "empirical_k": EMPIRICAL_K, "both_rule": "max(pseudo, empirical)", "used": float(tau),
                    "pseudo_spread": spread, "pseudo_sample": sample_record},
        params=params, timings=timings, overview_pre=pre_image.overview, overview_post=overview_post,
    )
