"""Extraction: probability maps of known circles back to craters, in pixels, projected and geographic."""

from __future__ import annotations

import numpy as np
import pytest

from planetcd.craters.catalog import Catalog
from planetcd.craters.extract import (
    crater_template,
    disc_contrast,
    extract_craters,
    extraction_options,
    ring_mean,
    synthetic_probability_map,
)
from planetcd.craters.match import match_craters
from planetcd.datasets.synthetic import MARS_EQC_WKT, MOON_EQC_WKT, write_synthetic_geotiff
from planetcd.raster import open_raster, read_window

# (target, method, binarisation threshold); rings are thin, so their map is binarised lower (as DeepMoon).
CASES = [
    ("filled", "components", 0.5),
    ("filled", "template", 0.5),
    ("outline", "components", 0.5),
    ("outline", "template", 0.5),
    ("rings", "components", 0.2),
    ("rings", "template", 0.2),
]


@pytest.fixture(scope="module")
def maps():
    return {target: synthetic_probability_map((384, 384), 30, target=target, seed=5) for target in ("filled", "outline", "rings")}


@pytest.mark.parametrize("target, method, threshold", CASES)
def test_recovers_known_circles_in_pixels(maps, target, method, threshold):
    prob, truth = maps[target]
    craters = extract_craters(prob, method=method, target=target, threshold=threshold, min_radius=3, max_radius=35)
    assert craters.shape[1] == 4 and craters.dtype == np.float64
    assert np.all((craters[:, 3] >= 0) & (craters[:, 3] <= 1))
    result = match_craters(craters, truth, "deepmoon")
    assert result.f1 >= 0.95, (target, method, result.tp, result.fp, result.fn)
    # Positions within a pixel or so; radii within 10 % (median).
    assert result.position_error["median"] < 1.0
    assert abs(result.diameter_error_rel["median"]) < 0.1


def test_synthetic_maps_include_touching_and_nested_craters(maps):
    for target in ("outline", "filled"):
        _, truth = maps[target]
        d = np.hypot(truth[:, None, 0] - truth[None, :, 0], truth[:, None, 1] - truth[None, :, 1])
        sums = truth[:, None, 2] + truth[None, :, 2]
        np.fill_diagonal(d, np.inf)
        assert np.any(np.abs(d - sums) < 0.5), "no touching pair"
        if target == "outline":
            assert np.any(d + truth[:, None, 2] < truth[None, :, 2]), "no nested pair"


def test_touching_and_nested_are_both_found(maps):
    prob, truth = maps["outline"]
    craters = extract_craters(prob, method="components", target="outline")
    result = match_craters(craters, truth)
    d = np.hypot(truth[:, None, 0] - truth[None, :, 0], truth[:, None, 1] - truth[None, :, 1])
    np.fill_diagonal(d, np.inf)
    nested = np.flatnonzero(np.any(d + truth[:, None, 2] < truth[None, :, 2], axis=1))
    matched_truth = set(result.pairs[:, 1].tolist())
    assert nested.size and set(nested.tolist()) <= matched_truth


@pytest.mark.parametrize(
    "setting, crs, pixel_size, origin",
    [
        ("projected", MARS_EQC_WKT, 20.0, (2_000_000.0, 600_000.0)),
        ("projected-moon", MOON_EQC_WKT, 10.0, (-500_000.0, -300_000.0)),
        ("geographic", "IAU_2015:49900", 0.0005, (40.0, -20.0)),
    ],
    ids=["mars-eqc", "moon-eqc", "mars-geographic"],
)
def test_recovers_known_circles_on_georeferenced_maps(tmp_path, maps, setting, crs, pixel_size, origin):
    prob, truth = maps["outline"]
    path = write_synthetic_geotiff(tmp_path / f"{setting}.tif", prob, crs=crs, pixel_size=pixel_size, origin=origin, dtype="float32")
    with open_raster(path) as ds:
        data, _ = read_window(ds)
        transform, raster_crs = ds.transform, ds.crs
    craters = extract_craters(data[0], method="components", target="outline")
    detected = Catalog.from_pixels(craters, transform, raster_crs)
    expected = Catalog.from_pixels(truth, transform, raster_crs)
    assert detected.lon_deg is not None and expected.diameter_km is not None
    # Geodesic matching on the body (km), in both distance rules.
    for mode in ("deepmoon", "iou"):
        result = match_craters(detected, expected, mode)
        assert result.unit == "km" and result.f1 >= 0.95, (setting, mode, result.tp, result.fp, result.fn)
    # The derived ground size agrees with pixel size x radius near the origin.
    if setting.startswith("projected"):
        lat = np.deg2rad(expected.lat_deg)
        ground = 2 * truth[:, 2] * pixel_size / 1000.0 * (1 + np.cos(lat)) / 2  # mean of E-W and N-S extents
        np.testing.assert_allclose(expected.diameter_km, ground, rtol=1e-3)


def test_templates_and_edge_cases():
    disc = crater_template(5, "filled")
    ring = crater_template(5, "outline")
    assert disc.shape == ring.shape and disc.shape[0] % 2 == 1
    assert disc.sum() > ring.sum() > 0 and disc[disc.shape[0] // 2, disc.shape[1] // 2] == 1
    assert ring[ring.shape[0] // 2, ring.shape[1] // 2] == 0
    empty = np.zeros((64, 64), np.float32)
    for method in ("components", "template"):
        assert extract_craters(empty, method=method).shape == (0, 4)
    with pytest.raises(ValueError):
        extract_craters(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        extract_craters(empty, method="hough")
    with pytest.raises(ValueError):
        extract_craters(empty, min_radius=5, max_radius=2)


def test_ring_mean_and_disc_contrast_on_known_discs():
    image = np.zeros((80, 80), np.float32)
    yy, xx = np.mgrid[:80, :80]
    image[np.hypot(yy - 20, xx - 20) <= 6] = 1.0  # an isolated disc
    image[40:80, 40:80] = 0.8  # a wide plateau
    craters = np.array([[20.0, 20.0, 6.0], [60.0, 60.0, 6.0], [200.0, 200.0, 3.0]])
    np.testing.assert_allclose(ring_mean(image, craters[:2], 0.0, 1.0), [1.0, 0.8], rtol=1e-6)
    np.testing.assert_allclose(ring_mean(image, craters[:2], 1.0, 1.5), [0.0, 0.8], atol=0.03)
    assert np.isnan(ring_mean(image, craters)[2])
    assert ring_mean(image, np.zeros((0, 3))).shape == (0,)
    contrast = disc_contrast(image, craters)
    assert contrast[0] > 0.95 and abs(contrast[1]) < 0.01 and contrast[2] == 0.0


def test_min_contrast_drops_blobs_cut_from_a_plateau():
    prob = np.zeros((128, 128), np.float32)
    yy, xx = np.mgrid[:128, :128]
    prob[np.hypot(yy - 30, xx - 30) <= 7] = 0.9  # a crater
    prob[64:, :] = 0.55  # a rough-terrain plateau ...
    prob[np.hypot(yy - 100, xx - 64) <= 7] = 0.7  # ... with a blob above the threshold
    kept = extract_craters(prob, threshold=0.6, min_radius=3)
    assert len(kept) == 2
    screened = extract_craters(prob, threshold=0.6, min_radius=3, min_contrast=0.3)
    assert len(screened) == 1 and np.allclose(screened[0, :2], [30, 30], atol=0.5)
    # a perfect isolated disc keeps its contrast whatever the cut-off below 1
    assert len(extract_craters(prob, threshold=0.6, min_radius=3, min_contrast=0.8)) == 1
    with pytest.raises(ValueError, match="filled"):
        extract_craters(prob, target="outline", min_contrast=0.2)


def test_extraction_options_follow_the_registry_entry():
    meta = {"threshold": 0.65, "target": "filled",
            "extraction": {"method": "components", "min_radius": 3.0, "max_radius": 150.0, "min_contrast": 0.25}}
    options = extraction_options(meta)
    assert options == {"method": "components", "threshold": 0.65, "target": "filled", "min_radius": 3.0,
                       "max_radius": 150.0, "min_contrast": 0.25}
    assert extraction_options(meta, threshold=0.5)["threshold"] == 0.5
    assert "min_contrast" not in extraction_options({"extraction": {}})


def _whole(labels):
    """A map of labels as one piece of _split_components' (its box the whole map)."""
    return (slice(0, labels.shape[0]), slice(0, labels.shape[1])), labels


def test_region_statistics_are_ndimage_s():
    """_piece_regions' one-pass sums give ndimage's areas, centroids and mean probabilities, labels with gaps
    included (the whole map as one piece)."""
    from scipy import ndimage

    from planetcd.craters.extract import _piece_regions

    prob, _ = synthetic_probability_map((300, 260), n_craters=30, seed=4)
    labels, n = ndimage.label(prob >= 0.5)
    labels[labels == 3] = 0  # an empty label: no row for it
    index = np.arange(1, n + 1)
    ones = np.ones(labels.shape)
    areas = ndimage.sum_labels(ones, labels, index)
    centroids = np.asarray(ndimage.center_of_mass(ones, labels, index)).reshape(-1, 2)
    keep = areas > 0
    expected = np.column_stack([centroids[keep, 1], centroids[keep, 0], np.sqrt(areas[keep] / np.pi),
                                ndimage.mean(prob, labels, index)[keep]])
    got = _piece_regions([_whole(labels)], prob)
    assert n > 20 and got.shape == (n - 1, 4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("min_distance", [1, 2, 4])
def test_component_distances_and_peaks_are_the_whole_map_s(seed, min_distance):
    """Per-component crops give the whole map's distance transform and peak_local_max peaks, in the same order."""
    from scipy import ndimage
    from skimage.feature import peak_local_max

    from planetcd.craters.extract import _component_distances_and_peaks

    prob, _ = synthetic_probability_map((240, 200), n_craters=35, seed=seed)
    binary = ndimage.binary_fill_holes(prob >= 0.4)
    binary[0, :40] = True  # components on the map's edges
    binary[100:130, -1] = True
    components, n = ndimage.label(binary)
    distances, peaks = _component_distances_and_peaks(binary, components, min_distance)
    expected = ndimage.distance_transform_edt(binary)
    assert n > 20 and sorted(distances) == list(range(1, n + 1))
    for k, (crop, values) in distances.items():
        inside = components[crop] == k
        assert inside.any() and np.array_equal(values[inside], expected[crop][inside])
    whole = peak_local_max(expected, min_distance=min_distance, labels=components, exclude_border=False)
    assert np.array_equal(peaks, whole)
    # some components only (as _filled_components asks for the big ones): theirs, the others 0 and no peak
    some = np.arange(2, n + 1, 3)
    distances, peaks = _component_distances_and_peaks(binary, components, min_distance,
                                                      ndimage.find_objects(components), some)
    assert sorted(distances) == some.tolist()
    assert np.array_equal(peaks, whole[np.isin(components[whole[:, 0], whole[:, 1]], some)])


def _assembled(pieces, shape):
    """The whole map of labels that _split_components' pieces make up."""
    labels = np.zeros(shape, np.int32)
    for box, piece in pieces:
        assert not labels[box][piece > 0].any()  # no pixel in two pieces
        labels[box] += piece
    return labels


@pytest.mark.parametrize("seed", [0, 5])
def test_split_components_floods_each_component_as_the_whole_map_does(seed):
    """Each component flooded alone: a one-marker component is that marker's basin; a basin never leaves its
    component, holds its marker and is connected; and the basins are the whole map's flood but for the pixels
    two basins reach at the same step (the flood's heap breaks those ties by its own order)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from planetcd.craters.extract import _split_components

    prob, _ = synthetic_probability_map((240, 200), n_craters=80, seed=seed)  # crowded: craters that touch
    binary = ndimage.binary_fill_holes(prob >= 0.2)
    components, n = ndimage.label(binary)
    distance = ndimage.distance_transform_edt(binary)
    peaks = peak_local_max(distance, min_distance=2, labels=components, exclude_border=False)
    markers = np.zeros(binary.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
    # the distance on each component's box, and wrong values off the component (which must not be read)
    distances = {k: (box, np.where(components[box] == k, distance[box], 99.0))
                 for k, box in enumerate(ndimage.find_objects(components), start=1)}
    pieces = _split_components(components, peaks, distances)
    labels = _assembled(pieces, binary.shape)
    whole = watershed(-distance, markers, mask=binary)
    assert np.array_equal(labels > 0, binary)
    counts = ndimage.sum_labels(markers > 0, components, np.arange(1, n + 1))
    assert (counts == 1).sum() > 20 and (counts > 1).sum() >= 4  # both kinds of component
    for k in np.flatnonzero(counts == 1) + 1:
        inside = components == k
        assert np.unique(labels[inside]).tolist() == [markers[inside].max()]
    for marker_id in range(1, len(peaks) + 1):
        basin = labels == marker_id
        row, col = peaks[marker_id - 1]
        assert basin[row, col] and ndimage.label(basin)[1] == 1
        assert np.unique(components[basin]).size == 1
    assert (labels != whole).sum() <= 0.01 * binary.sum()
    # a component without a seed is 0; the others keep their basins (the seeds' labels: their order)
    bare = components[peaks[0, 0], peaks[0, 1]]
    rest = components[peaks[:, 0], peaks[:, 1]] != bare
    fewer = _assembled(_split_components(components, peaks[rest], distances), binary.shape)
    assert not fewer[components == bare].any()
    relabelled = np.zeros(len(peaks) + 1, np.int32)
    relabelled[1:][rest] = np.arange(1, rest.sum() + 1)
    assert np.array_equal(fewer, relabelled[labels])
    # the regions of the pieces are those of the whole map of labels, bit for bit and in label order
    from planetcd.craters.extract import _piece_regions

    for some, shown in ((pieces, labels), (_split_components(components, peaks[rest], distances), fewer)):
        expected = _piece_regions([_whole(shown)], prob)
        assert len(expected) > 20 and np.array_equal(_piece_regions(some, prob), expected)


@pytest.mark.parametrize("seed", [0, 3])
def test_fill_holes_is_ndimage_s(seed):
    """Background that reaches the map's edge through its 4 neighbours stays; every other gap is filled."""
    from scipy import ndimage

    from planetcd.craters.extract import _fill_holes

    rng = np.random.default_rng(seed)
    binary = ndimage.binary_opening(rng.random((180, 150)) < 0.55)
    binary[40:60, 40:60] = True
    binary[45:55, 45:55] = False  # a hole
    binary[50, 45:61] = False  # ... and a channel from it to the outside of the square
    binary[0, :] = binary[:, -1] = True  # objects on the edges
    filled = _fill_holes(binary)
    expected = ndimage.binary_fill_holes(binary)
    assert expected.sum() > binary.sum() and np.array_equal(filled, expected)
    assert np.array_equal(_fill_holes(np.ones((5, 4), bool)), np.ones((5, 4), bool))
    assert not _fill_holes(np.zeros((5, 4), bool)).any()


def _filled_components_unscreened(binary, prob, min_radius):
    """The components path as it was before small components were dropped: every component split and measured."""
    from scipy import ndimage

    from planetcd.craters.extract import (_component_distances_and_peaks, _fill_holes, _piece_regions,
                                          _split_components)

    binary = _fill_holes(binary)
    components, n = ndimage.label(binary)
    distances, peaks = _component_distances_and_peaks(binary, components, max(1, int(round(min_radius))))
    distance = np.zeros(binary.shape)
    for k, (crop, values) in distances.items():
        inside = components[crop] == k
        distance[crop][inside] = values[inside]
    unmarked = np.setdiff1d(np.arange(1, n + 1), components[peaks[:, 0], peaks[:, 1]])
    seeds = np.asarray(ndimage.maximum_position(distance, components, unmarked), dtype=int).reshape(-1, 2)
    pieces = _split_components(components, np.concatenate([peaks, seeds]), distances)
    return _piece_regions([_whole(_assembled(pieces, binary.shape))], prob)


@pytest.mark.parametrize("seed", [1, 6])
def test_small_components_dropped_before_the_split_give_the_same_craters(seed, monkeypatch):
    """Components too small for a crater of min_radius are dropped before the distance transform and the split:
    after the radius filter, the same rows in the same order as splitting every component (a noisy map at a low
    threshold, most of whose components are specks; a min_radius equal to some component's radius keeps it),
    and extract_craters lists the same craters."""
    from scipy import ndimage

    from planetcd.craters import extract
    from planetcd.craters.extract import _fill_holes, _filled_components

    prob, _ = synthetic_probability_map((260, 230), n_craters=70, radius_range=(2.0, 14.0), noise_std=0.2,
                                        seed=seed)
    binary = prob >= 0.3
    components, n = ndimage.label(_fill_holes(binary))
    radii = np.sqrt(np.bincount(components.ravel())[1:].astype(np.float64) / np.pi)
    exact = float(radii[(radii > 2.0) & (radii < 4.0)][0])  # a radius some component has exactly
    options = dict(threshold=0.3, max_radius=20.0, min_contrast=0.1)
    found = {}
    for min_radius in (1.0, 2.5, exact, 3.0, 4.4):
        assert 0 < (radii < min_radius).sum() < n
        got = _filled_components(binary, prob, min_radius)
        expected = _filled_components_unscreened(binary, prob, min_radius)
        assert len(expected) > len(got)
        expected = expected[expected[:, 2] >= min_radius]
        assert len(expected) > 5 and np.array_equal(got[got[:, 2] >= min_radius], expected)
        found[min_radius] = extract_craters(prob, min_radius=min_radius, **options)
    monkeypatch.setattr(extract, "_filled_components", _filled_components_unscreened)
    for min_radius, craters in found.items():
        assert np.array_equal(craters, extract_craters(prob, min_radius=min_radius, **options))
    assert n > 100 and len(found[exact]) > 5
