"""Real nuisances of a second date: relighting keeps geometry, the others do what they say."""

import numpy as np
import pytest

from planetcd.change.nuisance import (
    REAL_NUISANCE,
    albedo_streaks,
    haze,
    mosaic_seam,
    real_nuisance,
    relight,
    resolution,
    shade,
)

N, CY, CX, R = 160, 70.0, 85.0, 15.0


@pytest.fixture(scope="module")
def crater():
    rr, cc = np.mgrid[:N, :N]
    d = np.hypot(rr - CY, cc - CX) / R
    height = np.where(d < 1, 0.4 * R * (d**2 - 1), 0.0)  # a parabolic bowl
    return np.clip(0.5 * shade(height, 90, 35), 0, 1).astype(np.float32)  # lit from the east (right)


def _centre(image):
    """Centroid of the shading's magnitude: both halves of a bowl weigh alike whatever the sun."""
    rr, cc = np.mgrid[: image.shape[0], : image.shape[1]]
    w = np.abs(image - np.median(image))
    return np.array([(w * rr).sum() / w.sum(), (w * cc).sum() / w.sum()])


@pytest.mark.parametrize("sun", [(45, 35), (135, 50), (60, 25), (120, 60)])
def test_relighting_turns_the_shading_but_the_crater_stays_put(crater, sun):
    relit = relight(crater, 90, 35, *sun)
    assert np.abs(relit - crater).max() > 0.05  # the shading changed
    # the bright wall follows the sun: from the east to the sun's side of the bowl's centre
    assert np.linalg.norm(_centre(relit) - _centre(crater)) < 2.5
    assert np.linalg.norm(_centre(relit) - (CY, CX)) < 5.0
    same = relight(crater, 90, 35, 90, 35)
    assert np.abs(same - crater).max() < 0.02  # the same sun gives the image back


def test_relighting_moves_the_bright_wall_with_the_sun(crater):
    east = relight(crater, 90, 35, 90, 35)
    west = relight(crater, 90, 35, 270, 35)  # a 180° turn: linear photoclinometry handles it exactly
    inner = (slice(int(CY) - 5, int(CY) + 6),)
    left, right = slice(int(CX - R) + 2, int(CX) - 2), slice(int(CX) + 2, int(CX + R) - 2)
    # lit from the east, the bowl's west inner wall faces the sun
    assert east[inner + (left,)].mean() > east[inner + (right,)].mean()
    assert west[inner + (left,)].mean() < west[inner + (right,)].mean()


@pytest.mark.parametrize("sun", [(340.0, 35.0), (340.0, 25.0), (270.0, 45.0)])
def test_noise_is_not_read_as_topography(sun):
    """A flat plain with white sensor noise only has no shading to relight: the relit image stays the image to a
    fraction of the noise, and its fine texture is kept (without the noise floor, the model up to 2026-12-04,
    the noise is integrated into ridges along the sun, which the turned sun shows as striations: that model
    fails this test for each of these suns)."""
    from scipy import ndimage

    sigma = 0.02
    plain = np.clip(0.4 + np.random.default_rng(0).normal(0, sigma, (150, 150)), 0, 1).astype(np.float32)
    relit = relight(plain, 300.0, 35.0, *sun)
    assert (relit - plain).std() < 0.25 * sigma
    fine = [float((x - ndimage.gaussian_filter(x, 2.0)).std()) for x in (plain, relit)]
    assert 0.85 < fine[1] / fine[0] < 1.15


def test_shading_share_tells_shading_from_noise(crater):
    """Shading has its power along the sun, white noise in every direction alike."""
    from planetcd.change.nuisance import shading_share

    centres, share = shading_share(crater, 90.0)
    assert centres.shape == share.shape == (12,) and np.all(np.diff(centres) > 0)
    assert np.all((share >= 0) & (share <= 1))
    assert share[1:6].min() > 0.7  # the bowl's scales (wavelengths of 5-60 px) are shading
    noise = np.random.default_rng(1).normal(0.0, 1.0, (150, 150))
    assert np.median(shading_share(noise, 90.0)[1]) < 0.3


def test_other_nuisances(rng):
    image = np.clip(rng.normal(0.5, 0.1, (120, 120)), 0, 1).astype(np.float32)
    streaked = albedo_streaks(image, np.random.default_rng(1), n=2)
    assert np.all(streaked <= image + 1e-6) and (streaked < image - 0.01).mean() > 0.01
    seam = mosaic_seam(image, np.random.default_rng(2))
    assert 0.1 < np.mean(seam != image) < 0.9
    hazy = haze(image, 0.3)
    assert hazy.std() == pytest.approx(0.7 * image.std(), rel=1e-3)
    coarse = resolution(image, 2.0)
    assert coarse.shape == image.shape and coarse.std() < 0.8 * image.std()
    a = real_nuisance(image, np.random.default_rng(5), REAL_NUISANCE)
    b = real_nuisance(image, np.random.default_rng(5), REAL_NUISANCE)
    assert np.array_equal(a, b) and a.shape == image.shape and a.min() >= 0 and a.max() <= 1


def test_real_nuisance_starts_from_the_image_own_sun(crater):
    """Given the sun the image has (from the east here), a date is relit within ± sun_azimuth_change of it:
    with no turn it is the image again; with turns up to 40° the bowl stays put and its sunward (west)
    inner wall stays the bright one."""
    from dataclasses import replace

    still = replace(REAL_NUISANCE, sun_azimuth_change=0.0, sun_elevation=(35.0, 35.0), p_streaks=0.0, p_seam=0.0,
                    p_haze=0.0, p_resolution=0.0)
    own = real_nuisance(crater, np.random.default_rng(3), still, sun=(90.0, 35.0))
    assert np.abs(own - crater).max() < 0.02
    turned = replace(still, sun_azimuth_change=40.0)
    inner = (slice(int(CY) - 5, int(CY) + 6),)
    left, right = slice(int(CX - R) + 2, int(CX) - 2), slice(int(CX) + 2, int(CX + R) - 2)
    for seed in range(6):
        relit = real_nuisance(crater, np.random.default_rng(seed), turned, sun=(90.0, 35.0))
        assert np.linalg.norm(_centre(relit) - (CY, CX)) < 5.0
        assert relit[inner + (left,)].mean() > relit[inner + (right,)].mean()


def test_the_first_draws_of_a_date_replay_what_it_got(crater):
    # draw_date_nuisances makes real_nuisance's first draws: replayed from the same seed it names the suns the
    # date was relit between, so a set's sun turns can be read afterwards (benchmarks/change_breakdown.py)
    from dataclasses import replace

    from planetcd.change.nuisance import draw_date_nuisances

    only_relight = replace(REAL_NUISANCE, p_streaks=0.0, p_seam=0.0, p_haze=0.0, p_resolution=0.0)
    for seed in (3, 11):
        date = draw_date_nuisances(np.random.default_rng(seed), only_relight, sun=(90.0, 35.0))
        assert date.relight and (date.azimuth, date.elevation) == (90.0, 35.0)
        assert abs(date.new_azimuth - 90.0) <= only_relight.sun_azimuth_change
        rendered = real_nuisance(crater, np.random.default_rng(seed), only_relight, sun=(90.0, 35.0))
        np.testing.assert_array_equal(rendered, relight(crater, 90.0, 35.0, date.new_azimuth, date.new_elevation))


def test_a_generated_pair_replays_its_two_dates():
    from planetcd.change.nuisance import draw_date_nuisances
    from planetcd.datasets.benchmark import (
        POST_NUISANCE_SEED,
        PRE_NUISANCE_SEED,
        pair_date_nuisances,
    )

    pre, post = pair_date_nuisances(1234, 270.0)
    assert pre.azimuth == post.azimuth == 270.0 and pre.elevation == post.elevation  # one source sun
    assert pre.new_azimuth != post.new_azimuth  # each date turns its own way
    again = draw_date_nuisances(np.random.default_rng(1234 + PRE_NUISANCE_SEED), REAL_NUISANCE, (270.0, pre.elevation))
    assert again == pre and PRE_NUISANCE_SEED != POST_NUISANCE_SEED


def test_a_given_azimuth_with_no_elevation_keeps_the_drawn_elevation():
    """``sun=(azimuth, None)``: the azimuth is the image's own, the elevation drawn; the draws stay in step."""
    from planetcd.change.nuisance import draw_date_nuisances

    free = draw_date_nuisances(np.random.default_rng(4))
    given = draw_date_nuisances(np.random.default_rng(4), sun=(123.0, None))
    fixed = draw_date_nuisances(np.random.default_rng(4), sun=(123.0, 40.0))
    assert given.azimuth == fixed.azimuth == 123.0
    assert given.elevation == free.elevation and fixed.elevation == 40.0
    assert given.new_azimuth - given.azimuth == pytest.approx(free.new_azimuth - free.azimuth)
    assert (given.new_elevation, given.relight, given.streaks, given.seam) == (free.new_elevation, free.relight,
                                                                            free.streaks, free.seam)
