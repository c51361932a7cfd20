"""New-impact monitoring: ranked candidates of new craters between two dates.

``monitor(pre, post)`` chains the pieces planetcd already has:

1. :func:`planetcd.change.detect.detect` finds the changed patches and the
   displacement ``(dy, dx)`` of post relative to pre.
2. Both images are segmented block by block on **pre's pixel grid** with the
   engine of :mod:`planetcd.craters.segment` (:func:`~planetcd.craters.segment.prepare_window`,
   :func:`~planetcd.craters.segment.canonical_probability`, :func:`~planetcd.craters.segment.run_blocks`):
   post is read through :class:`planetcd.change.register.AlignedReader` (its grid put
   on pre's with ``WarpedVRT`` when they differ, the displacement undone with
   sub-pixel interpolation), so pre and post craters share one coordinate
   system and no crater position is moved after the fact. By default
   (``catalogues="near-change"``) only the neighbourhoods of the changed
   patches are segmented (:func:`near_change_blocks`): step 3 needs a changed
   patch next to a new crater, so nothing else can become one; ``"all"``
   segments both whole images.
3. A post crater is *new* when no pre crater is the same crater under the rule
   of :mod:`planetcd.craters.match` (``deepmoon`` by default) and a changed
   patch lies inside or within ``near_px`` pixels of its rim.
4. Every changed patch yields at least one candidate. Candidates are typed:

   * ``new_crater``: a new post crater (step 3);
   * ``change``: a change no other candidate covers. Every changed patch, and every
     patch with ρ/τ ≥ :data:`CANDIDATE_RATIO` (a small new crater can leave its patch just
     below τ), is searched for the peak of its change map (:func:`change_peak`: post − pre on
     pre's grid after co-registration, each window matched radiometrically to the other by a
     least-squares gain and offset, smoothed with a Gaussian of σ = 1.5 px), inside the patch and
     :data:`PEAK_INSIDE` px around it, and given the extent of the changed blob around the peak
     (equivalent radius of the connected pixels above half the peak). The change is *covered*
     when the blob's centre lies within :data:`COVER_PX` of the disc of a candidate already made
     (a candidate merely touching the patch hides nothing); up to :data:`MAX_PEAKS_PER_PATCH` peaks
     per patch (further ones at least :data:`EXTRA_PEAK` noise units, away from every candidate).
     Before that, the patch is searched again for a new crater (:func:`local_craters`: post
     and post − pre segmented at :data:`LOCAL_THRESHOLD_FACTOR` × the threshold and at
     :data:`LOCAL_SCALES`); a crater there holding the change blob's centre makes the
     candidate a ``new_crater`` with its radius.

5. ONE score ranks all types together:
   ``score = t / (1 + t) × evidence`` with ``t = change_ratio``, the ρ/τ of the best patch
   inside or next to the candidate (0.5 at τ, 0.8 at 4 τ, above 0 below τ), and
   ``evidence`` is ``confidence × (1 − pre_support)`` for a ``new_crater``
   (``pre_support``: the mean pre crater probability inside the post crater's
   disc — a crater the pre segmentation half saw is less likely new) and
   ``CHANGE_EVIDENCE × max(0, 1 − PEAK_FLOOR / change_peak)`` for a ``change`` candidate
   (:data:`CHANGE_EVIDENCE` 0.5, an even chance, reached by a change peak far above the
   noise; :data:`PEAK_FLOOR` 8 noise units, what unchanged windows reach); a crater of the
   local search takes the larger of the two.
   Every factor is in ``0..1``, so the score is too; strong change evidence
   alone (ρ/τ = 4, peak 80 → 0.36) ranks above a doubtful crater at a weak change
   (confidence 0.5 at ρ/τ = 1.5 → 0.3).

Blocks are tiles of :func:`planetcd.tiling.halo_tiles` (a core and a halo of
context): a block is segmented, its craters extracted and its new craters
decided with nothing from other blocks (:func:`monitor_block`), so memory is
bounded by the block size and a runner (``runner=``, e.g.
``planetcd.distributed.DaskRunner``) runs the same function per block on a
cluster with identical results. Chips, overview and ``report.html`` are built
by :mod:`planetcd.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from .change.detect import ChangeResult, detect
from .change.register import AlignedReader, post_on_pre_grid
from .craters.catalog import Catalog
from .craters.extract import crater_threshold, disc_mean, extract_craters, extraction_options
from .craters.match import candidate_pairs
from .craters.segment import (PRESENT_ZERO, band_zeros_are_data, canonical_probability, catalog_craters,
                               image_probability, parse_sun_azimuth, pixel_size_of, prepare_window, resolve_sun,
                               run_blocks)
from .errors import InputError
from .precision import autocast, precision_record, resolve_precision
from .raster import IntensityStats, dataset_stats, is_georeferenced, open_raster, read_window
from .report import (OUTPUTS, SUMMARY_COLUMNS, MonitorResult, chip_panels, craters_where, is_complete, overview_png,
                     summary_row)
from .runners import LocalRunner, Runner
from .tiling import Tile, box_distances, halo_tile, halo_tiles

__all__ = ["monitor", "monitor_batch", "MonitorResult", "OUTPUTS", "PairSetup", "BlockCraters", "monitor_block",
           "merge_blocks", "new_crater_flags", "nearby_change", "candidate_scores", "change_scores", "local_scores", "local_craters", "change_term", "peak_term", "change_peak", "change_candidates",
           "CHANGE_EVIDENCE", "CANDIDATE_TYPES", "CATALOGUE_EXTENTS", "near_change_blocks", "new_crater_patches", "CANDIDATE_RATIO", "PEAK_FLOOR", "COVER_PX", "prepare_setup", "assemble",
           "read_pairs", "is_complete", "summary_row", "SUMMARY_COLUMNS"]

log = logging.getLogger(__name__)

#: Crater evidence of a ``change`` candidate (no crater segmented there): an even chance.
CHANGE_EVIDENCE = 0.5
#: Candidate types, in the order of the report's filter.
CANDIDATE_TYPES = ("new_crater", "change")
#: Gaussian σ (pixels) smoothing the post − pre map before its peak is taken.
CHANGE_SIGMA = 1.5
#: Margin (pixels) around a changed patch searched for its change peak and its local craters
#: (a crater on the patch edge is found whole).
PEAK_MARGIN = 24
#: The local crater search segments a changed patch again at this fraction of the model's probability threshold ...
LOCAL_THRESHOLD_FACTOR = 0.6
#: ... and at these scales (2: the network sees small craters twice as big).
LOCAL_SCALES = (1.0, 2.0)
#: Smallest extent (radius, pixels) of a ``change`` candidate.
MIN_CHANGE_RADIUS = 3.0
#: Patches with ρ/τ at least this (changed or not) are searched for a ``change`` candidate: a small
#: new crater can leave a patch just below τ (ranked by the score, such candidates come last).
CANDIDATE_RATIO = 0.5
#: The change peak of a patch is searched inside the patch and this many pixels around it.
PEAK_INSIDE = 8
#: A patch yields at most this many change peaks: the first, and further ones of at least
#: :data:`EXTRA_PEAK` noise units away from every candidate made (two new craters in one patch).
MAX_PEAKS_PER_PATCH = 3
EXTRA_PEAK = 16.0
#: A ``change`` candidate's evidence grows from 0 at this change peak (noise units of the window:
#: the largest peaks of unchanged windows reach 5–8) towards :data:`CHANGE_EVIDENCE`.
PEAK_FLOOR = 8.0
#: A patch's change is covered by a candidate already made when its blob's centre lies within this many
#: pixels of that candidate's disc.
COVER_PX = 5.0
#: What ``monitor`` segments: ``near-change`` (only around the changed patches, where a new crater can be) or
#: ``all`` (both whole images, for complete pre and post catalogues).
CATALOGUE_EXTENTS = ("near-change", "all")



# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PairSetup:
    """Everything a worker needs to segment one block of a pair (small and picklable).

    Attributes
    ----------
    pre_path, post_path : str
        The two rasters; post is read on pre's grid with ``displacement`` undone.
    displacement : (dy, dx)
        Displacement of post relative to pre, pixels (from :func:`detect`).
    pre_stats, post_stats : IntensityStats
        Whole-image statistics of each image's first band (:func:`planetcd.raster.dataset_stats`).
    prob_threshold : float
        Crater probability threshold.
    extraction : dict
        Keyword arguments of :func:`planetcd.craters.extract.extract_craters`.
    tile_size, overlap, batch_size : int
        Network tiles inside a block (pixels) and tiles per pass.
    match_mode : str
        Rule of :mod:`planetcd.craters.match` deciding that a post crater existed before.
    pre_sun_azimuth, post_sun_azimuth : float or None
        Each image's windows are segmented in the canonical frame for this azimuth
        (:func:`planetcd.craters.segment.canonical_probability`); None: as they are.
    zero_is_data : (bool, bool)
        For pre and post, whether 0 is a value rather than the fill (signed data around 0:
        :func:`planetcd.craters.segment.band_zeros_are_data`).
    """

    pre_path: str
    post_path: str
    displacement: tuple[float, float]
    pre_stats: IntensityStats
    post_stats: IntensityStats
    prob_threshold: float
    extraction: dict
    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    match_mode: str = "deepmoon"
    pre_sun_azimuth: float | None = None
    post_sun_azimuth: float | None = None
    zero_is_data: tuple[bool, bool] = (False, False)


@contextlib.contextmanager
def open_pair(setup: PairSetup):
    """Yield ``(pre dataset, post reader on pre's grid)`` for a setup."""
    with open_raster(setup.pre_path) as pre_ds, open_raster(setup.post_path) as post_ds:
        with post_on_pre_grid(pre_ds, post_ds) as post_grid:
            yield pre_ds, AlignedReader(post_grid, setup.displacement, zero_is_data=setup.zero_is_data[1])


def read_pair_window(setup: PairSetup, pre_ds, post_reader: AlignedReader, window: Window
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The segmenter's inputs of one window of both dates: pre, its missing mask, post (on pre's grid), its mask.

    Each ``(h, w)``: the prepared band in ``-1..1`` (:func:`~planetcd.craters.segment.prepare_window`) and bool.
    A present pixel holding 0 in a date whose zeros are data (``setup.zero_is_data``) stays present.
    """
    out = []
    for (data, valid), nodata, zero_is_data, stats in (
            (read_window(pre_ds, window), pre_ds.nodata, setup.zero_is_data[0], setup.pre_stats),
            (post_reader.read(window), post_reader.dataset.nodata, setup.zero_is_data[1], setup.post_stats)):
        band = data[0]
        if zero_is_data:
            band[(band == 0) & valid] = PRESENT_ZERO
        out.extend(prepare_window(band, valid, nodata, stats))
    return tuple(out)


# ----------------------------------------------------------------------------- one block


@dataclass
class BlockCraters:
    """Craters of one block, on pre's pixel grid (whole-image pixel coordinates).

    Attributes
    ----------
    pre : ndarray, float64, shape (n, 4)
        Pre craters centred in the block's core: ``x_px, y_px, radius_px, confidence``.
    post : ndarray, float64, shape (m, 4)
        Post craters centred in the core, same columns.
    post_new : ndarray of bool, shape (m,)
        Whether no pre crater of the whole block (halo included) is the same crater.
    pre_support : ndarray, float64, shape (m,)
        Mean pre crater probability inside each post crater's disc.
    """

    pre: np.ndarray
    post: np.ndarray
    post_new: np.ndarray
    pre_support: np.ndarray


def _in_core(craters: np.ndarray, block: Tile) -> np.ndarray:
    """Boolean mask of craters (whole-image pixels) whose centre lies in the block's core."""
    r, c, h, w = block.core
    x, y = craters[:, 0], craters[:, 1]
    return (y >= r - 0.5) & (y < r + h - 0.5) & (x >= c - 0.5) & (x < c + w - 0.5)


def new_crater_flags(post: np.ndarray, pre: np.ndarray, mode: str = "deepmoon") -> np.ndarray:
    """Post craters that no pre crater matches under the rule of :mod:`planetcd.craters.match`.

    Parameters
    ----------
    post, pre : ndarray, shape (n, >=3) and (m, >=3)
        ``x_px, y_px, radius_px`` on one pixel grid.

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    new = np.ones(len(post), bool)
    i, _, _ = candidate_pairs(post[:, :3], pre[:, :3], mode)
    new[i] = False
    return new


def monitor_block(block: Tile, *, setup: PairSetup, model, device: str = "cpu", tta: bool | None = None,
                  precision: str = "fp32") -> BlockCraters:
    """Segment one block of pre and of post (on pre's grid) and decide which post craters are new.

    The block function of :func:`monitor` (run through :func:`planetcd.craters.segment.run_blocks`).

    Parameters
    ----------
    block : Tile
        Its core (craters kept) and its read window (core + halo).
    setup : PairSetup
    model : str, path or torch.nn.Module
        The crater segmenter, loaded once per process (:func:`planetcd.models.cached`).
    device : str
    tta : bool, optional
    precision : {"fp32", "bf16"}
        The run's resolved precision of the segmenter (:func:`planetcd.precision.resolve_precision`).

    Returns
    -------
    BlockCraters
        In whole-image pixel coordinates of pre's grid.
    """
    from . import models

    net = models.cached(model, device, tta)
    r, c, h, w = block.read
    window = Window(c, r, w, h)
    with open_pair(setup) as (pre_ds, post_reader):
        pre_in, pre_missing, post_in, post_missing = read_pair_window(setup, pre_ds, post_reader, window)
    missing = pre_missing | post_missing
    probs = []
    for prepared, sun in ((pre_in, setup.pre_sun_azimuth), (post_in, setup.post_sun_azimuth)):
        prob = canonical_probability(net, prepared, sun, tile_size=setup.tile_size, overlap=setup.overlap,
                                     batch_size=setup.batch_size, precision=precision)
        prob[missing] = 0.0
        probs.append(prob)
    pre_prob, post_prob = probs
    pre_local = extract_craters(pre_prob, **setup.extraction)
    post_local = extract_craters(post_prob, **setup.extraction)
    offset = np.array([c, r, 0.0, 0.0])
    pre_all = pre_local + offset
    post_all = post_local + offset
    keep = _in_core(post_all, block)
    post_new = new_crater_flags(post_all[keep], pre_all, setup.match_mode)
    support = np.nan_to_num(disc_mean(pre_prob, post_local[keep]), nan=0.0)
    return BlockCraters(pre_all[_in_core(pre_all, block)], post_all[keep], post_new, support)


def merge_blocks(blocks: list[BlockCraters]) -> BlockCraters:
    """Concatenate block results (each crater belongs to exactly one block core)."""
    if not blocks:
        empty = np.zeros((0, 4))
        return BlockCraters(empty, empty.copy(), np.zeros(0, bool), np.zeros(0))
    return BlockCraters(
        np.concatenate([b.pre for b in blocks]).reshape(-1, 4),
        np.concatenate([b.post for b in blocks]).reshape(-1, 4),
        np.concatenate([b.post_new for b in blocks]),
        np.concatenate([b.pre_support for b in blocks]),
    )


def new_crater_patches(change: ChangeResult) -> np.ndarray:
    """Patches a new crater may lie next to: changed, or scoring above τ (the rule of :func:`assemble`).

    Returns
    -------
    ndarray of bool, shape (n_patches,)
    """
    ratio = np.where(np.isfinite(change.change_score), change.ratio, 0.0)
    return np.asarray(change.changed, bool) | (ratio > 1.0)


def near_change_blocks(change: ChangeResult, near_px: float, block_size: int, block_halo: int) -> list[Tile]:
    """The blocks that ``catalogues="near-change"`` segments: the neighbourhoods of the changed patches.

    A post crater is a ``new_crater`` candidate only when a changed patch lies within ``near_px`` of its rim
    (:func:`assemble`), so its centre lies within ``near_px + radius`` of that patch. Each changed patch is
    grown by ``near_px + block_halo`` pixels (every new crater up to ``block_halo`` px in radius is found
    whole); grown patches that overlap or touch are merged into one core (their bounding box), which is cut
    into cores of at most ``block_size`` px when larger; each core is read with ``block_halo`` px of context,
    as the blocks of the full grid are.

    Parameters
    ----------
    change : ChangeResult
    near_px : float
        Reach of a changed patch beyond a crater's rim, pixels.
    block_size, block_halo : int
        Largest core side and the context around each core (pixels), as in :func:`monitor`.

    Returns
    -------
    list of Tile
        Non-overlapping cores, ordered by row then column of their group; empty when no patch changed.
    """
    height, width = change.shape
    boxes = np.asarray(change.patches, np.int64)[new_crater_patches(change)]
    if len(boxes) == 0:
        return []
    grow = int(np.ceil(near_px + block_halo))
    grown = np.column_stack([np.clip(boxes[:, 0] - grow, 0, height), np.clip(boxes[:, 1] - grow, 0, width),
                             np.clip(boxes[:, 0] + boxes[:, 2] + grow, 0, height),
                             np.clip(boxes[:, 1] + boxes[:, 3] + grow, 0, width)])
    # merge until no two bounding boxes overlap (a merged box can reach a third one)
    merged = [list(b) for b in grown]
    merging = True
    while merging:
        merging = False
        out: list[list[int]] = []
        for box in merged:
            for other in out:
                if box[0] <= other[2] and other[0] <= box[2] and box[1] <= other[3] and other[1] <= box[3]:
                    other[:] = [min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]),
                                max(box[3], other[3])]
                    merging = True
                    break
            else:
                out.append(box)
        merged = out
    blocks = []
    for top, left, bottom, right in sorted(merged):
        for tile in halo_tiles(bottom - top, right - left, block_size, 0):  # the box cut into cores
            r, c, h, w = tile.core
            blocks.append(halo_tile((top + r, left + c, h, w), block_halo, height, width))
    return blocks


# ----------------------------------------------------------------------------- change association and scores


def nearby_change(craters: np.ndarray, change: ChangeResult, near_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Best change ratio ρ/τ of the scored patches inside or within ``near_px`` of each crater's disc.

    Parameters
    ----------
    craters : ndarray, shape (n, >=3)
        ``x_px, y_px, radius_px`` on pre's grid.
    change : ChangeResult
    near_px : float
        Distance (pixels) from the rim within which a patch counts as next to the crater.

    Returns
    -------
    ratio : ndarray, float64, shape (n,)
        Largest ρ/τ (0 when no scored patch is near).
    patch : ndarray, int64, shape (n,)
        Index of that patch in ``change.patches`` (-1 when none).
    """
    ratio = np.zeros(len(craters))
    best = np.full(len(craters), -1, np.int64)
    if len(craters) == 0:
        return ratio, best
    patch_ratio = np.where(np.isfinite(change.change_score), change.ratio, -np.inf)
    for k, (x, y, radius) in enumerate(craters[:, :3]):
        near = np.flatnonzero(box_distances(change.patches, y, x) <= radius + near_px)
        if len(near) == 0:
            continue
        j = near[np.argmax(patch_ratio[near])]
        if np.isfinite(patch_ratio[j]):
            ratio[k], best[k] = patch_ratio[j], j
    return ratio, best


def change_term(change_ratio: np.ndarray) -> np.ndarray:
    """``t / (1 + t)`` with ``t = ρ/τ`` (0 where not finite or ≤ 0): the change evidence every candidate's score carries.

    It grows with ρ/τ (0.5 at τ, 0.8 at 4 τ) and stays above 0 below τ, so a patch just under the
    threshold still ranks its candidate (after the changed ones of equal evidence).
    """
    t = np.nan_to_num(np.asarray(change_ratio, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    t = np.maximum(t, 0.0)
    return t / (1.0 + t)


def peak_term(change_peak: np.ndarray) -> np.ndarray:
    """``1 − PEAK_FLOOR / change_peak`` where the peak exceeds :data:`PEAK_FLOOR`, else 0 (NaN: 0)."""
    peak = np.nan_to_num(np.asarray(change_peak, np.float64), nan=0.0)
    return np.where(peak > PEAK_FLOOR, 1.0 - PEAK_FLOOR / np.maximum(peak, PEAK_FLOOR), 0.0)


def candidate_scores(confidence: np.ndarray, pre_support: np.ndarray, change_ratio: np.ndarray) -> np.ndarray:
    """Score of ``new_crater`` candidates: ``change_term(ρ/τ) × confidence × (1 − pre_support)``, in ``0..1``."""
    return np.clip(confidence * (1.0 - np.clip(pre_support, 0.0, 1.0)) * change_term(change_ratio), 0.0, 1.0)


def change_scores(change_ratio: np.ndarray, change_peak: np.ndarray) -> np.ndarray:
    """Score of ``change`` candidates: ``change_term(ρ/τ) × CHANGE_EVIDENCE × peak_term(peak)``, in ``0..1``."""
    return np.clip(change_term(change_ratio) * CHANGE_EVIDENCE * peak_term(change_peak), 0.0, 1.0)


def local_scores(confidence: np.ndarray, pre_support: np.ndarray, change_ratio: np.ndarray,
                 change_peak: np.ndarray) -> np.ndarray:
    """Score of a crater of the local search: ``change_term × max(CHANGE_EVIDENCE × peak_term, confidence × (1 − pre_support))``.

    Its patch would otherwise have given a ``change`` candidate, so the crater never lowers its rank.
    """
    evidence = np.maximum(CHANGE_EVIDENCE * peak_term(change_peak),
                          np.asarray(confidence) * (1.0 - np.clip(pre_support, 0.0, 1.0)))
    return np.clip(change_term(change_ratio) * evidence, 0.0, 1.0)


def _matched_difference(pre: np.ndarray, post: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``post − pre`` after matching post to pre by a least-squares gain and offset over the valid pixels (0 where missing)."""
    ok = ~missing
    a, b = pre[ok].astype(np.float64), post[ok].astype(np.float64)
    if len(a) < 2:
        return np.zeros(pre.shape)
    var = a.var()
    gain = ((a - a.mean()) * (b - b.mean())).mean() / var if var > 0 else 1.0
    gain = gain if gain > 0 else 1.0
    matched = (post - b.mean()) / gain + a.mean()
    return np.where(ok, matched - pre, 0.0)


def change_peak(pre: np.ndarray, post: np.ndarray, missing: np.ndarray, inside: np.ndarray,
                sigma: float = CHANGE_SIGMA) -> tuple[float, float, float, float] | None:
    """Peak of the change between two co-registered windows and the extent of its blob.

    Parameters
    ----------
    pre, post : ndarray, float, shape (h, w)
        The two windows on one grid (any radiometry: post is matched to pre by
        a least-squares gain and offset over the valid pixels first).
    missing : ndarray of bool, shape (h, w)
        Pixels missing in either window (never a peak).
    inside : ndarray of bool, shape (h, w)
        Where the peak may lie (the patch and its margin).
    sigma : float
        Gaussian smoothing of ``|post − pre|``, pixels.

    Returns
    -------
    (row, col, radius, peak) or None
        Centre of the changed blob (its ``|post − pre|²``-weighted centroid, window
        pixels), its equivalent radius ``sqrt(area / π)`` (at least
        :data:`MIN_CHANGE_RADIUS`), and the peak of the smoothed change in units
        of the window's robust noise (MAD of the change); None when no valid pixel.
    """
    from scipy import ndimage

    ok = ~missing
    if ok.sum() < 16 or not (inside & ok).any():
        return None
    diff = _matched_difference(pre, post, missing)
    change = np.abs(ndimage.gaussian_filter(diff, sigma)) if sigma > 0 else np.abs(diff)
    change[~ok] = 0.0
    noise = 1.4826 * np.median(np.abs(change[ok] - np.median(change[ok]))) + 1e-12
    search = np.where(inside & ok, change, -1.0)
    r, c = np.unravel_index(int(np.argmax(search)), search.shape)
    peak = change[r, c]
    # the blob: pixels above half the peak, joined across the dark and bright halves of a crater
    above = ndimage.binary_closing(change > 0.5 * peak, iterations=2) & ok
    labels, _ = ndimage.label(above)
    blob = labels == labels[r, c] if labels[r, c] else np.zeros_like(above)
    blob[r, c] = True
    rows, cols = np.nonzero(blob)
    w = change[rows, cols] ** 2  # the core of the blob, not its faint skirt, places it
    cy, cx = float((rows * w).sum() / w.sum()), float((cols * w).sum() / w.sum())
    radius = max(MIN_CHANGE_RADIUS, float(np.sqrt(blob.sum() / np.pi)))
    return cy, cx, radius, float(peak / noise)


#: The logger of :mod:`planetcd.craters.segment`, whose per-scale counts the local search keeps quiet.
SEGMENT_LOGGER = "planetcd.craters.segment"


@contextlib.contextmanager
def _quiet(name: str, level: int = logging.WARNING):
    """Raise the logger ``name`` to ``level`` for the duration (its warnings still show)."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(saved)


def local_craters(model: torch.nn.Module, pre: np.ndarray, post: np.ndarray, diff: np.ndarray,
                  threshold: float, match_mode: str = "deepmoon", scales=LOCAL_SCALES,
                  pre_sun_azimuth: float | None = None, post_sun_azimuth: float | None = None) -> np.ndarray:
    """New craters of one changed window, searched again at a lower threshold and finer scales.

    Post and post − pre are segmented with the engine of :mod:`planetcd.craters.segment`
    (:func:`~planetcd.craters.segment.image_probability`, :func:`~planetcd.craters.segment.catalog_craters`
    with ``scales``); pre is segmented the same way, and a post or difference
    crater that a pre crater matches (rule ``match_mode``) is dropped.

    Parameters
    ----------
    model : torch.nn.Module
        The segmenter (with ``metadata``).
    pre, post, diff : ndarray, float32, shape (h, w)
        Prepared windows (``-1..1``, :func:`~planetcd.craters.segment.prepare_window`) and
        their gain-matched difference, on one grid.
    threshold : float
        Probability threshold of the search.
    pre_sun_azimuth, post_sun_azimuth : float, optional
        Segment pre, and post and the difference, in the canonical frame of their own sun
        (:func:`~planetcd.craters.segment.canonical_probability`); None: as they are.

    Returns
    -------
    ndarray, float64, shape (n, 5)
        ``x, y, radius, confidence, pre_support`` in window pixels, by decreasing confidence.
    """
    found, pre_prob, pre_craters = [], None, None
    suns = {"pre": pre_sun_azimuth, "post": post_sun_azimuth, "diff": post_sun_azimuth}
    for name, image in (("pre", pre), ("post", post), ("diff", diff)):
        image = np.asarray(image, np.float32)
        image = image - float(image.min()) + 1.0  # strictly positive: no pixel reads as missing
        prob = image_probability(model, image, sun_azimuth=suns[name])
        with _quiet(SEGMENT_LOGGER):  # its 'scale 2: N craters' lines, three per changed window, mean nothing here
            craters = catalog_craters(model, image, prob, threshold=threshold, scales=scales).reshape(-1, 4)
        if name == "pre":
            pre_prob, pre_craters = prob, craters
        else:
            found.append(craters)
    post_craters = np.concatenate(found).reshape(-1, 4)
    new = post_craters[new_crater_flags(post_craters, pre_craters, match_mode)]
    support = np.nan_to_num(disc_mean(pre_prob, new), nan=0.0) if len(new) else np.zeros(0)
    out = np.column_stack([new, support]).reshape(-1, 5)
    return out[np.argsort(-out[:, 3], kind="stable")]


def change_candidates(change: ChangeResult, setup: PairSetup, covered: np.ndarray,
                      margin: int = PEAK_MARGIN, model: torch.nn.Module | None = None,
                      min_ratio: float = CANDIDATE_RATIO) -> np.ndarray:
    """One candidate per changed (or nearly changed) patch whose change no other candidate covers.

    Patches with ``ρ/τ ≥ min_ratio`` (every changed patch, and the patches just below τ) are visited
    from the largest ρ/τ down. The change peak of each (:func:`change_peak`, searched inside the patch
    and :data:`PEAK_INSIDE` px around it) is *covered* when the changed blob's centre lies within
    :data:`COVER_PX` of the disc of a candidate already made (the same change: one crater across two
    patches, or a ``new_crater`` there); otherwise the patch yields a candidate: a crater of the local
    search holding the blob's centre, else the change peak itself. A candidate merely touching the
    patch does not hide a change elsewhere in it.

    Parameters
    ----------
    change : ChangeResult
    setup : PairSetup
        Reads pre and post (on pre's grid, displacement undone).
    covered : ndarray, shape (k, >=3)
        ``x_px, y_px, radius_px`` of the candidates already made (``new_crater``).
    margin : int
        Pixels of context read around the patch (change map, local crater search).
    model : torch.nn.Module, optional
        The segmenter: the window is searched for a new crater (:func:`local_craters`,
        threshold ``LOCAL_THRESHOLD_FACTOR × setup.prob_threshold``, scales
        :data:`LOCAL_SCALES`); one whose disc (+3 px) holds the change blob's centre
        becomes a ``new_crater`` candidate. None: no local search.
    min_ratio : float
        Patches with a smaller ρ/τ yield no candidate of their own.

    Returns
    -------
    ndarray, float64, shape (n, 8)
        ``x_px, y_px, radius_px, peak, patch index, is_crater, confidence, pre_support`` on
        pre's grid (``peak``: the change at the peak in noise units, see :func:`change_peak`;
        ``is_crater`` 1 for a crater of the local search, whose ``confidence`` and ``pre_support``
        follow; 0 and NaN for a change peak).
    """
    made = [(float(c[0]), float(c[1]), float(c[2])) for c in np.asarray(covered, np.float64)]
    ratio = np.where(np.isfinite(change.change_score), change.ratio, -np.inf)
    visit = np.flatnonzero((change.changed | (ratio >= min_ratio)) & np.isfinite(change.change_score))
    visit = visit[np.lexsort((visit, -ratio[visit]))]
    out = []
    if len(visit) == 0:
        return np.zeros((0, 8))
    height, width = change.shape
    with open_pair(setup) as (pre_ds, post_reader):
        for j in visit:
            pr, pc, ph, pw = (int(v) for v in change.patches[j])
            r0, c0 = max(0, pr - margin), max(0, pc - margin)
            r1, c1 = min(height, pr + ph + margin), min(width, pc + pw + margin)
            window = Window(c0, r0, c1 - c0, r1 - r0)
            local = None  # the local crater search of this window, run once when first needed
            pre_in, pre_missing, post_in, post_missing = read_pair_window(setup, pre_ds, post_reader, window)
            inside = np.zeros(pre_in.shape, bool)
            inside[max(0, pr - r0 - PEAK_INSIDE): pr - r0 + ph + PEAK_INSIDE,
                   max(0, pc - c0 - PEAK_INSIDE): pc - c0 + pw + PEAK_INSIDE] = True
            rows, cols = np.mgrid[r0:r1, c0:c1]
            for k in range(MAX_PEAKS_PER_PATCH):
                search = inside.copy()
                if k:  # further peaks: away from every candidate made, and strong
                    for mx, my, mr in made:
                        search &= np.hypot(cols - mx, rows - my) > mr + COVER_PX
                found = change_peak(pre_in, post_in, pre_missing | post_missing, search)
                if found is None or (k and found[3] < EXTRA_PEAK):
                    break
                cy, cx, radius, peak = found
                x, y = cx + c0, cy + r0
                if any(np.hypot(x - mx, y - my) <= mr + COVER_PX for mx, my, mr in made):
                    continue  # the same change as a candidate already made
                row = (x, y, radius, peak, float(j), 0.0, np.nan, np.nan)
                if model is not None:
                    if local is None:
                        diff = _matched_difference(pre_in, post_in, pre_missing | post_missing)
                        local = local_craters(model, pre_in, post_in, diff,
                                              LOCAL_THRESHOLD_FACTOR * setup.prob_threshold, setup.match_mode,
                                              pre_sun_azimuth=setup.pre_sun_azimuth,
                                              post_sun_azimuth=setup.post_sun_azimuth)
                    hit = np.hypot(local[:, 0] - cx, local[:, 1] - cy) <= local[:, 2] + 3.0
                    if hit.any():
                        lx, ly, lr, conf, support = local[np.flatnonzero(hit)[0]]
                        row = (lx + c0, ly + r0, lr, peak, float(j), 1.0, conf, support)
                made.append(row[:3])
                out.append(row)
    return np.array(out, np.float64).reshape(-1, 8)


# ----------------------------------------------------------------------------- the pipeline


def prepare_setup(pre, post, displacement: tuple[float, float], model: torch.nn.Module, *,
                  prob_threshold: float | None, tile_size: int, overlap: int, batch_size: int,
                  match_mode: str) -> PairSetup:
    """Whole-image statistics and options for segmenting a pair (reads decimated overviews only)."""
    meta = getattr(model, "metadata", {})
    threshold = crater_threshold(meta, prob_threshold)
    with open_raster(pre) as pre_ds, open_raster(post) as post_ds:
        with post_on_pre_grid(pre_ds, post_ds) as post_grid:
            pre_stats, post_stats = dataset_stats(pre_ds, bands=[1]), dataset_stats(post_grid, bands=[1])
            zero_is_data = (band_zeros_are_data(pre_ds), band_zeros_are_data(post_grid))
    return PairSetup(str(pre), str(post), (float(displacement[0]), float(displacement[1])), pre_stats, post_stats,
                     threshold, extraction_options(meta, threshold), tile_size, overlap, batch_size, match_mode,
                     zero_is_data=zero_is_data)


def _catalog(craters: np.ndarray, georef: dict, name: str) -> Catalog:
    return Catalog.from_pixels(craters.reshape(-1, 4), name=name, **georef)


def assemble(change: ChangeResult, craters: BlockCraters, setup: PairSetup, *, near_px: float,
             min_score: float, georef: dict, chips: bool = True,
             model: torch.nn.Module | None = None) -> tuple[Catalog, dict, Catalog, Catalog, list]:
    """Typed candidates from the merged block craters and the change result, ranked best first.

    ``new_crater`` candidates are new post craters next to a changed patch;
    every changed patch none of them covers gets a ``change`` candidate
    (:func:`change_candidates`). One score ranks both (module docstring).
    """
    ratio, patch = nearby_change(craters.post, change, near_px)
    near_changed = np.zeros(len(patch), bool)
    near_changed[patch >= 0] = new_crater_patches(change)[patch[patch >= 0]]
    chosen = np.flatnonzero(craters.post_new & near_changed)
    crater_score = candidate_scores(craters.post[chosen, 3], craters.pre_support[chosen], ratio[chosen])
    extra = change_candidates(change, setup, craters.post[chosen], model=model)
    extra_patch = extra[:, 4].astype(np.int64)
    extra_ratio = change.ratio[extra_patch] if len(extra) else np.zeros(0)
    local = extra[:, 5] > 0  # a crater of the local search
    n_new = len(chosen)
    extra_conf = np.where(local, extra[:, 6], 0.0)
    pixels = np.concatenate([craters.post[chosen], np.column_stack([extra[:, :3], extra_conf])]).reshape(-1, 4)
    extra_score = np.where(local, local_scores(extra_conf, np.nan_to_num(extra[:, 7]), extra_ratio, extra[:, 3]),
                           change_scores(extra_ratio, extra[:, 3]))
    score = np.concatenate([crater_score, extra_score])
    kind = np.array(["new_crater"] * n_new + ["new_crater" if k else "change" for k in local], dtype=object)
    cand_ratio = np.concatenate([ratio[chosen], extra_ratio])
    cand_patch = np.concatenate([patch[chosen], extra_patch])
    pre_support = np.concatenate([craters.pre_support[chosen], np.where(local, extra[:, 7], np.nan)])
    change_peak_v = np.concatenate([np.full(n_new, np.nan), extra[:, 3]])
    keep = np.flatnonzero((score >= min_score) & (score > 0))  # a score of 0 is no evidence: not a candidate
    # best first; ties: new craters before change, then by position in the post list / patch order (deterministic)
    order = keep[np.lexsort((np.arange(len(score))[keep], -score[keep]))]
    best_patch = change.patches[cand_patch[order]] if len(order) else np.zeros((0, 4), np.int64)
    scores = {
        "score": score[order],
        "change_ratio": cand_ratio[order],
        "confidence": pixels[order, 3],
        "pre_support": pre_support[order],
        "change_peak": change_peak_v[order],
        "patch_row_off": best_patch[:, 0],
        "patch_col_off": best_patch[:, 1],
    }
    candidates = _catalog(pixels[order], georef, "new_craters")
    scores["type"] = kind[order]  # popped by monitor into MonitorResult.types: scores stay numeric
    panels = []
    if chips and len(order):
        with open_pair(setup) as (pre_ds, post_reader):
            panels = [chip_panels(pre_ds, post_reader, c, setup.pre_stats, setup.post_stats) for c in pixels[order]]
    return candidates, scores, _catalog(craters.pre, georef, "pre"), _catalog(craters.post, georef, "post"), panels


def _georeference(pre, pixel_size_m: float | None) -> dict:
    with open_raster(pre) as ds:
        if is_georeferenced(ds):
            if pixel_size_m is not None:
                log.warning("%s is georeferenced: its own pixel size is used, pixel_size_m (--pixel-size) %g is "
                            "ignored", pre, pixel_size_m)
            return {"transform": ds.transform, "crs": ds.crs}
    if pixel_size_m is None:
        log.warning("%s is not georeferenced: the candidates get pixel coordinates only (no map or lon/lat "
                    "columns, no diameter_km, a GeoPackage without CRS); give pixel_size_m (--pixel-size, metres) "
                    "for diameters", pre)
    return {"pixel_size_m": pixel_size_m}


#: Degrees within which a date's own, not confident, sun estimate counts as corroborated by the other date's
#: confident one (the tolerance of the estimator's confidence, :class:`planetcd.craters.sun.SunEstimate`).
SUN_AGREEMENT_DEG = 30.0


def corroborate_suns(pre: tuple, post: tuple, meta: dict, shape: tuple[int, int]) -> tuple[tuple, tuple]:
    """Keep a date's own sun estimate when it was not confident but agrees with the other date's confident one.

    :func:`~planetcd.craters.segment.resolve_sun` decides each date alone: an estimate below the
    confidence bar falls back to 270°. When one date is estimated confidently and the other's own best
    guess lies within :data:`SUN_AGREEMENT_DEG` of it, the fallback would put the two dates in different
    frames although both images point to one sun (found on a 512 px crop of MC11E-I with one implanted
    crater: pre 311.1° at confidence 0.94, post 310.9° at 0.85 fell back to 270°, and the sun-aware
    ``ctx-craters`` found 9 pre and 6 post craters and 2 candidates, one of them false; with both at 311°
    given, 13 / 11 and the true crater only). That date then uses its own estimate, recorded with
    ``source`` ``"estimated (corroborated by pre)"`` (or ``post``).

    Parameters
    ----------
    pre, post : (float or None, dict)
        ``(rotate, record)`` of each date as :func:`~planetcd.craters.segment.resolve_sun` returns them.
    meta : dict
        The model's metadata (``sun_aware``).
    shape : (int, int)
        Rows and columns of pre's grid, for the frame's record.

    Returns
    -------
    (rotate, record), (rotate, record)
        Pre's and post's, changed only for a corroborated date.
    """
    from .craters.sun import angle_difference, canonical_frame

    dates = {"pre": pre, "post": post}
    for name, other in (("pre", "post"), ("post", "pre")):
        rotate, record = dates[name]
        other_record = dates[other][1]
        if record.get("source") != "fallback" or other_record.get("source") != "estimated":
            continue
        own = float(record["estimate"]["azimuth_deg"])
        gap = abs(float(angle_difference(own, float(other_record["sun_azimuth_deg"]))))
        if gap > SUN_AGREEMENT_DEG:
            continue
        record = {**record, "sun_azimuth_deg": round(own, 6), "source": f"estimated (corroborated by {other})"}
        aware = bool(meta.get("sun_aware", False))
        if aware:
            record["frame"] = canonical_frame(shape, own).to_dict()
        log.info("%s: using its own sun azimuth estimate %.1f deg after all: %s's confident estimate is %.1f deg "
                 "away", name, own, other, gap)
        dates[name] = (own if aware else None, record)
    return dates["pre"], dates["post"]


def _check_inputs(pre, post) -> None:
    for name, path in (("pre", pre), ("post", post)):
        if isinstance(path, np.ndarray):
            raise InputError(f"{name}: monitor reads raster files (paths), not arrays")
    with open_raster(pre) as pre_ds, open_raster(post) as post_ds:
        with post_on_pre_grid(pre_ds, post_ds, clip_impulses=False):
            pass


def monitor(
    pre: str | os.PathLike,
    post: str | os.PathLike,
    *,
    method: str = "nn",
    patch_size: int = 100,
    n_pseudo: int = 100,
    model: str | os.PathLike | torch.nn.Module = "ctx-craters",
    prob_threshold: float | None = None,
    tta: bool | None = None,
    match_mode: str = "deepmoon",
    near_px: float = 32.0,
    min_score: float = 0.0,
    block_size: int = 2048,
    block_halo: int = 192,
    tile_size: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    pixel_size_m: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = False,
    trunk=None,
    runner: Runner | None = None,
    sun_azimuth: float | str | None = None,
    post_sun_azimuth: float | str | None = None,
    precision: str = "auto",
    catalogues: str = "near-change",
) -> MonitorResult:
    """Find new-impact candidates between a pre and a post image.

    Parameters
    ----------
    pre, post : path
        Rasters GDAL reads; post is put on pre's grid (``WarpedVRT`` when both
        are georeferenced and the grids differ) and co-registered.
    method : {"nn", "paper"}
        Change detector of :func:`planetcd.change.detect.detect` (``nn``: shift-tolerant, sees small new craters).
    patch_size : int
        Change patch side, pixels.
    n_pseudo : int
        Pseudo-unchanged pairs calibrating τ.
    model : str, path or torch.nn.Module
        Crater segmenter: registry name (:func:`planetcd.models.load`), checkpoint path, or a loaded model.
    prob_threshold : float, optional
        Crater probability threshold, in (0, 1) (default: the model's).
    tta : bool, optional
        Average the segmenter over the four flips of each tile (default: the model's).
    match_mode : {"deepmoon", "strict", "iou"}
        Rule of :mod:`planetcd.craters.match` under which a post crater already existed in pre.
    near_px : float
        A changed patch within this many pixels of a crater's rim makes it a candidate.
    min_score : float
        Candidates scoring below this are dropped; a candidate scoring 0 (no evidence: no change near it, or
        its disc already a crater in pre) is never listed.
    block_size, block_halo : int
        Segmentation blocks (pixels): memory is bounded by ``(block_size + 2 block_halo)²``;
        the halo must exceed the largest crater radius.
    tile_size, overlap, batch_size : int
        Network tiles inside a block.
    pixel_size_m : float, optional
        Pixel size for diameters when the images are not georeferenced.
    weights : path, optional
        VGG-16 weights of the change detector.
    device : {"auto", "cpu", "cuda"}
    seed : int
    progress : bool
        Progress bars on stderr.
    trunk : VGGFeatures, optional
        A loaded VGG trunk to reuse.
    runner : planetcd.runners.Runner, optional
        Who runs the segmentation blocks and detect's tiles (default: this process;
        ``planetcd.distributed.DaskRunner`` on a cluster).
    sun_azimuth : float, "none" or None
        Where the light comes from in pre (and in post unless ``post_sun_azimuth`` is given),
        degrees clockwise from the image top (as :func:`planetcd.craters.segment.segment`;
        docs/sun.md). None: estimated from each image; ``"none"``: no estimate, no turn.
        Sun-aware models segment each image in the canonical frame; the values are
        recorded in ``params["sun"]`` (``monitor.json``).
    post_sun_azimuth : float, "none" or None
        Post's own sun azimuth (a second date has its own sun); default: ``sun_azimuth``.
    precision : {"auto", "fp32", "bf16"}
        Precision of the networks (VGG trunk and segmenter), one for the whole run
        (:func:`planetcd.precision.resolve_precision`); recorded in ``params["precision"]``.
    catalogues : {"near-change", "all"}
        What is segmented. ``"near-change"``: only the neighbourhoods of the changed patches
        (:func:`near_change_blocks`), the only places a ``new_crater`` candidate can come from, so the
        candidates are those of ``"all"`` (up to the network's tile seams) and ``pre_craters`` /
        ``post_craters`` hold the craters of those neighbourhoods; ``"all"``: both whole images, for complete
        catalogues of both dates. The share of the image segmented is ``params["segmented_fraction"]``.

    Returns
    -------
    MonitorResult
    """
    from . import models
    from .features import pick_device

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if method not in ("nn", "paper"):
        raise InputError(f"method must be 'nn' or 'paper', got {method!r}")
    if block_halo < 0 or block_size < 64:
        raise InputError("block_size must be at least 64 px and block_halo at least 0")
    if catalogues not in CATALOGUE_EXTENTS:
        raise InputError(f"catalogues must be one of {', '.join(CATALOGUE_EXTENTS)}, got {catalogues!r}")
    from .inputs import check_pair  # the one input check: missing, truncated, empty, too small, no overlap
    check_pair(pre, post, min_size=patch_size, size_of=f"one {patch_size} px patch")
    _check_inputs(pre, post)
    torch_device = str(pick_device(device))
    used_precision = resolve_precision(precision, torch_device)
    segmenter = models.cached(model, torch_device, tta)
    meta = segmenter.metadata
    crater_threshold(meta, prob_threshold)  # a bad threshold fails before detect runs
    post_sun = sun_azimuth if post_sun_azimuth is None else post_sun_azimuth
    parse_sun_azimuth(sun_azimuth)
    parse_sun_azimuth(post_sun, "post_sun_azimuth")
    with open_raster(pre) as pre_ds:
        pixel_size_used = pixel_size_of(pre_ds, pixel_size_m)
        advice = models.pixel_scale_advice(meta, pixel_size_used)
    if advice:
        log.warning(advice)
    local = runner is None or isinstance(runner, LocalRunner)

    t0 = time.perf_counter()
    detect_options = dict(method=method, patch_size=patch_size, n_pseudo=n_pseudo, weights=weights, device=device,
                          seed=seed, progress=progress, trunk=trunk, precision=used_precision)
    change = detect(pre, post, **detect_options) if local else detect(pre, post, runner=runner, **detect_options)
    timings["detect_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    setup = prepare_setup(pre, post, change.displacement, segmenter, prob_threshold=prob_threshold,
                          tile_size=tile_size, overlap=overlap, batch_size=batch_size, match_mode=match_mode)
    # Both dates' suns at once: each estimate reads its own file and is numpy / scipy work that releases the GIL
    # for much of its time, and they are most of this stage on a large pair (docs/performance.md).
    with ThreadPoolExecutor(max_workers=2) as pool:
        pre_job = pool.submit(resolve_sun, sun_azimuth, meta, setup.pre_path, shape=change.shape, name="pre")
        post_job = pool.submit(resolve_sun, post_sun, meta, setup.post_path, shape=change.shape,
                               what="post_sun_azimuth", name="post")
        (pre_rotate, pre_sun_record), (post_rotate, post_sun_record) = pre_job.result(), post_job.result()
    (pre_rotate, pre_sun_record), (post_rotate, post_sun_record) = corroborate_suns(
        (pre_rotate, pre_sun_record), (post_rotate, post_sun_record), meta, change.shape)
    setup = dataclasses.replace(setup, pre_sun_azimuth=pre_rotate, post_sun_azimuth=post_rotate)
    if catalogues == "all":
        blocks = halo_tiles(change.shape[0], change.shape[1], block_size, block_halo)
    else:  # a new crater needs a changed patch next to it: segment only there
        blocks = near_change_blocks(change, near_px, block_size, block_halo)
    segmented = sum(b.core[2] * b.core[3] for b in blocks) / float(change.shape[0] * change.shape[1])
    log.info("segmenting %s: %.1f %% of the image in %d block(s)", "both whole images" if catalogues == "all"
             else "around the changed patches", 100.0 * segmented, len(blocks))
    model_ref = segmenter if local or isinstance(model, torch.nn.Module) else (
        os.path.abspath(model) if os.path.isfile(str(model)) else str(model))
    craters = merge_blocks(list(run_blocks(monitor_block, blocks, runner=runner, progress=progress, desc="segment",
                                           setup=setup, model=model_ref, device=torch_device, tta=tta,
                                           precision=used_precision)))
    timings["segment_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    georef = _georeference(pre, pixel_size_m)
    with autocast(used_precision, torch_device):  # the local crater search segments at the run's precision
        candidates, scores, pre_cat, post_cat, panels = assemble(change, craters, setup, near_px=near_px,
                                                                 min_score=min_score, georef=georef, model=segmenter)
    with open_pair(setup) as (pre_ds, post_reader):
        overview, ov_shape = overview_png(pre_ds, setup.pre_stats)
        overview_post, post_shape = overview_png(post_reader.dataset, setup.post_stats)
    if post_shape != ov_shape:
        overview_post = None
    timings["candidates_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    log.info("%d pre and %d post craters%s; %d candidates (%d new_crater)", len(pre_cat), len(post_cat),
             craters_where(catalogues), len(candidates),
             int(np.sum(scores["type"] == "new_crater")))
    params = {
        # absolute: the record stays usable from another folder or after the outputs are moved
        "pre": str(Path(pre).resolve()), "post": str(Path(post).resolve()), "method": method, "patch_size": patch_size, "n_pseudo": n_pseudo,
        "model": str(meta.get("name", model)), "tta": bool(meta.get("tta", False)), "tta_flips": meta.get("tta_flips"),
        "prob_threshold": setup.prob_threshold, "extraction": setup.extraction, "match_mode": match_mode,
        "near_px": near_px, "min_score": min_score, "block_size": block_size, "block_halo": block_halo,
        "catalogues": catalogues, "segmented_fraction": round(segmented, 6),
        "tile_size": tile_size, "overlap": overlap, "seed": seed, "device": torch_device, "pixel_size_m": pixel_size_m,
        "pixel_size_m_used": pixel_size_used,  # pre's own (georeferenced), else pixel_size_m
        "n_pseudo_used": None if change.pseudo_scores is None else int(len(change.pseudo_scores)),
        "inputs": change.params.get("inputs"),  # sizes, dtypes, nodata, and how post was put on pre's grid
        "score": "t / (1 + t) * evidence, t = change_ratio; evidence = confidence * (1 - pre_support) for "
                 f"new_crater, {CHANGE_EVIDENCE} * max(0, 1 - {PEAK_FLOOR} / change_peak) for change, the larger "
                 "of the two for a crater of the local search",
        "sun": {"pre": pre_sun_record, "post": post_sun_record},
        "precision": precision_record(precision, used_precision),
    }
    types = scores.pop("type")
    return MonitorResult(candidates, scores, change, pre_cat, post_cat, panels, overview, ov_shape, change.shape,
                         params, timings, types=types, overview_post=overview_post)


# ----------------------------------------------------------------------------- batch mode


def read_pairs(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows ``pre, post, id`` of a pairs CSV (paths relative to the CSV's folder; ``id`` defaults to the row number).

    Raises
    ------
    InputError
        Missing file or columns, empty list, or duplicate ids.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "pre" not in header or "post" not in header:
            raise InputError(f"{path}: needs the columns pre,post[,id] (found: {', '.join(header) or 'none'})")
        rows = []
        for k, row in enumerate(reader, start=1):
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key is not None}
            if not row.get("pre") or not row.get("post"):
                raise InputError(f"{path}: row {k} lacks a pre or post path")
            pair_id = row.get("id") or f"pair{k:04d}"
            if "/" in pair_id or pair_id in (".", ".."):
                raise InputError(f"{path}: row {k}: id {pair_id!r} cannot name a folder")
            rows.append({"id": pair_id, "pre": str(path.parent / row["pre"]), "post": str(path.parent / row["post"])})
    if not rows:
        raise InputError(f"{path}: no pairs")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: duplicate ids ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))})")
    return rows


def monitor_batch(pairs_csv: str | os.PathLike, outdir: str | os.PathLike, *, overwrite: bool = False,
                  keep_going: bool = True, progress: bool = False, **options) -> dict[str, np.ndarray]:
    """Run :func:`monitor` on every pair of a CSV into ``outdir/<id>``; resumable.

    Pairs whose folder holds a complete output are skipped (unless
    ``overwrite``); a failing pair is recorded and the others go on when
    ``keep_going``. Writes ``outdir/summary.csv`` and returns its columns.
    """
    from .errors import PlanetcdError
    from .vector import write_csv

    rows = read_pairs(pairs_csv)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    options = dict(options)
    from . import models
    from .features import pick_device

    # a bad model fails here, once, not once per pair; each pair then finds it in the per-process cache
    models.cached(options.get("model", "ctx-craters"), str(pick_device(options.get("device", "auto"))), options.get("tta"))
    if options.get("trunk") is None:
        from .features import VGGFeatures

        options["trunk"] = VGGFeatures(layer=6, weights=options.pop("weights", None))
    summary = []
    for row in rows:
        pair_dir = outdir / row["id"]
        if is_complete(pair_dir) and not overwrite:
            log.info("%s: complete output in %s, skipped", row["id"], pair_dir)
            summary.append(summary_row(row["id"], pair_dir, "skipped"))
            continue
        t0 = time.perf_counter()
        try:
            result = monitor(row["pre"], row["post"], progress=progress, **options)
            result.write(pair_dir, overwrite=True)
        except PlanetcdError as exc:
            if not keep_going:
                raise
            log.warning("%s: failed: %s", row["id"], exc)
            summary.append(summary_row(row["id"], pair_dir, "failed", time.perf_counter() - t0, str(exc)))
            continue
        log.info("%s: %d candidates in %s", row["id"], len(result), pair_dir)
        summary.append(summary_row(row["id"], pair_dir, "done", time.perf_counter() - t0))
    table = {name: np.array([r[name] for r in summary], dtype=object if name in ("id", "status", "outdir", "message") else None)
             for name in SUMMARY_COLUMNS}
    write_csv(outdir / "summary.csv", table)
    return table


class _CallableModule(types.ModuleType):
    """``planetcd.monitor`` is this module; calling it runs :func:`monitor` (``planetcd.monitor(pre, post)``)."""

    def __call__(self, pre, post, **options) -> MonitorResult:
        return monitor(pre, post, **options)


sys.modules[__name__].__class__ = _CallableModule
