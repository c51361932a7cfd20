"""Whole-image segmentation: tiles + blending, streaming to GeoTIFF, bad inputs."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import rasterio
import torch

from planetcd.craters.segment import MASK_NODATA, segment_array, segment_raster
from planetcd.craters.train import prepare_image
from planetcd.datasets.synthetic import write_geotiff
from planetcd.errors import InputError
from planetcd.tiling import overlapping_tiles


class Pointwise(torch.nn.Module):
    def forward(self, x):
        return torch.sigmoid(3 * x + 0.5)


def _local_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1), torch.nn.Sigmoid()
    ).eval()


def _whole(model, img):
    with torch.no_grad():
        return model(torch.from_numpy(img)[None, None])[0, 0].numpy()


def test_tiles_and_blending_reproduce_a_pointwise_model_exactly(rng):
    img = prepare_image(rng.normal(100, 20, (150, 170)).astype(np.float32))
    out = segment_array(Pointwise(), img, tile=64, overlap=16, prepared=True, batch_size=3)
    np.testing.assert_allclose(out, _whole(Pointwise(), img), atol=1e-6)


def test_tiles_and_blending_reproduce_a_whole_image_pass(rng):
    """A network that sees 2 px around each pixel: exact except within 2 px of inner tile edges,
    where the blend weights keep the error small."""
    model = _local_model()
    img = prepare_image(rng.normal(100, 20, (150, 170)).astype(np.float32))
    tile, overlap = 64, 24
    out = segment_array(model, img, tile=tile, overlap=overlap, prepared=True)
    whole = _whole(model, img)
    near_seam = np.zeros(img.shape, bool)
    for r, c, h, w in overlapping_tiles(*img.shape, tile, overlap):
        for edge, size, axis in ((r, h, 0), (c, w, 1)):
            for pos in (edge, edge + size):
                if 0 < pos < img.shape[axis]:
                    lo, hi = max(0, pos - 2), min(img.shape[axis], pos + 2)
                    if axis == 0:
                        near_seam[lo:hi, c : c + w] = True
                    else:
                        near_seam[r : r + h, lo:hi] = True
    np.testing.assert_allclose(out[~near_seam], whole[~near_seam], atol=1e-5)
    assert np.abs(out - whole).max() < 3.0 / (overlap + 1)
    # without overlap the seams are visible: blending is doing the work
    seams = segment_array(model, img, tile=tile, overlap=0, prepared=True)
    assert np.abs(seams - whole).max() > np.abs(out - whole).max()


def test_symmetric_unet_tiles_match_whole_pass_on_small_input(rng):
    from planetcd.craters.unet import SymmetricUNet

    torch.manual_seed(0)
    model = SymmetricUNet(dropout=False).eval()
    img = prepare_image(rng.normal(100, 20, (256, 256)).astype(np.float32))
    out = segment_array(model, img, tile=256, overlap=64, prepared=True)
    np.testing.assert_allclose(out, _whole(model, img), atol=1e-6)  # one tile: the padding path only
    img2 = prepare_image(rng.normal(100, 20, (200, 300)).astype(np.float32))
    tiled = segment_array(model, img2, tile=128, overlap=64, prepared=True)
    assert tiled.shape == img2.shape
    assert np.abs(tiled - _whole(model, img2)).mean() < 0.1 * np.abs(_whole(model, img2) - 0.5).mean() + 1e-3


# A UTM-projected GeoTIFF at 6 m/px, written in the array's own type.
_geotiff = partial(write_geotiff, crs="EPSG:32633", pixel_size=6.0, origin=(500000.0, 4000000.0), dtype=None)


def test_segment_raster_streams_on_the_input_grid(tmp_path, rng):
    data = rng.integers(1, 255, (300, 260)).astype(np.uint8)
    data[:20, :30] = 0  # missing
    src = _geotiff(tmp_path / "in.tif", data, nodata=0)
    model = _local_model(1)
    res = segment_raster(src, tmp_path / "out", model, threshold=0.5, tile=128, overlap=32)
    with rasterio.open(res.prob_path) as p, rasterio.open(res.mask_path) as m, rasterio.open(src) as s:
        assert p.crs == s.crs and p.transform == s.transform and p.shape == s.shape
        assert p.dtypes[0] == "float32" and m.dtypes[0] == "uint8"
        prob, mask = p.read(1), m.read(1)
    assert np.isnan(prob[:20, :30]).all() and (mask[:20, :30] == MASK_NODATA).all()
    valid = ~np.isnan(prob)
    assert ((mask[valid] == 1) == (prob[valid] >= 0.5)).all()
    # streaming by rows of tiles gives what the in-memory path gives
    expected = segment_array(model, data.astype(np.float32), tile=128, overlap=32)
    np.testing.assert_allclose(prob[valid], expected[valid], atol=1e-5)
    assert res.crater_pixels == int((mask == 1).sum())


def test_bad_inputs_write_nothing(tmp_path):
    model = Pointwise()
    empty = _geotiff(tmp_path / "empty.tif", np.zeros((64, 64), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixels"):
        segment_raster(empty, tmp_path / "o1", model)
    small = _geotiff(tmp_path / "small.tif", np.ones((8, 40), np.uint8))
    with pytest.raises(InputError, match="too small"):
        segment_raster(small, tmp_path / "o2", model)
    with pytest.raises(InputError, match="no such file"):
        segment_raster(tmp_path / "missing.tif", tmp_path / "o3", model)
    for d in ("o1", "o2", "o3"):
        assert not (tmp_path / d).exists() or not any((tmp_path / d).iterdir())
