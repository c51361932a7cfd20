import numpy as np
import pytest

from planetcd.change.threshold import (
    PseudoSample,
    kmeans_threshold,
    pseudo_unchanged_pairs,
    self_calibrated_threshold,
    threshold_spread,
)
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


def test_the_sampler_draws_the_same_pairs_however_they_are_consumed():
    from planetcd.change.threshold import draw_pseudo_pairs, iter_pseudo_pairs, margin_for

    image = np.random.default_rng(0).random((1, 120, 120)).astype(np.float32)
    margin = margin_for(3.0)
    sources = [image[:, r : r + 30 + 2 * margin, c : c + 30 + 2 * margin] for r in (0, 40) for c in (0, 40)]

    def pairs(lazy: bool):
        rng = np.random.default_rng(9)
        draw = draw_pseudo_pairs(len(sources), 5, 3.0, rng)
        made = iter_pseudo_pairs(draw, sources.__getitem__, rng, noise_std=0.01, margin=margin)
        out = []
        for pair in made:  # a lazy consumer reads sources between pairs; the draws must not care
            out.append(pair)
            if lazy:
                np.random.default_rng(1).random(10)
        return out

    a, b = pairs(False), pairs(True)
    assert [p[0] for p in a] == sorted(p[0] for p in a)  # image order
    for (i, pre, post, valid), (j, pre2, post2, _) in zip(a, b):
        assert i == j and valid is None
        np.testing.assert_array_equal(post, post2)
        np.testing.assert_array_equal(pre, sources[i][:, margin:-margin, margin:-margin])


def test_a_standalone_patch_leaves_the_uncovered_strip_without_data():
    from planetcd.change.threshold import make_pseudo_pair

    patch = np.random.default_rng(1).random((1, 40, 40)).astype(np.float32)
    pre, post, valid = make_pseudo_pair(patch, (0.0, 4.0), np.random.default_rng(0), noise_std=0.0)
    assert pre is patch and not valid[:, :4].any() and valid[:, 5:].all()
    np.testing.assert_allclose(post[:, :, 6:-2], patch[:, :, 2:-6], atol=1e-4)
    _, noisy, _ = make_pseudo_pair(patch, (0.0, 4.0), np.random.default_rng(0), target_noise=0.05)
    assert not np.array_equal(noisy, post)  # gamma, blur and noise: the nn nuisances


def test_both_dates_give_pre_its_own_albedo_nuisances_and_post_another_draw():
    from planetcd.change.nuisance import RealNuisance
    from planetcd.change.threshold import make_pseudo_pair

    yy, xx = np.mgrid[:96, :96]
    patch = (0.5 + 0.2 * np.sin(xx / 5.0) * np.cos(yy / 7.0))[None].astype(np.float32)
    tracks = RealNuisance(p_relight=1.0, p_streaks=1.0, p_seam=1.0, p_haze=0.0, p_resolution=0.0)
    pre, post, valid = make_pseudo_pair(patch, (0.0, 0.0), np.random.default_rng(4), target_noise=0.0,
                                        real=tracks, both_dates=True)
    assert valid.all()
    assert not np.allclose(pre, patch, atol=1e-3)  # pre carries its own tracks
    # ... and nothing else: the relighting and the seam stay post's, so pre equals the source off its tracks
    assert np.mean(np.abs(pre - patch) < 1e-6) > 0.5
    # post is made from the source itself, not from pre: the same draw of post's nuisances with pre's turned off
    rng = np.random.default_rng(4)
    rng.integers(2**31)  # the draw pre's nuisances took
    _, alone, _ = make_pseudo_pair(patch, (0.0, 0.0), rng, target_noise=0.0, real=tracks)
    np.testing.assert_array_equal(post, alone)
    # without real nuisances (the paper's pairs, unrelit nn pairs) pre is the source
    plain, _, _ = make_pseudo_pair(patch, (0.0, 0.0), np.random.default_rng(4), target_noise=0.0, real=None,
                                   both_dates=True)
    assert plain is patch
    # detect's crops with real surroundings (a margin): pre is the crop of the source with its own tracks
    framed, _, _ = make_pseudo_pair(patch, (1.0, -2.0), np.random.default_rng(4), margin=8, target_noise=0.0,
                                    real=tracks, both_dates=True)
    np.testing.assert_array_equal(framed, pre[:, 8:-8, 8:-8])


def test_threshold_spread_brackets_tau_and_shrinks_with_more_pairs():
    from planetcd.change.threshold import self_calibrated_threshold, threshold_spread

    rng = np.random.default_rng(3)
    few, many = rng.gamma(4.0, 1.0, 40), rng.gamma(4.0, 1.0, 4000)
    small, large = threshold_spread(many), threshold_spread(few)
    for spread, scores in ((small, many), (large, few)):
        assert spread["low"] <= self_calibrated_threshold(scores) <= spread["high"]
        assert spread["n"] == len(scores)
    assert small["relative"] < large["relative"] / 3  # the 5-95 % range narrows about as 1/sqrt(n)
    assert threshold_spread(few) == threshold_spread(few)  # its own seeded generator
    assert threshold_spread(np.array([1.0, np.nan])) is None


def test_a_sequential_pseudo_sample_stops_when_tau_is_pinned():
    sample = PseudoSample(first=40, step=20, tolerance=0.10)
    assert sample.stops(100) == [40, 60, 80, 100] and sample.stops(70) == [40, 60, 70]
    assert sample.stops(40) == [40] and sample.stops(12) == [12]
    rng = np.random.default_rng(3)
    tight = rng.normal(1.0, 0.01, 40)  # τ pinned to well under 10 %
    wide = rng.lognormal(0.0, 1.0, 40)  # a heavy tail: the 95th percentile moves with every pair
    assert threshold_spread(tight)["relative"] <= 0.10 < threshold_spread(wide)["relative"]
    assert sample.settled(tight) == "tolerance"
    assert sample.settled(wide) is None
    high = threshold_spread(wide)["high"]
    assert sample.settled(wide, floor=high * 1.01) == "below floor"  # τ is raised to the floor whatever more pairs say
    assert sample.settled(wide, floor=high * 0.99) is None
    assert sample.settled(wide, floor=float("nan")) is None
    assert sample.settled(np.array([1.0])) is None  # no spread from one score


def test_a_sequential_pseudo_sample_stops_when_no_patch_depends_on_where_tau_falls():
    sample = PseudoSample(first=40, step=20, tolerance=0.10)
    wide = np.random.default_rng(3).lognormal(0.0, 1.0, 40)
    spread = threshold_spread(wide)
    low, high = spread["low"], spread["high"]
    clear = np.array([low * 0.5, low, high * 1.5])  # a score at the low end is not flagged for any τ in the range
    inside = np.append(clear, (low + high) / 2)  # flagged by a τ at the low end, not by one at the high end
    assert sample.settled(wide, decide=clear) == "decided"
    assert sample.settled(wide, decide=inside) is None
    assert sample.settled(wide, decide=np.array([np.nan, high * 2])) == "decided"  # unscored patches decide nothing
    # with the empirical floor inside the range, τ is at least the floor: a score under it is decided
    floor = low + 0.9 * (high - low)
    assert sample.settled(wide, floor=floor, decide=np.array([low + 0.5 * (high - low)])) == "decided"
    assert sample.settled(wide, floor=floor, decide=np.array([low + 0.95 * (high - low)])) is None
    # a tolerance of 0 asks for τ from every pair: the output being decided does not stop it
    assert PseudoSample(tolerance=0.0).settled(wide, decide=clear) is None


def test_real_nuisances_of_gray_as_rgb_are_those_of_the_gray_band():
    """apply_nuisance makes a band that copies an earlier one once: the same image as band by band."""
    from planetcd.change.nuisance import PSEUDO_NUISANCE, real_nuisance
    from planetcd.change.threshold import apply_nuisance

    gray = np.clip(np.random.default_rng(2).normal(0.5, 0.1, (48, 48)), 0, 1).astype(np.float32)
    rgb = np.stack([gray] * 3)
    out = apply_nuisance(rgb, np.random.default_rng(7), PSEUDO_NUISANCE)
    rng = np.random.default_rng(7)
    seed = int(rng.integers(2**31))
    band = real_nuisance(gray, np.random.default_rng(seed), PSEUDO_NUISANCE)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    # what follows the real nuisances (gamma, blur) is drawn from the same rng after the seed
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    blur = float(rng.uniform(0.0, 1.0))
    from scipy import ndimage

    np.testing.assert_array_equal(out[0], ndimage.gaussian_filter(np.clip(band, 0, 1) ** gamma, blur))


@pytest.mark.parametrize("azimuth", [30.0, 135.0, 250.0, 300.0])
def test_a_pseudo_pair_is_relit_along_its_own_shading_axis(azimuth):
    """``lit_from`` finds the axis the light runs along on a 150 px patch of shaded bowls with albedo noise; the
    pseudo pairs' relighting integrates along it (a random direction reads shading as albedo)."""
    from planetcd.change.nuisance import shade
    from planetcd.change.threshold import lit_from
    from planetcd.craters.sun import angle_difference

    rng = np.random.default_rng(int(azimuth))
    rr, cc = np.mgrid[:150, :150].astype(float)
    height = np.zeros((150, 150))
    for y, x, r in zip(rng.uniform(10, 140, 12), rng.uniform(10, 140, 12), rng.uniform(5, 14, 12)):
        d = np.hypot(rr - y, cc - x) / r
        height += np.where(d < 1, 0.3 * r * (d**2 - 1), 0.0)
    patch = 0.4 * shade(height, azimuth, 35.0) * (1 + rng.normal(0, 0.03, height.shape))
    found = lit_from(patch)
    assert abs(angle_difference(2 * found, 2 * azimuth)) / 2 < 15.0  # the axis, either end
