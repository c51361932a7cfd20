import numpy as np
import pytest

from planetcd.change.threshold import kmeans_threshold, pseudo_unchanged_pairs, self_calibrated_threshold
from planetcd.tiling import patch_grid


def test_pseudo_pairs_take_the_shift_from_the_real_image(rng):
    image = rng.random((1, 300, 300)).astype(np.float32)
    patches = patch_grid(300, 300, 60)
    pairs = pseudo_unchanged_pairs(image, patches, n_pairs=12, max_shift=5.0, noise_std=0.0, context=8, rng=3)
    assert pairs.pre.shape == pairs.post.shape == (12, 1, 76, 76)
    assert pairs.inner == (8, 8, 60, 60)
    assert np.all(np.abs(pairs.shifts) <= 5.0)
    for k, i in enumerate(pairs.patch_index):
        r, c = patches[i, :2]
        if r >= 20 and c >= 20 and r + 80 <= 300 and c + 80 <= 300:  # far from the reflected border
            np.testing.assert_array_equal(pairs.pre[k, 0], image[0, r - 8 : r + 68, c - 8 : c + 68])
    # a whole-pixel shift is a plain translation of the surrounding terrain (no wrap-around)
    whole = pseudo_unchanged_pairs(image, patches[[7]], n_pairs=1, max_shift=0.0, noise_std=0.0, context=8, rng=0)
    np.testing.assert_allclose(whole.post, whole.pre, atol=1e-6)


def test_noise_is_added(rng):
    image = np.full((1, 200, 200), 0.5, np.float32)
    pairs = pseudo_unchanged_pairs(image, patch_grid(200, 200, 50), n_pairs=4, noise_std=0.05, rng=1)
    assert pairs.post.std() == pytest.approx(0.05, rel=0.2)


def test_thresholds():
    scores = np.arange(101, dtype=float)
    assert self_calibrated_threshold(scores, 95) == pytest.approx(95.0)
    low = np.random.default_rng(0).normal(10, 1, 200)
    high = np.random.default_rng(1).normal(30, 1, 20)
    tau = kmeans_threshold(np.concatenate([low, high]))
    assert low.max() < tau < high.min()
