"""Thresholds without labels: THE pseudo-unchanged pair sampler (the paper, ``nn``, detect) and k-means on ρ.

Saha & Zhu calibrate τ on pairs that are unchanged by construction: a pre
patch against itself with Gaussian noise and a shift of up to 10 px. Every
caller draws them here (:func:`iter_pseudo_pairs`): ``detect`` from the pre
raster, window by window; :func:`pseudo_unchanged_pairs` from an image held in
memory; :func:`planetcd.change.patch_pairs.score_pairs` from standalone patches.
Where the patch has surroundings the shift takes real terrain from around it
(sub-pixel, cubic spline — the interpolation co-registration applies to the
post image), never a wrap-around roll, and the crop keeps a context margin so
its features see the same surroundings as in the full-image pass; a standalone
patch leaves the strip the shift uncovers without data.

The ``nn`` method's pairs add the nuisances its pipeline must tolerate
(:func:`apply_nuisance`): the real nuisances of a second date
(:mod:`planetcd.change.nuisance`: another sun, dust-devil tracks, haze, a coarser
resolution, drawn mildly: :data:`~planetcd.change.nuisance.PSEUDO_NUISANCE`), a
random gamma and blur, and noise brought up to a measured level
(:func:`planetcd.raster.noise_sigma`, :func:`top_up_noise`).

How many pairs a calibration takes is :class:`PseudoSample`'s call: a prefix of one draw, as long as τ's
bootstrap spread (:func:`threshold_spread`) says more pairs would still move it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..raster import map_distinct_bands, noise_sigma
from .nuisance import PSEUDO_NUISANCE, RealNuisance, real_nuisance
from .register import shift_image, shifted_copy


@dataclass
class PseudoPairs:
    """Pseudo-unchanged pairs, ready for a feature trunk.

    Attributes
    ----------
    pre, post : ndarray, float32, shape (n, bands, rows, cols)
        Crops with context; ``post`` is ``pre`` displaced and noisy.
    inner : (row, col, height, width)
        Where the patch sits inside each crop, pixels.
    shifts : ndarray, shape (n, 2)
        Displacement ``(dy, dx)`` applied to each pair, pixels.
    patch_index : ndarray, int64, shape (n,)
        Index of the source patch in the patch grid.
    """

    pre: np.ndarray
    post: np.ndarray
    inner: tuple[int, int, int, int]
    shifts: np.ndarray
    patch_index: np.ndarray


def margin_for(max_shift: float) -> int:
    """Extra pixels read around a crop so a shift of ``max_shift`` takes real terrain."""
    return int(np.ceil(max_shift)) + 2


def top_up_noise(image: np.ndarray, target_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise to ``image`` ``(bands, rows, cols)`` until its measured noise reaches ``target_sigma``.

    Blur removes high frequencies that the noise estimate counts, so the noise
    to add is what is missing after the nuisances, not a difference of the
    two dates' estimates.
    """
    seen = noise_sigma(image.mean(axis=0))
    extra = float(np.sqrt(max(target_sigma**2 - seen**2, 0.0)))
    return image + rng.normal(0.0, extra, image.shape).astype(np.float32)


def apply_nuisance(image: np.ndarray, rng: np.random.Generator, real: RealNuisance | None = PSEUDO_NUISANCE
                   ) -> np.ndarray:
    """The nuisances of a second date on ``(bands, rows, cols)`` in ``0..1``.

    With ``real`` (default :data:`planetcd.change.nuisance.PSEUDO_NUISANCE`), first the real nuisances
    of :func:`planetcd.change.nuisance.real_nuisance` — another sun (relit from a photoclinometric
    height field; with ``real.noise_floor``, integrated along the image's own light, :func:`lit_from`),
    dust-devil tracks, haze, a
    coarser resolution — the same on every band; then a random gamma (0.8–1.25, log-uniform) and
    Gaussian blur (σ ≤ 1 px). ``real=None``: gamma and blur only.
    """
    if real is not None:
        seed = int(rng.integers(2**31))
        image = np.asarray(image)
        # lit along the patch's own shading axis with the relighting's noise floor; PSEUDO_NUISANCE is drawn as before
        sun = (lit_from(image[0]), None) if real.p_relight > 0 and real.noise_floor else None
        image = map_distinct_bands(lambda band: real_nuisance(band, np.random.default_rng(seed), real, sun=sun), image)
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    blur = float(rng.uniform(0.0, 1.0))
    return ndimage.gaussian_filter(np.clip(image, 0, 1) ** gamma, (0, blur, blur))


def lit_from(image: np.ndarray) -> float:
    """Where the light of a patch ``(rows, cols)`` comes from, degrees clockwise from the top, for relighting it.

    The axis of the shading (the structure tensor's, :func:`planetcd.craters.sun.estimate_sun_azimuth`'s
    ``axis_deg``) is well defined on a patch of 150 px where the side the light comes from often is not;
    the end of the axis nearest the estimator's best guess is taken. A relighting from the wrong end of the
    right axis is the same to first order (the linearised shading of ``h`` under ``d`` is that of ``−h``
    under ``−d``); one along a random direction, as the pseudo pairs drew before 2026-12-04, integrates
    along a direction the patch was not lit from.
    """
    from ..craters.sun import angle_difference, estimate_sun_azimuth

    estimate = estimate_sun_azimuth(np.asarray(image, np.float64), decimate=1, n_bootstrap=0)
    axis = float(estimate.axis_deg)
    return axis if abs(angle_difference(axis, estimate.azimuth_deg)) <= 90.0 else (axis + 180.0) % 360.0


def first_date_nuisance(image: np.ndarray, rng: np.random.Generator, real: RealNuisance) -> np.ndarray:
    """A first date's own albedo nuisances on ``(bands, rows, cols)`` in ``0..1``, the same on every band.

    ``real`` without relighting or seams: dust-devil tracks, haze, a coarser resolution
    (:func:`planetcd.change.nuisance.real_nuisance`). A real pair's two dates carry such nuisances each,
    drawn independently (tracks form and fade, haze comes and goes); a pseudo pair whose pre gets this and
    whose post gets :func:`apply_nuisance` from the same source differs by two draws, as they do. The sun
    stays post's: how far it turns is matched to the pairs (:func:`planetcd.change.patch_pairs.matched_sun_turn`).
    """
    albedo = replace(real, p_relight=0.0, p_seam=0.0)
    seed = int(rng.integers(2**31))
    return map_distinct_bands(lambda band: real_nuisance(band, np.random.default_rng(seed), albedo),
                              np.asarray(image)).astype(np.float32)


def sample_shifts(n: int, max_shift: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` displacements uniform in ``[-max_shift, max_shift]`` on each axis, shape (n, 2)."""
    return rng.uniform(-max_shift, max_shift, size=(n, 2))


def choose_patches(n_patches: int, n_pairs: int, rng: np.random.Generator, usable: np.ndarray | None = None,
                   image_order: bool = True) -> np.ndarray:
    """Indexes of the patches that seed pseudo pairs (without replacement while possible).

    ``image_order`` sorts them (a raster is then read in order); standalone
    patches keep the order of the draw.
    """
    pool = np.arange(n_patches) if usable is None else np.flatnonzero(usable)
    if len(pool) == 0:
        raise ValueError("no usable patch to make pseudo-unchanged pairs from")
    index = rng.choice(pool, size=n_pairs, replace=n_pairs > len(pool))
    return np.sort(index) if image_order else index


def make_pseudo_pair(source: np.ndarray, shift: tuple[float, float], rng: np.random.Generator, *, margin: int = 0,
                     noise_std: float = 0.0, target_noise: float | None = None,
                     real: RealNuisance | None = PSEUDO_NUISANCE, both_dates: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One pseudo-unchanged pair from one source patch.

    Parameters
    ----------
    source : ndarray, float32, shape (bands, rows + 2 * margin, cols + 2 * margin)
        Intensities in ``0..1``: the patch (with its context) and ``margin`` extra pixels of real
        surroundings on each side; ``margin=0``: a standalone patch with none.
    shift : (dy, dx)
        Displacement in pixels (with a margin, each at most ``margin - 2`` in size).
    margin : int
        From :func:`margin_for`, or 0.
    noise_std : float
        Standard deviation of the Gaussian noise added to post (``0..1`` scale; the paper's pairs).
    target_noise : float, optional
        The ``nn`` pairs: post gets :func:`apply_nuisance` and its noise is brought up to this level
        (:func:`top_up_noise`). Noise goes where a real post image gets it, before an interpolation:
        with surroundings the pseudo shift stands in for co-registration's, so noise comes first; a
        standalone patch is co-registered afterwards, so its noise comes after the shift.
    real : RealNuisance, optional
        The real nuisances :func:`apply_nuisance` adds to the ``nn`` pairs' post (None: gamma and blur only).
    both_dates : bool
        With ``target_noise`` and ``real``: pre gets its own draw of the albedo nuisances
        (:func:`first_date_nuisance`), independent of post's (which is made from the source as it is).

    Returns
    -------
    pre, post : ndarray, float32, shape (bands, rows, cols)
    valid : ndarray of bool, shape (rows, cols), or None
        Pixels of post with a source (standalone patches); ``None`` with a margin (all have one).
    """
    first = source
    if both_dates and target_noise is not None and real is not None:
        first = first_date_nuisance(source, rng, real)
    seen = source if target_noise is None else apply_nuisance(source, rng, real)
    if margin:
        if target_noise is not None:
            seen = top_up_noise(seen, target_noise, rng)
        moved = shift_image(seen, (shift[0], shift[1]))
        crop = (slice(None), slice(margin, source.shape[1] - margin), slice(margin, source.shape[2] - margin))
        pre = first[crop]
        post = moved[crop] + rng.normal(0.0, noise_std, pre.shape).astype(np.float32)
        return pre.astype(np.float32), np.clip(post, 0.0, 1.0).astype(np.float32), None
    post, valid = shifted_copy(seen, tuple(shift))
    if target_noise is not None:
        rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
        box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        post[box] = top_up_noise(post[box], target_noise, rng)
    else:
        post = post + rng.normal(0.0, noise_std, post.shape).astype(np.float32)
    return first, np.clip(post, 0, 1).astype(np.float32), valid


@dataclass(frozen=True)
class PseudoDraw:
    """Which sources seed the pseudo pairs and how each pair is shifted."""

    index: np.ndarray  #: (n,) int64, source of each pair
    shifts: np.ndarray  #: (n, 2) ``(dy, dx)`` pixels


def draw_pseudo_pairs(n_sources: int, n_pairs: int, max_shift: float, rng: np.random.Generator,
                      usable: np.ndarray | None = None, image_order: bool = True) -> PseudoDraw:
    """The draw of the pseudo-unchanged pairs: sources (:func:`choose_patches`), then shifts (:func:`sample_shifts`)."""
    index = choose_patches(n_sources, n_pairs, rng, usable, image_order)
    return PseudoDraw(index, sample_shifts(n_pairs, max_shift, rng))


def iter_pseudo_pairs(
    draw: PseudoDraw,
    source_of: Callable[[int], np.ndarray],
    rng: np.random.Generator,
    *,
    noise_std: float = 0.02,
    target_noise: float | np.ndarray | None = None,
    margin: int = 0,
    real: RealNuisance | None | Sequence[RealNuisance | None] = PSEUDO_NUISANCE,
    both_dates: bool = False,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]:
    """THE pseudo-unchanged pair sampler: ``(source index, pre, post, valid)`` for each pair of a draw.

    Pairs are made lazily (:func:`make_pseudo_pair`), so a caller may read the
    sources from a raster one at a time and consume the pairs in batches; the
    random draws do not depend on how it consumes them.

    Parameters
    ----------
    draw : PseudoDraw
        From :func:`draw_pseudo_pairs`, with the same ``rng`` (drawn just before).
    source_of : callable
        ``source_of(i)`` → source ``i`` as :func:`make_pseudo_pair` takes it (with ``margin``).
    rng : Generator
    noise_std : float
        Gaussian noise of the paper's pairs.
    target_noise : float or ndarray (n_sources,), optional
        Noise level of the ``nn`` pairs' post, one value or one per source (indexed by source).
    margin : int
        Extra pixels each source holds on each side (0: standalone patches).
    real : RealNuisance, optional
        Real nuisances of the ``nn`` pairs' post (:func:`apply_nuisance`); None: gamma and blur only. A
        list or tuple: one per source (indexed by source), as the pair's own statistics call for.
    both_dates : bool
        Pairs with real nuisances give pre its own draw too (:func:`make_pseudo_pair`).
    """
    for i, shift in zip(draw.index, draw.shifts):
        nuisance = real[int(i)] if isinstance(real, (list, tuple)) else real
        target = None if target_noise is None else float(target_noise[i] if np.ndim(target_noise) else target_noise)
        pre, post, valid = make_pseudo_pair(source_of(int(i)), tuple(shift), rng, margin=margin, noise_std=noise_std,
                                            target_noise=target, real=nuisance, both_dates=both_dates)
        yield int(i), pre, post, valid


def pseudo_unchanged_pairs(
    image: np.ndarray,
    patches: np.ndarray,
    n_pairs: int = 100,
    max_shift: float = 10.0,
    noise_std: float = 0.02,
    context: int = 20,
    rng: np.random.Generator | int | None = 0,
) -> PseudoPairs:
    """Pseudo-unchanged pairs from the patches of one (pre) image held in memory.

    Parameters
    ----------
    image : ndarray, float32, shape (bands, rows, cols)
        Intensities in ``0..1``.
    patches : ndarray, shape (n, 4)
        Patch grid (``row_off, col_off, height, width``); patches must share one size.
    n_pairs : int
        Number of pairs drawn.
    max_shift : float
        Largest displacement per axis, pixels (paper: 10).
    noise_std : float
        Gaussian noise standard deviation on the ``0..1`` scale.
    context : int
        Margin kept around each patch so its features see its surroundings.
    rng : Generator or int seed

    Returns
    -------
    PseudoPairs
    """
    rng = np.random.default_rng(rng)
    margin = margin_for(max_shift)
    pad = context + margin
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    h, w = int(patches[0, 2]), int(patches[0, 3])

    def region(i: int) -> np.ndarray:  # in padded coordinates, a patch's offset is its region's start
        r0, c0 = patches[i, 0], patches[i, 1]
        return padded[:, r0 : r0 + h + 2 * pad, c0 : c0 + w + 2 * pad]

    draw = draw_pseudo_pairs(len(patches), n_pairs, max_shift, rng)
    pairs = list(iter_pseudo_pairs(draw, region, rng, noise_std=noise_std, margin=margin))
    return PseudoPairs(
        pre=np.stack([p[1] for p in pairs]),
        post=np.stack([p[2] for p in pairs]),
        inner=(context, context, h, w),
        shifts=draw.shifts,
        patch_index=draw.index,
    )


def self_calibrated_threshold(pseudo_scores: np.ndarray, percentile: float = 95.0) -> float:
    """τ: the ``percentile`` of the change scores of pseudo-unchanged pairs."""
    pseudo_scores = np.asarray(pseudo_scores, dtype=np.float64)
    pseudo_scores = pseudo_scores[np.isfinite(pseudo_scores)]
    if pseudo_scores.size == 0:
        raise ValueError("no finite pseudo-pair score")
    return float(np.percentile(pseudo_scores, percentile))


#: Bootstrap resamples of :func:`threshold_spread`.
SPREAD_RESAMPLES = 1000


def threshold_spread(pseudo_scores: np.ndarray, percentile: float = 95.0, resamples: int = SPREAD_RESAMPLES,
                     seed: int = 0) -> dict | None:
    """How well the pseudo pairs pin τ: the bootstrap spread of :func:`self_calibrated_threshold`.

    τ is recomputed on ``resamples`` resamples (with replacement) of the finite pseudo scores; the
    result gives the 5th and 95th percentiles of those τ (``low``, ``high``), their ratio to τ
    (``relative``: ``(high - low) / τ``) and the sample size ``n``. ``None`` with fewer than 2 scores.
    Uses its own generator (``seed``), so it draws nothing from the caller's.
    """
    scores = np.asarray(pseudo_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        return None
    rng = np.random.default_rng(seed)
    taus = np.percentile(scores[rng.integers(0, scores.size, (resamples, scores.size))], percentile, axis=1)
    low, high = (float(v) for v in np.percentile(taus, [5.0, 95.0]))
    tau = float(np.percentile(scores, percentile))
    return {"low": low, "high": high, "relative": (high - low) / tau if tau > 0 else None, "n": int(scores.size),
            "resamples": int(resamples), "range": "5-95 % of the bootstrap τ"}


#: Pseudo pairs a sequential τ calibration starts with (:class:`PseudoSample`).
PSEUDO_FIRST = 40
#: Pairs a sequential τ calibration adds at a time while τ is not pinned.
PSEUDO_STEP = 20
#: Relative bootstrap spread of the pseudo τ (:func:`threshold_spread`'s ``relative``: the 5-95 % range of the
#: bootstrap τ over τ) at or under which a sequential calibration stops adding pairs: τ known to about ±5 %.
PSEUDO_TOLERANCE = 0.10


@dataclass(frozen=True)
class PseudoSample:
    """How many pseudo pairs a τ calibration takes: a sequential sample, as τ's precision needs.

    The pairs of one draw of ``n_max`` are scored in stages — the first :attr:`first`, then :attr:`step`
    more at a time — and the calibration stops after a stage when :meth:`settled` says the pairs scored
    so far pin τ well enough, or when all ``n_max`` are scored. Only the stage sizes depend on this: the
    draw, and each pair's nuisances, are those of the whole draw (a prefix of it is scored).

    Attributes
    ----------
    first : int
        Pairs of the first stage.
    step : int
        Pairs added by each further stage.
    tolerance : float
        Stop when :func:`threshold_spread`'s ``relative`` (the 5-95 % range of the bootstrap τ over τ)
        is at most this.
    """

    first: int = PSEUDO_FIRST
    step: int = PSEUDO_STEP
    tolerance: float = PSEUDO_TOLERANCE

    def stops(self, n_max: int) -> list[int]:
        """Number of pairs scored after each stage, ending with ``n_max``."""
        if n_max <= self.first:
            return [int(n_max)]
        return list(range(self.first, n_max, max(1, self.step))) + [int(n_max)]

    def settled(self, scores: np.ndarray, percentile: float = 95.0, floor: float | None = None,
                seed: int = 0, decide: np.ndarray | None = None) -> str | None:
        """Why the pseudo scores so far are enough (``"below floor"``, ``"tolerance"``, ``"decided"``), or None.

        ``"below floor"``: the top of τ's bootstrap spread (:func:`threshold_spread`, with ``seed``: the 95th
        percentile of the bootstrap τ) is under ``floor``, a threshold τ will be raised to anyway
        (``detect``'s ``tau="both"``: the empirical τ, :func:`combine_thresholds`), so more pairs would not
        change the τ used. ``"tolerance"``: the relative spread is within :attr:`tolerance`.
        ``"decided"`` (with ``decide``, the change scores the τ will be applied to, and a tolerance above
        0): no score lies between the low and the high end of the spread (each raised to ``floor``), so
        every patch is flagged or not alike wherever τ falls in it: more pairs would pin τ, not the output.
        """
        spread = threshold_spread(scores, percentile, seed=seed)
        if spread is None:
            return None
        has_floor = floor is not None and np.isfinite(floor)
        if has_floor and spread["high"] < floor:
            return "below floor"
        if spread["relative"] is not None and spread["relative"] <= self.tolerance:
            return "tolerance"
        if decide is not None and self.tolerance > 0:
            low, high = spread["low"], spread["high"]
            if has_floor:
                low, high = combine_thresholds(low, floor), combine_thresholds(high, floor)
            values = np.asarray(decide, dtype=np.float64)
            if not np.any((values > low) & (values <= high)):
                return "decided"
        return None


def kmeans_threshold(scores: np.ndarray, seed: int = 0) -> float:
    """τ from k-means (k = 2) on the change scores: midway between the two clusters' facing edges."""
    from sklearn.cluster import KMeans

    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < 2 or np.ptp(scores) == 0:
        return float(scores.max()) if scores.size else float("nan")
    labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(scores.reshape(-1, 1))
    high = int(np.argmax([scores[labels == k].mean() for k in (0, 1)]))
    low_max = scores[labels != high].max()
    high_min = scores[labels == high].min()
    return float((low_max + high_min) / 2)


#: ``k`` of the empirical null: τ = median + k · 1.4826 · MAD of the pair's own scores.
EMPIRICAL_K = 3.0
#: Fewest scored patches for an empirical null; with fewer, ``both`` falls back to the pseudo-pair τ.
EMPIRICAL_MIN_PATCHES = 20
#: Threshold policies of ``detect`` (``tau=`` / ``--threshold``) besides a fixed number.
TAU_POLICIES = ("pseudo", "empirical", "both", "kmeans")


def empirical_threshold(scores: np.ndarray, k: float = EMPIRICAL_K, min_patches: int = EMPIRICAL_MIN_PATCHES) -> float:
    """τ from the pair's own scores: an empirical null of the unchanged patches.

    Most patches of a real pair are unchanged, so the bulk of their scores is a sample of the unchanged
    score distribution *with every nuisance the pair really has* (illumination, albedo, resolution,
    residual misregistration), which pseudo pairs only model. Its robust location and spread — the
    median and the MAD scaled to a normal σ (1.4826 · MAD) — stay put while fewer than half the patches
    changed; τ = median + ``k`` · σ.

    Parameters
    ----------
    scores : ndarray, shape (n,)
        ρ of the scored patches (NaN ignored).
    k : float
        Spread multiplier (default :data:`EMPIRICAL_K` = 3).
    min_patches : int
        Fewer finite scores than this give NaN (no null can be estimated).

    Returns
    -------
    float
        τ, or NaN when there are too few scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < max(2, min_patches):
        return float("nan")
    median = float(np.median(scores))
    sigma = 1.4826 * float(np.median(np.abs(scores - median)))
    return median + k * sigma


def combine_thresholds(pseudo: float, empirical: float) -> float:
    """The ``both`` rule: τ = max(pseudo-pair τ, empirical τ); the pseudo-pair τ alone when the other is NaN.

    Each is a label-free estimate of the top of the unchanged score distribution: the pseudo pairs hold
    only the nuisances they simulate (so on a real pair their τ is too low and flags ground that merely
    looks different), the empirical null holds the pair's real nuisances but rises when many patches
    changed. Taking the larger keeps a false alarm to what neither explains.
    """
    if not np.isfinite(empirical):
        return float(pseudo)
    if not np.isfinite(pseudo):
        return float(empirical)
    return float(max(pseudo, empirical))
