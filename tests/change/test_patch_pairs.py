import numpy as np
import pytest
import torch

from planetcd.change.nn import (
    match_radiometry,
    match_resolution,
    nn_change_map,
    nn_change_window,
    nn_disagreement,
    overlap_cells,
    register_pairs,
)
from planetcd.change.patch_pairs import METHOD_NAMES, pseudo_unchanged_patches, score_pairs
from planetcd.change.threshold import noise_sigma
from planetcd.features import clear_trunk_cache, trunk_cache_info
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


def _disagreement_by_definition(f_pre, f_post, radius, eps):
    """The docstring's formula, cell by cell (a neighbour past the border counts as 1)."""
    b, _, h, w = f_pre.shape
    out = np.zeros((b, h, w))
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy * dy + dx * dx <= radius * radius]

    def d(u, v):
        return float(((u - v) ** 2).sum() / ((u**2).sum() + (v**2).sum() + eps))

    for k in range(b):
        for y in range(h):
            for x in range(w):
                to_pre, to_post = [], []
                for dy, dx in offsets:
                    yy, xx = y + dy, x + dx
                    inside = 0 <= yy < h and 0 <= xx < w
                    to_pre.append(d(f_post[k, :, y, x], f_pre[k, :, yy, xx]) if inside else 1.0)
                    to_post.append(d(f_pre[k, :, y, x], f_post[k, :, yy, xx]) if inside else 1.0)
                out[k, y, x] = max(min(to_pre), min(to_post))
    return out


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_nn_disagreement_equals_its_definition(rng, radius, monkeypatch):
    import planetcd.change.nn as nn

    monkeypatch.setattr(nn, "NN_BAND_ROWS", 3)  # bands that do not divide the rows
    f_pre = rng.normal(1.0, 1.0, (2, 6, 7, 9)).astype(np.float32)  # signed features: d can exceed 1
    f_post = f_pre + rng.normal(0.0, 0.7, f_pre.shape).astype(np.float32)
    f_post[1] = -f_pre[1]  # nothing matches (d near 2): the border's never-matching neighbour (1) wins there
    got = nn_disagreement(torch.from_numpy(f_pre), torch.from_numpy(f_post), radius, eps=1.0).numpy()
    np.testing.assert_allclose(got, _disagreement_by_definition(f_pre, f_post, radius, 1.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [(0, 0, 30, 34), (9, 11, 8, 10), (0, 20, 12, 14), (22, 0, 8, 7), (5, 5, 1, 1)])
@pytest.mark.parametrize("radius", [1, 2, 3])
def test_nn_change_window_equals_the_whole_map_cut(rng, radius, window):
    """The core-only map detect's tiles use: the whole map's cells, at the maps' edges and inside alike."""
    f_pre = torch.from_numpy(10 * rng.random((1, 8, 30, 34)).astype(np.float32))
    f_post = f_pre + torch.from_numpy(rng.normal(0.0, 3.0, f_pre.shape).astype(np.float32))
    r, c, h, w = window
    whole = nn_change_map(f_pre, f_post, radius)[:, r : r + h, c : c + w]
    got = nn_change_window(f_pre, f_post, radius, window)
    assert got.shape == (1, h, w)
    np.testing.assert_allclose(got.numpy(), whole.numpy(), rtol=1e-6, atol=1e-7)


def test_noise_sigma(rng):
    assert noise_sigma(rng.normal(0, 0.05, (200, 200))) == pytest.approx(0.05, rel=0.05)
    assert noise_sigma(np.zeros((50, 50))) == 0.0


def test_pseudo_patches_and_registration(rng):
    terrain = synthetic_terrain((100, 100), seed=1)[0]
    pre = np.stack([terrain[None]] * 4).astype(np.float32)
    pp, post, valid = pseudo_unchanged_patches(pre, 6, 6.0, 0.0, rng)
    assert pp.shape == post.shape == (6, 1, 100, 100) and valid.shape == (6, 100, 100)
    assert (~valid).any(axis=(1, 2)).all()  # the shift uncovers a border: it has no data, no wrap-around
    registered, shifts, overlap = register_pairs(pp, post, valid, max_shift=6.0)
    assert np.abs(shifts).max() <= 6.5
    interior = (slice(None), slice(None), slice(10, -10), slice(10, -10))
    assert np.abs(registered[interior] - pp[interior]).mean() < 0.02
    # the overlap is what both dates see: all of the interior, never the whole patch (the shift uncovers a border)
    assert overlap.shape == (6, 100, 100) and overlap[:, 10:-10, 10:-10].all() and not overlap.all(axis=(1, 2)).any()


def test_match_radiometry_puts_post_on_pre_scale_over_the_shared_ground(rng):
    pre = rng.random((1, 40, 40)).astype(np.float32) * 0.5 + 0.2
    post = np.clip(pre * 1.6 - 0.25, 0, 1)  # another gain and offset, as a patch scaled by other ground gets
    post[:, :, 30:] = 1.0  # post's own ground, seen only by post
    overlap = np.zeros((40, 40), bool)
    overlap[:, :30] = True
    matched = match_radiometry(pre, post, overlap)
    assert np.abs(matched[:, :, :30] - pre[:, :, :30]).max() < 0.01
    assert np.abs(post[:, :, :30] - pre[:, :, :30]).mean() > 0.05  # it was not already so
    assert match_radiometry(pre, post, np.zeros((40, 40), bool)) is post  # no shared ground: left alone


def test_match_resolution_damps_noise_and_keeps_a_crater(rng):
    ground = np.full((1, 1, 64, 64), 0.5, np.float32)
    crater = add_fresh_crater(ground[0, 0], 32, 32, 8.0, halo="dark", halo_strength=0.5)[None, None]
    noisy = ground + rng.normal(0, 0.05, ground.shape).astype(np.float32)
    assert match_resolution(noisy, 1.0).std() < 0.4 * noisy.std()
    assert np.abs(match_resolution(crater, 1.0) - 0.5).max() > 0.2
    assert match_resolution(noisy, 0.0) is noisy


def test_overlap_cells_keep_cells_fully_inside_and_off_the_seam():
    overlap = np.zeros((1, 64, 64), bool)
    overlap[0, :, :40] = True  # post's data ends at column 40
    cells = overlap_cells(overlap, 4, (16, 16), border=1)[0]
    assert cells[5, 1:9].all()  # cells 0..9 cover columns 0..39; 1..8 are one cell in from the edge and the seam
    assert not cells[:, 9:].any() and not cells[:, 0].any() and not cells[0].any() and not cells[-1].any()
    whole = overlap_cells(np.ones((1, 64, 64), bool), 4, (16, 16), border=0)[0]
    assert whole.all()


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
    clear_trunk_cache()
    for method in METHOD_NAMES:
        result = score_pairs(pre, post, method, weights=vgg_weights, n_pseudo=12, seed=0)
        assert result.scores.shape == (8,) and np.isfinite(result.scores).all(), method
        assert np.isfinite(result.tau), method
        assert result.changed.dtype == bool
    nn = score_pairs(pre, post, "nn", weights=vgg_weights, n_pseudo=12, seed=0)
    # the shift-tolerant detector ranks the planted craters above the unchanged pairs (ROC AUC >= 0.9)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(labels, nn.scores) >= 0.9
    info = trunk_cache_info()
    assert (info.currsize, info.misses) == (3, 3)  # layers 5, 6, 7 loaded once each
    with pytest.raises(ValueError, match="unknown method"):
        score_pairs(pre, post, "magic")


def test_auto_max_shift_is_found_from_the_pairs_displacements(rng):
    from planetcd.change.nn import pair_shifts
    from planetcd.change.patch_pairs import auto_max_shift
    from scipy import ndimage

    from planetcd.datasets.synthetic import synthetic_terrain

    ground = synthetic_terrain((260, 260), seed=4)[0]
    truth = [(20.0, -3.5), (-12.25, 17.5), (6.0, 19.0), (-19.5, -8.0)]
    pre = np.stack([ground[60:210, 60:210]] * 4)[:, None]
    post = np.stack([ndimage.shift(ground, d, order=3, mode="nearest")[60:210, 60:210] for d in truth])[:, None]
    found = pair_shifts(pre, post)
    np.testing.assert_allclose(found, truth, atol=2.0)
    assert auto_max_shift(found, "nn") == pytest.approx(21.0, abs=1.0)
    assert auto_max_shift(np.zeros((5, 2)), "nn") == 4.0 and auto_max_shift(np.zeros((5, 2)), "paper") == 10.0


def test_scale_patches_clips_impulses_and_keeps_the_ground_contrast(rng):
    """A 10-bit patch with 0.5 % hot pixels at 1023 is scaled like the clean patch: its range is measured
    without the hot pixels, which set its 99.5 percentile before (mean difference 0.31 of the scale)."""
    from planetcd.change.patch_pairs import scale_patches

    ground, _ = synthetic_terrain((128, 128), seed=3, n_craters=6)
    clean = (ground * 600 + 100).astype(np.float32)[None, None]  # (1 patch, 1 band, h, w), 10-bit values
    hot = clean.copy()
    hot[0, 0][rng.random((128, 128)) < 0.005] = 1023.0
    scaled_clean, scaled_hot = scale_patches(clean)[0, 0], scale_patches(hot)[0, 0]
    assert np.abs(scaled_hot - scaled_clean).mean() < 0.01
    assert scaled_hot.std() > 0.8 * scaled_clean.std()
