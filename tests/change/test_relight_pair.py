"""nn's relighting of pre to post's sun (change.nn.fit_transfer / apply_transfer / relight_pre) and the
per-source pseudo-pair nuisances."""

import numpy as np
import pytest
from scipy import ndimage

from planetcd.change.nn import apply_transfer, fit_transfer, relight_image, relight_pre, transfer_anisotropy
from planetcd.change.nuisance import PSEUDO_NUISANCE, shade
from planetcd.change.patch_pairs import METHODS, PSEUDO_SUN_TURNS, RELIT_ANISOTROPY, matched_sun_turn, score_pairs
from planetcd.change.threshold import draw_pseudo_pairs, iter_pseudo_pairs
from planetcd.datasets.synthetic import add_fresh_crater


@pytest.fixture(scope="module")
def height():
    # gentle terrain (RMS slope about 0.07): the linear regime of the photoclinometric model
    return ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(128, 128)), 3) * 3


def _render(height, azimuth, elevation):
    image = shade(height, azimuth, elevation)
    return (image / image.mean() * 0.5).astype(np.float32)


def _rms(a, b, ref):
    core = (slice(8, -8),) * 2
    return float(np.sqrt(np.mean((a - b)[core] ** 2)) / ref[core].std())


def test_relit_pre_equals_post_under_another_sun_elevation(height):
    pre, post = _render(height, 0, 45), _render(height, 0, 30)
    lit = apply_transfer(pre, fit_transfer(pre, post, np.ones(pre.shape, bool)), float(post.mean()))
    assert _rms(pre, post, post) > 0.3  # the shading differs everywhere
    assert _rms(lit, post, post) < 0.05  # relit pre is post to 5 % of its contrast


@pytest.mark.parametrize("turn, elevation", [(15, 30), (30, 45)])
def test_relighting_brings_pre_closer_when_the_sun_turns(height, turn, elevation):
    # A turned sun shows slopes pre's sun hid (directions near-perpendicular to it): they cannot be relit,
    # so the match is partial; the error still drops by at least a third.
    pre, post = _render(height, 0, 45), _render(height, turn, elevation)
    H = fit_transfer(pre, post, np.ones(pre.shape, bool))
    lit = apply_transfer(pre, H, float(post.mean()))
    assert _rms(lit, post, post) < 0.67 * _rms(pre, post, post)
    assert transfer_anisotropy(H) > RELIT_ANISOTROPY


def test_gain_haze_and_blur_are_not_taken_for_another_sun(height):
    pre = _render(height, 0, 45)
    full = np.ones(pre.shape, bool)
    for post in (0.8 * pre + 0.05, 0.7 * pre + 0.3 * pre.mean(), ndimage.gaussian_filter(pre, 1.0)):
        assert transfer_anisotropy(fit_transfer(pre, post, full)) < RELIT_ANISOTROPY


def test_relight_pre_uses_only_the_shared_ground(height):
    pre, post = _render(height, 0, 45), _render(height, 0, 30)
    corrupted = post.copy()
    corrupted[:, 100:] = 1.0  # no data there (outside the overlap)
    overlap = np.zeros(pre.shape, bool)
    overlap[:, :100] = True
    lit, transfers = relight_pre(pre[None, None], corrupted[None, None], overlap[None])
    assert lit.shape == (1, 1, 128, 128) and transfers.shape[0] == 1
    assert _rms(lit[0, 0, :, :92], post[:, :92], post[:, :92]) < 0.1


def test_relight_pre_relights_by_the_robust_fit_and_returns_the_first(height):
    # the patch pairs (evaluate) relight pre as detect does, by the refits a new crater does not drive; the
    # transfers they return are the first fits, which the decision "another sun" reads
    pre, turned = _render(height, 0, 45), _render(height, 20, 35)
    full = np.ones(pre.shape, bool)
    post = add_fresh_crater(turned, 64, 50, 5.0, halo="dark", halo_strength=0.5)
    lit, transfers = relight_pre(pre[None, None], post[None, None], full[None])
    robust_lit, _ = relight_image(pre[None], post[None], full)
    _, first = relight_image(pre[None], post[None], full, robust=False)
    np.testing.assert_array_equal(lit[0], robust_lit)
    np.testing.assert_array_equal(transfers[0], first)
    # away from the crater the robustly relit pre is post: closer than the single fit's
    single_lit, _ = relight_image(pre[None], post[None], full, robust=False)
    away = np.ones(pre.shape, bool)
    away[30:100, 20:80] = False
    assert _rms(np.where(away, lit[0, 0], 0), np.where(away, turned, 0), turned) < \
        _rms(np.where(away, single_lit[0], 0), np.where(away, turned, 0), turned)


def test_a_new_crater_does_not_drive_the_robust_transfer(height):
    # a fresh crater with a dark halo (no other difference) reads, in one fit, as another sun; the refits
    # without the pixels the fit leaves far off find the identity again
    pre = _render(height, 0, 45)
    full = np.ones(pre.shape, bool)
    post = add_fresh_crater(pre, 64, 50, 5.0, halo="dark", halo_strength=0.5)
    _, single = relight_image(pre[None], post[None], full, robust=False)
    _, robust = relight_image(pre[None], post[None], full)
    assert transfer_anisotropy(single) > RELIT_ANISOTROPY > transfer_anisotropy(robust)
    # under another sun, with the crater: the robust transfer stays near the crater-free one
    turned = _render(height, 20, 35)
    truth = fit_transfer(pre, turned, full)
    with_crater = add_fresh_crater(turned, 64, 50, 5.0, halo="dark", halo_strength=0.5)
    _, single = relight_image(pre[None], with_crater[None], full, robust=False)
    _, robust = relight_image(pre[None], with_crater[None], full)
    assert np.abs(robust - truth)[:2].mean() < 0.5 * np.abs(single - truth)[:2].mean()


def test_relight_image_fits_with_posts_shift_undone(height):
    pre, post = _render(height, 0, 45), _render(height, 20, 35)
    full = np.ones(pre.shape, bool)
    truth = fit_transfer(pre, post, full)
    moved = ndimage.shift(post, (2.5, -1.5), order=3, mode="nearest")
    _, blind = relight_image(pre[None], moved[None], full, robust=False)
    _, undone = relight_image(pre[None], moved[None], full, shift=(2.5, -1.5), robust=False)
    assert np.abs(blind - truth)[:2].mean() > 0.2  # a 3 px shift turns the cross-spectrum's phase
    assert np.abs(undone - truth)[:2].mean() < 0.02


def test_pseudo_pairs_take_nuisances_per_source(monkeypatch):
    import planetcd.change.threshold as threshold

    seen = []
    real_nuisance = threshold.real_nuisance

    def spy(band, rng, ranges, sun=None):
        seen.append(ranges)
        return real_nuisance(band, rng, ranges, sun=sun)

    monkeypatch.setattr(threshold, "real_nuisance", spy)
    rng = np.random.default_rng(3)
    sources = [np.random.default_rng(i).uniform(0.3, 0.7, (1, 40, 40)).astype(np.float32) for i in range(2)]
    draw = draw_pseudo_pairs(2, 8, 2.0, rng, image_order=False)
    pairs = list(iter_pseudo_pairs(draw, sources.__getitem__, rng, target_noise=0.01, real=[PSEUDO_NUISANCE, None]))
    assert [p[0] for p in pairs] == list(draw.index)
    assert 0 < len(seen) < len(pairs)  # both sources were drawn
    assert len(seen) == int(np.sum(draw.index == 0)) and all(r is PSEUDO_NUISANCE for r in seen)


def test_default_nn_relights_and_nn_unlit_does_not():
    assert METHODS["nn"].relight and not METHODS["nn-unlit"].relight
    assert METHODS["nn-unlit"].real_nuisance and not METHODS["nn-basic"].real_nuisance


def test_matched_sun_turn_follows_how_far_the_pairs_suns_differ(height):
    """The pseudo pairs turn the sun as far as needed to show the relit pairs' direction dependence."""
    image = _render(height, 90, 35)
    pre = np.stack([image[r : r + 64, c : c + 64][None] for r in (0, 64) for c in (0, 64)])
    noise = np.full(len(pre), 0.005)

    def turn(target):
        return matched_sun_turn(pre, target, 2.0, noise, n_trials=12)

    assert turn(0.0) == PSEUDO_SUN_TURNS[0]  # any relit pseudo pair reaches a target of 0
    assert turn(10.0) == PSEUDO_SUN_TURNS[-1]  # none reaches it: the widest range
    turns = [turn(t) for t in (0.0, 0.36, 0.45, 0.55, 10.0)]
    assert turns == sorted(turns) and len(set(turns)) >= 3  # a larger change of sun, a wider range
    assert matched_sun_turn(pre, 0.45, 2.0, noise, seed=5, n_trials=12) == matched_sun_turn(pre, 0.45, 2.0, noise,
                                                                                           seed=5, n_trials=12)


def test_score_pairs_records_the_pseudo_sun_turn_only_for_relit_pairs():
    # 160 px patches (as the benchmark's 150 px): on much smaller ones the transfer's direction bins hold too
    # few frequencies for the anisotropy to tell one sun from two
    field = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(320, 320)), 3) * 3

    def patches(azimuth):
        image = _render(field, azimuth, 35)
        return np.stack([image[r : r + 160, c : c + 160][None] for r in (0, 160) for c in (0, 160)])

    pre = patches(90)
    relit = score_pairs(pre, patches(150), method="nn", n_pseudo=8, max_shift=2.0, precision="fp32")
    same = score_pairs(pre, pre * 0.9 + 0.02, method="nn", n_pseudo=8, max_shift=2.0, precision="fp32")
    assert relit.pseudo_sun_turn in PSEUDO_SUN_TURNS
    assert same.pseudo_sun_turn is None


@pytest.mark.parametrize("side", [64, 100, 150])
def test_a_pair_of_one_image_has_a_flat_transfer_at_any_patch_size(side):
    """Direction bins the patch's frequency grid leaves empty (at 100 px, two of the lowest ring's 16) say nothing:
    they take the ring's mean, not 0 (which removed those directions and read as another sun)."""
    image = np.random.default_rng(side).random((side, side)).astype(np.float32)
    overlap = np.ones((side, side), bool)
    overlap[:, : side // 3] = False  # part of the patch not shared, as after a large shift
    H = fit_transfer(image, image, overlap)
    assert H.min() > 0.5 and H.max() <= 1.0
    assert float(transfer_anisotropy(H)) < RELIT_ANISOTROPY  # one sun: not taken for two
