"""End-to-end change detection on generated georeferenced pairs and on a real CTX tile."""

import json
import pickle

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from planetcd.change.detect import detect
from planetcd.errors import InputError
from planetcd.datasets.synthetic import MARS_EQC_WKT, make_change_pair, write_synthetic_geotiff

PATCH = 100


def _patch_of(table, row, col):
    hit = (table["row_off"] <= row) & (table["row_off"] + table["height"] > row) & \
          (table["col_off"] <= col) & (table["col_off"] + table["width"] > col)
    return int(np.flatnonzero(hit)[0])


@pytest.fixture(scope="module")
def planted_pair(tmp_path_factory):
    """A Mars equirectangular pair; post displaced by (3.6, -7.3) px with a new crater in patch (200, 300)."""
    folder = tmp_path_factory.mktemp("pair")
    pair = make_change_pair((500, 600), seed=12, displacement=(3.6, -7.3), new_craters=[[250, 350, 22.0]],
                            crater_density=2e-4, halo="dark", halo_strength=0.8)
    pre = write_synthetic_geotiff(folder / "pre.tif", pair.pre)
    post = write_synthetic_geotiff(folder / "post.tif", pair.post)
    return pre, post, pair


def test_planted_change_ranks_first_and_shift_is_recovered(planted_pair, trunk, tmp_path):
    pre, post, pair = planted_pair
    result = detect(pre, post, trunk=trunk, n_pseudo=40, seed=1)
    table = result.candidates()
    assert (table["row_off"][0], table["col_off"][0]) == (200, 300)
    np.testing.assert_allclose(result.displacement, pair.displacement, atol=0.5)
    assert table["ratio"][0] == pytest.approx(table["score"][0] / result.tau)

    written = result.write(tmp_path / "out")
    assert {p.name for p in written} >= {"change_score.tif", "change_mask.tif", "candidates.csv",
                                         "candidates.gpkg", "quicklook.png", "run.json"}
    with rasterio.open(pre) as src, rasterio.open(tmp_path / "out" / "change_score.tif") as score, \
            rasterio.open(tmp_path / "out" / "change_mask.tif") as mask:
        assert score.crs == src.crs == rasterio.crs.CRS.from_wkt(MARS_EQC_WKT)
        assert score.transform == src.transform and mask.transform == src.transform
        assert score.shape == src.shape
        values = score.read(1)
        assert values[250, 350] == pytest.approx(table["score"][0])
        assert values.max() == pytest.approx(table["score"][0])
        assert set(np.unique(mask.read(1))) <= {0, 1}
        # the centre of patch (200, 300) is the corner of pixel (250, 350), in map coordinates
        x, y = src.transform.c + 350 * src.res[0], src.transform.f - 250 * src.res[1]
    assert table["x"][0] == pytest.approx(x) and table["y"][0] == pytest.approx(y)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["tau"] == pytest.approx(result.tau)
    assert run["displacement_px"]["dy"] == pytest.approx(result.displacement[0])
    assert run["parameters"]["layer"] == 6 and "features" in run["timings_s"]
    # a non-finite number in the record (here a threshold) is written as null: standard JSON (jq, JSON.parse)
    result.thresholds["empirical"] = float("nan")
    result.write(tmp_path / "nan", quicklook=False)

    def no_constants(name):
        raise ValueError(f"{name} is not standard JSON")

    assert json.loads((tmp_path / "nan" / "run.json").read_text(), parse_constant=no_constants)[
        "thresholds"]["empirical"] is None
    header = (tmp_path / "out" / "candidates.csv").read_text().splitlines()[0]
    assert header == "rank,row_off,col_off,height,width,x,y,score,ratio,changed"

    import pyogrio

    info = pyogrio.read_info(tmp_path / "out" / "candidates.gpkg")
    assert info["features"] == len(table["rank"]) and info["geometry_type"] == "Polygon"
    assert rasterio.crs.CRS.from_wkt(info["crs"]) == src.crs

    with pytest.raises(Exception, match="overwrite=True"):
        result.write(tmp_path / "out")


def test_unchanged_pairs_with_noise_and_shifts_stay_under_tau(trunk):
    flagged = []
    for seed, displacement in enumerate([(9.6, -4.2), (-2.5, 10.0)]):
        pair = make_change_pair((400, 500), seed=20 + seed, displacement=displacement, new_craters=np.empty((0, 3)),
                                noise_std=0.015)
        result = detect(pair.pre, pair.post, trunk=trunk, seed=seed, n_pseudo=60)
        flagged.append(result.changed.mean())
    assert np.mean(flagged) <= 0.1


def test_unregistered_pairs_still_mostly_under_tau_without_registration(trunk):
    """The pseudo pairs model up to 10 px of misregistration, so even unregistered pairs are mostly unchanged."""
    pair = make_change_pair((400, 400), seed=5, displacement=(3.0, -4.0), new_craters=np.empty((0, 3)))
    result = detect(pair.pre, pair.post, trunk=trunk, register=False, seed=0, n_pseudo=60)
    assert result.displacement == (0.0, 0.0)
    # 4 of 16: at the image's right edge the 4 px shift leaves a disagreement in two patches' corners that nn
    # (since a corner's short lines stopped counting as background) scores as a compact peak; 2 before
    assert result.changed.mean() <= 0.25


def test_post_on_another_grid_is_resampled_to_pre(planted_pair, trunk, tmp_path):
    pre, _, pair = planted_pair
    # post written on a grid offset by 5 px east and 3 px south, and smaller
    post_big = pair.post[3:, 5:]
    post = write_synthetic_geotiff(tmp_path / "post_other_grid.tif", post_big, origin=(1_000_000.0 + 30.0, 500_000.0 - 18.0))
    result = detect(pre, post, trunk=trunk, n_pseudo=30)
    np.testing.assert_allclose(result.displacement, pair.displacement, atol=0.5)
    table = result.candidates()
    assert (table["row_off"][0], table["col_off"][0]) == (200, 300)
    assert result.shape == (500, 600)


def test_variants_arrays_and_determinism(planted_pair, trunk):
    _, _, pair = planted_pair
    a = detect(pair.pre, pair.post, trunk=trunk, n_pseudo=20, seed=4)
    b = detect(pair.pre, pair.post, trunk=trunk, n_pseudo=20, seed=4)
    assert a.tau == b.tau and np.array_equal(a.change_score, b.change_score)
    assert a.crs is None and a.transform is None
    kmeans = detect(pair.pre, pair.post, trunk=trunk, tau="kmeans", pooling="avg")
    assert np.isfinite(kmeans.tau) and kmeans.pseudo_scores is None
    assert kmeans.changed.sum() >= 1
    fixed = detect(pair.pre, pair.post, trunk=trunk, tau=0.0, stride=50)
    assert fixed.tau == 0.0 and fixed.changed.all()
    assert len(fixed.patches) == 9 * 11  # stride 50 on 500 x 600


def test_nodata_margin_is_not_change(trunk):
    pair = make_change_pair((400, 400), seed=8, displacement=(0.0, 0.0), new_craters=np.empty((0, 3)))
    post = pair.post.copy()
    post[:, :130] = np.nan  # post covers less ground: the left strip has no data
    result = detect(pair.pre, post, trunk=trunk, register=False, tau="pseudo", n_pseudo=30)
    assert np.isnan(result.change_score[result.patches[:, 1] == 0]).all()  # 70 % nodata: not scored
    partly = result.patches[:, 1] == 100  # 30 % nodata: scored, and the nodata part reads as no change
    assert np.isfinite(result.change_score[partly]).all()
    assert not result.changed[partly].any()


def test_zeros_of_a_geotiff_without_nodata_are_missing_ground(trunk, tmp_path):
    """The one missing-pixel rule: a zero fill strip (no nodata tag) is no ground, not dark terrain."""
    pair = make_change_pair((400, 400), seed=8, displacement=(0.0, 0.0), new_craters=np.empty((0, 3)))
    post = np.clip(pair.post, 1e-3, None).astype(np.float32)
    post[:, :130] = 0.0  # a map-projected footprint edge: zeros, no nodata declared
    pre = write_synthetic_geotiff(tmp_path / "pre.tif", np.clip(pair.pre, 1e-3, None).astype(np.float32), dtype="float32")
    post = write_synthetic_geotiff(tmp_path / "post.tif", post, dtype="float32")
    result = detect(pre, post, trunk=trunk, register=False, n_pseudo=30)
    left = result.patches[:, 1] == 0
    assert np.isnan(result.change_score[left]).all() and not result.changed[left].any()
    np.testing.assert_allclose(result.valid_fraction[left], 0.0)
    assert not result.changed[result.patches[:, 1] == 100].any()


class _ElsewhereRunner:
    """A runner that is not the local one (as a Dask runner): tiles go through detect_tile_task."""

    def __init__(self):
        self.calls = []

    def map(self, func, items, **shared):
        self.calls.append(func.__name__)
        assert set(shared) == {"spec", "patches", "cells"}
        pickle.loads(pickle.dumps(shared["spec"]))  # the spec travels to other processes
        return (func(item, **shared) for item in items)


def test_a_runner_elsewhere_gives_the_local_result(planted_pair, vgg_weights):
    from planetcd.features import cached_trunk

    pre, post, _ = planted_pair
    trunk = cached_trunk(6, True, vgg_weights, "cpu")
    for method in ("paper", "nn"):
        options = dict(method=method, n_pseudo=12, tile_size=256, seed=3, weights=vgg_weights, device="cpu")
        local = detect(pre, post, **options)
        runner = _ElsewhereRunner()
        remote = detect(pre, post, runner=runner, **options)
        assert runner.calls == ["detect_tile_task"]
        np.testing.assert_array_equal(remote.change_score, local.change_score)
        assert remote.tau == local.tau
        assert cached_trunk(6, True, vgg_weights, "cpu") is trunk  # one trunk for the process
    with pytest.raises(InputError, match="raster paths"):
        detect(np.ones((200, 200)), np.ones((200, 200)), runner=_ElsewhereRunner(), weights=vgg_weights)


def test_pixelwise_maps_inside_changed_patches(planted_pair, trunk, tmp_path):
    pre, post, _ = planted_pair
    result = detect(pre, post, trunk=trunk, tau=1.0e-9, pixelwise=True, n_pseudo=10)
    assert result.pixelwise is not None and len(result.pixelwise) == result.changed.sum()
    result.write(tmp_path / "pw", quicklook=False)
    with rasterio.open(tmp_path / "pw" / "change_pixelwise.tif") as src:
        magnitude = src.read(1)
    with rasterio.open(tmp_path / "pw" / "change_pixelwise_mask.tif") as src:
        mask = src.read(1)
    # the new crater (centre 250, 350) stands out of its patch's background
    assert magnitude[240:260, 340:360].mean() > np.nanmedian(magnitude[200:300, 300:400]) * 1.5
    assert mask[250, 350] == 1


def test_real_ctx_tile_with_a_pasted_real_crater_ranks_first(shared_dir, trunk, tmp_path):
    """Real CTX ground, post shifted by a few pixels with gain and noise, one real crater pasted in."""
    from planetcd.datasets.crater_labels import read_voc_boxes
    from planetcd.raster import open_raster, read_window

    data = shared_dir / "data" / "ctx-mc11e"
    with open_raster(data / "images" / "MC11E-H.png") as ds:
        tile = read_window(ds)[0][0]
    craters = read_voc_boxes(data / "annotations" / "clustered" / "MC11E-H.xml")
    donor = craters[np.argmax(craters[:, 2])]  # the largest crater of the tile
    x0, y0, radius = donor
    half = int(1.4 * radius)
    chip = tile[int(y0) - half : int(y0) + half + 1, int(x0) - half : int(x0) + half + 1]

    crop_r, crop_c, size = 1000, 200, 600  # the study area, away from the donor crater
    area = tile[crop_r : crop_r + size, crop_c : crop_c + size]
    # the target patch: the blandest interior patch of the study area
    stds = {(r, c): area[r : r + PATCH, c : c + PATCH].std() for r in range(100, 500, PATCH) for c in range(100, 500, PATCH)}
    target = min(stds, key=stds.get)
    cy, cx = crop_r + target[0] + PATCH // 2, crop_c + target[1] + PATCH // 2

    changed = tile.copy()
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    feather = np.clip((1.3 - np.hypot(yy, xx) / radius) / 0.2, 0, 1)
    region = changed[cy - half : cy + half + 1, cx - half : cx + half + 1]
    matched = chip - chip.mean() + region.mean()
    region[:] = feather * matched + (1 - feather) * region

    displacement = (2.7, -3.4)
    rng = np.random.default_rng(0)
    moved = ndimage.shift(changed[crop_r - 20 : crop_r + size + 20, crop_c - 20 : crop_c + size + 20],
                          displacement, order=3, mode="nearest")[20:-20, 20:-20]
    post = moved * 1.15 + 6 + rng.normal(0, 2.0, moved.shape)
    pre_path = write_synthetic_geotiff(tmp_path / "pre.tif", area, dtype="float32")
    post_path = write_synthetic_geotiff(tmp_path / "post.tif", post, dtype="float32")

    result = detect(pre_path, post_path, trunk=trunk, n_pseudo=40, method="paper", tau="pseudo", max_shift=10)
    table = result.candidates()
    assert (table["row_off"][0], table["col_off"][0]) == target
    np.testing.assert_allclose(result.displacement, displacement, atol=0.5)
    # the defaults (nn): the pasted crater (up to 1.4 radii of the tile's largest crater: 180 px, wider than a
    # patch) changes its patch, the four around it and reaches into the four diagonal ones. The five it
    # crosses are flagged, and every flagged patch is one it touches, ranked above all others. nn scores a
    # patch by its most prominent compact disagreement, so the patches on the crater's edge can rank above
    # the one it fills (docs/detect.md)
    nn = detect(pre_path, post_path, trunk=trunk, n_pseudo=40).candidates()
    touched = {(target[0] + dr, target[1] + dc) for dr in (-PATCH, 0, PATCH) for dc in (-PATCH, 0, PATCH)}
    crossed = {(target[0] + dr, target[1] + dc) for dr, dc in [(0, 0), (-PATCH, 0), (PATCH, 0), (0, -PATCH), (0, PATCH)]}
    ranked = list(zip(nn["row_off"].tolist(), nn["col_off"].tolist()))
    flagged = {p for p, f in zip(ranked, nn["changed"]) if f}
    assert crossed <= flagged <= touched
    assert set(ranked[: len(flagged)]) == flagged


def test_nn_method_finds_a_small_new_crater_the_paper_misses(trunk):
    """A 16 px crater in a cratered 100 px patch: pooled descriptors barely move, the nn detector flags it alone."""
    pair = make_change_pair((500, 600), seed=13, displacement=(3.6, -7.3), new_craters=[[250, 350, 8.0]],
                            crater_density=4e-4, halo="dark", halo_strength=0.4)
    nn = detect(pair.pre, pair.post, trunk=trunk, method="nn", n_pseudo=40)
    table = nn.candidates()
    assert (table["row_off"][0], table["col_off"][0]) == (200, 300)
    assert table["changed"][0] and table["changed"].sum() == 1
    assert nn.params["method"] == "nn"
    paper = detect(pair.pre, pair.post, trunk=trunk, n_pseudo=40, method="paper", tau="pseudo", max_shift=10).candidates()
    planted = _patch_of(paper, 250, 350)
    assert not paper["changed"][planted]  # the limitation of pooled descriptors that docs/detect.md describes
