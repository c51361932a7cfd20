"""Crater segmentation on valid but unusual rasters: data types, nodata collars, bands, grids and CRSs, sizes.

The cheap tests build small rasters in code; the ``shared`` ones run the shipped model on one 600 x 600 crop of
the CTX tile MC11E-I (6 m/px), written in several ways that hold the same ground, and compare the catalogues.
"""

from __future__ import annotations

import csv

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine

from planetcd.craters.match import match_craters
from planetcd.craters.segment import (
    PRESENT_ZERO,
    catalog_craters,
    centre_missing,
    image_sun_estimate,
    mirror_fill,
    pixel_size_of,
    read_band,
    read_scaled,
    resample_array,
    segment,
)
from planetcd.craters.sun import from_map_azimuth
from planetcd.raster import dataset_stats, pixel_to_map

MARS = "+proj=eqc +R=3396190 +units=m +no_defs"
MOON = "+proj=eqc +R=1737400 +units=m +no_defs"
NORTH_UP = Affine(6.0, 0.0, 1_000_000.0, 0.0, -6.0, 500_000.0)
#: Where the light of MC11E-I comes from (degrees clockwise from the image top; the estimator says 317).
SUN = 309.0


def _write(path, array, *, crs=MARS, transform=NORTH_UP, nodata=None, colorinterp=None, **options):
    """A GeoTIFF of ``array`` ``(rows, cols)`` or ``(bands, rows, cols)`` in its own data type."""
    array = np.asarray(array)
    array = array[None] if array.ndim == 2 else array
    profile = {"driver": "GTiff", "width": array.shape[2], "height": array.shape[1], "count": array.shape[0],
               "dtype": array.dtype.name, "crs": crs, "transform": transform, "nodata": nodata, **options}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    if colorinterp is not None:  # GTiff records an alpha band (ExtraSamples) only when set after creation
        with rasterio.open(path, "r+") as dst:
            dst.colorinterp = colorinterp
    return path


def _has_driver(driver: str) -> bool:
    """Whether this GDAL has ``driver`` (ISIS3 reads and writes cubes)."""
    with rasterio.Env() as env:
        return driver in env.drivers()


def _known_crs(code: str) -> bool:
    """Whether PROJ knows ``code`` (the IAU_2015 authority needs PROJ >= 8.2)."""
    try:
        rasterio.crs.CRS.from_user_input(code)
    except rasterio.errors.CRSError:
        return False
    return True


def _texture(rng, shape=(64, 80)) -> np.ndarray:
    """8-bit ground: smooth relief plus noise, values 20..235 (no zero)."""
    from scipy import ndimage

    relief = ndimage.gaussian_filter(rng.normal(size=shape), 3)
    relief = (relief - relief.min()) / np.ptp(relief)
    return np.clip(np.round(40 + 150 * relief + rng.normal(0, 8, shape)), 20, 235).astype(np.uint8)


def _collar(shape, angle: float = 0.4, half=(0.38, 0.43)) -> np.ndarray:
    """True inside a rotated rectangular footprint (a map-projected strip), False in its collar."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    u = (xx - cols / 2) * np.cos(angle) + (yy - rows / 2) * np.sin(angle)
    v = -(xx - cols / 2) * np.sin(angle) + (yy - rows / 2) * np.cos(angle)
    return (np.abs(u) < half[0] * cols) & (np.abs(v) < half[1] * rows)


# --------------------------------------------------------------------------- the other scales' reads


@pytest.mark.parametrize("scale", [0.5, 0.7, 1.5])
def test_read_scaled_does_not_depend_on_the_data_type(tmp_path, rng, scale):
    """GDAL resamples 8- and 16-bit bands in their own type (rounding); the scales must not see the file's type."""
    image = _texture(rng)
    u8 = read_scaled(_write(tmp_path / "u8.tif", image), scale)
    for name, array, factor in [("u16", image.astype(np.uint16) * 257, 257.0), ("x4", image.astype(np.uint16) * 4, 4.0),
                                ("f32", image.astype(np.float32) / 1000, 1e-3)]:
        other = read_scaled(_write(tmp_path / f"{name}.tif", array), scale) / np.float32(factor)
        np.testing.assert_allclose(other, u8, rtol=1e-5, atol=1e-3, err_msg=name)
    # and a resampled 8-bit image keeps its fractions (an average of 2 and 3 is 2.5, not 2 or 3)
    if scale < 1:
        assert np.any(np.abs(u8 - np.round(u8)) > 0.1)


def test_read_scaled_ignores_internal_overviews(tmp_path, rng):
    """A tiled GeoTIFF with nearest-neighbour overviews reads as the same image at every scale."""
    image = _texture(rng, (128, 128))
    plain = _write(tmp_path / "plain.tif", image)
    tiled = _write(tmp_path / "tiled.tif", image, tiled=True, blockxsize=32, blockysize=32, compress="deflate")
    with rasterio.open(tiled, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.nearest)
    with rasterio.open(tiled) as ds:
        assert ds.overviews(1) == [2, 4]
    for scale in (0.5, 0.25, 1.5):
        np.testing.assert_array_equal(read_scaled(tiled, scale), read_scaled(plain, scale))


@pytest.mark.parametrize("kind", ["zero", "nodata", "nan", "alpha", "isis"])
def test_resampled_scales_leave_missing_pixels_out(tmp_path, rng, kind):
    """No dark (or bright) rim along a nodata collar: missing pixels take no part in the resampling."""
    image = _texture(rng, (96, 96))
    inside = _collar(image.shape)
    if kind == "zero":  # 0 collar, nodata not declared
        path = _write(tmp_path / "a.tif", np.where(inside, image, 0).astype(np.uint8))
    elif kind == "nodata":
        path = _write(tmp_path / "a.tif", np.where(inside, image, 0).astype(np.uint8), nodata=0)
    elif kind == "nan":
        path = _write(tmp_path / "a.tif", np.where(inside, image / 1000, np.nan).astype(np.float32), nodata=np.nan)
    elif kind == "isis":  # ISIS NULL with its nodata tag
        path = _write(tmp_path / "a.tif", np.where(inside, image / 1000, -3.4028227e38).astype(np.float32),
                      nodata=-3.4028227e38)
    else:
        path = _write(tmp_path / "a.tif", np.stack([image, np.where(inside, 255, 0).astype(np.uint8)]),
                      colorinterp=[ColorInterp.gray, ColorInterp.alpha])
    factor = 1000.0 if kind in ("nan", "isis") else 1.0
    low, high = image[inside].min(), image[inside].max()
    for scale in (0.5, 1.5):
        data = read_scaled(path, scale) * np.float32(factor)
        present = data != 0
        assert present.mean() > 0.5
        assert data[present].min() >= low - 1e-3 and data[present].max() <= high + 1e-3, (scale, data[present].min())
        # the array path does the same
        array = resample_array(image.astype(np.float32), scale, ~inside)
        assert array[array != 0].min() >= low - 1e-3
        assert array[array != 0].max() <= high + 1e-3


# --------------------------------------------------------------------------- the network's fill and the catalogue


def test_mirror_fill_mirrors_the_ground_across_its_edge(rng):
    data = rng.random((60, 70)).astype(np.float32) + 1
    missing = np.zeros(data.shape, bool)
    missing[:, 50:] = True
    missing[:8] = True
    filled = mirror_fill(data, missing, mean=1.5)
    np.testing.assert_array_equal(filled[~missing], data[~missing])  # present pixels untouched
    np.testing.assert_array_equal(filled[8:, 50], data[8:, 48])  # mirrored about the last present column
    np.testing.assert_array_equal(filled[10:, 60], data[10:, 38])
    # far beyond the mirror (a gap wider than the ground), the local mean turns into the image mean
    wide = np.ones(data.shape, bool)
    wide[:, :4] = False
    far = mirror_fill(data, wide, mean=5.0)
    assert abs(far[30, -1] - 5.0) < 1e-3 and 1.0 <= far[30, 5] <= 2.0
    np.testing.assert_array_equal(mirror_fill(data, np.zeros(data.shape, bool), 1.5), data)
    assert np.all(mirror_fill(data, np.ones(data.shape, bool), 1.5) == 1.5)


@pytest.mark.parametrize("seed", range(4))
def test_nearest_present_is_the_whole_image_transform_s(seed):
    """The nearest present pixel of each missing one, from the crop around the missing pixels: the whole image's
    distance_transform_edt indices, ties included (squares and lines of missing pixels, whose nearest present
    pixels tie; gaps on the image's edges)."""
    from scipy import ndimage

    from planetcd.craters.segment import nearest_present

    rng = np.random.default_rng(seed)
    for trial in range(60):
        height, width = (int(v) for v in rng.integers(40, 260, 2))
        missing = np.zeros((height, width), bool)
        for _ in range(int(rng.integers(1, 6))):
            r, c = int(rng.integers(0, height)), int(rng.integers(0, width))
            kind = trial % 3
            if kind == 0:
                missing[r, c] = True  # dead pixels
            elif kind == 1:
                missing[r : r + int(rng.integers(1, 14)), c : c + int(rng.integers(1, 14))] = True
            else:
                missing[r : r + int(rng.integers(1, 3)), :] = True  # a line across: nearest pixels far along it
        if missing.all():
            continue
        expected = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
        rows, cols = np.nonzero(missing)
        got = nearest_present(missing)
        for a, b in zip(got, (rows, cols, expected[0][rows, cols], expected[1][rows, cols])):
            np.testing.assert_array_equal(a, b)


def test_centre_missing_and_the_catalogue_drop_craters_centred_on_nodata(monkeypatch):
    import planetcd.craters.segment as engine

    prob = np.zeros((40, 50), np.float32)
    prob[:, 30:] = np.nan
    craters = np.array([[10, 10, 4, 0.9], [29.4, 20, 6, 0.8], [35, 5, 3, 0.7], [-0.6, 39.7, 3, 0.5]])
    np.testing.assert_array_equal(centre_missing(craters, prob), [False, False, True, False])
    assert centre_missing(np.zeros((0, 4)), prob).shape == (0,)

    class Disc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.metadata = {"threshold": 0.5,
                             "extraction": {"method": "components", "min_radius": 2.0, "scales": [1.0, 0.5]}}

    # another scale saw a crater in the collar (it sees the image resampled, not its mask): it is dropped
    monkeypatch.setattr(engine, "multiscale_craters",
                        lambda *args, **kwargs: np.array([[12.0, 20.0, 5.0, 0.9], [40.0, 20.0, 5.0, 0.8]]))
    found = catalog_craters(Disc(), np.ones((40, 50), np.float32), prob)
    np.testing.assert_array_equal(found, [[12.0, 20.0, 5.0, 0.9]])


def test_pixel_size_of_rotated_and_non_square_grids(tmp_path, rng):
    image = _texture(rng, (32, 32))
    angle = np.deg2rad(10)
    cases = {
        "rotated": (Affine(6 * np.cos(angle), 6 * np.sin(angle), 1e6, 6 * np.sin(angle), -6 * np.cos(angle), 5e5), 6.0),
        "non-square": (Affine(6.0, 0, 1e6, 0, -6.2, 5e5), np.sqrt(6.0 * 6.2)),
        "south-up": (Affine(6.0, 0, 1e6, 0, 6.0, 5e5), 6.0),
    }
    for name, (transform, size) in cases.items():
        with rasterio.open(_write(tmp_path / f"{name}.tif", image, transform=transform)) as ds:
            assert pixel_size_of(ds) == pytest.approx(size, rel=1e-9), name
    # degrees on the Mars sphere, centred at 60° N: 6 m of latitude by 3 m of longitude
    degree = 6.0 / (3396190.0 * np.pi / 180)
    geographic = Affine(degree, 0, 10.0, 0, -degree, 60.0 + 16 * degree)
    with rasterio.open(_write(tmp_path / "geo.tif", image, crs="ESRI:104971", transform=geographic)) as ds:
        assert pixel_size_of(ds) == pytest.approx(np.sqrt(6.0 * 3.0), rel=1e-4)
    with rasterio.open(_write(tmp_path / "plain.tif", image, crs=None, transform=Affine.identity())) as ds:
        assert pixel_size_of(ds, 5.0) == 5.0


def test_signed_data_keeps_its_zeros(tmp_path, rng):
    """An int16 image around 0 (negative values, zeros inside): 0 is a value there, the fill of unsigned images."""
    image = _texture(rng).astype(np.int16) * 4 - 400
    assert (image == 0).sum() > 0 and (image < 0).mean() > 0.2
    with rasterio.open(_write(tmp_path / "i16.tif", image)) as ds:
        data, missing = read_band(ds)
        stats = dataset_stats(ds, bands=[1])
    assert not missing.any()
    assert np.all(data[image == 0] == PRESENT_ZERO) and np.array_equal(data[image != 0], image[image != 0])
    scaled = read_scaled(tmp_path / "i16.tif", 0.5)
    assert np.all(scaled != 0)  # nothing reads as missing at the other scales either
    assert stats.low[0] < 0 < stats.high[0]
    # unsigned: 0 stays the fill
    with rasterio.open(_write(tmp_path / "u8.tif", np.where(image > 0, image, 0).astype(np.uint16))) as ds:
        data, missing = read_band(ds)
    np.testing.assert_array_equal(missing, image <= 0)
    assert np.all(data[missing] == 0)


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_sun_estimate_leaves_untagged_fill_and_isis_specials_out(tmp_path, dtype):
    """The estimate of ``--sun-azimuth auto`` of a product whose fill has no nodata tag (int16's -32768, the ISIS
    NULL) and holds ISIS LRS/HRS pixels is that of the file with the tag: the fill is no dark ground beside lit
    slopes (it read as a confident sun from the fill's side), also when the estimate reads the image decimated."""
    from planetcd.datasets.synthetic import synthetic_terrain

    image, _ = synthetic_terrain((192, 192), seed=3)
    values = (np.round(image * 2000 + 100) if dtype == "int16" else image * 0.25).astype(dtype)
    fill = -32768 if dtype == "int16" else np.float32(-3.4028226550889045e38)
    values[:, :80] = fill
    if dtype == "float32":
        specials = np.array([0xFF7FFFFC, 0xFF7FFFFF], np.uint32).view(np.float32)  # LRS, HRS
        values.flat[np.random.default_rng(0).integers(0, values.size, 60)] = np.repeat(specials, 30)
    untagged = _write(tmp_path / "untagged.tif", values)
    tagged = _write(tmp_path / "tagged.tif", values, nodata=float(fill))
    for max_side in (192, 96):
        estimate = image_sun_estimate(untagged, max_side=max_side)
        reference = image_sun_estimate(tagged, max_side=max_side)
        assert estimate.azimuth_deg == pytest.approx(reference.azimuth_deg, abs=1.0), max_side
        assert estimate.confidence == pytest.approx(reference.confidence, abs=0.05), max_side


def test_sun_estimate_leaves_a_saturated_plateau_out(tmp_path):
    """An 8-bit product whose right part is saturated (255) has the estimate of the same ground with that part
    missing: the plateau's edge is no lit slope (it read as a confident sun from the right, 83 deg, and the
    image was turned half round)."""
    from planetcd.datasets.synthetic import synthetic_terrain

    image, _ = synthetic_terrain((192, 192), seed=3)
    ground = np.clip(np.round(image * 200 + 20), 1, 254).astype(np.uint8)
    saturated = _write(tmp_path / "saturated.tif", np.where(np.arange(192) >= 100, 255, ground).astype(np.uint8))
    missing = _write(tmp_path / "missing.tif", np.where(np.arange(192) >= 100, 0, ground).astype(np.uint8))
    for max_side in (192, 96):
        estimate = image_sun_estimate(saturated, max_side=max_side)
        reference = image_sun_estimate(missing, max_side=max_side)
        assert estimate.azimuth_deg == pytest.approx(reference.azimuth_deg, abs=1.0), max_side
        assert estimate.confident == reference.confident, max_side


# --------------------------------------------------------------------------- the shipped model on a real crop


@pytest.fixture(scope="module")
def ctx_crop(shared_dir) -> np.ndarray:
    from PIL import Image

    tile = np.asarray(Image.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-I.png").convert("L"))
    crop = np.array(tile[600:1200, 600:1200])
    assert crop.min() > 0
    return crop


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(path, **options):
    options.setdefault("sun_azimuth", SUN)
    return segment(path, "ctx-craters", device="cpu", precision="fp32", **options)


def _same_catalogue(a, b, atol=1e-3, name=""):
    pa, pb = a.catalog.pixels, b.catalog.pixels
    assert pa.shape == pb.shape, (name, len(pa), len(pb))
    np.testing.assert_allclose(pa, pb, atol=atol, err_msg=name)


@pytest.mark.shared
@pytest.mark.slow
def test_the_catalogue_does_not_depend_on_the_data_type(tmp_path, ctx_crop, one_thread):
    """uint8, 16-bit (× 257 and a 10-bit range × 4 with most of the range unused), int16 around 0 (zeros inside)
    and float I/F: one stretch, so one catalogue (float: the same craters up to float rounding)."""
    base = _run(_write(tmp_path / "u8.tif", ctx_crop))
    assert len(base.catalog) >= 5
    # 0 where the 8-bit value is 88: a value as common as its neighbours (no spike: planetcd.raster.zeros_are_data)
    signed = ctx_crop.astype(np.int16) * 4 - 352
    assert (signed == 0).sum() > 1000
    for name, array in [("x257", ctx_crop.astype(np.uint16) * 257), ("x4", ctx_crop.astype(np.uint16) * 4),
                        ("int16", signed)]:
        result = _run(_write(tmp_path / f"{name}.tif", array))
        _same_catalogue(result, base, name=name)
        assert not np.isnan(result.probability).any(), name
    iof = _run(_write(tmp_path / "iof.tif", (0.02 + ctx_crop.astype(np.float32) / 255 * 0.23).astype(np.float32)))
    match = match_craters(iof.catalog.pixels, base.catalog.pixels)
    assert match.tp >= len(base.catalog) - 2 and match.fp <= 2, match.to_dict()


@pytest.mark.shared
@pytest.mark.slow
def test_hot_pixels_neither_hide_craters_nor_squeeze_the_stretch(tmp_path, ctx_crop, one_thread):
    """A 10-bit crop with 0.5 % of hot pixels (1023): the clean crop's craters, at most three more. Without the
    impulse clipping the hot pixels held the 99.5 percentile of the stretch and filled the verifier's chips:
    6 of the clean crop's 15 craters were found (the default scales and verifier)."""
    clean = ctx_crop.astype(np.uint16) * 4
    hot = clean.copy()
    hot[np.random.default_rng(2).random(hot.shape) < 0.005] = 1023
    base = _run(_write(tmp_path / "clean.tif", clean))
    result = _run(_write(tmp_path / "hot.tif", hot))
    assert len(base.catalog) >= 5
    match = match_craters(result.catalog.pixels, base.catalog.pixels)
    assert match.tp >= len(base.catalog) - 1 and match.fp <= 3, match.to_dict()


@pytest.mark.shared
@pytest.mark.slow
def test_a_nodata_collar_leaves_no_craters_in_it_nor_along_its_edge(tmp_path, ctx_crop, one_thread):
    """A rotated footprint in a collar: the same catalogue whether the collar is 0 with or without a nodata tag, an
    alpha band or NaN; no crater centred in the collar; no line of false craters along the footprint's edge."""
    from scipy import ndimage

    inside = _collar(ctx_crop.shape)
    depth = ndimage.distance_transform_edt(inside)
    collared = np.where(inside, ctx_crop, 0).astype(np.uint8)
    results = {
        "nodata": _run(_write(tmp_path / "nodata.tif", collared, nodata=0)),
        "zero": _run(_write(tmp_path / "zero.tif", collared)),
        "alpha": _run(_write(tmp_path / "alpha.tif", np.stack([ctx_crop, np.where(inside, 255, 0).astype(np.uint8)]),
                             colorinterp=[ColorInterp.gray, ColorInterp.alpha])),
        "nan": _run(_write(tmp_path / "nan.tif", np.where(inside, ctx_crop.astype(np.float32) / 255, np.nan)
                           .astype(np.float32), nodata=np.nan)),
    }
    for name, result in results.items():
        np.testing.assert_array_equal(np.isnan(result.probability), ~inside, err_msg=name)
        np.testing.assert_array_equal(result.mask == 255, ~inside, err_msg=name)
        assert not centre_missing(result.catalog.pixels, result.probability).any(), name
        if name in ("zero", "alpha"):
            _same_catalogue(result, results["nodata"], name=name)
    # float data: the same craters up to the rounding of a float stretch
    match = match_craters(results["nan"].catalog.pixels, results["nodata"].catalog.pixels)
    assert match.fp <= 2 and match.fn <= 2, match.to_dict()

    # Near the footprint's edge the network says what it says without the collar (a flat fill, the image mean,
    # puts a step there that it reads as shading: 0.029 here), and finds about as many candidates.
    plain = _run(_write(tmp_path / "plain.tif", ctx_crop), verify=False, scales=[1.0])
    edge = (depth > 0) & (depth <= 10)
    change = float(np.mean(np.abs(results["nodata"].probability - plain.probability)[edge]))
    assert change < 0.024, change

    def near_edge(result, band=8.0):
        px = result.catalog.pixels
        d = depth[np.clip(np.round(px[:, 1]).astype(int), 0, 599), np.clip(np.round(px[:, 0]).astype(int), 0, 599)]
        return int(((d > 0) & (d <= band)).sum()), int((d > 0).sum())

    plain_edge, plain_inside = near_edge(plain)
    collar_edge, collar_inside = near_edge(_run(tmp_path / "nodata.tif", verify=False, scales=[1.0]))
    assert collar_edge <= plain_edge + 2, (collar_edge, plain_edge)
    assert collar_inside <= plain_inside + 4, (collar_inside, plain_inside)


@pytest.mark.shared
@pytest.mark.slow
def test_bands_grids_and_formats_keep_the_source_grid_and_place_the_craters(tmp_path, ctx_crop, one_thread):
    """RGB and RGBA, Mars and Moon CRSs, south-up, rotated and non-square grids, a VRT, an ISIS cube: the
    rasters on the source grid, craters in the source CRS, at map positions through the source transform."""
    fast = {"verify": False, "scales": [1.0]}
    base_path = _write(tmp_path / "base.tif", ctx_crop)
    base = _run(base_path, **fast)
    assert len(base.catalog) >= 5
    angle = np.deg2rad(10)
    inside = _collar(ctx_crop.shape)
    south_up = Affine(6.0, 0, 1_000_000.0, 0, 6.0, 500_000.0 - 3600.0)
    assert from_map_azimuth(SUN, south_up) == pytest.approx(180.0 - SUN + 360.0)
    vrt = tmp_path / "base.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="600" rasterYSize="600"><SRS>{rasterio.crs.CRS.from_string(MARS).to_wkt()}</SRS>'
        "<GeoTransform>1000000.0, 6.0, 0.0, 500000.0, 0.0, -6.0</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="1">base.tif'
        "</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>")
    cases = {
        "rgb": (_write(tmp_path / "rgb.tif", np.stack([ctx_crop] * 3), photometric="RGB"), {}),
        "rgba": (_write(tmp_path / "rgba.tif", np.stack([ctx_crop] * 3 + [np.where(inside, 255, 0).astype(np.uint8)]),
                        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]), {}),
        "moon": (_write(tmp_path / "moon.tif", ctx_crop, crs=MOON), {}),
        "south-up": (_write(tmp_path / "south.tif", ctx_crop[::-1].copy(), transform=south_up),
                     {"sun_azimuth": from_map_azimuth(SUN, south_up)}),  # the ground mirrored: 180 - 309
        "rotated": (_write(tmp_path / "rot.tif", ctx_crop, transform=Affine(
            6 * np.cos(angle), 6 * np.sin(angle), 1e6, 6 * np.sin(angle), -6 * np.cos(angle), 5e5)), {}),
        "non-square": (_write(tmp_path / "ns.tif", ctx_crop, transform=Affine(6.0, 0, 1e6, 0, -6.2, 5e5)), {}),
        "vrt": (vrt, {}),
        "tiled": (_write(tmp_path / "tiled.tif", ctx_crop, tiled=True, blockxsize=128, blockysize=128,
                         compress="deflate"), {}),
    }
    degree = 6.0 / (3396190.0 * np.pi / 180)  # Mars 2000 sphere in degrees (ESRI:104971), about 8.4° N
    cases["geographic"] = (_write(tmp_path / "geo.tif", ctx_crop, crs="ESRI:104971",
                                  transform=Affine(degree, 0, 16.87, 0, -degree, 8.43)), {})
    if _has_driver("ISIS3"):
        cases["isis"] = (_write(tmp_path / "cube.cub", ctx_crop, driver="ISIS3"), {})
    if _known_crs("IAU_2015:49910"):  # the IAU 2015 codes, where PROJ has them
        cases["iau"] = (_write(tmp_path / "iau.tif", ctx_crop, crs="IAU_2015:49910"), {})
    for name, (path, options) in cases.items():
        result = _run(path, **{**fast, **options})
        out = tmp_path / f"out_{name}"
        result.write(out)
        with rasterio.open(path) as src:
            for output in ("crater_prob.tif", "crater_mask.tif"):
                with rasterio.open(out / output) as dst:
                    assert dst.shape == src.shape and dst.transform == src.transform, (name, output)
                    assert dst.crs == src.crs, (name, output)
            transform = src.transform
        cat = result.catalog
        with open(out / "craters.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        x_map, y_map = pixel_to_map(transform, cat.y_px + 0.5, cat.x_px + 0.5)
        np.testing.assert_allclose([float(r["x_map"]) for r in rows], x_map, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose([float(r["y_map"]) for r in rows], y_map, rtol=1e-9, err_msg=name)
        if name != "geographic":
            assert result.params["pixel_size_m"] == pytest.approx(np.sqrt(abs(transform.determinant)))
        assert rasterio.crs.CRS.from_user_input(pyogrio.read_info(out / "craters.gpkg")["crs"]) == src.crs, name
        # the same ground as the base: the same craters there, on the body
        if name in ("rgb", "vrt", "tiled", "isis", "moon", "geographic", "iau"):
            _same_catalogue(result, base, name=name)
        if name in ("geographic", "iau"):  # about the same ground on Mars: the same diameters
            np.testing.assert_allclose(cat.diameter_km, base.catalog.diameter_km, rtol=1e-3, err_msg=name)
            assert result.params["pixel_size_m"] == pytest.approx(6.0, rel=0.01)
        elif name == "rgba":
            assert not centre_missing(cat.pixels, result.probability).any()
        elif name == "south-up":
            match = match_craters(cat, base.catalog)  # planetocentric positions and km
            assert match.tp >= 0.8 * len(base.catalog) and match.fp <= 0.2 * len(base.catalog), match.to_dict()
        if name == "moon":  # diameters on the Moon's sphere: 2 r px × 6 m, shrunk east-west by cos(latitude)
            ratio = cat.diameter_km * 1000 / (2 * cat.radius_px * 6.0)
            lat = np.deg2rad(cat.lat_deg)
            np.testing.assert_allclose(ratio, (1 + np.cos(lat)) / 2, rtol=2e-3)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("shape", [(64, 1500), (577, 513), (300, 300)])
def test_strips_and_odd_sizes(tmp_path, one_thread, shape, shared_dir):
    """A 64 px strip, sides no tile size divides, a small square: the whole grid segmented, craters on it."""
    from PIL import Image

    tile = np.asarray(Image.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-I.png").convert("L"))
    image = np.array(tile[: shape[0], : shape[1]])
    result = _run(_write(tmp_path / "a.tif", image), verify=False)
    assert result.probability.shape == shape and not np.isnan(result.probability).any()
    px = result.catalog.pixels
    assert np.all((px[:, 0] > -1) & (px[:, 0] < shape[1]) & (px[:, 1] > -1) & (px[:, 1] < shape[0]))
