import numpy as np
import pytest
from rasterio.windows import Window
from scipy import ndimage

from planetcd.change.register import AlignedReader, estimate_shift, shift_image
from planetcd.datasets.synthetic import synthetic_terrain


@pytest.fixture(scope="module")
def terrain():
    return synthetic_terrain((400, 400), seed=2)[0]


@pytest.mark.parametrize("displacement", [(3.3, -7.6), (-9.8, 0.4), (0.0, 0.0), (14.2, 11.7)])
def test_phase_correlation_recovers_subpixel_displacement(terrain, displacement, rng):
    moved = ndimage.shift(terrain, displacement, order=3, mode="nearest")
    moved = moved * 1.2 + 0.05 + rng.normal(0, 0.01, moved.shape)
    crop = (slice(30, 370), slice(30, 370))
    found, error = estimate_shift(terrain[crop], moved[crop])
    np.testing.assert_allclose(found, displacement, atol=0.25)
    assert 0 <= error < 1


def test_aligned_reader_undoes_the_displacement(terrain, tmp_path):
    from planetcd.datasets.synthetic import write_synthetic_geotiff
    from planetcd.raster import open_raster

    displacement = (4.0, -6.0)  # whole pixels: undoing it is exact
    moved = ndimage.shift(terrain, displacement, order=0, mode="nearest")
    path = write_synthetic_geotiff(tmp_path / "post.tif", moved, dtype="float32")
    with open_raster(path) as ds:
        data, valid = AlignedReader(ds, displacement).read(Window(50, 60, 100, 80))
        edge, edge_valid = AlignedReader(ds, displacement).read(Window(0, 390, 20, 10))
    np.testing.assert_allclose(data[0], terrain[60:140, 50:150], atol=1e-6)
    assert valid.all()
    assert not edge_valid.all()  # rows past the bottom of post have no data


@pytest.mark.parametrize("shift", [(0.25, -0.4), (-0.5, 0.49), (0.0, 0.3), (3.7, -2.2), (-14.6, 20.3)])
def test_shift_image_equals_scipy_cubic_spline_shift(shift):
    data = np.random.default_rng(5).random((2, 61, 47)).astype(np.float32)
    data[1] = data[1] ** 2  # bands differ
    got = shift_image(data, shift)
    assert got.dtype == np.float32 and got.shape == data.shape
    np.testing.assert_allclose(got, ndimage.shift(data, (0, *shift), order=3, mode="nearest"), atol=2e-6)
