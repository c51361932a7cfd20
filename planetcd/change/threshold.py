"""Thresholds without labels: pseudo-unchanged pairs (the paper) and k-means on ρ.

Saha & Zhu calibrate τ on pairs that are unchanged by construction: a pre
patch against itself with Gaussian noise and a shift of up to 10 px. Here the
shift is taken from the real image around the patch (sub-pixel, bilinear — the
same interpolation that co-registration applies to the post image), never a
wrap-around roll, and each patch keeps a context margin so its features see
the same surroundings as in the full-image pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .register import shift_image


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


def pseudo_pair_from_region(
    region: np.ndarray, margin: int, shift: tuple[float, float], noise_std: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Make one pseudo-unchanged pair from a region read with ``margin`` extra pixels.

    Parameters
    ----------
    region : ndarray, float32, shape (bands, rows + 2 * margin, cols + 2 * margin)
        Intensities in ``0..1``.
    margin : int
        From :func:`margin_for`.
    shift : (dy, dx)
        Displacement in pixels, each at most ``margin - 2`` in size.
    noise_std : float
        Standard deviation of the added Gaussian noise (intensity units, ``0..1`` scale).

    Returns
    -------
    pre, post : ndarray, float32, shape (bands, rows, cols)
    """
    moved = shift_image(region, (shift[0], shift[1]))
    crop = (slice(None), slice(margin, region.shape[1] - margin), slice(margin, region.shape[2] - margin))
    pre = region[crop]
    post = moved[crop] + rng.normal(0.0, noise_std, pre.shape).astype(np.float32)
    return pre.astype(np.float32), np.clip(post, 0.0, 1.0).astype(np.float32)


def sample_shifts(n: int, max_shift: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` displacements uniform in ``[-max_shift, max_shift]`` on each axis, shape (n, 2)."""
    return rng.uniform(-max_shift, max_shift, size=(n, 2))


def choose_patches(n_patches: int, n_pairs: int, rng: np.random.Generator, usable: np.ndarray | None = None) -> np.ndarray:
    """Indexes of the patches that seed pseudo pairs (without replacement while possible)."""
    pool = np.arange(n_patches) if usable is None else np.flatnonzero(usable)
    if len(pool) == 0:
        raise ValueError("no usable patch to make pseudo-unchanged pairs from")
    return np.sort(rng.choice(pool, size=n_pairs, replace=n_pairs > len(pool)))


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
    index = choose_patches(len(patches), n_pairs, rng)
    shifts = sample_shifts(n_pairs, max_shift, rng)
    h, w = int(patches[0, 2]), int(patches[0, 3])
    pre_crops, post_crops = [], []
    for i, shift in zip(index, shifts):
        r0, c0 = patches[i, 0], patches[i, 1]  # in padded coordinates, r0 is the region start
        region = padded[:, r0 : r0 + h + 2 * pad, c0 : c0 + w + 2 * pad]
        pre, post = pseudo_pair_from_region(region, margin, tuple(shift), noise_std, rng)
        pre_crops.append(pre)
        post_crops.append(post)
    return PseudoPairs(
        pre=np.stack(pre_crops),
        post=np.stack(post_crops),
        inner=(context, context, h, w),
        shifts=shifts,
        patch_index=index,
    )


def self_calibrated_threshold(pseudo_scores: np.ndarray, percentile: float = 95.0) -> float:
    """τ: the ``percentile`` of the change scores of pseudo-unchanged pairs."""
    pseudo_scores = np.asarray(pseudo_scores, dtype=np.float64)
    pseudo_scores = pseudo_scores[np.isfinite(pseudo_scores)]
    if pseudo_scores.size == 0:
        raise ValueError("no finite pseudo-pair score")
    return float(np.percentile(pseudo_scores, percentile))


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
