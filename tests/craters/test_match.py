"""Crater matching: circle IoU against Monte Carlo, the duplicate rule, one-to-one scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import qmc

from planetcd.craters.match import (
    circle_intersection_area,
    circle_iou,
    match_craters,
    pool_results,
    same_crater,
    sqrt2_bin_edges,
    suppress_duplicates,
    suppress_nested,
)
from planetcd.datasets.crater_labels import read_pycda_csv


def _monte_carlo_iou(d: float, r1: float, r2: float, n_log2: int = 20, seed: int = 0) -> float:
    """IoU of two discs from scrambled Sobol points over the bounding box of their union."""
    x0, x1 = min(-r1, d - r2), max(r1, d + r2)
    y0, y1 = -max(r1, r2), max(r1, r2)
    points = qmc.Sobol(2, seed=seed).random_base2(n_log2)
    x = x0 + (x1 - x0) * points[:, 0]
    y = y0 + (y1 - y0) * points[:, 1]
    in1 = x**2 + y**2 <= r1**2
    in2 = (x - d) ** 2 + y**2 <= r2**2
    return np.count_nonzero(in1 & in2) / np.count_nonzero(in1 | in2)


def test_circle_iou_matches_monte_carlo_over_random_pairs():
    rng = np.random.default_rng(7)
    r1 = rng.uniform(0.5, 5.0, 24)
    r2 = rng.uniform(0.5, 5.0, 24)
    d = rng.uniform(0.0, 1.0, 24) * (r1 + r2) * 1.1  # some disjoint
    # Explicit containment, concentric, tangent-inside and disjoint cases.
    d = np.concatenate([d, [0.5, 0.0, 1.0, 7.0, 3.0]])
    r1 = np.concatenate([r1, [3.0, 2.0, 3.0, 2.0, 1.0]])
    r2 = np.concatenate([r2, [1.0, 2.0, 2.0, 3.0, 2.0]])
    exact = circle_iou(d, r1, r2)
    kinds = set()
    for k in range(len(d)):
        estimate = _monte_carlo_iou(d[k], r1[k], r2[k], seed=k)
        assert exact[k] == pytest.approx(estimate, abs=1e-3), (d[k], r1[k], r2[k])
        kinds.add("disjoint" if d[k] >= r1[k] + r2[k] else "contained" if d[k] <= abs(r1[k] - r2[k]) else "lens")
    assert kinds == {"disjoint", "contained", "lens"}


def test_circle_area_limits_and_symmetry():
    assert circle_intersection_area(0.0, 2.0, 1.0) == pytest.approx(np.pi)
    assert circle_intersection_area(3.0, 1.0, 2.0) == 0.0
    assert circle_iou(0.0, 2.0, 2.0) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    d, a, b = rng.uniform(0, 4, (3, 100))
    np.testing.assert_allclose(circle_iou(d, a + 0.1, b + 0.1), circle_iou(d, b + 0.1, a + 0.1))
    # Two equal unit discs at distance 1: the lens is 2π/3 - √3/2.
    assert circle_intersection_area(1.0, 1.0, 1.0) == pytest.approx(2 * np.pi / 3 - np.sqrt(3) / 2)


def test_same_crater_rule_thresholds():
    r = np.array([10.0])
    # deepmoon: d²/r² < 1.8 and |Δr|/r < 1
    assert same_crater(np.sqrt(1.79) * 10, r, r, "deepmoon")[0]
    assert not same_crater(np.sqrt(1.81) * 10, r, r, "deepmoon")[0]
    assert same_crater(0.0, 10.0, 19.9, "deepmoon")
    assert not same_crater(0.0, 10.0, 20.1, "deepmoon")
    assert same_crater(0.0, 10.0, 12.4, "strict") and not same_crater(0.0, 10.0, 12.6, "strict")
    assert same_crater(np.sqrt(0.49) * 10, 10.0, 10.0, "strict") and not same_crater(np.sqrt(0.51) * 10, 10.0, 10.0, "strict")
    with pytest.raises(ValueError):
        same_crater(1.0, 1.0, 1.0, "nonsense")


def _isolated(craters: np.ndarray, factor: float = 3.0) -> np.ndarray:
    d = np.hypot(craters[:, None, 0] - craters[None, :, 0], craters[:, None, 1] - craters[None, :, 1])
    gap = d - factor * (craters[:, None, 2] + craters[None, :, 2])
    np.fill_diagonal(gap, np.inf)
    return np.all(gap > 0, axis=1)


@pytest.fixture(scope="module")
def hrsc_labels(shared_dir):
    return read_pycda_csv(shared_dir / "data" / "hrsc-pycda" / "holdout_tile_labels.csv")


@pytest.mark.parametrize("mode", ["deepmoon", "strict", "iou"])
def test_labels_against_themselves_are_perfect(hrsc_labels, mode):
    result = match_craters(hrsc_labels, hrsc_labels, mode)
    assert result.precision == 1.0 and result.recall == 1.0 and result.tp == len(hrsc_labels)
    np.testing.assert_array_equal(result.pairs[:, 0], result.pairs[:, 1])
    assert result.position_error["median"] == 0.0


def test_jittered_labels_give_expected_counts(hrsc_labels):
    rng = np.random.default_rng(3)
    truth = hrsc_labels
    isolated = np.flatnonzero(_isolated(truth))
    assert len(isolated) >= 40
    groups = np.array_split(rng.permutation(isolated), 4)
    a, b, c, far = groups
    detected = truth.copy()
    angle = rng.uniform(0, 2 * np.pi, len(truth))
    shift = np.zeros(len(truth))
    shift[a], shift[b], shift[far] = 0.4, 1.0, 2.5  # in radii
    detected[:, 0] += shift * truth[:, 2] * np.cos(angle)
    detected[:, 1] += shift * truth[:, 2] * np.sin(angle)
    detected[c, 2] *= 1.3
    n = len(truth)
    # a: 0.16 / IoU 0.59 -> all modes; b: d²/r² = 1 -> deepmoon only; c: Δr/r = 0.3, IoU 0.59
    # -> deepmoon and iou; far: no mode.
    expected = {
        "deepmoon": n - len(far),
        "strict": n - len(b) - len(c) - len(far),
        "iou": n - len(b) - len(far),
    }
    for mode, tp in expected.items():
        result = match_craters(detected, truth, mode)
        assert result.tp == tp, mode
        assert result.fp == n - tp and result.fn == n - tp
        assert result.recall == pytest.approx(tp / n)
    strict = match_craters(detected, truth, "strict")
    # Diameter errors of matched pairs in strict mode are all zero (group c is unmatched).
    assert strict.diameter_error_rel["median"] == 0.0 and strict.diameter_error_rel["iqr"] == 0.0


def test_one_to_one_prefers_the_better_partner():
    truth = np.array([[0.0, 0.0, 10.0], [12.0, 0.0, 10.0]])
    detected = np.array([[11.0, 0.0, 10.0], [1.0, 0.0, 10.0], [100.0, 100.0, 5.0]])
    result = match_craters(detected, truth, "deepmoon")
    assert sorted(map(tuple, result.pairs)) == [(0, 1), (1, 0)]
    assert (result.tp, result.fp, result.fn) == (2, 1, 0)
    assert result.precision == pytest.approx(2 / 3) and result.f1 == pytest.approx(0.8)


def test_min_diameter_cut_and_bins():
    truth = np.array([[0.0, 0.0, 1.0], [50.0, 0.0, 10.0], [100.0, 0.0, 20.0]])
    detected = np.array([[200.0, 0.0, 1.0], [50.0, 0.0, 10.0]])
    full = match_craters(detected, truth)
    assert (full.tp, full.fp, full.fn) == (1, 1, 2)
    cut = match_craters(detected, truth, min_diameter_px=5.0)
    assert (cut.tp, cut.fp, cut.fn) == (1, 0, 1)
    assert sum(b["n_truth"] for b in cut.bins) == 2
    edges = sqrt2_bin_edges(np.array([3.0, 40.0]))
    assert edges[0] <= 3.0 < edges[1] and edges[-2] <= 40.0 < edges[-1]
    np.testing.assert_allclose(edges[1:] / edges[:-1], np.sqrt(2))


def test_pool_sums_counts():
    truth = np.array([[0.0, 0.0, 5.0], [30.0, 0.0, 5.0]])
    r1 = match_craters(truth[:1], truth, name="a")
    r2 = match_craters(truth, truth, name="b")
    pooled = pool_results([r1, r2])
    assert (pooled.tp, pooled.fp, pooled.fn) == (3, 0, 1)
    assert pooled.recall == pytest.approx(0.75)
    assert set(pooled.to_dict()) >= {"precision", "recall", "f1", "bins", "position_error"}


def test_suppress_duplicates_keeps_highest_confidence():
    craters = np.array([[0, 0, 10, 0.5], [2, 0, 11, 0.9], [40, 0, 10, 0.1], [0, 0, 3, 0.3]], float)
    kept = suppress_duplicates(craters)
    # [0] and [1] are the same crater (keep 0.9); [3] is nested: |Δr|/min r = 2.3 -> distinct.
    np.testing.assert_array_equal(kept, [1, 2, 3])
    assert suppress_duplicates(np.zeros((0, 4))).size == 0


def test_suppress_nested_drops_discs_inside_a_much_larger_crater():
    craters = np.array([
        [100, 100, 40, 0.9],  # a large crater
        [110, 95, 8, 0.95],   # a fragment of its floor: wholly inside, a fifth of its radius
        [130, 100, 15, 0.6],  # crosses the rim (30 + 15 > 40): kept
        [90, 100, 25, 0.5],   # inside but not twice smaller (25 * 2 > 40): kept
        [300, 300, 5, 0.5],   # elsewhere
        [92, 104, 4, 0.4],    # inside crater 3, which is kept, and inside crater 0: dropped
    ], float)
    np.testing.assert_array_equal(suppress_nested(craters), [0, 2, 3, 4])
    # a larger ratio keeps the 8 px fragment (40 < 8 * 6) but still drops the 4 px one (4 * 6 <= 40)
    np.testing.assert_array_equal(suppress_nested(craters, radius_ratio=6.0), [0, 1, 2, 3, 4])
    assert suppress_nested(np.zeros((0, 4))).size == 0
    np.testing.assert_array_equal(suppress_nested(craters[:1]), [0])
    with pytest.raises(ValueError, match="radius_ratio"):
        suppress_nested(craters, radius_ratio=1.0)


def test_matching_space_and_match_catalogs():
    from planetcd.craters.catalog import Catalog
    from planetcd.craters.match import match_catalogs, matching_space
    from planetcd.errors import InputError

    pixels = np.array([[10.0, 20.0, 5.0, 1.0], [60.0, 40.0, 8.0, 1.0]])
    px_only = Catalog.from_pixels(pixels)
    geo = Catalog.from_pixels(pixels, pixel_size_m=100.0)  # pixel positions and diameters in km, no lon/lat
    lonlat = Catalog.from_lonlat(np.array([10.0, 10.1]), np.array([5.0, 5.1]), np.array([1.0, 2.0]), 3_389_500.0)
    assert matching_space(px_only, px_only) == "pixels"
    assert matching_space(lonlat, lonlat) == "geographic"  # no pixel positions: the only space possible
    assert matching_space(geo, geo, "auto", "deepmoon") == "pixels"
    with pytest.raises(InputError, match="geographic matching needs"):
        matching_space(px_only, px_only, "geographic")
    with pytest.raises(InputError, match="pixel matching needs"):
        matching_space(lonlat, px_only, "pixels")
    with pytest.raises(InputError, match="unknown matching space"):
        matching_space(px_only, px_only, "sky")
    result, used = match_catalogs(px_only, px_only, "deepmoon")
    assert used == "pixels" and (result.tp, result.fp, result.fn) == (2, 0, 0)
    result, used = match_catalogs(lonlat, lonlat, "strict")
    assert used == "geographic" and result.unit == "km" and result.tp == 2


# ----------------------------------------------------------------------------- science sweep


def test_catalogs_on_two_bodies_are_refused_and_an_assumed_body_follows_the_other(tmp_path):
    from planetcd.craters.catalog import BODY_RADII_M, Catalog, read_catalog
    from planetcd.craters.match import match_catalogs
    from planetcd.errors import InputError

    rng = np.random.default_rng(3)
    lon, lat, diameter = rng.uniform(-180, 180, 200), rng.uniform(-60, 60, 200), rng.uniform(1, 20, 200)
    mars = Catalog.from_lonlat(lon, lat, diameter, BODY_RADII_M["mars"])
    moon = Catalog.from_lonlat(lon, lat, diameter, BODY_RADII_M["moon"])
    with pytest.raises(InputError, match="different bodies"):
        match_craters(mars, moon)
    # The same craters in a plain CSV that names no body, longitudes 0-360: it used to be matched
    # on the Moon against the Mars list and gave 0 matches.
    path = tmp_path / "plain.csv"
    path.write_text("lon,lat,diameter\n" + "".join(f"{a % 360:.9f},{b:.9f},{c:.9f}\n" for a, b, c in zip(lon, lat, diameter)))
    plain = read_catalog(path)
    assert plain.body_assumed
    for det, truth in ((plain, mars), (mars, plain)):
        result, space = match_catalogs(det, truth, "strict")
        assert space == "geographic" and result.tp == 200 and result.position_error["median"] < 1e-3


def test_geographic_matching_across_the_antimeridian_and_near_a_pole():
    from planetcd.craters.catalog import BODY_RADII_M, Catalog

    # 2 km craters 0.5 km apart: across lon +-180, and at 89.9 N where 0.5 km spans ~0.1 degrees
    # of longitude per 0.0084 degrees of latitude.
    r_km = BODY_RADII_M["mars"] / 1000
    step = np.rad2deg(0.5 / r_km)
    near_pole = step / np.cos(np.deg2rad(89.9))
    truth = Catalog.from_lonlat([179.999, 0.0], [0.0, 89.9], [2.0, 2.0], BODY_RADII_M["mars"])
    det = Catalog.from_lonlat([179.999 + step - 360.0, near_pole], [0.0, 89.9], [2.0, 2.0], BODY_RADII_M["mars"])
    result = match_craters(det, truth, "strict")
    assert result.tp == 2
    np.testing.assert_allclose(np.sort(result._distance), [0.5, 0.5], rtol=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_grouped_assignment_equals_one_global_assignment(seed):
    # _one_to_one solves single pairs and stars (one crater on a side) without the solver; the
    # matches must still be as many, and as cheap in total, as one global Hungarian assignment.
    from scipy.optimize import linear_sum_assignment

    from planetcd.craters.match import _one_to_one

    rng = np.random.default_rng(seed)
    n_a, n_b, k = 60, 50, 90
    i, j = rng.integers(0, n_a, k), rng.integers(0, n_b, k)
    i, j = np.unique(np.stack([i, j], axis=1), axis=0).T
    cost = rng.uniform(0, 2, len(i))
    pairs = _one_to_one(i, j, cost, n_a, n_b)
    assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))
    lookup = {(a, b): c for a, b, c in zip(i, j, cost)}
    big = 1e3
    matrix = np.full((n_a, n_b), big)
    matrix[i, j] = cost
    r, c = linear_sum_assignment(matrix)
    ok = matrix[r, c] < big
    assert len(pairs) == ok.sum()
    assert sum(lookup[(a, b)] for a, b in pairs) == pytest.approx(matrix[r[ok], c[ok]].sum())
