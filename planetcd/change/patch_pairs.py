"""Change scores for sets of standalone patch pairs: the paper, its variants, the CVA/RCVA baselines and ``nn``.

Evaluation sets hold standalone patch pairs (no surrounding image), so every
method here works on arrays ``(n, bands, h, w)``, scales each patch on its
own (robust percentiles), and chooses its threshold τ without labels, on
pseudo-unchanged pairs drawn by :mod:`planetcd.change.threshold` (or k-means).
The ``nn`` detector itself lives in :mod:`planetcd.change.nn`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..features import cached_trunk, pick_device
from ..precision import resolve_precision
from ..raster import fill_invalid, impulse_steps, robust_range, scale_intensity, suppress_impulses
from .nuisance import PSEUDO_NUISANCE, RELIT_PSEUDO_NUISANCE, RealNuisance
from .nn import (
    RELIT_ANISOTROPY,
    nn_scores,
    pair_shifts,
    patch_features,
    register_pairs,
    relight_pre,
    transfer_anisotropy,
)
from .scores import change_scores, cva_scores, pool_patches, rcva_scores
from .threshold import draw_pseudo_pairs, iter_pseudo_pairs, kmeans_threshold, noise_sigma, self_calibrated_threshold

METHOD_NAMES = ("paper", "paper-avg", "paper-kmeans", "paper-layer5", "paper-layer7", "cva", "rcva", "nn", "nn-unlit", "nn-basic")

@dataclass(frozen=True)
class MethodSpec:
    """How one named method scores and thresholds."""

    kind: str  #: "deep", "cva", "rcva" or "nn"
    layer: int = 6
    pooling: str = "max"
    threshold: str = "pseudo"  #: "pseudo" or "kmeans"
    real_nuisance: bool = True  #: nn: pseudo pairs with the real nuisances (False: gamma, blur and noise only)
    #: nn: pre relit to post's sun by the pair's own transfer (:func:`~planetcd.change.nn.relight_pre`), and the
    #: real nuisances only in the pseudo pairs of sources whose partner shows another sun (:data:`RELIT_ANISOTROPY`)
    relight: bool = False


METHODS: dict[str, MethodSpec] = {
    "paper": MethodSpec("deep"),
    "paper-avg": MethodSpec("deep", pooling="avg"),
    "paper-kmeans": MethodSpec("deep", threshold="kmeans"),
    "paper-layer5": MethodSpec("deep", layer=5),
    "paper-layer7": MethodSpec("deep", layer=7),
    "cva": MethodSpec("cva"),
    "rcva": MethodSpec("rcva"),
    "nn": MethodSpec("nn", relight=True),
    "nn-unlit": MethodSpec("nn"),
    "nn-basic": MethodSpec("nn", real_nuisance=False),
}


#: Quantile of the pairs' displacement magnitudes taken as a set's misregistration (``max_shift="auto"``).
AUTO_QUANTILE = 90.0


def auto_max_shift(shifts: np.ndarray, kind: str) -> float:
    """``max_shift="auto"`` for a set of pairs from their displacements ``(n, 2)``: the 90th percentile of
    ``max(|dy|, |dx|)`` + 1 px, rounded up to 0.5 px, at least 4 px (``nn``) or the paper's 10 px (others)."""
    magnitude = np.max(np.abs(np.asarray(shifts, float).reshape(-1, 2)), axis=1)
    found = float(np.percentile(magnitude, AUTO_QUANTILE)) if len(magnitude) else 0.0
    floor = 4.0 if kind == "nn" else 10.0
    return float(max(floor, np.ceil(2 * (found + 1.0)) / 2))


@dataclass
class PairScores:
    """Scores of a set of pairs and the label-free threshold."""

    scores: np.ndarray  #: (n,) float64, higher = more changed
    tau: float
    pseudo_scores: np.ndarray | None = None
    max_shift: float | None = None  #: the pseudo pairs' largest shift, px (found from the pairs with "auto")
    #: nn: ± degrees the relit sources' pseudo pairs turn the sun (:func:`matched_sun_turn`); None: none relit
    pseudo_sun_turn: float | None = None

    @property
    def changed(self) -> np.ndarray:
        return self.scores > self.tau


def scale_patches(patches: np.ndarray) -> np.ndarray:
    """Scale each patch ``(n, bands, h, w)`` to ``0..1`` by its own robust range (float32), its impulses (hot and
    dead pixels) clipped first as ``detect``'s reads clip them (:func:`~planetcd.raster.suppress_impulses`, with
    :func:`~planetcd.raster.impulse_steps` of the patch itself) and the range measured again without them."""
    out = np.empty(patches.shape, np.float32)
    for i, patch in enumerate(patches):
        valid = np.all(np.isfinite(patch), axis=0)
        patch = np.where(np.isfinite(patch), patch, 0).astype(np.float32)
        low, high = robust_range(patch, valid) if valid.any() else (np.zeros(len(patch)), np.ones(len(patch)))
        if valid.any():
            patch, n_impulses = suppress_impulses(patch, impulse_steps(fill_invalid(patch, valid), low, high), valid)
            if n_impulses:  # impulses are no part of the patch's range (as in raster.intensity_stats)
                low, high = robust_range(patch, valid)
        out[i] = scale_intensity(patch, low, high)
    return out



def pseudo_unchanged_patches(pre: np.ndarray, n_pairs: int, max_shift: float, noise_std: float | np.ndarray,
                             rng: np.random.Generator, nuisance: bool = False, real: RealNuisance | None | list = None,
                             both_dates: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pseudo-unchanged pairs from standalone pre patches (scaled ``0..1``), by the one sampler.

    A patch has no surroundings here, so the shifted copy leaves the uncovered
    border without data (``valid`` False) rather than wrapping around.
    ``noise_std`` is the σ of the added noise, or with ``nuisance`` the noise
    level, one value or one per pre patch, shape (n,) (as measured by
    :func:`~planetcd.change.threshold.noise_sigma`) the pseudo post is brought to,
    after a random gamma and blur (:func:`~planetcd.change.threshold.make_pseudo_pair`), and with ``real``
    the real nuisances first (:func:`~planetcd.change.threshold.apply_nuisance`); with ``both_dates`` those
    pairs' pre gets its own draw of the albedo nuisances (:func:`~planetcd.change.threshold.first_date_nuisance`).

    Returns ``pre (m, bands, h, w)``, ``post (m, bands, h, w)``, ``valid (m, h, w)``.
    """
    draw = draw_pseudo_pairs(len(pre), n_pairs, max_shift, rng, image_order=False)
    if nuisance:
        pairs = iter_pseudo_pairs(draw, pre.__getitem__, rng, target_noise=noise_std, real=real, both_dates=both_dates)
    else:
        pairs = iter_pseudo_pairs(draw, pre.__getitem__, rng, noise_std=noise_std)
    out = list(pairs)
    return np.stack([p[1] for p in out]), np.stack([p[2] for p in out]), np.stack([p[3] for p in out])


def registered_pseudo_pairs(pre: np.ndarray, n_pairs: int, max_shift: float, noise: np.ndarray,
                            rng: np.random.Generator, real: RealNuisance | None | list, relight: bool,
                            both_dates: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``nn``'s pseudo-unchanged pairs, put through what its real pairs go through.

    Drawn from ``pre`` with the nuisances (:func:`pseudo_unchanged_patches`, ``real`` as there), co-registered
    (:func:`~planetcd.change.nn.register_pairs`) and, with ``relight``, pre relit to its pseudo post
    (:func:`~planetcd.change.nn.relight_pre`). Returns ``pre`` (relit or not) ``(m, bands, h, w)``, the registered
    post, the shared ground ``(m, h, w)`` and the transfers (None without ``relight``). ``both_dates``: as
    :func:`pseudo_unchanged_patches`.
    """
    pseudo_pre, pseudo_post, valid = pseudo_unchanged_patches(pre, n_pairs, max_shift, noise, rng, nuisance=True,
                                                              real=real, both_dates=both_dates)
    registered, _, overlap = register_pairs(pseudo_pre, pseudo_post, valid, max_shift=max_shift)
    transfers = None
    if relight:
        pseudo_pre, transfers = relight_pre(pseudo_pre, registered, overlap)
    return pseudo_pre, registered, overlap, transfers


#: Sun-turn ranges (± degrees) :func:`matched_sun_turn` tries for the pseudo pairs of relit pairs, in order.
PSEUDO_SUN_TURNS = (30.0, 45.0, 60.0, 90.0)

#: Pseudo pairs per trial range of :func:`matched_sun_turn`.
SUN_TURN_TRIALS = 40


def matched_sun_turn(pre: np.ndarray, target: float, max_shift: float, noise: np.ndarray, seed: int = 0,
                     turns: tuple[float, ...] = PSEUDO_SUN_TURNS, n_trials: int = SUN_TURN_TRIALS) -> float:
    """The sun-turn range of the pseudo pairs that matches the real pairs' own change of sun.

    Not in Saha & Zhu. A pseudo-unchanged pair must differ from its source as much as a real second date
    does, and for the sun that difference can be measured on the real pairs without labels: the direction
    dependence of their fitted transfers (:func:`~planetcd.change.nn.transfer_anisotropy`, which grows with
    the angle between the two suns). For each range of ``turns`` in order, ``n_trials`` pseudo pairs are drawn
    from ``pre`` with every one relit (the other nuisances as :data:`~planetcd.change.nuisance.RELIT_PSEUDO_NUISANCE`),
    registered and fitted like the real pairs; the first range whose median anisotropy reaches ``target`` is
    returned, else the last.

    Parameters
    ----------
    pre : ndarray, shape (n, bands, h, w)
        The pre patches of the relit pairs, scaled ``0..1``.
    target : float
        Median anisotropy of the relit real pairs.
    max_shift : float
        Largest shift of the pseudo pairs, px.
    noise : ndarray, shape (n,)
        Noise level of each patch's real post partner.
    seed : int
        Seed of the trial draws (their own generator: the pseudo pairs of τ are drawn after, unchanged).

    Returns
    -------
    float
        ± degrees.
    """
    for turn in turns:
        ranges = replace(RELIT_PSEUDO_NUISANCE, sun_azimuth_change=float(turn))
        rng = np.random.default_rng([seed, 7, int(turn)])
        *_, transfers = registered_pseudo_pairs(pre, n_trials, max_shift, noise, rng, ranges, relight=True)
        if float(np.median(transfer_anisotropy(transfers))) >= target:
            return float(turn)
    return float(turns[-1])


def score_pairs(
    pre: np.ndarray,
    post: np.ndarray,
    method: str = "paper",
    *,
    seed: int = 0,
    device: str = "auto",
    weights=None,
    n_pseudo: int | None = None,
    max_shift: float | str = "auto",
    noise_std: float = 0.02,
    percentile: float = 95.0,
    progress: Callable[[int, int], None] | None = None,
    precision: str = "auto",
) -> PairScores:
    """Score a set of patch pairs with a named method and choose τ without labels.

    Parameters
    ----------
    pre, post : ndarray, shape (n, bands, h, w)
        Raw intensities (any scale); each patch is scaled by its own robust range.
    method : str
        One of :data:`METHOD_NAMES`.
    seed : int
        Seed of the pseudo-pair draw.
    device, weights
        Where the VGG trunk runs and its weights; trunks come from
        :func:`planetcd.features.cached_trunk`, so each loads once per process.
    n_pseudo : int, optional
        Pseudo-unchanged pairs (default: as many as pairs, at least 100).
    max_shift : "auto" or float
        Largest shift per axis of the pseudo pairs, pixels (paper: 10). ``"auto"`` (default): from the
        pairs themselves — each pair's displacement (:func:`~planetcd.change.nn.pair_shifts`), then
        :func:`auto_max_shift` (no labels involved).
    noise_std : float
        Gaussian noise of the paper's pseudo pairs (``0..1`` scale).
    percentile : float
        Percentile of the pseudo-pair scores taken as τ.
    progress : callable, optional
        ``progress(done, total)`` after each batch: ``done`` pairs (real and pseudo) just scored,
        of ``total`` to score for this method.
    precision : {"auto", "fp32", "bf16"}
        Precision of the VGG trunk for the pairs and the pseudo pairs alike
        (:func:`planetcd.precision.resolve_precision`); scores are float64.

    Returns
    -------
    PairScores
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHOD_NAMES)}")
    if pre.shape != post.shape or pre.ndim != 4:
        raise ValueError(f"pre and post must share a shape (n, bands, h, w); got {pre.shape} and {post.shape}")
    spec = METHODS[method]
    precision = resolve_precision(precision, pick_device(device))
    rng = np.random.default_rng(seed)
    n_pseudo = max(100, len(pre)) if n_pseudo is None else n_pseudo
    total = len(pre) + (0 if spec.threshold == "kmeans" and spec.kind != "nn" else n_pseudo)

    def tick(done: int) -> None:
        if progress is not None:
            progress(done, total)

    pre = scale_patches(pre)
    post = scale_patches(post)
    full = np.array([[0, 0, pre.shape[2], pre.shape[3]]])
    shifts = None
    if isinstance(max_shift, str):
        if max_shift != "auto":
            raise ValueError(f"max_shift must be 'auto' or a number, got {max_shift!r}")
        shifts = pair_shifts(pre, post)
        max_shift = auto_max_shift(shifts, spec.kind)
    max_shift = float(max_shift)

    if spec.kind == "nn":
        trunk = cached_trunk(spec.layer, weights=weights, device=device)
        # Noise of the pseudo pairs: the level measured on each pre patch's real post partner (no labels).
        post_noise = np.array([noise_sigma(p.mean(0)) for p in post])
        registered, _, overlap = register_pairs(pre, post, max_shift=max_shift, shifts=shifts)
        real: RealNuisance | None | list = PSEUDO_NUISANCE if spec.real_nuisance else None
        turn = None
        if spec.relight:
            # Not in the paper: pre is relit to post's sun by the pair's own transfer, and a pseudo pair gets
            # the real nuisances only if its source's real partner shows another sun (the pair's own
            # statistics): clean pairs then keep a τ as low as their nuisances allow.
            lit_pre, transfers = relight_pre(pre, registered, overlap)
            anisotropy = transfer_anisotropy(transfers)
            relit = anisotropy > RELIT_ANISOTROPY
            if relit.any():
                # How far the pseudo pairs' sun turns: as far as the relit pairs' own suns differ (the pair's own
                # statistics, no labels): the smallest range whose pseudo pairs' direction dependence reaches theirs.
                turn = matched_sun_turn(pre[relit], float(np.median(anisotropy[relit])), max_shift, post_noise[relit],
                                        seed)
                real = [replace(RELIT_PSEUDO_NUISANCE, sun_azimuth_change=turn) if r else None for r in relit]
            else:
                real = [None] * len(pre)
        # Not in the paper either: a relit source's pseudo pre gets its own draw of the albedo nuisances, as a
        # real first date carries its own (chosen on the development sets, docs/benchmarks.md).
        pseudo_pre, pseudo_registered, pseudo_overlap, _ = registered_pseudo_pairs(
            pre, n_pseudo, max_shift, post_noise, rng, real, spec.relight, both_dates=spec.relight)
        if spec.relight:
            pre = lit_pre
        scores = nn_scores(trunk, pre, registered, overlap=overlap, progress=tick, precision=precision)
        pseudo = nn_scores(trunk, pseudo_pre, pseudo_registered, overlap=pseudo_overlap, progress=tick,
                           precision=precision)
        return PairScores(scores, self_calibrated_threshold(pseudo, percentile), pseudo, max_shift, turn)

    def score(a: np.ndarray, b: np.ndarray, batch_size: int = 16) -> np.ndarray:
        out = []
        for k in range(0, len(a), batch_size):
            x, y = a[k : k + batch_size], b[k : k + batch_size]
            if spec.kind == "cva":
                out += [cva_scores(u, v, full)[0] for u, v in zip(x, y)]
            elif spec.kind == "rcva":
                out += [rcva_scores(u, v, full)[0] for u, v in zip(x, y)]
            else:
                trunk = cached_trunk(spec.layer, weights=weights, device=device)
                fa = patch_features(trunk, x, batch_size, precision)
                fb = patch_features(trunk, y, batch_size, precision)
                s = trunk.stride
                out += [change_scores(pool_patches(u, full, s, spec.pooling), pool_patches(v, full, s, spec.pooling))[0]
                        for u, v in zip(fa, fb)]
            tick(len(x))
        return np.array(out)

    scores = score(pre, post)
    if spec.threshold == "kmeans":
        return PairScores(scores, kmeans_threshold(scores, seed=seed), None, max_shift)
    # The paper's pseudo pairs: noise and a shift. A standalone patch has no surroundings to take the
    # shift from, so the strip the shift uncovers keeps the pre pixels (no wrap-around roll).
    pseudo_pre, pseudo_post, pseudo_valid = pseudo_unchanged_patches(pre, n_pseudo, max_shift, noise_std, rng)
    pseudo_post = np.where(pseudo_valid[:, None], pseudo_post, pseudo_pre)
    pseudo = score(pseudo_pre, pseudo_post)
    return PairScores(scores, self_calibrated_threshold(pseudo, percentile), pseudo, max_shift)
