"""The ``nn`` change detector: nearest-neighbour feature disagreement, registration of patch pairs, resolution matching.

``nn`` — a shift-tolerant detector that keeps the paper's principles
(pre-trained VGG-16 features, no labels, a threshold self-calibrated on
pseudo-unchanged pairs) but is built to see small new objects:

1. radiometric normalisation: each patch is scaled by its own robust range;
2. the pair is co-registered (masked normalised cross-correlation over the
   overlap, refined by phase correlation: shifts can be 40 % of a patch),
   then post is put on pre's radiometric scale over the ground both see
   (a patch scaled by its own range holds other ground than its partner);
3. both dates are low-passed alike (Gaussian, σ = 1 px: resolution
   matching, so post's blur and noise do not read as change) and go through
   the trunk (conv3_2); where post has no data after the shift, it takes
   pre's pixels (no change by construction);
4. every cell of post is compared with its *nearest* pre cell within a search
   radius and vice versa, with a scale-free distance
   ``|a - b|² / (|a|² + |b|² + eps)``, so residual misregistration and
   illumination barely move it, while a new crater (a feature with no match
   nearby) does;
5. the patch score is its most *prominent compact* disagreement
   (:func:`nn_patch_scores`: over the cells both dates see, one cell in
   from the seam, after a 2 x 2 cell average that damps single-cell noise,
   the 3 x 3 cell mean minus 0.7 x the highest mean along a 100 px straight
   line through the cell), not a pooled descriptor that dilutes a 20 px
   crater in a 150 px patch, nor the plain worst cell, which a relit slope,
   a dust-devil track or a seam reaches as well as a new crater;
6. τ is the 95th percentile of the same score on pseudo-unchanged pairs
   made from pre patches with the nuisances the pipeline must tolerate
   (shift, gamma, blur, and noise up to the level measured on each patch's
   post partner, :mod:`planetcd.change.threshold`) — put through the identical pipeline.

``detect --method nn`` uses the disagreement map on whole rasters; 
:func:`planetcd.change.patch_pairs.score_pairs` on sets of standalone pairs.

Steps 2 (radiometry on the shared ground), 3 (the low-pass) and the seam
rule of 5 came with commit f824706; on the development sets (seeds 7
and 8, never the reported seed) the low-pass did most of the gain.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..features import VGGFeatures, run_trunk
from ..raster import map_distinct_bands, to_three_bands
from .register import estimate_shift_overlap, shifted_copy
from .scores import windows_meeting

#: Side (cells) of the box average of the nn disagreement before its maximum is taken.
NN_SMOOTH = 2

#: Floor of the nn distance's denominator, for conv3_2 features of 0..1 inputs
#: (median |f|² on CTX ground is about 1700): flat areas compare as equal.
NN_EPS = 100.0

#: Rows of feature cells :func:`nn_disagreement` processes at a time (cache blocking; no effect on results).
NN_BAND_ROWS = 32

#: Gaussian σ (px) both dates are low-passed with before the nn trunk (:func:`match_resolution`).
NN_BLUR = 1.0

#: Whether :func:`register_pairs` puts post on pre's radiometric scale over the shared ground by default.
NN_MATCH_RADIOMETRY = True


def patch_features(trunk: VGGFeatures, images: np.ndarray, batch_size: int = 16,
                   precision: str | None = None) -> np.ndarray:
    """Feature maps ``(n, C, h, w)`` float32 of patches ``(n, bands, H, W)`` in ``0..1`` (any band count), in batches.

    ``precision``: of the trunk, ``"fp32"`` or ``"bf16"`` (:func:`planetcd.features.run_trunk`; None: the
    caller's context)."""
    device = next(trunk.parameters()).device
    rgb = np.stack([to_three_bands(im) for im in images])
    return np.concatenate([run_trunk(trunk, rgb[k : k + batch_size], device, precision)
                           for k in range(0, len(rgb), batch_size)])


def nn_disagreement(f_pre: torch.Tensor, f_post: torch.Tensor, radius: int, eps: float = NN_EPS) -> torch.Tensor:
    """Cell-wise disagreement after a nearest-neighbour search in both directions.

    Parameters
    ----------
    f_pre, f_post : Tensor, shape (B, C, h, w)
        Feature maps of the pre and the (co-registered) post image.
    radius : int
        Search radius in cells (a disc).
    eps : float
        Denominator floor, in squared feature units.

    Returns
    -------
    Tensor, shape (B, h, w)
        ``max(min_δ d(post(x), pre(x+δ)), min_δ d(pre(x), post(x+δ)))`` with
        ``d(a, b) = |a - b|² / (|a|² + |b|² + eps)`` in ``0..1``
        (cells past the border never match).
    """
    batch, _, h, w = f_pre.shape
    r = radius
    offsets = [(dy, dx) for dy in range(2 * r + 1) for dx in range(2 * r + 1) if (dy - r) ** 2 + (dx - r) ** 2 <= r * r]
    # Post padded by the radius: one dot product per offset serves both directions, since pre(x) against
    # post(x + δ) is post(x + δ) against pre(x). Channels first, so the dot product adds whole planes of cells
    # (vectorised along the rows); rows go in bands of NN_BAND_ROWS so that a band of pre and its post rows
    # stay in cache across the offsets while each operation is large (few operations: on a shared machine
    # every one waits for both threads).
    post_p = F.pad(f_post, (r, r, r, r))
    norm_pre = (f_pre * f_pre).sum(1)
    norm_post_p = F.pad((f_post * f_post).sum(1), (r, r, r, r), value=float("inf"))
    best_pre = torch.full_like(norm_pre, float("inf"))
    best_post_p = torch.full((batch, h + 2 * r, w + 2 * r), float("inf"), dtype=norm_pre.dtype)
    for r0 in range(0, h, NN_BAND_ROWS):
        r1 = min(r0 + NN_BAND_ROWS, h)
        a, na = f_pre[:, :, r0:r1], norm_pre[:, r0:r1]
        product = torch.empty_like(a)
        for dy, dx in offsets:
            b = post_p[:, :, r0 + dy : r1 + dy, dx : dx + w]
            nb = norm_post_p[:, r0 + dy : r1 + dy, dx : dx + w]
            dot = torch.mul(a, b, out=product).sum(1)
            total = na + nb
            d = torch.add(total, dot, alpha=-2).div_(total.add_(eps)).nan_to_num_(nan=1.0)  # past the border: 1
            torch.minimum(best_pre[:, r0:r1], d, out=best_pre[:, r0:r1])
            seen_from_post = best_post_p[:, r0 + dy : r1 + dy, dx : dx + w]
            torch.minimum(seen_from_post, d, out=seen_from_post)
    best_post = best_post_p[:, r : r + h, r : r + w].clone()
    if r:  # post cells within the radius of the border have a neighbour past it, which never matches (1)
        edge = torch.ones(h, w, dtype=torch.bool)
        edge[r : h - r, r : w - r] = False
        best_post[:, edge] = best_post[:, edge].clamp(max=1.0)
    return torch.maximum(best_post, best_pre)


def nn_change_map(f_pre: torch.Tensor, f_post: torch.Tensor, radius: int, smooth: int = NN_SMOOTH) -> torch.Tensor:
    """:func:`nn_disagreement` averaged over ``smooth`` x ``smooth`` cells, same shape ``(B, h, w)``.

    A new crater of 10 px or more covers at least 2 x 2 cells at stride 4,
    while noise makes single-cell spikes: the average keeps the first and
    damps the second before the patch takes its worst cell.
    """
    d = nn_disagreement(f_pre, f_post, radius)
    if smooth <= 1:
        return d
    padded = F.pad(d[:, None], (0, smooth - 1, 0, smooth - 1), mode="replicate")
    return F.avg_pool2d(padded, smooth, stride=1)[:, 0]


def nn_change_window(f_pre: torch.Tensor, f_post: torch.Tensor, radius: int, window: tuple[int, int, int, int],
                     smooth: int = NN_SMOOTH) -> torch.Tensor:
    """``nn_change_map(f_pre, f_post, radius, smooth)[:, row:row + height, col:col + width]``, computed on the
    cells it depends on only.

    A cell's disagreement looks ``radius`` cells around it and the box average ``smooth - 1`` cells past
    it, so the maps are cut to the window grown by ``radius + smooth`` cells (clipped to the maps) before
    :func:`nn_change_map`: the same values (the same operations on each cell), without the work on a tile's
    halo cells that are dropped anyway.

    Parameters
    ----------
    f_pre, f_post : Tensor, shape (B, C, h, w)
    radius : int
    window : (row, col, height, width)
        Cells of the maps wanted.
    smooth : int

    Returns
    -------
    Tensor, shape (B, height, width)
    """
    row, col, height, width = (int(v) for v in window)
    h, w = f_pre.shape[2:]
    margin = radius + smooth
    r0, c0 = max(row - margin, 0), max(col - margin, 0)
    r1, c1 = min(row + height + margin, h), min(col + width + margin, w)
    d = nn_change_map(f_pre[:, :, r0:r1, c0:c1], f_post[:, :, r0:r1, c0:c1], radius, smooth)
    return d[:, row - r0 : row - r0 + height, col - c0 : col - c0 + width]


#: Side (cells) of the box mean a patch's peak is read from (:func:`nn_patch_scores`), after the
#: :data:`NN_SMOOTH` average of :func:`nn_change_map`.
NN_PEAK_BOX = 3

#: Length (cells, 100 px at conv3_2's stride 4) of the straight lines :func:`line_background` averages along.
NN_LINE_CELLS = 25

#: Directions (over 180°) of :func:`line_background`'s lines.
NN_LINE_ANGLES = 8

#: Share of a line's cells that must be valid for its mean to count in :func:`line_background`. A line cut
#: short by the patch's corner (three cells, say) is no evidence of a track or seam, and its mean over a
#: crater on that corner is the crater's own level. Chosen on the development seeds 1234 and 7
#: (``benchmarks/nn_peak_ablation.py``).
NN_LINE_MIN_SHARE = 0.3

#: Weight of the line background subtracted from the peak (:func:`nn_patch_scores`). Chosen on the
#: development seeds 1234 and 7 (docs/benchmarks.md), with :data:`NN_PEAK_BOX` and :data:`NN_LINE_CELLS`.
NN_LINE_WEIGHT = 0.7


def nn_score_record() -> dict:
    """How ``nn`` turns a disagreement map into a patch score (:func:`nn_patch_scores`), for run.json and
    ``evaluate``'s JSON: the cells of the first average, the peak box, the lines (length, directions, least
    valid share) and their weight."""
    return {"score": "prominent compact peak", "smooth_cells": NN_SMOOTH, "peak_box_cells": NN_PEAK_BOX,
            "line_cells": NN_LINE_CELLS, "line_angles": NN_LINE_ANGLES, "line_weight": NN_LINE_WEIGHT,
            "line_min_share": NN_LINE_MIN_SHARE}


@functools.lru_cache(maxsize=8)
def _line_offsets(length: int, n_angles: int) -> tuple[np.ndarray, ...]:
    """Per direction, the distinct cell offsets ``(k, 2)`` of a centred digital line of ``length`` cells."""
    half = (length - 1) / 2
    t = np.linspace(-half, half, 4 * length)
    out = []
    for angle in np.arange(n_angles) * np.pi / n_angles:
        offsets = np.stack([np.round(t * np.sin(angle)), np.round(t * np.cos(angle))], 1).astype(int)
        out.append(np.unique(offsets, axis=0))
    return tuple(out)


def line_background(disagreement: np.ndarray, valid: np.ndarray, length: int = NN_LINE_CELLS,
                    n_angles: int = NN_LINE_ANGLES, min_share: float = NN_LINE_MIN_SHARE) -> np.ndarray:
    """The highest mean disagreement along a straight line through each cell.

    For each cell and each of ``n_angles`` directions, the mean of ``disagreement`` over the valid cells of
    the ``length``-cell line centred on it (cells past the map or not valid do not count); the maximum over
    the directions whose line has at least ``min_share`` of its cells valid. A track, a seam or a relit slope
    runs along some line, so its cells have a high background; a new crater or blast zone is compact, so every
    long line through it is mostly ground. A line cut short by the map's edge or by missing cells sees too
    little to say either.

    Parameters
    ----------
    disagreement : ndarray, shape (B, h, w)
    valid : ndarray of bool, shape (B, h, w)
    length : int
        Cells per line (odd).
    n_angles : int
    min_share : float
        Share of a line's cells (``0..1``) that must be valid for it to count.

    Returns
    -------
    ndarray, float32, shape (B, h, w)
        0 where no line has enough valid cells.
    """
    batch, h, w = disagreement.shape
    values = np.where(valid, disagreement, 0.0).astype(np.float32)
    weight = valid.astype(np.float32)
    reach = (length - 1) // 2 + 1
    pad = ((0, 0), (reach, reach), (reach, reach))
    values_p, weight_p = np.pad(values, pad), np.pad(weight, pad)
    best = np.zeros((batch, h, w), np.float32)
    min_cells = np.float32(min_share * length)
    for offsets in _line_offsets(length, n_angles):
        total = np.zeros((batch, h, w), np.float32)
        count = np.zeros((batch, h, w), np.float32)
        for dy, dx in offsets:
            total += values_p[:, reach + dy : reach + dy + h, reach + dx : reach + dx + w]
            count += weight_p[:, reach + dy : reach + dy + h, reach + dx : reach + dx + w]
        np.maximum(best, np.where(count >= min_cells, total / np.maximum(count, 1.0), 0.0), out=best)
    return best


def nn_patch_scores(disagreement: np.ndarray, valid: np.ndarray | None = None, box: int = NN_PEAK_BOX,
                    length: int = NN_LINE_CELLS, weight: float = NN_LINE_WEIGHT,
                    min_share: float = NN_LINE_MIN_SHARE) -> np.ndarray:
    """``nn``'s score of each patch from its disagreement map: the most prominent compact peak.

    Not in Saha & Zhu. Per cell, the mean disagreement over the ``box`` x ``box`` cells around it (all
    valid) minus ``weight`` times :func:`line_background`; the patch's score is the maximum over its cells.
    A second date under another sun, with dust-devil tracks or a mosaic seam disagrees along lines or
    everywhere; a new object stands above the ground around it. On the development sets this ranked
    every preset about as well as the plain maximum or better, and ``real-nuisance`` and ``small-craters``
    much better (docs/benchmarks.md).

    Parameters
    ----------
    disagreement : ndarray, shape (B, h, w)
        :func:`nn_change_map` of each patch, the patch's cells only.
    valid : ndarray of bool, shape (B, h, w), optional
        Cells to score (default: all).
    box : int
    length : int
    weight : float
    min_share : float
        :func:`line_background`'s least share of valid cells per line.

    Returns
    -------
    ndarray, float64, shape (B,)
        0 for a patch without a valid cell. A patch with valid cells but no full box takes the cells alone.
    """
    d = np.asarray(disagreement, np.float32)
    valid = np.ones(d.shape, bool) if valid is None else np.asarray(valid, bool)
    if d.ndim != 3 or valid.shape != d.shape:
        raise ValueError(f"disagreement and valid must share a shape (B, h, w); got {d.shape} and {valid.shape}")
    background = line_background(d, valid, length, min_share=min_share)
    values = np.where(valid, d, 0.0)
    if box > 1:
        size = (1, box, box)
        full = ndimage.uniform_filter(valid.astype(np.float32), size, mode="constant") > 1 - 0.5 / box ** 2
        peak = ndimage.uniform_filter(values, size, mode="constant")
        centre = full & valid
    else:
        peak, centre = values, valid
    lone = ~centre.reshape(len(d), -1).any(1)  # no full box: the cells alone
    centre[lone] = valid[lone]
    peak[lone] = values[lone]
    prominence = np.where(centre, peak - np.float32(weight) * background, -np.inf).reshape(len(d), -1).max(1)
    return np.where(np.isfinite(prominence), prominence, 0.0).astype(np.float64)


def nn_window_scores(windows: list[np.ndarray]) -> np.ndarray:
    """:func:`nn_patch_scores` of disagreement windows ``(h, w)`` of any shapes (all cells valid), one call
    per shape; ``(len(windows),)`` float64 in the given order."""
    out = np.zeros(len(windows))
    by_shape: dict[tuple[int, int], list[int]] = {}
    for k, window in enumerate(windows):
        by_shape.setdefault(window.shape, []).append(k)
    for index in by_shape.values():
        out[index] = nn_patch_scores(np.stack([windows[k] for k in index]))
    return out


class NNPatchScorer:
    """:func:`nn_patch_scores` of patch windows of a disagreement map fed tile by tile, in any order.

    Each patch's cells are gathered as tiles arrive (:meth:`add`); complete windows are scored ``batch`` at a
    time and their cells freed, so only the patches of the tiles in flight are held. The scores equal
    :func:`nn_patch_scores` of each window cut from the whole map.

    Parameters
    ----------
    cells : ndarray, shape (n, 4)
        Patch windows ``r0, c0, r1, c1`` in cells (:func:`planetcd.change.scores.patch_cells`).
    batch : int
        Complete windows scored together (one call of :func:`nn_patch_scores` per window shape).
    """

    def __init__(self, cells: np.ndarray, batch: int = 256):
        self.cells = np.asarray(cells, np.int64)
        self.batch = batch
        self._complete: list[int] = []
        self.scores = np.full(len(self.cells), np.nan)
        self._maps: dict[int, np.ndarray] = {}
        self._filled = np.zeros(len(self.cells), np.int64)
        self._size = (self.cells[:, 2] - self.cells[:, 0]) * (self.cells[:, 3] - self.cells[:, 1])

    def add(self, disagreement: np.ndarray, row0: int, col0: int) -> None:
        """Add a tile ``(h, w)`` of the disagreement map whose first cell is ``(row0, col0)``."""
        h, w = disagreement.shape
        cells = self.cells
        for i in windows_meeting(cells, row0, col0, h, w):
            r0, c0, r1, c1 = (int(v) for v in cells[i])
            a0, a1, b0, b1 = max(r0, row0), min(r1, row0 + h), max(c0, col0), min(c1, col0 + w)
            window = self._maps.get(i)
            if window is None:
                window = self._maps[i] = np.zeros((r1 - r0, c1 - c0), np.float32)
            window[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = disagreement[a0 - row0 : a1 - row0, b0 - col0 : b1 - col0]
            self._filled[i] += (a1 - a0) * (b1 - b0)
            if self._filled[i] >= self._size[i]:
                self._complete.append(i)
        if len(self._complete) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        done, self._complete = self._complete, []
        self.scores[done] = nn_window_scores([self._maps.pop(i) for i in done])

    def result(self) -> np.ndarray:
        """Scores ``(n,)`` float64; NaN for a patch whose window never completed."""
        self._flush()
        return self.scores


def match_radiometry(pre: np.ndarray, post: np.ndarray, overlap: np.ndarray,
                     percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """Map ``post`` linearly so that its robust range on ``overlap`` equals pre's there.

    Parameters
    ----------
    pre, post : ndarray, shape (bands, h, w)
        One co-registered pair, each scaled ``0..1`` by its own robust range.
    overlap : ndarray of bool, shape (h, w)
        Pixels both dates see.
    percentiles : (float, float)
        Low and high percentiles matched per band.

    Returns
    -------
    ndarray, float32, shape (bands, h, w)
        ``post`` on pre's radiometric scale, clipped to ``0..1``.

    Notes
    -----
    Each standalone patch is first scaled by its own range, but post's patch
    holds other ground than pre's (up to 40 % of it at the ``lroc`` shifts),
    so the two scales differ even when nothing changed; this puts both on
    the ground they share. A new crater is a small part of that ground and
    moves the 2nd and 98th percentiles little.
    """
    if overlap.sum() < 16:
        return post
    out = np.empty_like(post)
    for band in range(len(post)):
        lo_a, hi_a = np.percentile(pre[band][overlap], percentiles)
        lo_b, hi_b = np.percentile(post[band][overlap], percentiles)
        gain = (hi_a - lo_a) / max(hi_b - lo_b, 1e-6)
        out[band] = (post[band] - lo_b) * gain + lo_a
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def pair_shifts(pre: np.ndarray, post: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Displacement ``(n, 2)`` (dy, dx, px) of each post patch relative to its pre patch
    (:func:`~planetcd.change.register.estimate_shift_overlap` on the band means)."""
    found = np.zeros((len(pre), 2))
    for i in range(len(pre)):
        post_valid = np.ones(pre.shape[2:], bool) if valid is None else valid[i]
        found[i] = estimate_shift_overlap(pre[i].mean(0), post[i].mean(0), post_valid)
    return found


def register_pairs(pre: np.ndarray, post: np.ndarray, valid: np.ndarray | None = None,
                   max_shift: float | None = None,
                   radiometry: bool | None = None,
                   shifts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Co-register each post patch onto its pre patch (phase correlation, then undo).

    With ``radiometry`` (default :data:`NN_MATCH_RADIOMETRY`) post is then
    matched to pre on the ground both see (:func:`match_radiometry`). Where post has no data afterwards it takes
    pre's pixels, so uncovered borders read as unchanged. Returns the
    registered post ``(n, bands, h, w)``, the displacements ``(n, 2)`` and
    the pixels both dates see ``(n, h, w)`` (bool). ``shifts`` ``(n, 2)``: displacements already
    estimated (:func:`pair_shifts`); a displacement over 1.5 × ``max_shift`` is not credible and ignored.
    """
    radiometry = NN_MATCH_RADIOMETRY if radiometry is None else radiometry
    out = np.empty_like(post)
    found = np.zeros((len(pre), 2))
    overlap = np.zeros((len(pre), *pre.shape[2:]), bool)
    for i in range(len(pre)):
        post_valid = np.ones(pre.shape[2:], bool) if valid is None else valid[i]
        if shifts is None:
            shift = estimate_shift_overlap(pre[i].mean(0), post[i].mean(0), post_valid)
        else:
            shift = (float(shifts[i][0]), float(shifts[i][1]))
        if max_shift is not None and max(abs(shift[0]), abs(shift[1])) > 1.5 * max_shift:
            shift = (0.0, 0.0)  # no credible peak: compare as is
        moved, moved_valid = shifted_copy(post[i], (-shift[0], -shift[1]))
        if valid is not None:
            moved_valid &= ndimage.shift(post_valid.astype(np.float32), (-shift[0], -shift[1]), order=0) > 0.5
        if radiometry:
            moved = match_radiometry(pre[i], moved, moved_valid)
        out[i] = np.where(moved_valid[None], moved, pre[i])
        found[i] = shift
        overlap[i] = moved_valid
    return out, found, overlap


def match_resolution(images: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Low-pass ``(n, bands, h, w)`` images with a Gaussian of ``sigma`` px (default :data:`NN_BLUR`; 0: unchanged).

    Both dates go through the same filter before the trunk: a post image up
    to about ``sigma`` px blurrier than pre (or noisier) then looks like pre
    to the network, while a crater of 10 px or more survives.
    """
    sigma = NN_BLUR if sigma is None else sigma
    if sigma <= 0:
        return images
    images = np.asarray(images)
    if len(images) == 0:
        return images.astype(np.float32, copy=False)

    def low_pass(band: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(band, sigma, mode="nearest").astype(np.float32, copy=False)

    # gray as RGB (the trunk's input): each image's copied bands are filtered once
    return np.stack([map_distinct_bands(low_pass, image) for image in images])


def overlap_cells(overlap: np.ndarray, stride: int, shape: tuple[int, int], border: int = 1) -> np.ndarray:
    """Feature cells ``(n, rows, cols)`` whose pixels both dates see, ``border`` cells in from any that do not.

    ``overlap`` is ``(n, h, w)`` bool; a cell is the ``stride`` x ``stride``
    px block it sits on. Cells at the patch edge count as outside.
    """
    n = len(overlap)
    rows, cols = shape
    blocks = np.zeros((n, rows, cols), bool)
    h, w = min(rows * stride, overlap.shape[1]), min(cols * stride, overlap.shape[2])
    cut = overlap[:, : h - h % stride, : w - w % stride]
    full = cut.reshape(n, h // stride, stride, w // stride, stride).all(axis=(2, 4))
    blocks[:, : full.shape[1], : full.shape[2]] = full
    if border:
        blocks = ndimage.binary_erosion(blocks, np.ones((1, 2 * border + 1, 2 * border + 1), bool), border_value=1)
        blocks[:, :border] = blocks[:, -border:] = False
        blocks[:, :, :border] = blocks[:, :, -border:] = False
    return blocks


def iter_nn_maps(trunk: VGGFeatures, pre: np.ndarray, post: np.ndarray, radius: int = 2, border: int = 1,
                 batch_size: int = 16, overlap: np.ndarray | None = None, blur: float | None = None,
                 precision: str | None = None):
    """``nn``'s disagreement maps of patch pairs, a batch at a time.

    ``pre``, ``post``: ``(n, bands, h, w)``, registered, ``0..1``. Yields ``(d, keep)`` per batch of
    ``batch_size`` pairs: :func:`nn_change_map` ``(b, rows, cols)`` float32 and the cells to score ``(b, rows,
    cols)`` bool. ``overlap`` ``(n, h, w)``: pixels both dates see; ``keep`` holds the cells ``border`` cells
    inside it (without it: inside the patch edge), so the seam where post's data ends is never scored.
    ``blur``: σ of :func:`match_resolution` (default :data:`NN_BLUR`). ``precision``: of the trunk
    (:func:`patch_features`).
    """
    blur = NN_BLUR if blur is None else blur
    for k in range(0, len(pre), batch_size):
        f_pre = torch.from_numpy(patch_features(trunk, match_resolution(pre[k : k + batch_size], blur),
                                                precision=precision))
        f_post = torch.from_numpy(patch_features(trunk, match_resolution(post[k : k + batch_size], blur),
                                                 precision=precision))
        d = nn_change_map(f_pre, f_post, radius).numpy()
        if overlap is None:
            keep = np.ones(d.shape, bool)
            if border:
                keep[:, :border] = keep[:, -border:] = keep[:, :, :border] = keep[:, :, -border:] = False
        else:
            keep = overlap_cells(overlap[k : k + batch_size], trunk.stride, d.shape[1:], border)
        yield d, keep


def nn_scores(trunk: VGGFeatures, pre: np.ndarray, post: np.ndarray, radius: int = 2, border: int = 1,
              batch_size: int = 16, overlap: np.ndarray | None = None, blur: float | None = None,
              progress=None, precision: str | None = None) -> np.ndarray:
    """``nn``'s score per pair: :func:`nn_patch_scores` of :func:`iter_nn_maps` (same arguments);
    ``(n, bands, h, w)`` x2 (registered, 0..1) -> ``(n,)``. ``progress``: called with the number of pairs of
    each batch once scored.
    """
    scores = []
    for d, keep in iter_nn_maps(trunk, pre, post, radius, border, batch_size, overlap, blur, precision):
        scores.append(nn_patch_scores(d, keep))
        if progress is not None:
            progress(len(d))
    return np.concatenate(scores).astype(np.float64) if scores else np.zeros(0)


#: Direction bins (over 180°) and radial bin edges (cycles/px) of :func:`illumination_transfer`.
TRANSFER_ANGLES = 16
TRANSFER_RADII = (0.0, 0.06, 0.15, 0.5001)
#: Wiener floor of the transfer fit, as a fraction of pre's mean power per bin.
TRANSFER_FLOOR = 1e-3


@functools.lru_cache(maxsize=4)
def _transfer_bins(h: int, w: int, n_angles: int, radii: tuple[float, ...]) -> np.ndarray:
    """Bin ``(h, w)`` (uint8, read-only) of each FFT frequency of an ``h`` x ``w`` grid: direction + n_angles x
    radial bin. Cached: ``detect``'s tiles share a few sizes."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    angle = np.mod(np.arctan2(fy, fx), np.pi)
    a = np.minimum((angle / np.pi * n_angles).astype(np.int64), n_angles - 1)
    r = np.clip(np.searchsorted(radii, np.hypot(fy, fx), side="right") - 1, 0, len(radii) - 2)
    bins = (a + n_angles * r).astype(np.uint8 if n_angles * (len(radii) - 1) <= 256 else np.int64)
    bins.flags.writeable = False
    return bins


@functools.lru_cache(maxsize=4)
def _empty_transfer_bins(h: int, w: int, n_angles: int, radii: tuple[float, ...]) -> np.ndarray:
    """Bool ``(len(radii) - 1, n_angles)`` (read-only): the bins of :func:`_transfer_bins` that hold no frequency
    of an ``h`` x ``w`` grid. Cached with it."""
    nb = n_angles * (len(radii) - 1)
    empty = (np.bincount(_transfer_bins(h, w, n_angles, radii).ravel(), minlength=nb)[:nb] == 0)
    empty = empty.reshape(len(radii) - 1, n_angles)
    empty.flags.writeable = False
    return empty


def fit_transfer(pre: np.ndarray, post: np.ndarray, overlap: np.ndarray, n_angles: int = TRANSFER_ANGLES,
                 radii: tuple[float, ...] = TRANSFER_RADII, clip: tuple[float, float] = (-2.0, 3.0)
                 ) -> np.ndarray:
    """The transfer function ``H`` (direction x frequency bins) that takes pre's look to post's.

    Parameters
    ----------
    pre, post : ndarray, shape (h, w)
        One co-registered pair (single band, ``0..1``).
    overlap : ndarray of bool, shape (h, w)
        Ground both dates see; the fit uses only it (times a Hann taper).

    Returns
    -------
    ndarray, shape (len(radii) - 1, n_angles)
        ``Re Σ Y X̄ / (Σ |X|² + floor)`` per bin of direction (0..180°) and spatial frequency.

    Notes
    -----
    Linearised Lambertian shading of a height field ``h`` under a sun toward ``d`` at elevation
    ``e`` is ``I/Ī ≈ 1 − cot(e) ∇h·d`` (:mod:`planetcd.change.nuisance`), so in Fourier space
    ``Î(k) ∝ cot(e) (k·d) ĥ(k)``: another sun multiplies every component by
    ``(k·d') tan(e) / ((k·d) tan(e'))``, a real function of the direction of ``k`` alone. Fitting it per
    direction bin relights pre to post's sun without knowing either azimuth; the radial bins take up
    haze (a gain) and a resolution change (a low-pass). A new crater in post is uncorrelated with pre
    and moves the cross-spectrum of a bin of hundreds of frequencies little.
    """
    h, w = pre.shape
    win = np.outer(np.hanning(h), np.hanning(w)) * overlap
    total = win.sum()
    if total <= 0:
        return np.ones((len(radii) - 1, n_angles))
    x = (pre - (pre * win).sum() / total) * win
    y = (post - (post * win).sum() / total) * win
    X, Y = np.fft.fft2(x), np.fft.fft2(y)
    bins = _transfer_bins(h, w, n_angles, tuple(radii)).ravel()
    nb = n_angles * (len(radii) - 1)
    cross = np.bincount(bins, (Y * np.conj(X)).real.ravel(), nb)
    power = np.bincount(bins, (np.abs(X) ** 2).ravel(), nb)
    H = np.clip(cross / (power + TRANSFER_FLOOR * power.mean() + 1e-12), *clip).reshape(len(radii) - 1, n_angles)
    # A small patch's grid has no frequency at all in some direction bins of the lowest ring (at 100 px two of
    # 16). Such a bin says nothing: it takes its ring's mean over the bins that hold frequencies, instead of 0,
    # which removed that direction when the transfer was applied on the padded grid and read as a change of sun.
    empty = _empty_transfer_bins(h, w, n_angles, tuple(radii))
    for ring in np.flatnonzero(empty.any(axis=1) & ~empty.all(axis=1)):
        H[ring, empty[ring]] = H[ring, ~empty[ring]].mean()
    return H


def apply_transfer(image: np.ndarray, H: np.ndarray, mean: float | None = None,
                   radii: tuple[float, ...] = TRANSFER_RADII) -> np.ndarray:
    """Filter ``image`` ``(h, w)`` by a transfer ``H`` of :func:`fit_transfer` (mirror-padded; the mean is kept,
    or set to ``mean``). Returns float32 clipped to ``0..1``."""
    h, w = image.shape
    level = float(image.mean())
    padded = np.pad(image - level, ((h // 2, h // 2), (w // 2, w // 2)), mode="symmetric")
    ph, pw = padded.shape
    bins = _transfer_bins(ph, pw, H.shape[1], tuple(radii))
    gain = H.ravel()[bins]
    gain[0, 0] = 1.0
    out = np.real(np.fft.ifft2(np.fft.fft2(padded) * gain))[h // 2 : h // 2 + h, w // 2 : w // 2 + w]
    return np.clip(out + (level if mean is None else mean), 0.0, 1.0).astype(np.float32)


#: Robust refits of :func:`relight_image`: after each fit, pixels whose residual (post − relit pre, absolute,
#: Gaussian-smoothed by :data:`RELIGHT_OUTLIER_SIGMA` px) is over median + :data:`RELIGHT_OUTLIER_K` x 1.4826 x MAD
#: are left out of the next fit, so a change (a new crater and its halo) does not drive the transfer.
RELIGHT_REFITS = 2
RELIGHT_OUTLIER_K = 3.0
RELIGHT_OUTLIER_SIGMA = 2.0


def relight_image(pre: np.ndarray, post: np.ndarray, overlap: np.ndarray,
                  shift: tuple[float, float] = (0.0, 0.0), robust: bool = True,
                  first_fit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One pre image relit to its post partner's look: THE relighting of ``nn`` (patch pairs and ``detect``).

    Parameters
    ----------
    pre, post : ndarray, shape (bands, h, w)
        One pair in ``0..1``, on one grid.
    overlap : ndarray of bool, shape (h, w)
        Ground both dates see; the transfer is fitted on it alone (:func:`fit_transfer`, on the band means).
    shift : (dy, dx)
        Displacement of post relative to pre, px (default none: a registered pair). The transfer is
        fitted with post moved back by it (a shift turns the cross-spectrum's phase and would read as a
        loss of contrast); pre is relit where it is.
    robust : bool
        Refit :data:`RELIGHT_REFITS` times without the pixels the previous fit leaves far off (a change:
        :data:`RELIGHT_OUTLIER_K`). On a 448 px CTX window with one new crater (r 10 px, dark halo) and no
        other difference, the single fit's direction dependence is 0.44 (a false "other sun"), the robust
        one's 0.01, as without the crater.

    Returns
    -------
    relit : ndarray, float32, shape (bands, h, w)
        Pre filtered by the transfer (every band by the same one; bands that are copies of an earlier
        band are filtered once), its mean set to post's over ``overlap``.
    transfer : ndarray, shape (radial bins, angles)
        The fitted :func:`fit_transfer` (the last refit); with ``first_fit``, the first fit, on all of the
        shared ground (the relit image is the refit's either way).
    """
    pre_mean, post_mean = pre.mean(0), post.mean(0)
    fit_post, fit_overlap = post_mean, overlap
    if shift[0] or shift[1]:
        moved, moved_valid = shifted_copy(post_mean[None], (-float(shift[0]), -float(shift[1])))
        fit_post, fit_overlap = moved[0], overlap & moved_valid
    level = float(post_mean[overlap].mean()) if overlap.any() else None
    H = first = fit_transfer(pre_mean, fit_post, fit_overlap)
    for _ in range(RELIGHT_REFITS if robust and fit_overlap.sum() >= 64 else 0):
        fit_level = float(fit_post[fit_overlap].mean())
        residual = ndimage.gaussian_filter(np.abs(fit_post - apply_transfer(pre_mean, H, fit_level)),
                                           RELIGHT_OUTLIER_SIGMA)
        seen = residual[fit_overlap]
        median = float(np.median(seen))
        keep = fit_overlap & (residual <= median + RELIGHT_OUTLIER_K * 1.4826 * float(np.median(np.abs(seen - median))))
        H = fit_transfer(pre_mean, fit_post, keep)
    return map_distinct_bands(lambda band: apply_transfer(band, H, level), pre), first if first_fit else H


def relight_pre(pre: np.ndarray, post: np.ndarray, overlap: np.ndarray,
                robust: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pre patches ``(n, bands, h, w)`` relit to their registered post partner's sun (:func:`relight_image`), and
    the transfers ``(n, radial bins, angles)`` of the first fits.

    Not in Saha & Zhu: ``nn``'s answer to a second date under another sun (and haze, resolution): the
    disagreement is then measured between post and pre as post's illumination would show it.
    ``robust`` (default, as ``detect`` relights its tiles): :func:`relight_image`'s refits without the pixels
    the fit leaves far off, so a new crater does not drive the transfer that relights pre. The transfers
    returned are the first fits, on all the shared ground, whichever ``robust``: the patch pairs' decision
    whether a pair shows another sun (:data:`RELIT_ANISOTROPY`) and the pseudo pairs' matched sun turn read
    them, as they were chosen on (docs/benchmarks.md, "The relighting fit").
    """
    out = np.empty_like(pre)
    transfers = []
    for i in range(len(pre)):
        out[i], H = relight_image(pre[i], post[i], overlap[i], robust=robust, first_fit=True)
        transfers.append(H)
    return out, np.stack(transfers) if transfers else np.zeros((0, len(TRANSFER_RADII) - 1, TRANSFER_ANGLES))


def transfer_anisotropy(H: np.ndarray) -> np.ndarray:
    """How much a transfer ``(..., radial bins, angles)`` depends on direction: per transfer, the RMS over the
    two lowest radial bins of ``H`` minus its mean over directions (0 for haze, gain or blur alone; a change of
    the sun's azimuth turns it up)."""
    low = np.asarray(H)[..., :2, :]
    return np.sqrt(((low - low.mean(-1, keepdims=True)) ** 2).mean((-2, -1)))


#: Direction dependence (:func:`transfer_anisotropy`) above which a pair's two dates are taken to be under
#: different suns. Chosen on the development seed 1234 (60 pairs): unchanged pairs without relighting
#: 0.01-0.07 (ctx-impacts, small-craters, haze, resolution), relit 0.26-0.86 (10th-90th percentile).
RELIT_ANISOTROPY = 0.15
