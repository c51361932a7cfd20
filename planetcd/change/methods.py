"""Change scores for sets of patch pairs: the paper, its variants, baselines and the ``nn`` detector.

Evaluation sets hold standalone patch pairs (no surrounding image), so every
method here works on arrays ``(n, bands, h, w)``, scales each patch on its
own (robust percentiles), and chooses its threshold without labels.

``nn`` — a shift-tolerant detector that keeps the paper's principles
(pre-trained VGG-16 features, no labels, a threshold self-calibrated on
pseudo-unchanged pairs) but is built to see small new objects:

1. radiometric normalisation: each patch is scaled by its own robust range;
2. the pair is co-registered (masked normalised cross-correlation over the
   overlap, refined by phase correlation: shifts can be 40 % of a patch);
3. both go through the trunk (conv3_2); where post has no data after the
   shift, it takes pre's pixels (no change by construction);
4. every cell of post is compared with its *nearest* pre cell within a search
   radius and vice versa, with a scale-free distance
   ``|a - b|² / (|a|² + |b|² + eps)``, so residual misregistration and
   illumination barely move it, while a new crater (a feature with no match
   nearby) does;
5. the patch score is the *worst* disagreement (max over cells, after a 2 x 2
   cell average that damps single-cell noise), not a pooled descriptor that
   dilutes a 20 px crater in a 150 px patch;
6. τ is the 95th percentile of the same score on pseudo-unchanged pairs
   made from pre patches with the nuisances the pipeline must tolerate
   (shift, gamma, blur, and noise up to the level measured on each patch's
   post partner) — put through the identical pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..features import VGGFeatures, pick_device, run_trunk
from ..raster import robust_range, scale_intensity, to_three_bands
from .register import estimate_shift_overlap
from .scores import change_scores, cva_scores, pool_patches, rcva_scores
from .threshold import kmeans_threshold, self_calibrated_threshold

METHOD_NAMES = ("paper", "paper-avg", "paper-kmeans", "paper-layer5", "paper-layer7", "cva", "rcva", "nn")

#: Side (cells) of the box average of the nn disagreement before its maximum is taken.
NN_SMOOTH = 2

#: Floor of the nn distance's denominator, for conv3_2 features of 0..1 inputs
#: (median |f|² on CTX ground is about 1700): flat areas compare as equal.
NN_EPS = 100.0


@dataclass(frozen=True)
class MethodSpec:
    """How one named method scores and thresholds."""

    kind: str  #: "deep", "cva", "rcva" or "nn"
    layer: int = 6
    pooling: str = "max"
    threshold: str = "pseudo"  #: "pseudo" or "kmeans"


METHODS: dict[str, MethodSpec] = {
    "paper": MethodSpec("deep"),
    "paper-avg": MethodSpec("deep", pooling="avg"),
    "paper-kmeans": MethodSpec("deep", threshold="kmeans"),
    "paper-layer5": MethodSpec("deep", layer=5),
    "paper-layer7": MethodSpec("deep", layer=7),
    "cva": MethodSpec("cva"),
    "rcva": MethodSpec("rcva"),
    "nn": MethodSpec("nn"),
}


@dataclass
class PairScores:
    """Scores of a set of pairs and the label-free threshold."""

    scores: np.ndarray  #: (n,) float64, higher = more changed
    tau: float
    pseudo_scores: np.ndarray | None = None

    @property
    def changed(self) -> np.ndarray:
        return self.scores > self.tau


# --------------------------------------------------------------------------- helpers


def scale_patches(patches: np.ndarray) -> np.ndarray:
    """Scale each patch ``(n, bands, h, w)`` to ``0..1`` by its own robust range (float32)."""
    out = np.empty(patches.shape, np.float32)
    for i, patch in enumerate(patches):
        valid = np.all(np.isfinite(patch), axis=0)
        patch = np.where(np.isfinite(patch), patch, 0).astype(np.float32)
        low, high = robust_range(patch, valid) if valid.any() else (np.zeros(len(patch)), np.ones(len(patch)))
        out[i] = scale_intensity(patch, low, high)
    return out


def noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of white noise in a ``(rows, cols)`` image (Immerkær 1996, fast estimate)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    response = ndimage.convolve(image.astype(np.float64), kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).mean() / 6.0)


def top_up_noise(image: np.ndarray, target_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise to ``image`` ``(bands, rows, cols)`` until its measured noise reaches ``target_sigma``.

    Blur removes high frequencies that the noise estimate counts, so the noise
    to add is what is missing after the nuisances, not a difference of the
    two dates' estimates.
    """
    seen = noise_sigma(image.mean(axis=0))
    extra = float(np.sqrt(max(target_sigma**2 - seen**2, 0.0)))
    return image + rng.normal(0.0, extra, image.shape).astype(np.float32)


def get_trunk(layer: int, trunk_cache: dict | None, weights=None, device: str = "auto") -> VGGFeatures:
    """A VGG trunk for ``layer``, loaded once per cache."""
    key = ("vgg16", layer)
    if trunk_cache is not None and key in trunk_cache:
        return trunk_cache[key]
    trunk = VGGFeatures(layer=layer, weights=weights).to(pick_device(device))
    if trunk_cache is not None:
        trunk_cache[key] = trunk
    return trunk


def _features(trunk: VGGFeatures, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    device = next(trunk.parameters()).device
    rgb = np.stack([to_three_bands(im) for im in images])
    return np.concatenate([run_trunk(trunk, rgb[k : k + batch_size], device) for k in range(0, len(rgb), batch_size)])


def shifted_copy(patch: np.ndarray, shift: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A patch ``(bands, h, w)`` displaced by ``shift`` px; pixels with no source are invalid (returns data, valid)."""
    moved = ndimage.shift(patch, (0.0, *shift), order=3, mode="constant", cval=np.nan, prefilter=True)
    valid_src = np.ones(patch.shape[1:], np.float32)
    valid = ndimage.shift(valid_src, shift, order=1, mode="constant", cval=0.0) > 0.999
    moved = np.where(valid[None], moved, 0.0)
    return np.clip(moved, 0, 1).astype(np.float32), valid


def pseudo_unchanged_patches(
    pre: np.ndarray,
    n_pairs: int,
    max_shift: float,
    noise_std: float | np.ndarray,
    rng: np.random.Generator,
    nuisance: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pseudo-unchanged pairs from standalone pre patches (scaled ``0..1``).

    A patch has no surroundings here, so the shifted copy leaves the uncovered
    border without data (``valid`` False) rather than wrapping around.
    ``noise_std`` is one value or one per pre patch, shape (n,): the σ of the
    added noise, or with ``nuisance`` the noise level (as measured by
    :func:`noise_sigma`) the pseudo post is brought to, after a random gamma
    (0.8–1.25) and blur (σ ≤ 1 px).

    Returns ``pre (m, bands, h, w)``, ``post (m, bands, h, w)``, ``valid (m, h, w)``.
    """
    index = rng.choice(len(pre), size=n_pairs, replace=n_pairs > len(pre))
    shifts = rng.uniform(-max_shift, max_shift, size=(n_pairs, 2))
    out_pre, out_post, out_valid = [], [], []
    for i, shift in zip(index, shifts):
        patch = pre[i]
        if nuisance:
            gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
            sigma = float(rng.uniform(0.0, 1.0))
            source = ndimage.gaussian_filter(np.clip(patch, 0, 1) ** gamma, (0, sigma, sigma))
        else:
            source = patch
        sigma_noise = float(np.broadcast_to(noise_std, (len(pre),))[i])
        post, valid = shifted_copy(source, tuple(shift))
        if nuisance:  # noise last, as a real post patch gets it: after the ground was resampled
            rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
            box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            post[box] = top_up_noise(post[box], sigma_noise, rng)
        else:
            post = post + rng.normal(0.0, sigma_noise, post.shape).astype(np.float32)
        post = np.clip(post, 0, 1).astype(np.float32)
        out_pre.append(patch)
        out_post.append(post)
        out_valid.append(valid)
    return np.stack(out_pre), np.stack(out_post), np.stack(out_valid)


# --------------------------------------------------------------------------- nn detector


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
    h, w = f_pre.shape[-2:]
    norm_pre = (f_pre**2).sum(1)
    norm_post = (f_post**2).sum(1)
    pad = (radius, radius, radius, radius)
    pre_p = F.pad(f_pre, pad)
    post_p = F.pad(f_post, pad)
    npre_p = F.pad(norm_pre, pad, value=float("inf"))
    npost_p = F.pad(norm_post, pad, value=float("inf"))
    best_post = torch.full_like(norm_pre, float("inf"))
    best_pre = torch.full_like(norm_pre, float("inf"))
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            if (dy - radius) ** 2 + (dx - radius) ** 2 > radius**2:
                continue
            a = pre_p[:, :, dy : dy + h, dx : dx + w]
            b = post_p[:, :, dy : dy + h, dx : dx + w]
            na = npre_p[:, dy : dy + h, dx : dx + w]
            nb = npost_p[:, dy : dy + h, dx : dx + w]
            d_post = (norm_post + na - 2 * (f_post * a).sum(1)) / (norm_post + na + eps)
            d_pre = (norm_pre + nb - 2 * (f_pre * b).sum(1)) / (norm_pre + nb + eps)
            best_post = torch.minimum(best_post, torch.nan_to_num(d_post, nan=1.0))
            best_pre = torch.minimum(best_pre, torch.nan_to_num(d_pre, nan=1.0))
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


def register_pairs(pre: np.ndarray, post: np.ndarray, valid: np.ndarray | None = None,
                   max_shift: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Co-register each post patch onto its pre patch (phase correlation, then undo).

    Where post has no data afterwards it takes pre's pixels, so uncovered
    borders read as unchanged. Returns the registered post ``(n, bands, h, w)``
    and the displacements ``(n, 2)``.
    """
    out = np.empty_like(post)
    found = np.zeros((len(pre), 2))
    for i in range(len(pre)):
        post_valid = np.ones(pre.shape[2:], bool) if valid is None else valid[i]
        shift = estimate_shift_overlap(pre[i].mean(0), post[i].mean(0), post_valid)
        if max_shift is not None and max(abs(shift[0]), abs(shift[1])) > 1.5 * max_shift:
            shift = (0.0, 0.0)  # no credible peak: compare as is
        moved, moved_valid = shifted_copy(post[i], (-shift[0], -shift[1]))
        if valid is not None:
            moved_valid &= ndimage.shift(post_valid.astype(np.float32), (-shift[0], -shift[1]), order=0) > 0.5
        out[i] = np.where(moved_valid[None], moved, pre[i])
        found[i] = shift
    return out, found


def nn_scores(trunk: VGGFeatures, pre: np.ndarray, post: np.ndarray, radius: int = 2, border: int = 1,
              batch_size: int = 16) -> np.ndarray:
    """Worst nearest-neighbour disagreement per pair; ``(n, bands, h, w)`` x2 (registered, 0..1) -> ``(n,)``."""
    scores = []
    for k in range(0, len(pre), batch_size):
        f_pre = torch.from_numpy(_features(trunk, pre[k : k + batch_size]))
        f_post = torch.from_numpy(_features(trunk, post[k : k + batch_size]))
        d = nn_change_map(f_pre, f_post, radius)
        if border:
            d = d[:, border:-border, border:-border]
        scores.append(d.flatten(1).max(1).values.numpy())
    return np.concatenate(scores).astype(np.float64)


# --------------------------------------------------------------------------- the entry point


def score_pairs(
    pre: np.ndarray,
    post: np.ndarray,
    method: str = "paper",
    *,
    trunk_cache: dict | None = None,
    seed: int = 0,
    device: str = "auto",
    weights=None,
    n_pseudo: int | None = None,
    max_shift: float = 10.0,
    noise_std: float = 0.02,
    percentile: float = 95.0,
) -> PairScores:
    """Score a set of patch pairs with a named method and choose τ without labels.

    Parameters
    ----------
    pre, post : ndarray, shape (n, bands, h, w)
        Raw intensities (any scale); each patch is scaled by its own robust range.
    method : str
        One of :data:`METHOD_NAMES`.
    trunk_cache : dict, optional
        Pass the same dict across calls so each VGG trunk loads once.
    seed : int
        Seed of the pseudo-pair draw.
    n_pseudo : int, optional
        Pseudo-unchanged pairs (default: as many as pairs, at least 100).
    max_shift : float
        Largest shift per axis of the pseudo pairs, pixels (paper: 10).

    Returns
    -------
    PairScores
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHOD_NAMES)}")
    if pre.shape != post.shape or pre.ndim != 4:
        raise ValueError(f"pre and post must share a shape (n, bands, h, w); got {pre.shape} and {post.shape}")
    spec = METHODS[method]
    rng = np.random.default_rng(seed)
    n_pseudo = max(100, len(pre)) if n_pseudo is None else n_pseudo
    pre = scale_patches(pre)
    post = scale_patches(post)
    full = np.array([[0, 0, pre.shape[2], pre.shape[3]]])

    if spec.kind == "nn":
        trunk = get_trunk(spec.layer, trunk_cache, weights, device)
        # Noise of the pseudo pairs: the level measured on each pre patch's real post partner (no labels).
        post_noise = np.array([noise_sigma(p.mean(0)) for p in post])
        pseudo_pre, pseudo_post, pseudo_valid = pseudo_unchanged_patches(pre, n_pseudo, max_shift, post_noise, rng,
                                                                         nuisance=True)
        registered, _ = register_pairs(pre, post, max_shift=max_shift)
        pseudo_registered, _ = register_pairs(pseudo_pre, pseudo_post, pseudo_valid, max_shift=max_shift)
        scores = nn_scores(trunk, pre, registered)
        pseudo = nn_scores(trunk, pseudo_pre, pseudo_registered)
        return PairScores(scores, self_calibrated_threshold(pseudo, percentile), pseudo)

    def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if spec.kind == "cva":
            return np.array([cva_scores(x, y, full)[0] for x, y in zip(a, b)])
        if spec.kind == "rcva":
            return np.array([rcva_scores(x, y, full)[0] for x, y in zip(a, b)])
        trunk = get_trunk(spec.layer, trunk_cache, weights, device)
        fa, fb = _features(trunk, a), _features(trunk, b)
        s = trunk.stride
        return np.array([change_scores(pool_patches(x, full, s, spec.pooling), pool_patches(y, full, s, spec.pooling))[0]
                         for x, y in zip(fa, fb)])

    scores = score(pre, post)
    if spec.threshold == "kmeans":
        return PairScores(scores, kmeans_threshold(scores, seed=seed))
    # The paper's pseudo pairs: noise and a shift. A standalone patch has no surroundings to take the
    # shift from, so the strip the shift uncovers keeps the pre pixels (no wrap-around roll).
    pseudo_pre, pseudo_post, pseudo_valid = pseudo_unchanged_patches(pre, n_pseudo, max_shift, noise_std, rng)
    pseudo_post = np.where(pseudo_valid[:, None], pseudo_post, pseudo_pre)
    pseudo = score(pseudo_pre, pseudo_post)
    return PairScores(scores, self_calibrated_threshold(pseudo, percentile), pseudo)
