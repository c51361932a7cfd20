"""Valid but unusual raster pairs for ``detect``: data types, fill values, alpha bands, other grids, odd sizes.

Every pair is one crop of the real CTX tile MC11E-I (6 m/px, given a Mars equirectangular grid); post is the
same ground, with a small dark disc (a "new crater") pasted where said, so the right answer is known: the disc's
patch is flagged and ranked first, and the answer does not depend on how the pixels are stored.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine, from_origin
from rasterio.warp import reproject
from rasterio.windows import Window
from scipy import ndimage

from planetcd.change.detect import detect
from planetcd.change.register import AlignedReader, post_on_pre_grid
from planetcd.cli import main
from planetcd.raster import missing_pixels, read_window, zeros_are_data

CRS = "+proj=eqc +lat_ts=0 +lat_0=0 +lon_0=0 +x_0=0 +y_0=0 +R=3396190 +units=m +no_defs"
LONLAT = "+proj=longlat +R=3396190 +no_defs"
PX = 6.0
R0, C0 = 800, 800  # the crop's corner in the tile
SIZE = 300
#: row, col, radius (px) of the new dark disc, in pre's pixels: the centre patch. Small enough to stay out of
#: post's 0.5 percentile (its robust scaling), which a change over 0.5 % of a small image would move.
DISC = (150, 150, 9)
SHIFT = (1.4, -0.7)  # post's content is displaced by this much (dy, dx), so sub-pixel registration is exercised
ISIS_NULL = np.float32(-3.4028227e38)
TILE_TRANSFORM = from_origin(1e6, 5e5, PX, PX)  # tile pixel (r, c) <-> map (1e6 + 6c, 5e5 - 6r)
PRE_TRANSFORM = from_origin(1e6 + C0 * PX, 5e5 - R0 * PX, PX, PX)
RUN = {"n_pseudo": 20, "seed": 0}


def _write(path, data, transform=PRE_TRANSFORM, crs=CRS, nodata=None):
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _u8(x):
    return np.clip(np.round(x), 1, 255).astype(np.uint8)


def _int16(x):
    """Signed data around 0 (a DN offset removed): 0 is an ordinary value, about 1 % of the pixels."""
    return np.round((x.astype(np.float64) - np.median(x)) * 10).astype(np.int16)


@pytest.fixture(scope="module")
def ground(shared_dir):
    """The tile's ground before and after the disc, and post's crop (disc pasted, content displaced by SHIFT)."""
    tile = np.array(Image.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-I.png")).astype(np.float32)
    rr, cc = np.ogrid[: tile.shape[0], : tile.shape[1]]
    disc = np.clip(DISC[2] + 0.5 - np.hypot(rr - R0 - DISC[0], cc - C0 - DISC[1]), 0, 1)
    after = tile * (1 - 0.65 * disc)
    moved = ndimage.shift(after, SHIFT, order=3, mode="nearest")
    return {"before": tile, "after": after, "pre": _u8(tile[R0 : R0 + SIZE, C0 : C0 + SIZE]),
            "post": _u8(moved[R0 : R0 + SIZE, C0 : C0 + SIZE])}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("unusual")


@pytest.fixture(scope="module")
def reference(ground, folder, trunk):
    """The uint8/uint8 pair every variant is compared with."""
    pre = _write(folder / "pre_u8.tif", ground["pre"])
    post = _write(folder / "post_u8.tif", ground["post"])
    return pre, post, detect(pre, post, trunk=trunk, **RUN)


def _disc_patch(result, row=DISC[0], col=DISC[1]):
    p = result.patches
    return int(np.flatnonzero((p[:, 0] <= row) & (p[:, 0] + p[:, 2] > row) & (p[:, 1] <= col) & (p[:, 1] + p[:, 3] > col))[0])


def _ranking(result):
    scored = np.flatnonzero(np.isfinite(result.change_score))
    return scored[np.argsort(-result.change_score[scored], kind="stable")]


def test_reference_pair_flags_the_disc_alone(reference):
    _, _, result = reference
    assert _ranking(result)[0] == _disc_patch(result)
    assert np.flatnonzero(result.changed).tolist() == [_disc_patch(result)]
    np.testing.assert_allclose(result.displacement, SHIFT, atol=0.2)


# ----------------------------------------------------------------- data types and fill values

#: Where the fill variants hold no data: a corner of NaN, two borders of ISIS NULL.
NAN_CORNER = (slice(0, 40), slice(0, 60))
NULL_BORDERS = ((slice(None), slice(0, 30)), (slice(-20, None), slice(None)))


def _filled_reference(kind, ground, folder):
    """The uint8 post with 0 (the fill of CTX products) where the fill variant ``kind`` has none."""
    post = ground["post"].copy()
    for index in [NAN_CORNER] if kind == "float32_iof_nan" else NULL_BORDERS:
        post[index] = 0
    return _write(folder / f"post_u8_{kind}.tif", post)


def _post_variant(kind, ground, folder):
    """(pre, post) paths of one data-type variant; only the storage differs from the reference."""
    pre = folder / "pre_u8.tif"
    post = ground["post"]
    if kind == "uint16x257":
        return pre, _write(folder / f"{kind}.tif", post.astype(np.uint16) * 257)
    if kind == "uint16_10bit":
        return pre, _write(folder / f"{kind}.tif", post.astype(np.uint16) * 4)
    if kind == "float32_iof_nan":  # I/F, NaN nodata tagged; NaN over a corner of post
        iof = (post / 255.0 * 0.25).astype(np.float32)
        iof[NAN_CORNER] = np.nan
        return pre, _write(folder / f"{kind}.tif", iof, nodata=np.nan)
    if kind == "float32_isis_null_untagged":  # the ISIS NULL along two borders, no nodata tag
        iof = (post / 255.0 * 0.25).astype(np.float32)
        for index in NULL_BORDERS:
            iof[index] = ISIS_NULL
        return pre, _write(folder / f"{kind}.tif", iof)
    if kind == "int16_min_untagged":  # int16's -32768 (the nodata of HRSC products) along two borders, no tag
        values = post.astype(np.int16) * 10
        for index in NULL_BORDERS:
            values[index] = -32768
        return pre, _write(folder / f"{kind}.tif", values)
    if kind == "int16_signed":  # both dates signed around 0, no tag: its zeros are ground, not fill
        return (_write(folder / "pre_int16.tif", _int16(ground["pre"])),
                _write(folder / f"{kind}.tif", _int16(post)))
    raise ValueError(kind)


@pytest.mark.parametrize("rate", [0.001, 0.005])
def test_hot_pixels_of_both_dates_are_clipped_not_change(rate, ground, folder, reference, trunk):
    """A 10-bit pair with hot pixels (1023) at different places on each date: the disc alone is flagged, with
    the reference's τ. Without the clipping 0.1 % of hot pixels lifted the pair's empirical null over a new
    crater's score (none flagged)."""
    def with_hot_pixels(image, seed):
        values = image.astype(np.uint16) * 4
        values[np.random.default_rng(seed).random(values.shape) < rate] = 1023
        return values

    pre = _write(folder / f"pre_hot{rate}.tif", with_hot_pixels(ground["pre"], 1))
    post = _write(folder / f"post_hot{rate}.tif", with_hot_pixels(ground["post"], 2))
    result = detect(pre, post, trunk=trunk, **RUN)
    disc = _disc_patch(result)
    assert _ranking(result)[0] == disc
    assert np.flatnonzero(result.changed).tolist() == [disc]
    assert result.tau == pytest.approx(reference[2].tau, rel=0.1)



def test_hot_pixels_of_a_post_on_another_grid_are_clipped_before_it_is_resampled(ground, folder, reference, trunk):
    """A 10-bit post with 0.5 % of hot pixels on a grid offset by a fraction of a pixel: resampled as it is, each
    hot pixel became a 2 x 2 smear that no single-pixel rule finds, and most of the 9 patches were flagged. Clipped
    in post's own grid first (a temporary copy), the disc alone is flagged, with the reference's τ."""
    offset = from_origin(1e6 + (C0 + 0.4) * PX, 5e5 - (R0 + 0.3) * PX, PX, PX)
    moved = np.zeros((SIZE, SIZE), np.float32)
    reproject(ground["after"], moved, src_transform=TILE_TRANSFORM, src_crs=CRS, dst_transform=offset, dst_crs=CRS,
              resampling=Resampling.cubic)
    values = _u8(moved).astype(np.uint16) * 4
    values[np.random.default_rng(2).random(values.shape) < 0.005] = 1023
    post = _write(folder / "post_hot_offset_grid.tif", values, transform=offset)
    result = detect(folder / "pre_u8.tif", post, trunk=trunk, **RUN)
    disc = _disc_patch(result)
    assert _ranking(result)[0] == disc
    assert np.flatnonzero(result.changed).tolist() == [disc]
    assert result.tau == pytest.approx(reference[2].tau, rel=0.1)

FILL_VARIANTS = ("float32_iof_nan", "float32_isis_null_untagged", "int16_min_untagged")


@pytest.mark.parametrize("kind", ["uint16x257", "uint16_10bit", "int16_signed", *FILL_VARIANTS])
def test_flags_and_ranking_do_not_depend_on_the_data_type(kind, ground, folder, reference, trunk):
    """The same pixel values up to gain and offset, stored otherwise: the same scores, τ, flags and ranking.

    Fill variants (NaN, the ISIS NULL and int16's -32768 without a nodata tag) are compared with the uint8 post that has
    0 at the same pixels.
    """
    pre, post = _post_variant(kind, ground, folder)
    ref = reference[2] if kind not in FILL_VARIANTS else detect(pre, _filled_reference(kind, ground, folder),
                                                                trunk=trunk, **RUN)
    result = detect(pre, post, trunk=trunk, **RUN)
    disc = _disc_patch(result)
    assert _ranking(result)[0] == disc
    assert np.flatnonzero(result.changed).tolist() == [disc]
    np.testing.assert_allclose(result.displacement, ref.displacement, atol=0.1)
    np.testing.assert_array_equal(np.isfinite(result.change_score), np.isfinite(ref.change_score))
    assert np.isfinite(result.change_score).sum() >= 8  # fill takes one corner patch out at most
    np.testing.assert_allclose(result.change_score, ref.change_score, atol=0.02)
    assert result.tau == pytest.approx(ref.tau, rel=0.05)


def test_float_fill_without_a_tag_is_missing(tmp_path):
    """ISIS special pixels and -FLT_MAX in a float raster with no nodata tag hold no ground."""
    data = np.full((1, 4, 5), 0.2, np.float32)
    data[0, 0, :] = ISIS_NULL
    data[0, 1, 0] = -np.finfo(np.float32).max
    data[0, 2, 0] = np.float32(-3.4028235e38)  # ISIS HRS, -FLT_MAX
    data[0, 3, 0] = -0.01  # a real (noisy) negative I/F
    path = _write(tmp_path / "isis.tif", data, transform=from_origin(0, 20, 1, 1))
    with rasterio.open(path) as ds:
        values, valid = read_window(ds)
    expected = np.ones((4, 5), bool)
    expected[0, :] = expected[1, 0] = expected[2, 0] = False
    np.testing.assert_array_equal(valid, expected)
    assert np.all(values[:, ~valid] == 0)
    np.testing.assert_array_equal(missing_pixels(data), ~expected)
    signed = np.full((1, 4, 5), -7, np.int16)
    signed[0, 0, :2] = -32768
    with rasterio.open(_write(tmp_path / "int16.tif", signed, transform=from_origin(0, 20, 1, 1))) as ds:
        assert read_window(ds)[1].sum() == 18


def test_untagged_fill_is_not_smeared_when_post_is_resampled(ground, folder, reference, trunk):
    """A 12 m/px float32 post with ISIS NULL borders and no nodata tag reads as the same file with the tag:
    the resampling must not blend the NULL into the ground next to it (bilinear would make -1.7e38...)."""
    pre, _, _ = reference
    t = from_origin(1e6 + C0 * PX, 5e5 - R0 * PX, 12.0, 12.0)
    out = np.zeros((SIZE // 2, SIZE // 2), np.float32)
    reproject(ground["after"], out, src_transform=TILE_TRANSFORM, src_crs=CRS, dst_transform=t, dst_crs=CRS,
              resampling=Resampling.average)
    iof = (out / 255.0 * 0.25).astype(np.float32)
    iof[:, :15] = ISIS_NULL
    iof[-10:, :] = ISIS_NULL
    untagged = detect(pre, _write(folder / "post_12m_null.tif", iof, transform=t), trunk=trunk, **RUN)
    tagged = detect(pre, _write(folder / "post_12m_null_tagged.tif", iof, transform=t, nodata=float(ISIS_NULL)),
                    trunk=trunk, **RUN)
    np.testing.assert_array_equal(np.isfinite(untagged.change_score), np.isfinite(tagged.change_score))
    np.testing.assert_allclose(untagged.change_score, tagged.change_score, atol=0.01)
    disc = _disc_patch(untagged)
    assert _ranking(untagged)[0] == disc and np.flatnonzero(untagged.changed).tolist() == [disc]


def test_zeros_of_signed_data_are_ground_and_a_zero_collar_is_not():
    rng = np.random.default_rng(0)
    signed = np.round(rng.normal(0, 50, (200, 200))).astype(np.int16)
    assert zeros_are_data(signed)
    collar = signed.copy()
    collar[:, :30] = 0
    assert not zeros_are_data(collar)  # a spike at 0: fill
    assert not zeros_are_data(rng.integers(0, 256, (200, 200)).astype(np.uint8))
    iof = rng.normal(0.05, 0.04, (200, 200)).astype(np.float32)  # some negative noise, continuous values
    iof[:, :30] = 0
    assert not zeros_are_data(iof)
    assert missing_pixels(signed, zero_is_data=True).sum() == 0
    assert missing_pixels(signed).sum() == np.count_nonzero(signed == 0)


# ----------------------------------------------------------------- bands

def test_gray_plus_alpha_pairs_with_gray_and_alpha_is_the_mask(ground, folder, reference, trunk):
    _, post, ref = reference
    alpha = np.full((SIZE, SIZE), 255, np.uint8)
    alpha[:, :20] = 0
    pre = _write(folder / "pre_gray_alpha.tif", np.stack([ground["pre"], alpha]))
    with rasterio.open(pre, "r+") as ds:
        ds.colorinterp = [ColorInterp.gray, ColorInterp.alpha]
    with rasterio.open(pre) as ds:
        data, valid = read_window(ds)
    assert data.shape == (1, SIZE, SIZE)  # the alpha band is no data band
    assert not valid[:, :20].any() and valid[:, 20:].all()
    result = detect(pre, post, trunk=trunk, **RUN)
    assert _ranking(result)[0] == _disc_patch(result)
    assert np.flatnonzero(result.changed).tolist() == [_disc_patch(result)]
    assert abs(result.change_score[_disc_patch(result)] - ref.change_score[_disc_patch(ref)]) < 0.05
    assert result.params["inputs"]["pre"]["bands"] == [1]


def test_rgba_reads_three_bands_masked_by_alpha_at_any_decimation(tmp_path):
    rgba = np.random.default_rng(0).integers(1, 255, (60, 80, 4)).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    with rasterio.open(tmp_path / "rgba.png") as ds:
        for out_shape, edge in ((None, 10), ((30, 40), 5)):
            data, valid = read_window(ds, out_shape=out_shape)
            assert data.shape[0] == 3
            assert not valid[:, :edge].any() and valid[:, edge:].all()


# ----------------------------------------------------------------- grids

def _warped_post(ground, folder, name, transform, crs, shape, resampling=Resampling.cubic, dtype=np.uint8,
                 convert=_u8):
    out = np.zeros(shape, np.float32)
    reproject(ground["after"], out, src_transform=TILE_TRANSFORM, src_crs=CRS, dst_transform=transform,
              dst_crs=crs, resampling=resampling, dst_nodata=0)
    return _write(folder / f"{name}.tif", convert(out).astype(dtype), transform=transform, crs=crs)


def _grid_case(case, ground, folder):
    """post on another grid: (path, what run.json should say of the grid)."""
    if case == "12 m/px":
        t = from_origin(1e6 + C0 * PX, 5e5 - R0 * PX, 12.0, 12.0)
        return _warped_post(ground, folder, "post_12m", t, CRS, (SIZE // 2, SIZE // 2), Resampling.average)
    if case == "longlat degrees":
        deg = PX / (3396190.0 * np.pi / 180)
        lon0, lat0 = np.degrees((1e6 + C0 * PX) / 3396190.0), np.degrees((5e5 - R0 * PX) / 3396190.0)
        t = from_origin(lon0 - 5 * deg, lat0 + 5 * deg, deg, deg)
        return _warped_post(ground, folder, "post_lonlat", t, LONLAT, (SIZE + 10, SIZE + 10))
    if case == "south-up":
        t = Affine(PX, 0, 1e6 + C0 * PX, 0, PX, 5e5 - (R0 + SIZE) * PX)
        return _write(folder / "post_south_up.tif", _u8(ground["after"][R0 : R0 + SIZE, C0 : C0 + SIZE])[::-1],
                      transform=t)
    if case == "sub-pixel grid, 80 % crop":
        t = from_origin(1e6 + (C0 + 0.37) * PX, 5e5 - (R0 + 60.6) * PX, PX, PX)
        return _warped_post(ground, folder, "post_crop", t, CRS, (240, 300))
    raise ValueError(case)


@pytest.mark.parametrize("case", ["12 m/px", "longlat degrees", "south-up", "sub-pixel grid, 80 % crop"])
def test_post_on_another_grid_is_warped_onto_pre_and_finds_the_disc(case, ground, folder, reference, trunk):
    pre, _, _ = reference
    post = _grid_case(case, ground, folder)
    result = detect(pre, post, trunk=trunk, **RUN)
    disc = _disc_patch(result)
    assert _ranking(result)[0] == disc and np.flatnonzero(result.changed).tolist() == [disc]
    assert result.shape == (SIZE, SIZE) and result.transform.almost_equals(PRE_TRANSFORM)
    assert result.params["inputs"]["post_on_pre_grid"] == "resampled (WarpedVRT, bilinear)"
    if case == "sub-pixel grid, 80 % crop":  # outside post's footprint is no data
        assert np.isnan(result.change_score[result.patches[:, 0] == 0]).all()


@pytest.mark.parametrize("dtype", [np.int16, np.float64])  # the warp's nodata -32768; an added alpha band
def test_signed_post_crop_without_a_tag_is_masked_outside_its_footprint(dtype, ground, folder):
    """On pre's grid, the outside of a warped crop reads as 0: ground for signed data, unless it is masked."""
    t = from_origin(1e6 + (C0 + 50.5) * PX, 5e5 - (R0 + 60.25) * PX, PX, PX)
    post = _warped_post(ground, folder, f"post_signed_crop_{np.dtype(dtype).name}", t, CRS, (180, 200),
                        dtype=dtype, convert=lambda x: np.round((x - 80) * 10))
    pre = _write(folder / "pre_int16_grid.tif", _int16(ground["pre"]))
    with rasterio.open(pre) as pre_ds, rasterio.open(post) as post_ds, post_on_pre_grid(pre_ds, post_ds) as grid:
        data, valid = AlignedReader(grid, (0.3, -0.4), zero_is_data=True).read(Window(0, 0, SIZE, SIZE))
    assert data.shape == (1, SIZE, SIZE)
    assert not valid[:55].any() and not valid[:, :45].any() and not valid[:, 255:].any()
    assert valid[70:230, 60:240].all()


def test_cli_records_the_resampling_and_writes_on_pre_grid(ground, folder, reference, vgg_weights, tmp_path):
    pre, _, _ = reference
    post = _grid_case("longlat degrees", ground, folder)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["detect", str(pre), str(post), "-o", str(out), "--weights", str(vgg_weights),
                                       "--n-pseudo", "20", "--no-quicklook", "-q"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    inputs = run["parameters"]["inputs"]
    assert inputs["post_on_pre_grid"] == "resampled (WarpedVRT, bilinear)"
    assert rasterio.crs.CRS.from_wkt(inputs["post"]["crs"]).is_geographic and "crs" not in inputs["pre"]
    assert inputs["pre"]["pixel_size"] == [PX, PX] and inputs["post"]["pixel_size"][0] < 1e-3  # degrees
    assert run["top_candidates"][0]["row_off"] <= DISC[0] < run["top_candidates"][0]["row_off"] + 100
    with rasterio.open(pre) as a, rasterio.open(out / "change_mask.tif") as b:
        assert a.crs == b.crs and a.transform.almost_equals(b.transform) and a.shape == b.shape
    import pyogrio

    info = pyogrio.read_info(out / "candidates.gpkg")
    assert rasterio.crs.CRS.from_wkt(info["crs"]) == rasterio.crs.CRS.from_string(CRS)


# ----------------------------------------------------------------- sizes

@pytest.mark.parametrize("shape", [(150, 1200), (100, 100), (237, 311)])
def test_strips_single_patches_and_ragged_sizes(shape, ground, folder, trunk):
    """Patches flush with the last row and column cover every pixel; the disc's patch ranks first."""
    rows, cols = shape
    r, c = (rows // 2, cols // 2) if shape != (237, 311) else (120, 250)
    before = ground["before"][R0 : R0 + rows, C0 : C0 + cols]
    yy, xx = np.ogrid[:rows, :cols]
    after = before * (1 - 0.65 * np.clip(10.5 - np.hypot(yy - r, xx - c), 0, 1))
    pre = _write(folder / f"pre_{rows}x{cols}.tif", _u8(before))
    post = _write(folder / f"post_{rows}x{cols}.tif", _u8(after))
    result = detect(pre, post, trunk=trunk, **RUN)
    assert result.shape == shape
    covered = np.zeros(shape, bool)
    for pr, pc, ph, pw in result.patches:
        covered[pr : pr + ph, pc : pc + pw] = True
    assert covered.all() and np.all(np.isfinite(result.change_score))
    top = result.patches[_ranking(result)[0]]  # a patch holding part of the disc (it may straddle two)
    assert top[0] - 10 <= r < top[0] + top[2] + 10 and top[1] - 10 <= c < top[1] + top[3] + 10
    assert result.changed[_ranking(result)[0]]
    assert result.changed.sum() <= 4  # the patches holding part of the disc at most


def test_patch_polygons_follow_a_rotated_geotransform(tmp_path):
    """candidates.gpkg: with a rotated grid (b, d != 0) each patch is the rotated quadrilateral of its pixels."""
    import pyogrio

    from planetcd.change.outputs import ChangeResult, write_candidates

    transform = Affine.translation(1e6, 5e5) @ Affine.rotation(15) @ Affine.scale(PX, -PX)
    patches = np.array([[0, 0, 100, 100], [100, 50, 100, 100]])
    result = ChangeResult(patches=patches, change_score=np.array([0.2, 0.9]), tau=0.5, changed=np.array([False, True]),
                          valid_fraction=np.ones(2), displacement=(0.0, 0.0), registration_error=0.0, shape=(200, 150),
                          crs=rasterio.crs.CRS.from_string(CRS), transform=transform)
    write_candidates(result, tmp_path)
    _, bounds = pyogrio.read_bounds(tmp_path / "candidates.gpkg")
    for k, (r, c, h, w) in enumerate(patches[[1, 0]]):  # ranked: the changed patch first
        corners = np.array([transform @ (c + dc, r + dr) for dr in (0, h) for dc in (0, w)])
        np.testing.assert_allclose(bounds[:, k], [*corners.min(0), *corners.max(0)], atol=1e-6)


class _PickledSpecRunner:
    """A runner that is not the local one (as Dask's): each tile runs detect_tile_task on an unpickled spec."""

    def map(self, func, items, **shared):
        import pickle

        spec = pickle.loads(pickle.dumps(shared.pop("spec")))
        return (func(item, spec=spec, **shared) for item in items)


def test_signed_pair_through_another_runner_keeps_its_zeros(ground, folder, vgg_weights):
    """Whether 0 is ground travels with the tile spec: a runner elsewhere gives the local result."""
    pre, post = _post_variant("int16_signed", ground, folder)
    options = {"weights": vgg_weights, "device": "cpu", "n_pseudo": 12, "seed": 1}
    local = detect(pre, post, **options)
    remote = detect(pre, post, runner=_PickledSpecRunner(), **options)
    assert local.params["inputs"]["pre"]["zero_is_data"] and local.params["inputs"]["post"]["zero_is_data"]
    np.testing.assert_array_equal(remote.change_score, local.change_score)
    assert np.all(np.isfinite(local.change_score))
