import numpy as np
import pytest
import rasterio

from planetcd.datasets.synthetic import MARS_EQC_WKT, write_synthetic_geotiff
from planetcd.errors import InputError, OutputExistsError
from planetcd.raster import (
    atomic_output, check_writable, impulse_steps, missing_pixels, open_raster, read_average, read_window, robust_range,
    saturated_pixels, scale_intensity, suppress_impulses, to_three_bands, write_geotiff,
)


def test_open_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_raster(tmp_path / "missing.tif")
    (tmp_path / "notes.tif").write_text("hello")
    with pytest.raises(InputError, match="not a raster") as info:
        open_raster(tmp_path / "notes.tif")
    assert "\n" not in str(info.value)


def test_read_window_masks_nodata_and_nan(tmp_path):
    image = np.arange(20 * 30, dtype="float32").reshape(20, 30)
    image[2, 3] = -9999
    path = write_synthetic_geotiff(tmp_path / "a.tif", image, dtype="float32", nodata=-9999)
    with open_raster(path) as ds:
        data, valid = read_window(ds)
    assert data.shape == (1, 20, 30) and valid.shape == (20, 30)
    assert not valid[2, 3] and valid.sum() == 599 and data[0, 2, 3] == 0


def test_robust_scaling_and_bands():
    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, (1, 50, 50)).astype(np.float32)
    valid = np.ones((50, 50), bool)
    low, high = robust_range(data, valid)
    scaled = scale_intensity(data, low, high)
    assert scaled.min() == 0 and scaled.max() == 1
    assert to_three_bands(scaled).shape == (3, 50, 50)
    assert to_three_bands(np.zeros((4, 5, 5), np.float32)).shape == (3, 5, 5)
    with pytest.raises(InputError, match="no valid pixels"):
        robust_range(data, np.zeros((50, 50), bool))


def test_outputs_keep_grid_and_are_atomic(tmp_path):
    src = write_synthetic_geotiff(tmp_path / "src.tif", np.ones((40, 50), np.float32) * 0.5)
    with rasterio.open(src) as ds:
        profile = ds.profile
    write_geotiff(tmp_path / "out.tif", np.zeros((40, 50), np.float32), profile)
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs == rasterio.crs.CRS.from_wkt(MARS_EQC_WKT)
        assert out.transform == profile["transform"]
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "half.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        check_writable([tmp_path / "out.tif"], overwrite=False)
    check_writable([tmp_path / "out.tif"], overwrite=True)


def test_read_of_a_truncated_file_is_one_line(tmp_path):
    full = write_synthetic_geotiff(tmp_path / "full.tif", np.random.default_rng(0).random((300, 300)), dtype="float32")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    with open_raster(cut) as ds:  # the header survives: GDAL fails only on the blocks past the cut
        with pytest.raises(InputError, match="truncated or corrupt") as info:
            read_window(ds)
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


def test_footprints_that_do_not_overlap_are_refused(tmp_path):
    from planetcd.change.register import footprints_overlap, post_on_pre_grid

    image = np.random.default_rng(0).random((50, 60))
    pre = write_synthetic_geotiff(tmp_path / "pre.tif", image)
    near = write_synthetic_geotiff(tmp_path / "near.tif", image, origin=(1_000_000.0 + 120.0, 500_000.0))
    far = write_synthetic_geotiff(tmp_path / "far.tif", image, origin=(1_000_000.0 + 360.0 + 1.0, 500_000.0))
    with open_raster(pre) as a, open_raster(near) as b, open_raster(far) as c:
        assert footprints_overlap(a, b) and not footprints_overlap(a, c)
        with post_on_pre_grid(a, b) as grid:
            assert (grid.height, grid.width) == (50, 60)
        with pytest.raises(InputError, match="footprints do not overlap"):
            with post_on_pre_grid(a, c):
                pass
    # another CRS of the same body (Mars lon/lat): post is taken into pre's CRS before the test
    from rasterio.warp import transform as warp

    lonlat = "+proj=longlat +R=3396190 +no_defs"
    (lon,), (lat,) = warp(MARS_EQC_WKT, lonlat, [1_000_000.0 + 180.0], [500_000.0 - 150.0])
    step = 6.0 / (3396190 * np.pi / 180)
    over = write_synthetic_geotiff(tmp_path / "over.tif", image, crs=lonlat, pixel_size=step, origin=(lon, lat))
    away = write_synthetic_geotiff(tmp_path / "away.tif", image, crs=lonlat, pixel_size=step, origin=(lon + 10, lat))
    with open_raster(pre) as a, open_raster(over) as b, open_raster(away) as c:
        assert footprints_overlap(a, b) and not footprints_overlap(a, c)
        with pytest.raises(InputError, match="footprints do not overlap"):
            with post_on_pre_grid(a, c):
                pass


def test_map_distinct_bands_computes_copied_bands_once():
    from planetcd.raster import map_distinct_bands

    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    calls = []
    out = map_distinct_bands(lambda band: calls.append(1) or band * 2, np.stack([a, b, a]))
    assert len(calls) == 2 and out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out, np.stack([a * 2, b * 2, a * 2]))


def test_intensity_stats_are_those_of_the_present_pixels():
    from planetcd.raster import ROBUST_PERCENTILES, intensity_stats, scale_intensity

    rng = np.random.default_rng(3)
    cases = [(rng.gamma(2.0, 30.0, (bands, 60, 50)).astype(np.float32) + 1.0, missing)
             for bands in (1, 2) for missing in (np.zeros((60, 50), bool), rng.random((60, 50)) < 0.3)]
    for image, missing in cases:
        stats = intensity_stats(image, missing)
        values = image[:, ~missing]  # by hand: the present pixels of each band
        low, high = np.percentile(values, ROBUST_PERCENTILES, axis=1).astype(np.float32)
        assert np.array_equal(stats.low, low) and np.array_equal(stats.high, high)
        assert np.array_equal(stats.mean, values.mean(axis=1).astype(np.float64))
        unit = scale_intensity(image, low, high)[:, ~missing].mean(axis=1).astype(np.float32)
        assert np.array_equal(stats.unit_mean, unit)
    # the missing pixels do not count: a huge value there changes nothing
    spoiled = image.copy()
    spoiled[:, missing] = 1e6
    assert np.array_equal(intensity_stats(spoiled, missing).high, stats.high)


#: The ISIS special pixels of 32-bit float cubes: NULL, LRS, LIS, HIS, HRS.
ISIS_SPECIALS = np.array([0xFF7FFFFB, 0xFF7FFFFC, 0xFF7FFFFD, 0xFF7FFFFE, 0xFF7FFFFF], np.uint32).view(np.float32)


@pytest.mark.parametrize("dtype,fill", [("float32", ISIS_SPECIALS[0]), ("int16", -32768)])
def test_read_average_leaves_untagged_fill_and_isis_specials_out(tmp_path, dtype, fill):
    """A decimated (area-average) read does not blend a fill into the ground: without a nodata tag it reads
    as the tagged file, and an ISIS LRS/LIS/HIS/HRS pixel (no tag covers them) masks the pixel it feeds."""
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 200, (60, 90)).astype(dtype)
    image[:, 50:] = fill
    image[:, 47] = fill  # a column that the 3x3 average blends with ground
    if dtype == "float32":
        image[10, 10] = ISIS_SPECIALS[4]  # HRS
        image[31, 20:22] = ISIS_SPECIALS[1:3]  # LRS, LIS
        image[40, 40] = ISIS_SPECIALS[3]  # HIS
    untagged = write_synthetic_geotiff(tmp_path / "untagged.tif", image, dtype=None)
    tagged = write_synthetic_geotiff(tmp_path / "tagged.tif", image, dtype=None, nodata=float(fill))
    with open_raster(untagged) as a, open_raster(tagged) as b:
        read, reference = read_average(a, 1, (20, 30)), read_average(b, 1, (20, 30))
    np.testing.assert_array_equal(np.ma.getmaskarray(read), np.ma.getmaskarray(reference))
    np.testing.assert_array_equal(read.filled(0), reference.filled(0))
    assert np.ma.getmaskarray(read)[:, 17:].all() and not np.ma.getmaskarray(read)[:, 16].any()
    assert 100 <= read.min() and read.max() <= 200  # no fill blended into a present pixel
    if dtype == "float32":  # with another nodata tag, GDAL blends the specials: the pixels they feed are masked
        other = write_synthetic_geotiff(tmp_path / "other.tif", image, dtype=None, nodata=-9999.0)
        with open_raster(other) as ds:
            read = read_average(ds, 1, (20, 30))
        assert 100 <= read.min() and read.max() <= 200
        assert np.ma.getmaskarray(read)[[3, 10, 10, 13], [3, 6, 7, 13]].all()
        assert np.ma.count_masked(read[:, :15]) == 4 and np.ma.getmaskarray(read)[:, 15:].all()


def test_saturated_pixels_are_a_spike_at_the_top_of_an_integer_band():
    rng = np.random.default_rng(0)
    data = rng.integers(200, 1500, (50, 50)).astype(np.float32)
    none = np.zeros((50, 50), bool)
    assert not saturated_pixels(data, none, "uint16").any()  # the brightest ground is no saturation
    data[10:20, :] = 4095  # a 12-bit product's saturation
    data[0, 0] = 4095
    found = saturated_pixels(data, none, "uint16")
    assert found.sum() == 501 and found[0, 0] and found[10:20].all()
    assert not saturated_pixels(data, none, "float32").any()
    missing = data == 4095
    assert not saturated_pixels(data, missing, "uint16").any()  # missing pixels are no saturation


def test_suppress_impulses_clips_hot_pixels_pairs_and_lines_but_not_ground(rng):
    clean = (1000 + 40 * rng.standard_normal((120, 120))).astype(np.float32)
    image = clean.copy()
    image[20, 20] = 4095  # a hot pixel
    image[40, 40:42] = 4095  # a pair
    image[60, 10:110] = 4095  # a line one pixel wide
    image[90, 90] = 0  # a dead pixel
    image[100:103, 20:23] = 4095  # a bright feature of 3 x 3 pixels: ground, kept
    valid = np.ones(image.shape, bool)
    valid[20, 20] = False  # a pixel without ground is never changed
    low, high = robust_range(clean[None], valid)  # the impulses here are 0.8 % of the pixels: past the percentile
    steps = impulse_steps(clean, low, high)
    out, n = suppress_impulses(image, steps, valid)
    assert n == 2 + 100 + 1
    assert out[20, 20] == 4095
    for row, cols in ((40, slice(40, 42)), (60, slice(10, 110)), (90, slice(90, 91))):
        neighbours = clean[row - 1 : row + 2, cols.start - 1 : cols.stop + 1]
        assert np.all((out[row, cols] >= neighbours.min()) & (out[row, cols] <= neighbours.max()))
    assert np.all(out[100:103, 20:23] == 4095)
    np.testing.assert_array_equal(out[~np.isin(np.arange(120), [40, 60, 90])], image[~np.isin(np.arange(120), [40, 60, 90])])
    # white noise alone is never an impulse, and nothing to clip returns the input itself
    same, none = suppress_impulses(clean, steps)
    assert none == 0 and same is clean


def test_impulse_steps_leave_real_ctx_ground_alone(shared_dir):
    """On the CTX tiles of ../shared (2000 x 2000, no hot pixels) the rule clips almost nothing: real ground seen
    through the camera's point-spread function does not make single-pixel steps of half its range."""
    for tile in "HI":
        with open_raster(shared_dir / "data" / "ctx-mc11e" / "images" / f"MC11E-{tile}.png") as ds:
            data, valid = read_window(ds)
        present = ~missing_pixels(data, valid)
        low, high = robust_range(data, present)
        _, n = suppress_impulses(data, impulse_steps(data, low, high), present)
        assert n <= 10, f"MC11E-{tile}: {n} pixels clipped"


def _pds3(folder, image: np.ndarray, sample_type: str = "MSB_UNSIGNED_INTEGER"):
    """A PDS3 image with a detached label (``.lbl`` + ``.img``), as older Mars and Moon products come."""
    rows, cols = image.shape
    (folder / "product.img").write_bytes(image.astype(">u2" if image.dtype.itemsize == 2 else np.uint8).tobytes())
    label = "\n".join([
        "PDS_VERSION_ID = PDS3", "RECORD_TYPE = FIXED_LENGTH", f"RECORD_BYTES = {cols * image.dtype.itemsize}",
        f"FILE_RECORDS = {rows}", '^IMAGE = ("product.img", 1)', "OBJECT = IMAGE", f"  LINES = {rows}",
        f"  LINE_SAMPLES = {cols}", f"  SAMPLE_TYPE = {sample_type}", f"  SAMPLE_BITS = {8 * image.dtype.itemsize}",
        "  BANDS = 1", "END_OBJECT = IMAGE", "END", ""])
    path = folder / "product.lbl"
    path.write_text(label)
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_pds3_product_is_read_with_its_fill_left_out(tmp_path, dtype):
    """A PDS3 image with a detached label opens through GDAL's PDS driver; its fill (0, a collar of rows) holds
    no ground, the statistics are those of the rest, and `planetcd segment` reads it to the end."""
    from click.testing import CliRunner

    from planetcd.cli import main
    from planetcd.inputs import check_raster
    from planetcd.raster import dataset_stats, missing_pixels, open_raster, read_window

    rng = np.random.default_rng(0)
    scale = 1 if dtype == np.uint8 else 16
    image = ((rng.random((96, 120)) * 150 + 50) * scale).astype(dtype)
    image[:10] = 0  # the collar
    path = _pds3(tmp_path, image, "UNSIGNED_INTEGER" if dtype == np.uint8 else "MSB_UNSIGNED_INTEGER")
    info = check_raster(path, min_size=32)
    assert (info.height, info.width) == (96, 120)
    with open_raster(path) as ds:
        data, valid = read_window(ds)
        np.testing.assert_array_equal(data[0], image.astype(np.float32))
        missing = missing_pixels(data, valid, ds.nodata)
        assert missing[:10].all() and not missing[10:].any()
        stats = dataset_stats(ds)
    assert stats.low[0] >= 50 * scale and stats.high[0] <= 200 * scale
    result = CliRunner().invoke(main, ["segment", str(path), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "craters.csv").exists()


@pytest.mark.parametrize("kind", ["nodata", "alpha"])
def test_an_impulse_free_copy_is_the_whole_image_clipped_with_its_grid_and_mask(tmp_path, kind):
    """The copy a resampled post is read from (``post_on_pre_grid``) holds exactly what clipping the whole image
    at once gives, strip seams included, and keeps the data type, grid, nodata or alpha band of the source."""
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    from planetcd.raster import central_impulse_count, decimated_stats, write_impulse_free_copy

    rng = np.random.default_rng(3)
    rows, cols = 700, 600  # two strips of 512 rows
    image = np.round(2000 + 60 * rng.standard_normal((rows, cols))).astype(np.uint16)
    image[rng.random((rows, cols)) < 0.005] = 4095
    image[511:513, 100] = 4095  # a vertical pair across the strips' seam
    image[:, :20] = 0  # a fill collar
    bands = [image]
    if kind == "alpha":
        bands.append(np.where(image > 0, 255, 0).astype(np.uint16))
    profile = {"driver": "GTiff", "width": cols, "height": rows, "count": len(bands), "dtype": "uint16",
               "crs": MARS_EQC_WKT, "transform": from_origin(1000.0, 9000.0, 6.0, 6.0),
               "nodata": 0 if kind == "nodata" else None}
    if kind == "alpha":  # GTiff marks the extra band as alpha only at creation (set afterwards it stays undefined)
        profile["alpha"] = "YES"
    source = tmp_path / "source.tif"
    with rasterio.open(source, "w", **profile) as dst:
        dst.write(np.stack(bands))
    copy = tmp_path / "copy.tif"
    with open_raster(source) as ds:
        assert tuple(ds.colorinterp) == ((ColorInterp.gray, ColorInterp.alpha) if kind == "alpha" else (ColorInterp.gray,))
        read = decimated_stats(ds)
        assert central_impulse_count(ds, read) > 0
        n = write_impulse_free_copy(ds, copy, read.stats.impulse_step, read.zero_is_data)
        data, valid = read_window(ds)
        grid = (ds.crs, ds.transform, tuple(ds.colorinterp))
    present = ~missing_pixels(data, valid, profile["nodata"])
    expected, n_whole = suppress_impulses(data, read.stats.impulse_step, present)
    assert n == n_whole >= 0.004 * rows * cols
    with open_raster(copy) as out:
        assert (out.dtypes, out.nodata) == (("uint16",) * len(bands), profile["nodata"])
        assert (out.crs, out.transform, tuple(out.colorinterp)) == grid
        clipped, clipped_valid = read_window(out)
        np.testing.assert_array_equal(clipped_valid, valid)
        np.testing.assert_array_equal(clipped, expected)
        assert central_impulse_count(out, decimated_stats(out)) == 0
    assert clipped[0, 511, 100] < 2500 and clipped[0, 512, 100] < 2500


@pytest.mark.parametrize("kind", ["rgba", "mask"])
def test_an_impulse_free_copy_of_bands_with_alpha_or_a_dataset_mask_clips_only_the_data_bands(tmp_path, kind):
    """An RGB + alpha image (the alpha band copied as it is, partial alpha included) and one with a per-dataset
    mask (the mask copied): the copy's data bands hold what clipping the whole image at once gives."""
    from rasterio.enums import ColorInterp, MaskFlags
    from rasterio.transform import from_origin

    from planetcd.raster import decimated_stats, write_impulse_free_copy

    rng = np.random.default_rng(4)
    rows, cols = 600, 90  # two strips of 512 rows
    image = np.clip(np.round(120 + 6 * rng.standard_normal((3, rows, cols))), 1, 250).astype(np.uint8)
    image[rng.random((3, rows, cols)) < 0.005] = 255
    ground = np.full((rows, cols), 255, np.uint8)
    ground[:, :7] = 0
    ground[300:310, 40:60] = 9  # partial alpha: ground for the masks of GDAL and read_window
    profile = {"driver": "GTiff", "width": cols, "height": rows, "dtype": "uint8", "crs": MARS_EQC_WKT,
               "transform": from_origin(1000.0, 9000.0, 6.0, 6.0), "count": 4 if kind == "rgba" else 3}
    source = tmp_path / "source.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(source, "w", **profile) as dst:
        if kind == "rgba":
            dst.write(np.concatenate([image, ground[None]]))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        else:
            dst.write(image)
            dst.write_mask(ground)
    copy = tmp_path / "copy.tif"
    with open_raster(source) as ds:
        if kind == "rgba":
            assert ds.colorinterp[-1] == ColorInterp.alpha
        else:
            assert MaskFlags.per_dataset in ds.mask_flag_enums[0]
        read = decimated_stats(ds)
        n = write_impulse_free_copy(ds, copy, read.stats.impulse_step, read.zero_is_data)
        data, valid = read_window(ds)
        raw, mask, interp = ds.read(), ds.dataset_mask(), tuple(ds.colorinterp)
    present = ~missing_pixels(data, valid, None)
    expected, n_whole = suppress_impulses(data, read.stats.impulse_step, present)
    assert n == n_whole > 0
    with open_raster(copy) as out:
        assert (out.count, out.dtypes[0], tuple(out.colorinterp)) == (profile["count"], "uint8", interp)
        written = out.read()
        np.testing.assert_array_equal(out.dataset_mask(), mask)
        clipped, clipped_valid = read_window(out)
    np.testing.assert_array_equal(clipped_valid, valid)
    np.testing.assert_array_equal(clipped, expected)
    np.testing.assert_array_equal(written[:3][:, ~valid], raw[:3][:, ~valid])  # no ground: as it was
    np.testing.assert_array_equal(written[3:], raw[3:])  # the alpha band


@pytest.mark.parametrize("bands", [1, 3])
def test_band_values_are_the_masked_index(bands):
    """band_values(stack, where) is stack[:, where]: the same values, layout and statistics."""
    from planetcd.raster import band_values

    rng = np.random.default_rng(bands)
    stack = (rng.random((bands, 90, 70)) * 1000).astype(np.float32)
    where = rng.random((90, 70)) < 0.7
    got, expected = band_values(stack, where), stack[:, where]
    assert got.shape == (bands, where.sum()) and np.array_equal(got, expected)
    assert np.array_equal(got.mean(axis=1), expected.mean(axis=1))
    assert np.array_equal(np.percentile(got, (0.5, 99.5), axis=1), np.percentile(expected, (0.5, 99.5), axis=1))
