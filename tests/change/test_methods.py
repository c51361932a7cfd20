import numpy as np
import pytest
import torch

from planetcd.change.methods import (
    METHOD_NAMES, noise_sigma, nn_disagreement, pseudo_unchanged_patches, register_pairs, score_pairs,
)
from planetcd.datasets.synthetic import add_fresh_crater, synthetic_terrain


def test_nn_disagreement_ignores_shifts_within_the_radius_and_sees_new_features(rng):
    f = torch.from_numpy(10 * rng.random((1, 16, 20, 20)).astype(np.float32))  # |f|² near the conv3_2 scale
    assert float(nn_disagreement(f, f, radius=2).max()) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(f, shifts=(1, -1), dims=(2, 3))  # inside the radius-2 disc
    inner = (slice(None), slice(3, -3), slice(3, -3))
    assert float(nn_disagreement(f, shifted, radius=2)[inner].max()) == pytest.approx(0.0, abs=1e-6)
    assert float(nn_disagreement(f, shifted, radius=0)[inner].mean()) > 0.1
    new = f.clone()
    new[:, :, 10, 10] = 200.0  # a feature seen nowhere in pre
    d = nn_disagreement(f, new, radius=2)[0]
    assert d.argmax() == 10 * 20 + 10 and float(d.max()) > 0.9
    zeros = torch.zeros(1, 16, 5, 5)
    assert float(nn_disagreement(zeros, zeros, radius=1).max()) == 0.0  # flat areas compare as equal


def test_noise_sigma(rng):
    assert noise_sigma(rng.normal(0, 0.05, (200, 200))) == pytest.approx(0.05, rel=0.05)
    assert noise_sigma(np.zeros((50, 50))) == 0.0


def test_pseudo_patches_and_registration(rng):
    terrain = synthetic_terrain((100, 100), seed=1)[0]
    pre = np.stack([terrain[None]] * 4).astype(np.float32)
    pp, post, valid = pseudo_unchanged_patches(pre, 6, 6.0, 0.0, rng)
    assert pp.shape == post.shape == (6, 1, 100, 100) and valid.shape == (6, 100, 100)
    assert (~valid).any(axis=(1, 2)).all()  # the shift uncovers a border: it has no data, no wrap-around
    registered, shifts = register_pairs(pp, post, valid, max_shift=6.0)
    assert np.abs(shifts).max() <= 6.5
    interior = (slice(None), slice(None), slice(10, -10), slice(10, -10))
    assert np.abs(registered[interior] - pp[interior]).mean() < 0.02


@pytest.fixture(scope="module")
def tiny_set():
    """Eight 96 px pairs of synthetic ground, shifted and re-lit; every other one gets a new crater."""
    rng = np.random.default_rng(3)
    pre, post, labels = [], [], []
    ground = synthetic_terrain((400, 400), seed=4)[0]
    for k in range(8):
        r, c = rng.integers(20, 280, 2)
        region = ground[r - 12 : r + 108, c - 12 : c + 108]
        if k % 2:
            region = add_fresh_crater(region, 60, 60, 9.0, halo="dark", halo_strength=0.5)
        shift = rng.integers(-6, 7, 2)
        moved = np.roll(region, shift, axis=(0, 1)) * 1.2 + rng.normal(0, 0.01, region.shape)
        pre.append(ground[r : r + 96, c : c + 96][None])
        post.append(moved[12:108, 12:108][None])
        labels.append(k % 2)
    return np.stack(pre).astype(np.float32), np.stack(post).astype(np.float32), np.array(labels)


def test_every_method_scores_the_tiny_set(tiny_set, vgg_weights):
    pre, post, labels = tiny_set
    cache = {}
    for method in METHOD_NAMES:
        result = score_pairs(pre, post, method, trunk_cache=cache, weights=vgg_weights, n_pseudo=12, seed=0)
        assert result.scores.shape == (8,) and np.isfinite(result.scores).all(), method
        assert np.isfinite(result.tau), method
        assert result.changed.dtype == bool
    nn = score_pairs(pre, post, "nn", trunk_cache=cache, weights=vgg_weights, n_pseudo=12, seed=0)
    # the shift-tolerant detector ranks the planted craters above the unchanged pairs (ROC AUC >= 0.9)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, nn.scores) >= 0.9
    assert len(cache) == 3  # layers 5, 6, 7 loaded once each
    with pytest.raises(ValueError, match="unknown method"):
        score_pairs(pre, post, "magic")
