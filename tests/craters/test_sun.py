"""Tests of planetcd.craters.sun: convention, canonical frame round trips, the estimator (synthetic and real tiles)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from planetcd.craters.sun import (
    CANONICAL_AZIMUTH_DEG,
    FALLBACK_AZIMUTH_DEG,
    angle_difference,
    bearing_to_subsolar_point,
    from_clockwise_from_north,
    from_map_azimuth,
    azimuth_from_craters,
    canonical_rotation,
    estimate_sun_azimuth,
    from_isis_subsolar_azimuth,
    to_canonical,
)
from planetcd.datasets.synthetic import crater_height, fractal_noise, hillshade, random_craters
from planetcd.errors import InputError


def test_isis_convention():
    # ISIS counts clockwise from 3 o'clock: 0 there is light from the right (ours 90); 180 is from the left.
    assert from_isis_subsolar_azimuth(0.0) == 90.0
    assert from_isis_subsolar_azimuth(180.0) == 270.0
    assert from_isis_subsolar_azimuth(270.0) == 0.0
    assert from_isis_subsolar_azimuth(-45.0) == 45.0


def test_north_referenced_azimuths():
    # sub-solar point due west on the equator: light from the west = from the left of a north-up map
    assert bearing_to_subsolar_point(10.0, 0.0, -20.0, 0.0) == pytest.approx(270.0)
    assert bearing_to_subsolar_point(0.0, -10.0, 0.0, 5.0) == pytest.approx(0.0)
    assert from_clockwise_from_north(270.0) == 270.0
    assert from_clockwise_from_north(270.0, north_azimuth_deg=90.0) == 0.0  # north points right


def test_map_azimuths_through_the_raster_transform():
    """North-up, south-up (the ground mirrored: 180 - v), mirrored east-west, turned and non-square grids."""
    from affine import Affine

    assert from_map_azimuth(309.0, Affine(6, 0, 0, 0, -6, 0)) == pytest.approx(309.0)
    assert from_map_azimuth(309.0, Affine(6, 0, 0, 0, 6, 0)) == pytest.approx(231.0)  # south-up
    assert from_map_azimuth(60.0, Affine(-6, 0, 0, 0, -6, 0)) == pytest.approx(300.0)  # east to the left
    assert from_map_azimuth(270.0, Affine(6, 0, 0, 0, -6.2, 0)) == pytest.approx(270.0)
    # a quarter-turned grid (columns run north, rows run east): north points right, west up
    assert from_map_azimuth(0.0, Affine(0, 6, 0, 6, 0, 0)) == pytest.approx(90.0)
    assert from_map_azimuth(270.0, Affine(0, 6, 0, 6, 0, 0)) == pytest.approx(0.0)
    t = np.deg2rad(10.0)  # turned 10 degrees: north 10 degrees clockwise from the top
    turned = Affine(6 * np.cos(t), 6 * np.sin(t), 0, 6 * np.sin(t), -6 * np.cos(t), 0)
    assert from_map_azimuth(0.0, turned) == pytest.approx(10.0)
    assert from_map_azimuth(270.0, turned) == pytest.approx(280.0)
    with pytest.raises(InputError):
        from_map_azimuth(0.0, Affine(0, 0, 0, 0, 0, 0))


def test_canonical_rotation_choice():
    assert canonical_rotation(270.0) == (0.0, 0)
    assert canonical_rotation(0.0) == (270.0, 3)
    assert canonical_rotation(93.0) == (180.0, 2)  # within the 5 degree tolerance: exact
    angle, k = canonical_rotation(240.0)
    assert k is None and angle == pytest.approx(30.0)
    assert canonical_rotation(260.0, tolerance_deg=15.0) == (0.0, 0)
    with pytest.raises(InputError):
        canonical_rotation(float("nan"))


def _bowl(shape, x, y, r):
    """A bright-rimmed test pattern: values rise with distance inside a disc, so the image is not symmetric."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.hypot(xx - x, yy - y)
    return np.where(d <= r, 0.2 + 0.8 * d / r, 0.0)


@pytest.mark.parametrize("azimuth", [270.0, 0.0, 90.0, 180.0, 240.0, 333.0])
def test_light_comes_from_the_left_after_turning(azimuth):
    # A half-plane lit ramp: brightness rises away from the light, so its gradient points down-sun.
    rows, cols = 61, 81
    yy, xx = np.mgrid[0:rows, 0:cols]
    sx, sy = np.sin(np.radians(azimuth)), -np.cos(np.radians(azimuth))  # image vector towards the light
    ramp = -(xx * sx + yy * sy)
    rotated, frame = to_canonical(ramp, azimuth, fill=np.nan)
    inside = frame.footprint() & np.isfinite(rotated)
    gy, gx = np.gradient(np.where(np.isfinite(rotated), rotated, 0.0))
    keep = inside & np.pad(inside[1:-1, 1:-1], 1) & np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
    mean_gx, mean_gy = gx[keep].mean(), gy[keep].mean()
    # light from the left: brightness falls towards the left, i.e. rises to the right
    residual = float(angle_difference(frame.sun_azimuth_deg + frame.angle_deg, CANONICAL_AZIMUTH_DEG))
    direction = np.degrees(np.arctan2(mean_gy, mean_gx))
    assert abs(direction - residual) < 1.0  # gradient along +x (0 deg), up to the rounding to a quarter turn


@pytest.mark.parametrize("azimuth", [270.0, 0.0, 90.0, 180.0, 240.0, 300.0])
def test_crater_round_trip(azimuth):
    rows, cols = 121, 161
    truth = np.array([[40.0, 30.0, 8.0], [120.5, 80.25, 12.0], [100.0, 20.0, 6.0]])
    image = sum(_bowl((rows, cols), x, y, r) for x, y, r in truth)
    rotated, frame = to_canonical(image, azimuth)
    assert frame.exact == (canonical_rotation(azimuth)[1] is not None)
    # "Detect" the craters on the turned image: centroid of each disc's pixels, radius from its area.
    from scipy import ndimage

    labels, n = ndimage.label(rotated > 0.1)
    assert n == len(truth)
    found = []
    for i in range(1, n + 1):
        mask = labels == i
        ys, xs = np.nonzero(mask)
        found.append([xs.mean(), ys.mean(), np.sqrt(mask.sum() / np.pi), 0.9])
    back = frame.craters_to_input(np.array(found))
    assert back.shape == (len(truth), 4) and np.all(back[:, 3] == 0.9)
    for x, y, r in truth:
        d = np.hypot(back[:, 0] - x, back[:, 1] - y)
        j = int(np.argmin(d))
        assert d[j] < 0.5, (azimuth, x, y, back[j])
        assert abs(back[j, 2] - r) < 0.5
    # and exactly, through the frame's own forward map
    again = frame.craters_to_input(frame.craters_to_canonical(truth))
    np.testing.assert_allclose(again, truth, atol=1e-9)


@pytest.mark.parametrize("azimuth", [180.0, 30.0, 285.0])
def test_probability_round_trip(azimuth, rng):
    rows, cols = 90, 130
    from scipy import ndimage

    prob = ndimage.gaussian_filter(rng.random((rows, cols)), 3.0)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    rotated, frame = to_canonical(prob, azimuth)
    back = frame.array_to_input(rotated)
    assert back.shape == prob.shape
    if frame.exact:
        np.testing.assert_array_equal(back, prob)
    else:
        inner = (slice(3, -3), slice(3, -3))  # bilinear twice: edges lose a pixel to the fill
        assert np.abs(back[inner] - prob[inner]).max() < 0.02
        assert rotated.shape[0] >= rows and rotated.shape[1] >= cols or rotated.size >= prob.size
        assert frame.footprint().sum() == pytest.approx(rows * cols, rel=0.03)
    stack = np.stack([prob, 1 - prob])
    rotated3, frame3 = to_canonical(stack, azimuth)
    assert frame3.array_to_input(rotated3).shape == stack.shape
    with pytest.raises(InputError):
        frame.array_to_input(prob[:-1])


def _lit_terrain(azimuth, seed, kind, size=512):
    rng = np.random.default_rng(seed)
    shape = (size, size)
    height = 2.0 * fractal_noise(shape, rng, octaves=4, scale=48.0)
    if kind == "craters":
        for y, x, r in random_craters(shape, 120, rng, r_min=4.0, r_max=30.0):
            height += crater_height(shape, y, x, r)
    else:  # knobs: rounded (Gaussian) hills, no crater at all
        yy, xx = np.mgrid[0:size, 0:size]
        for y, x, r in random_craters(shape, 120, rng, r_min=4.0, r_max=25.0):
            height += 0.5 * r * np.exp(-2.0 * (np.hypot(xx - x, yy - y) / r) ** 2)
    return hillshade(height, azimuth_deg=azimuth, elevation_deg=30.0)


def test_hillshade_convention_matches_ours():
    # A single ridge running top-bottom, lit from the left (270): its left flank is bright.
    x = np.arange(64)
    height = np.tile(20.0 - np.abs(x - 32.0), (16, 1))
    shade = hillshade(height, azimuth_deg=270.0, elevation_deg=30.0)
    assert shade[8, 20] > shade[8, 44]


@pytest.mark.parametrize("kind", ["craters", "knobs"])
@pytest.mark.parametrize("azimuth,seed", [(300.0, 1), (45.0, 2), (160.0, 3), (230.0, 4)])
def test_estimator_on_synthetic_terrain(kind, azimuth, seed):
    image = _lit_terrain(azimuth, seed, kind)
    estimate = estimate_sun_azimuth(image, decimate=1, block=64)
    assert abs(angle_difference(estimate.azimuth_deg, azimuth)) <= 30.0, estimate
    assert 0.0 <= estimate.confidence <= 1.0


def test_estimator_equivariant_and_featureless(rng):
    image = _lit_terrain(300.0, 7, "craters")
    base = estimate_sun_azimuth(image, decimate=1, block=64)
    turned = estimate_sun_azimuth(np.rot90(image, -1), decimate=1, block=64)  # clockwise quarter turn
    assert abs(angle_difference(turned.azimuth_deg, base.azimuth_deg + 90.0)) < 1e-6
    # pure noise has no light direction: not confident, and callers fall back
    noise = rng.standard_normal((256, 256))
    flat = estimate_sun_azimuth(noise, decimate=1, block=32)
    assert not flat.confident and flat.azimuth_or_fallback == FALLBACK_AZIMUTH_DEG
    # missing pixels take no part; an all-missing image gives the fallback
    empty = estimate_sun_azimuth(image, missing=np.ones(image.shape, bool))
    assert empty.method == "none" and not empty.confident
    with pytest.raises(InputError):
        estimate_sun_azimuth(image, missing=np.zeros((3, 3), bool))


def test_azimuth_from_craters_on_synthetic():
    rng = np.random.default_rng(5)
    shape = (400, 400)
    craters = random_craters(shape, 60, rng, r_min=6.0, r_max=20.0)
    height = sum(crater_height(shape, y, x, r) for y, x, r in craters)
    image = hillshade(height, azimuth_deg=120.0, elevation_deg=30.0)
    xyr = craters[:, [1, 0, 2]]
    azimuth, used = azimuth_from_craters(image, xyr)
    assert used > 20 and abs(angle_difference(azimuth, 120.0)) < 15.0


def _benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sun_estimator.py"
    spec = importlib.util.spec_from_file_location("sun_estimator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.shared
@pytest.mark.slow
def test_estimator_on_labelled_tiles(shared_dir):
    """Issue 13's acceptance: the estimator on tiles MC11E-A..I and the HRSC tile, each turned by 0/90/180/270°,
    is within 30° of the tile's label-based reference (``azimuth_from_craters``, turned with the tile) in at
    least 34 of the 40 cases. In-sample: these tiles were looked at while the estimator was designed (docs/sun.md)."""
    bench = _benchmark()
    rows = bench.cases(shared_dir)
    assert [(r["tile"], r["turn"]) for r in rows] == [(t, k) for t in bench.TILES for k in (0, 90, 180, 270)]
    assert bench.TILES == ("A", "B", "C", "D", "E", "F", "G", "H", "I", "HRSC")
    for r in rows:
        assert r["n_labels"] >= 50 and np.isfinite(r["reference"]) and np.isfinite(r["estimate"])
        assert r["error"] == pytest.approx(angle_difference(r["estimate"], r["reference"]), abs=1e-9)
    for tile in bench.TILES:  # the reference turns with the tile
        refs = [r["reference"] for r in rows if r["tile"] == tile]
        assert all(abs(angle_difference(refs[k], refs[0] + 90.0 * k)) < 1e-6 for k in range(4)), tile
    within = sum(abs(r["error"]) <= 30.0 for r in rows)
    assert within >= 34, f"{within} of 40 within 30 deg (34 needed):\n" + bench.table(rows, seconds=False)


@pytest.mark.parametrize("azimuth", [0.0, 30.0, 45.0, 137.0, 200.0, 301.5])
@pytest.mark.parametrize("shape", [(90, 130), (64, 64)])
def test_boxes_meet_footprint_is_the_pixel_test_and_little_more(azimuth, shape):
    """The four-axis test against the pixels themselves: every box holding a pixel within the margin of the
    footprint meets it; a box it keeps holds a pixel within the margin + 1.5 px (the boxes' corners)."""
    from planetcd.craters.sun import canonical_frame

    frame = canonical_frame(shape, azimuth)
    rows, cols = frame.canonical_shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    x, y = frame.xy_to_input(xx, yy)

    def near(margin):  # canonical pixel centres within ``margin`` px (per axis) of the input rectangle
        return (x >= -0.5 - margin) & (x <= shape[1] - 0.5 + margin) & (y >= -0.5 - margin) & (y <= shape[0] - 0.5 + margin)

    boxes = np.array([(r, c, h, w) for h, w in ((16, 16), (7, 23)) for r in range(0, rows - h + 1, 5)
                      for c in range(0, cols - w + 1, 5)])
    meets = frame.boxes_meet_footprint(boxes, margin=2.0)
    inner, outer = near(2.0), near(3.5)
    holds = np.array([inner[r : r + h, c : c + w].any() for r, c, h, w in boxes])
    assert np.all(meets[holds])  # never a box that holds a pixel within the margin
    assert np.all(np.array([outer[r : r + h, c : c + w].any() for r, c, h, w in boxes])[meets])
    if not frame.exact:
        assert not meets.all()  # the corners of a resampled turn's canvas hold boxes of fill only


def test_azimuth_from_chips_is_the_mean_chip_s_and_weights_resample_it():
    from planetcd.craters.sun import azimuth_from_chips, crater_sun_chips

    rng = np.random.default_rng(5)
    shape = (400, 400)
    craters = random_craters(shape, 60, rng, r_min=6.0, r_max=20.0)
    image = hillshade(sum(crater_height(shape, y, x, r) for y, x, r in craters), azimuth_deg=120.0, elevation_deg=30.0)
    chips = crater_sun_chips(image, craters[:, [1, 0, 2]])
    assert azimuth_from_chips(chips) == pytest.approx(azimuth_from_craters(image, craters[:, [1, 0, 2]])[0], abs=1e-9)
    counts = np.ones((3, len(chips)))
    counts[1, :] = 0
    counts[1, :5] = 1  # the mean of the first five chips only
    per_row = azimuth_from_chips(chips, counts)
    assert per_row.shape == (3,)
    assert per_row[0] == pytest.approx(azimuth_from_chips(chips), abs=1e-9)
    assert per_row[1] == pytest.approx(azimuth_from_chips(chips[:5]), abs=1e-9)
    assert np.isnan(azimuth_from_chips(np.zeros((0, 32, 32))))


@pytest.mark.parametrize("mounds, estimate, elsewhere", [(0, 270.0, True), (0, 290.0, False), (0, 220.0, False),
                                                      (15, 270.0, False)])
def test_the_sun_is_read_back_from_the_craters_when_they_show_it_clearly_elsewhere(mounds, estimate, elsewhere):
    """40 craters lit from 300°: an estimate 30° off is replaced by the read-back (within 5° of 300°); one 10° off
    is kept (under ``SUN_REFINE_MIN_TURN``), and so is one 80° off (over ``SUN_REFINE_MAX_TURN``: there the
    network finds mounds too). Craters and mounds mixed (25 and 15) read back no clear sun (the bootstrap's
    support is low), so the estimate stays."""
    from planetcd.craters.segment import SUN_REFINE_MAX_TURN, SUN_REFINE_MIN_TURN, refined_sun_azimuth

    rng = np.random.default_rng(2)
    shape = (600, 600)
    found = random_craters(shape, 40, rng, r_min=6.0, r_max=16.0)
    sign = np.r_[np.ones(40 - mounds), -np.ones(mounds)]
    height = sum(s * crater_height(shape, y, x, r) for s, (y, x, r) in zip(sign, found))
    image = hillshade(height + 0.3 * fractal_noise(shape, rng), azimuth_deg=300.0, elevation_deg=25.0) + 0.1
    found = np.c_[found[:, [1, 0, 2]], np.full(len(found), 0.9)]
    azimuth, record = refined_sun_azimuth(image, found, estimate)
    assert record["elsewhere"] is elsewhere and (azimuth is not None) is elsewhere
    if mounds:
        assert record["support"] < 0.9
    else:
        assert abs(angle_difference(record["readback_deg"], 300.0)) < 5.0 and record["support"] >= 0.9
    if elsewhere:
        assert azimuth == pytest.approx(record["readback_deg"], abs=1e-3)
        assert SUN_REFINE_MIN_TURN < abs(record["turn_deg"]) <= SUN_REFINE_MAX_TURN
    low = found.copy()
    low[:, 3] = 0.3  # craters the first pass was not sure of are not read
    assert refined_sun_azimuth(image, low, estimate) == (None, {**record, "readback_deg": None, "n_craters": 0,
                                                                 "turn_deg": None, "support": 0.0, "elsewhere": False})


@pytest.mark.parametrize("azimuth", [30.0, 137.0, 313.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_turns_in_strips_on_threads_are_scipy_s_affine_transform(azimuth, dtype, rng):
    """affine_resample's strips of map_coordinates (source coordinates computed as scipy computes them) give
    ndimage.affine_transform's array bit for bit, both ways, bilinear and nearest, a NaN fill and NaN pixels
    included; the frame's turns of a float32 map are that array too."""
    from scipy import ndimage

    from planetcd.craters.sun import affine_resample, canonical_frame

    shape = (203, 171)
    image = rng.random(shape).astype(dtype)
    image[50:53, 60:90] = np.nan
    frame = canonical_frame(shape, azimuth)
    cos, sin, c_in, c_out = frame._rotation()
    forward = np.array([[cos, -sin], [sin, cos]]), c_in[::-1], c_out[::-1], image, frame.canonical_shape
    canvas = rng.random(frame.canonical_shape).astype(dtype)
    back = np.array([[cos, sin], [-sin, cos]]), c_out[::-1], c_in[::-1], canvas, shape
    for matrix, src_c, dst_c, source, out_shape in (forward, back):
        offset = src_c - matrix @ dst_c
        for order in (0, 1):
            for fill in (0.25, np.nan):
                expected = ndimage.affine_transform(source, matrix, offset, output_shape=out_shape, order=order,
                                                    mode="constant", cval=fill)
                got = affine_resample(source, matrix, offset, out_shape, order, fill, threads=2, strip_rows=37)
                assert got.dtype == expected.dtype and got.shape == tuple(out_shape)
                np.testing.assert_array_equal(got, expected)  # NaN where NaN
    expected = ndimage.affine_transform(image, forward[0], forward[1] - forward[0] @ forward[2],
                                        output_shape=frame.canonical_shape, order=1, mode="constant", cval=0.5)
    if dtype == np.float32:
        np.testing.assert_array_equal(frame.array_to_canonical(image, fill=0.5), expected)
