"""τ calibration of ``detect``: pseudo-unchanged pairs cut from the pre raster, scored like the real pairs.

The pairs come from the one sampler (:mod:`planetcd.change.threshold`); this
module decides where they are cut in a raster (crop windows on the feature
grid, patches far enough from the edge), scores them with the paper's pooled
features or the ``nn`` disagreement, and, for ``nn``, lets the main pass keep
pre's feature map over some crop windows so those pairs run the trunk on their
post crop only (:func:`plan_captures`).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from rasterio.windows import Window

from ..features import run_trunk
from ..raster import central_window, read_window
from ..tiling import box_sums
from .preparation import ImageOverview, prepare, read_present
from .nn import match_resolution, nn_change_window, nn_window_scores, relight_image
from .register import estimate_shift_overlap
from .scores import change_scores, patch_cells, pool_patches
from .nuisance import PSEUDO_NUISANCE, RELIT_PSEUDO_NUISANCE
from .threshold import PseudoSample, choose_patches, draw_pseudo_pairs, iter_pseudo_pairs, margin_for, noise_sigma

#: Patches with less than this fraction of valid pixels (in both images) get no score.
MIN_VALID_FRACTION = 0.5
#: Valid fraction a patch needs to seed pseudo pairs (isolated missing pixels, such as the exact zeros of an
#: integer image, cost a few per cent with the 2 px co-registration drops next to them).
PSEUDO_SOURCE_FRACTION = 0.95
#: Memory (bytes) the main pass may keep of pre's feature map for the ``nn`` pseudo pairs (one crop window
#: per pair, 2 MB at the defaults): those pairs need no second trunk pass on their pre crop. 0 turns it off.
PSEUDO_REUSE_BYTES = 256 * 2**20


class Captures:
    """Windows of pre's feature map assembled from the tiles' :attr:`~planetcd.change.detect.TilePartial.captured` parts."""

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


@dataclass
class NNCalibration:
    """What the ``nn`` pseudo pairs need beyond the paper's."""

    radius: int  #: search radius, cells
    post_noise: float  #: noise level of post (0..1 scale) the pseudo posts are brought to
    pre_maps: dict[int, np.ndarray] = field(default_factory=dict)  #: pre's feature maps kept by the main pass
    #: each pair's pre relit to its post (:func:`~planetcd.change.nn.relight_image`) as the main pass relights
    #: pre's tiles; pre's kept maps are then of no use (the relit crop is another image)
    relight: bool = False


def post_noise(post_reader, stats) -> float:
    """Noise level (0..1 scale, :func:`~planetcd.change.threshold.noise_sigma`) of post, on a central crop."""
    window = central_window(post_reader.height, post_reader.width, 512)
    post, _ = read_window(post_reader.dataset, window)  # not interpolated: interpolation smooths noise
    return noise_sigma(stats.unit(post).mean(axis=0))


def pseudo_geometry(patches: np.ndarray, context: int, s: int, max_shift: float, height: int, width: int):
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


def pseudo_pool(valid_fraction: np.ndarray, interior: np.ndarray) -> tuple[np.ndarray, bool]:
    """Patches pseudo pairs may be drawn from, and whether they are all interior ones.

    A source needs :data:`PSEUDO_SOURCE_FRACTION` of its pixels valid in both images (interior patches of an
    image without missing pixels: all), else — when none has — half.
    """
    usable = valid_fraction >= PSEUDO_SOURCE_FRACTION
    if np.any(usable & interior):
        return usable & interior, True  # context from real terrain, not from beyond the image edge
    if not np.any(usable):
        usable = valid_fraction >= MIN_VALID_FRACTION
    return usable, False


def guess_valid_fraction(pre: ImageOverview, post: ImageOverview, patches: np.ndarray, height: int,
                         width: int) -> np.ndarray:
    """Each patch's fraction of pixels valid in both images, estimated from the two overviews."""
    if pre.overview_valid.shape != post.overview_valid.shape:
        return np.ones(len(patches))
    both = pre.overview_valid & post.overview_valid
    oh, ow = both.shape
    r0 = patches[:, 0] * oh // height
    c0 = patches[:, 1] * ow // width
    r1 = np.maximum(-(-(patches[:, 0] + patches[:, 2]) * oh // height), r0 + 1)
    c1 = np.maximum(-(-(patches[:, 1] + patches[:, 3]) * ow // width), c0 + 1)
    counts = box_sums(both, np.stack([r0, c0, r1 - r0, c1 - c0], axis=1))
    return counts / ((r1 - r0) * (c1 - c0))


def plan_captures(patches: np.ndarray, context: int, s: int, max_shift: float, height: int, width: int,
                  n_pairs: int, rng: np.random.Generator, pre: ImageOverview, post: ImageOverview,
                  channels: int, sequential: bool = False) -> Captures | None:
    """Crop windows of pre's feature map for the ``nn`` pseudo pairs, to be kept by the main pass.

    The pairs are drawn after the main pass (the draw depends on each patch's valid fraction); here the
    same draw is made on a copy of ``rng`` with valid fractions estimated from the overviews. Where the
    guess is right (images without nodata: always) the pair's pre crop needs no trunk pass; where it is
    wrong the crop is computed as before. The scores are the same either way (up to float rounding).
    ``sequential``: the draw of a sequential sample (:class:`~planetcd.change.threshold.PseudoSample`,
    in the order drawn); when the budget does not hold every source, the first drawn are kept (the
    pairs scored first).
    """
    _, crop_h, crop_w, origin_r, origin_c, interior = pseudo_geometry(patches, context, s, max_shift, height, width)
    guessed = guess_valid_fraction(pre, post, patches, height, width)
    usable, _ = pseudo_pool(guessed, interior)
    per_window = 4 * channels * (crop_h // s) * (crop_w // s)
    if not np.any(usable) or PSEUDO_REUSE_BYTES < per_window:
        return None
    # When every interior patch that may be drawn fits in the budget, keep them all: the draw made after
    # the main pass then finds its maps even where the overviews misjudge a patch's valid fraction
    # (missing pixels too small for the overview, or the 2 px next to them that co-registration drops).
    candidates = np.flatnonzero(interior & (guessed >= MIN_VALID_FRACTION))
    if 0 < len(candidates) <= PSEUDO_REUSE_BYTES // per_window:
        guess = candidates
    else:
        drawn = choose_patches(len(patches), n_pairs, copy.deepcopy(rng), usable, image_order=not sequential)
        guess = drawn[np.sort(np.unique(drawn, return_index=True)[1])]  # each source once, in the order drawn
        guess = np.sort(guess[interior[guess]][: PSEUDO_REUSE_BYTES // per_window])
    if len(guess) == 0:
        return None
    windows = np.stack([origin_r[guess] // s, origin_c[guess] // s, np.full(len(guess), crop_h // s),
                        np.full(len(guess), crop_w // s)], axis=1).astype(np.int64)
    return Captures(windows, guess, channels)


def pseudo_relit(pre: np.ndarray, post: np.ndarray, max_shift: float) -> np.ndarray:
    """A pseudo pair's pre crop ``(bands, h, w)`` relit to its post crop, as ``detect`` relights pre's tiles.

    The main pass relights tiles of post already registered onto pre; a pseudo post is displaced by up to
    ``max_shift`` (standing in for the residual the search absorbs), so the transfer is fitted with that
    displacement undone (estimated, :func:`~planetcd.change.register.estimate_shift_overlap`; one over
    1.5 x ``max_shift`` is not credible and ignored, as in :func:`~planetcd.change.nn.register_pairs`).
    """
    shift = estimate_shift_overlap(pre.mean(0), post.mean(0))
    if max(abs(shift[0]), abs(shift[1])) > 1.5 * max_shift:
        shift = (0.0, 0.0)
    return relight_image(pre, post, np.ones(pre.shape[1:], bool), shift)[0]


def _chunks(items, size: int):
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


@dataclass
class PseudoScores:
    """What :func:`pseudo_scores` scored."""

    scores: np.ndarray  #: (n,) ρ of the pairs scored, in the order drawn
    n_reused: int  #: pairs whose pre map the main pass kept
    n_max: int  #: pairs drawn (the most that could be scored)
    #: why scoring stopped: ``"below floor"``, ``"tolerance"`` or ``"decided"`` (:meth:`PseudoSample.settled`), ``"n_max"``
    #: (every pair drawn scored) or ``"fixed"`` (no sequential sample: all ``n_max``)
    stopped: str

    def record(self, sample: PseudoSample | None) -> dict:
        """The sample's record for run.json (``thresholds["pseudo_sample"]``)."""
        out = {"n": int(len(self.scores)), "n_max": int(self.n_max), "stopped": self.stopped}
        if sample is not None:
            out.update(first=sample.first, step=sample.step, tolerance=sample.tolerance)
        return out


def pseudo_scores(trunk, device: torch.device, pre_reader, pre_stats, patches: np.ndarray, *,
                  valid_fraction: np.ndarray, context: int, pooling: str, n_pairs: int, max_shift: float,
                  noise_std: float, rng: np.random.Generator, pre_vectors: np.ndarray | None = None,
                  nn: NNCalibration | None = None, batch_size: int = 8,
                  precision: str | None = None, sample: PseudoSample | None = None, percentile: float = 95.0,
                  floor: float | None = None, seed: int = 0, decide: np.ndarray | None = None) -> PseudoScores:
    """ρ of pseudo-unchanged pairs drawn from the pre image (read window by window).

    Each pseudo-post crop keeps ``context`` pixels of real surroundings and
    starts on the feature grid, so for patches away from the image edge its
    pooled vector compares directly with the pre vector already pooled from
    the full-image feature map (``pre_vectors``): one network pass per pair.
    Near the edge (tiny images) both halves are computed from crops.

    With ``nn`` the pairs get the ``nn`` method's nuisances (gamma, blur, noise up to post's
    measured level) and are scored as ``nn`` scores a patch (:func:`~planetcd.change.nn.nn_patch_scores`).
    ``nn.pre_maps`` holds, for some patches, pre's feature map over the crop kept by the main pass
    (:func:`plan_captures`): the map of the same pixels, so those pairs run the trunk on their post
    crop only. Its cells near the crop edge differ from a crop's (they saw real context, not
    padding), but the halo keeps them out of the patch's scores.
    With ``nn.relight`` (``detect``'s ``nn`` when the pair shows another sun) each pair's pre crop gets
    its own albedo nuisances (:func:`~planetcd.change.threshold.first_date_nuisance`) and is relit to its
    post crop (:func:`pseudo_relit`) before the trunk, as the main pass relights pre's tiles; no pre map is
    reused then.

    ``precision``: of the trunk (``"fp32"``, ``"bf16"``; None: the caller's context), the main pass's.

    ``sample``: score the ``n_pairs`` drawn in stages and stop as soon as τ (the ``percentile`` of the
    scores) is pinned (:meth:`~planetcd.change.threshold.PseudoSample.settled`, with ``floor`` — the
    threshold τ is raised to anyway, or None — ``seed`` for its bootstrap, and ``decide``, the change scores
    τ will be applied to, or None). The sources are then drawn
    in random order (a prefix of the draw is a random sample of it), not in image order. None: all
    ``n_pairs``, in image order.

    Returns a :class:`PseudoScores`: the scores ``(n,)``, ``n <= n_pairs``, the number of pairs that
    reused a pre map, and why scoring stopped.
    """
    s = trunk.stride
    height, width = pre_reader.height, pre_reader.width
    margin, crop_h, crop_w, origin_r, origin_c, interior = pseudo_geometry(patches, context, s, max_shift, height,
                                                                           width)
    usable, inside = pseudo_pool(valid_fraction, interior)
    reuse = inside and nn is None
    relight = nn is not None and nn.relight
    pre_maps = {} if nn is None or relight else nn.pre_maps or {}
    n_reused = 0

    def region(i: int) -> np.ndarray:
        window = Window(int(origin_c[i]) - margin, int(origin_r[i]) - margin, crop_w + 2 * margin, crop_h + 2 * margin)
        return prepare(*read_present(pre_reader, window), pre_stats)

    draw = draw_pseudo_pairs(len(patches), n_pairs, max_shift, rng, usable, image_order=sample is None)
    # a relit pair's pseudo pairs carry a real second date's nuisances, and their pre its own albedo nuisances, as
    # score_pairs gives them (its kept maps are unused)
    pairs = iter_pseudo_pairs(draw, region, rng, margin=margin, noise_std=noise_std if nn is None else 0.0,
                              target_noise=None if nn is None else nn.post_noise, both_dates=relight,
                              real=RELIT_PSEUDO_NUISANCE if relight else PSEUDO_NUISANCE)
    scores: list[float] = []
    stopped = "fixed" if sample is None else "n_max"
    for stop in [n_pairs] if sample is None else sample.stops(n_pairs):
        n_reused += _score_pairs(itertools.islice(pairs, stop - len(scores)), scores, trunk, device, patches,
                                 origin_r, origin_c, pre_maps, reuse, relight, pre_vectors, nn, pooling,
                                 max_shift, batch_size, precision)
        if stop < n_pairs and (reason := sample.settled(np.asarray(scores), percentile, floor, seed, decide)):
            stopped = reason
            break
    return PseudoScores(np.asarray(scores), n_reused, n_pairs, stopped)


def _score_pairs(pairs, scores: list, trunk, device, patches, origin_r, origin_c, pre_maps: dict, reuse: bool,
                 relight: bool, pre_vectors, nn: NNCalibration | None, pooling: str, max_shift: float,
                 batch_size: int, precision: str | None) -> int:
    """Score pseudo pairs ``(i, pre, post, valid)`` in batches through the trunk, appending to ``scores``;
    returns how many reused a pre map (:func:`pseudo_scores`)."""
    s = trunk.stride
    h, w = int(patches[0, 2]), int(patches[0, 3])
    n_reused = 0
    for batch in _chunks(pairs, batch_size):
        index = [i for i, _, _, _ in batch]
        post_crops = [b for _, _, b, _ in batch]
        if relight:
            batch = [(i, pseudo_relit(a, b, max_shift), b, v) for i, a, b, v in batch]
        pre_crops = [a for i, a, _, _ in batch if not reuse and i not in pre_maps]
        inner = [[patches[i, 0] - origin_r[i], patches[i, 1] - origin_c[i], h, w] for i in index]
        crops = np.stack(post_crops + pre_crops)
        feats = run_trunk(trunk, crops if nn is None else match_resolution(crops), device, precision,
                          contiguous=nn is None)
        n = len(batch)
        if nn is not None:
            computed = iter(feats[n:])
            pre = np.stack([pre_maps[i] if i in pre_maps else next(computed) for i in index])
            n_reused += sum(int(i in pre_maps) for i in index)
            cells = patch_cells(np.array(inner), s, feats.shape[2], feats.shape[3])  # r0, c0, r1, c1
            wr, wc = cells[:, 0].min(), cells[:, 1].min()
            window = (wr, wc, cells[:, 2].max() - wr, cells[:, 3].max() - wc)  # the batch's patches' cells only
            maps = nn_change_window(torch.from_numpy(pre), torch.from_numpy(feats[:n]), nn.radius, window).numpy()
            scores.extend(nn_window_scores([maps[k, r0 - wr : r1 - wr, c0 - wc : c1 - wc]
                                            for k, (r0, c0, r1, c1) in enumerate(cells)]).tolist())
            continue
        for k in range(n):
            v_post = pool_patches(feats[k], np.array([inner[k]]), s, pooling)
            v_pre = pre_vectors[index[k]][None] if reuse else pool_patches(feats[n + k], np.array([inner[k]]), s, pooling)
            scores.append(change_scores(v_pre, v_post)[0])
    return n_reused
