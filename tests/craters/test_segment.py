"""Crater segmentation: tiles + blending of one window, blocks, ``segment()`` and its result, bad inputs."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import rasterio
import torch

from planetcd.craters.segment import MASK_NODATA, OUTPUTS, SegmentResult, segment, window_probability
from planetcd.craters.train import prepare_image
from planetcd.datasets.synthetic import write_synthetic_geotiff
from planetcd.errors import InputError, OutputExistsError
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
    out = window_probability(Pointwise(), img, tile_size=64, overlap=16, batch_size=3)
    np.testing.assert_allclose(out, _whole(Pointwise(), img), atol=1e-6)


def test_tiles_and_blending_reproduce_a_whole_image_pass(rng):
    """A network that sees 2 px around each pixel: exact except within 2 px of inner tile edges,
    where the blend weights keep the error small."""
    model = _local_model()
    img = prepare_image(rng.normal(100, 20, (150, 170)).astype(np.float32))
    tile, overlap = 64, 24
    out = window_probability(model, img, tile_size=tile, overlap=overlap)
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
    seams = window_probability(model, img, tile_size=tile, overlap=0)
    assert np.abs(seams - whole).max() > np.abs(out - whole).max()


def test_symmetric_unet_tiles_match_whole_pass_on_small_input(rng):
    from planetcd.craters.unet import SymmetricUNet

    torch.manual_seed(0)
    model = SymmetricUNet(dropout=False).eval()
    img = prepare_image(rng.normal(100, 20, (256, 256)).astype(np.float32))
    out = window_probability(model, img, tile_size=256, overlap=64)
    np.testing.assert_allclose(out, _whole(model, img), atol=1e-6)  # one tile: the padding path only
    img2 = prepare_image(rng.normal(100, 20, (200, 300)).astype(np.float32))
    tiled = window_probability(model, img2, tile_size=128, overlap=64)
    assert tiled.shape == img2.shape
    assert np.abs(tiled - _whole(model, img2)).mean() < 0.1 * np.abs(_whole(model, img2) - 0.5).mean() + 1e-3


# A UTM-projected GeoTIFF at 6 m/px, written in the array's own type.
_geotiff = partial(write_synthetic_geotiff, crs="EPSG:32633", pixel_size=6.0, origin=(500000.0, 4000000.0), dtype=None)


def _with_metadata(model, **meta):
    model.metadata = {"threshold": 0.5, "name": "test", "tta": False, "extraction": {"scales": [1.0]}, **meta}
    return model


def test_segment_writes_on_the_input_grid(tmp_path, rng):
    data = rng.integers(1, 255, (300, 260)).astype(np.uint8)
    data[:20, :30] = 0  # missing
    src = _geotiff(tmp_path / "in.tif", data, nodata=0)
    model = _with_metadata(_local_model(1))
    result = segment(src, model, prob_threshold=0.5, tile_size=128, overlap=32, device="cpu")
    assert isinstance(result, SegmentResult) and result.shape == (300, 260)
    assert result.params["prob_threshold"] == 0.5 and result.params["tile_size"] == 128
    written = result.write(tmp_path / "out")
    assert [p.name for p in written] == list(OUTPUTS) and all(p.exists() for p in written)
    with rasterio.open(written[0]) as p, rasterio.open(written[1]) as m, rasterio.open(src) as s:
        assert p.crs == s.crs and p.transform == s.transform and p.shape == s.shape
        assert p.dtypes[0] == "float32" and m.dtypes[0] == "uint8"
        prob, mask = p.read(1), m.read(1)
    np.testing.assert_array_equal(prob, result.probability)
    np.testing.assert_array_equal(mask, result.mask)
    assert np.isnan(prob[:20, :30]).all() and (mask[:20, :30] == MASK_NODATA).all()
    valid = ~np.isnan(prob)
    assert ((mask[valid] == 1) == (prob[valid] >= 0.5)).all()
    assert result.crater_pixels == int((mask == 1).sum())
    # the file gives what the array gives (same statistics: a small image is read whole)
    expected = segment(data.astype(np.float32), model, prob_threshold=0.5, tile_size=128, overlap=32, device="cpu")
    np.testing.assert_allclose(prob[valid], expected.probability[valid], atol=1e-6)
    np.testing.assert_array_equal(np.isnan(expected.probability), ~valid)
    # the catalogue: diameters from the 6 m UTM pixels, written as CSV
    cat = result.catalog
    np.testing.assert_allclose(cat.diameter_km, 2 * cat.radius_px * 6.0 / 1000, rtol=2e-3)  # geodesic, on WGS 84
    assert len((tmp_path / "out" / "craters.csv").read_text().splitlines()) == len(cat) + 1


def test_blocks_assemble_the_whole_image_pass(tmp_path, rng):
    """A pointwise network does not care about tiles or blocks: small blocks give the one-block probability."""
    data = rng.integers(1, 255, (300, 260)).astype(np.uint8)
    src = _geotiff(tmp_path / "in.tif", data)
    model = _with_metadata(Pointwise())
    one = segment(src, model, tile_size=64, overlap=16, device="cpu")
    blocks = segment(src, model, tile_size=64, overlap=16, block_size=96, block_halo=16, device="cpu")
    np.testing.assert_allclose(blocks.probability, one.probability, atol=1e-6)
    np.testing.assert_array_equal(blocks.mask, one.mask)
    np.testing.assert_allclose(blocks.catalog.pixels, one.catalog.pixels, atol=1e-6)


def test_write_refuses_existing_outputs(tmp_path, rng):
    src = _geotiff(tmp_path / "in.tif", rng.integers(1, 255, (64, 64)).astype(np.uint8))
    result = segment(src, _with_metadata(Pointwise()), tile_size=32, overlap=8, device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    (out / "craters.csv").write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"overwrite=True") as info:
        result.write(out)
    assert "--overwrite" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["craters.csv"]  # nothing written
    assert (out / "craters.csv").read_text() == "keep me"
    result.write(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # no temporary file left
    assert (out / "craters.csv").read_text().startswith("x_px")


def test_pixel_scale_advice_is_one_log_line(tmp_path, rng, caplog, monkeypatch):
    import logging

    from planetcd.datasets.synthetic import write_synthetic_geotiff as write

    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off

    src = write(tmp_path / "hirise.tif", rng.integers(1, 255, (64, 64)).astype(np.uint8), crs="EPSG:32633",
                pixel_size=0.25, origin=(500000.0, 4000000.0), dtype=None)
    model = _with_metadata(Pointwise(), pixel_scale_m=6.0)
    with caplog.at_level("WARNING", logger="planetcd"):
        segment(src, model, tile_size=32, overlap=8, device="cpu")
    advice = [r for r in caplog.records if "trained at 6 m" in r.getMessage()]
    assert len(advice) == 1 and "\n" not in advice[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="planetcd"):
        segment(src, model, tile_size=32, overlap=8, device="cpu", pixel_size_m=6.0)  # georeferencing wins
        segment(rng.integers(1, 255, (64, 64)).astype(np.float32), model, tile_size=32, overlap=8, device="cpu",
                pixel_size_m=6.0)
    assert len([r for r in caplog.records if "trained at" in r.getMessage()]) == 1


def test_bad_inputs_and_options(tmp_path):
    model = _with_metadata(Pointwise())
    empty = _geotiff(tmp_path / "empty.tif", np.zeros((64, 64), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixels"):
        segment(empty, model)
    small = _geotiff(tmp_path / "small.tif", np.ones((8, 40), np.uint8))
    with pytest.raises(InputError, match="too small"):
        segment(small, model)
    with pytest.raises(InputError, match="no such file"):
        segment(tmp_path / "missing.tif", model)
    good = _geotiff(tmp_path / "good.tif", np.full((64, 64), 9, np.uint8))
    for options, words in (({"band": 2}, "no band 2"), ({"tile_size": 8}, "tile_size 8"), ({"overlap": 40, "tile_size": 32}, "overlap 40"),
                           ({"prob_threshold": 1.5}, "prob_threshold 1.5"), ({"scales": "1,x"}, "scales"),
                           ({"min_contrast": 2.0}, "min_contrast 2"), ({"min_radius_px": 3}, "unknown extraction")):
        with pytest.raises(InputError, match=words) as info:
            segment(good, model, device="cpu", **options)
        assert "--" not in str(info.value), str(info.value)  # API errors speak of arguments, not options
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif", "good.tif", "small.tif"]


class TopHat(torch.nn.Module):
    """A stand-in segmenter that sees only small craters: bright blobs narrower than ``size`` px
    come out filled (white top-hat), larger ones vanish, like a network trained on small craters."""

    def __init__(self, size=31):
        super().__init__()
        self.pool = torch.nn.MaxPool2d(size, stride=1, padding=size // 2)

    def forward(self, x):
        opened = self.pool(-self.pool(-x))
        return ((x - opened) / 2).clamp(0, 1)


def _discs(shape, discs):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 50.0, np.float32)
    for x, y, r in discs:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= r**2] = 200.0
    return img


def test_a_big_crater_is_found_only_with_a_coarser_scale(tmp_path):
    from planetcd.craters.extract import extract_craters
    from planetcd.craters.match import match_craters
    from planetcd.craters.segment import multiscale_craters

    truth = np.array([[120.0, 130.0, 40.0], [200.0, 40.0, 6.0]])  # a big and a small crater
    img = _discs((256, 256), truth)
    extract = lambda prob, min_r: extract_craters(prob, threshold=0.5, min_radius=min_r, max_radius=150)  # noqa: E731
    model = TopHat()
    full = multiscale_craters(model, img, [1.0], extract)
    both = multiscale_craters(model, img, [1.0, 0.25], extract)
    res_full = match_craters(full[:, :3], truth, mode="deepmoon")
    res_both = match_craters(both[:, :3], truth, mode="deepmoon")
    assert res_full.tp == 1  # only the small crater
    assert res_both.tp == 2
    big = both[np.argmin(np.hypot(both[:, 0] - 120, both[:, 1] - 130))]
    np.testing.assert_allclose(big[:3], truth[0], atol=3.0)
    # the small crater, seen at both scales, is one crater after the merge
    assert np.sum(np.hypot(both[:, 0] - 200, both[:, 1] - 40) < 6) == 1
    # the same from a raster file (area-average resampling on read)
    path = write_synthetic_geotiff(tmp_path / "discs.tif", img, dtype=None)
    from_file = multiscale_craters(model, path, [1.0, 0.25], extract)
    assert match_craters(from_file[:, :3], truth, mode="deepmoon").tp == 2



def test_the_scaled_reads_of_an_image_are_shared_between_calls(tmp_path, monkeypatch):
    """segment's catalogue, its decoys and the verifier's pyramid share one read of the image (``scaled_reads``):
    the other scales are resampled from it as a read at that scale would be, the second call reads and scales
    nothing and finds what a call without the shared reads finds."""
    import planetcd.craters.segment as seg
    from planetcd.craters.extract import extract_craters

    truth = np.array([[120.0, 130.0, 40.0], [200.0, 40.0, 6.0]])
    path = write_synthetic_geotiff(tmp_path / "discs.tif", _discs((256, 256), truth), dtype=None)
    extract = lambda prob, min_r: extract_craters(prob, threshold=0.5, min_radius=min_r, max_radius=150)  # noqa: E731
    alone = seg.multiscale_craters(TopHat(), path, [1.0, 0.5, 0.25], extract)
    reads = []
    original = seg.read_scaled
    monkeypatch.setattr(seg, "read_scaled", lambda *a, **k: reads.append(a[1]) or original(*a, **k))
    prepared = []
    prepare = seg.prepare_image
    monkeypatch.setattr(seg, "prepare_image", lambda data: prepared.append(data.shape) or prepare(data))
    shared: dict = {}
    first = seg.multiscale_craters(TopHat(), path, [1.0, 0.5, 0.25], extract, scaled_reads=shared)
    assert prepared == [(256, 256), (128, 128), (64, 64)]
    second = seg.multiscale_craters(TopHat(), path, [1.0, 0.5, 0.25], extract, scaled_reads=shared)
    assert reads == [1.0] and len(prepared) == 3
    assert set(shared) == {(seg.PREPARED, 0.25), (seg.PREPARED, 0.5), (seg.PREPARED, 1.0), seg.FULL_READ}
    np.testing.assert_array_equal(first, alone)
    np.testing.assert_array_equal(second, alone)
    for scale in (0.25, 0.5, 1.5):
        np.testing.assert_array_equal(seg.rescale_read(shared[seg.FULL_READ], scale), original(path, scale))
    verifier = torch.nn.Identity()
    verifier.metadata = {}
    pyramid = seg.verifier_pyramid(path, verifier, 40.0, scaled_reads=shared)
    assert reads == [1.0]
    np.testing.assert_array_equal(pyramid[0], original(path, 1.0))
    # an image larger than MAGNIFIED_WINDOW_PIXELS is not held between calls: it is read again when needed
    monkeypatch.setattr(seg, "MAGNIFIED_WINDOW_PIXELS", 256 * 256 - 1)
    large: dict = {}
    np.testing.assert_array_equal(seg.multiscale_craters(TopHat(), path, [1.0, 0.5, 0.25], extract,
                                                         scaled_reads=large), alone)
    assert seg.FULL_READ not in large and reads == [1.0] * 4  # one read at each of the three scales


class BandPass(torch.nn.Module):
    """A stand-in segmenter that only sees bright discs between about 9 and 31 px across."""

    def __init__(self):
        super().__init__()
        self.wide, self.pool = TopHat(31), torch.nn.MaxPool2d(9, stride=1, padding=4)

    def forward(self, x):
        blobs = self.wide(x)
        return self.pool(-self.pool(-blobs))  # opening: blobs that hold no 9 x 9 square vanish


def test_a_small_crater_is_found_only_with_a_finer_scale(tmp_path):
    from planetcd.craters.extract import extract_craters
    from planetcd.craters.match import match_craters
    from planetcd.craters.segment import multiscale_craters

    truth = np.array([[60.0, 60.0, 4.0], [150.0, 140.0, 8.0]])  # 8 px across: too small for the model at scale 1
    img = _discs((200, 200), truth)
    extract = lambda prob, min_r: extract_craters(prob, threshold=0.5, min_radius=min_r, max_radius=150)  # noqa: E731
    model = BandPass()
    full = multiscale_craters(model, img, [1.0], extract, min_radius=3)
    both = multiscale_craters(model, img, [2.0, 1.0], extract, min_radius=3)
    assert match_craters(full[:, :3], truth, mode="deepmoon").tp == 1
    assert match_craters(both[:, :3], truth, mode="deepmoon").tp == 2
    small = both[np.argmin(np.hypot(both[:, 0] - 60, both[:, 1] - 60))]
    np.testing.assert_allclose(small[:3], truth[0], atol=1.0)  # brought back to full-image pixels
    # the same from a raster file (bilinear upsampling on read); a min radius of 5 px is 10 px at scale 2
    path = write_synthetic_geotiff(tmp_path / "discs.tif", img, dtype=None)
    assert match_craters(multiscale_craters(model, path, [2.0, 1.0], extract, min_radius=3)[:, :3], truth, mode="deepmoon").tp == 2
    assert match_craters(multiscale_craters(model, path, [2.0, 1.0], extract, min_radius=5)[:, :3], truth, mode="deepmoon").tp == 1


def test_the_magnified_scale_block_by_block_finds_what_the_whole_image_finds(tmp_path):
    """Scales above 1 go block by block on big images (memory bounded by a block): same craters, once each,
    also those straddling a block's edge, from an array and from a raster file."""
    from planetcd.craters.extract import extract_craters
    from planetcd.craters.match import match_craters
    from planetcd.craters.segment import multiscale_craters

    rng = np.random.default_rng(3)
    # small discs (only the magnified scale sees them) on a grid, several across the 128 px blocks' edges
    centres = [(x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)) for x in range(30, 420, 49) for y in range(30, 380, 49)]
    centres += [(127.5, 200.0), (256.0, 127.0), (128.0, 256.0)]
    truth = np.array([[x, y, 4.0] for x, y in centres])
    img = _discs((400, 440), truth)
    extract = lambda prob, min_r: extract_craters(prob, threshold=0.5, min_radius=min_r, max_radius=150)  # noqa: E731
    model = BandPass()
    whole = multiscale_craters(model, img, [2.0, 1.0], extract, min_radius=3)
    blocks = multiscale_craters(model, img, [2.0, 1.0], extract, min_radius=3, magnified_block=128)
    assert match_craters(whole[:, :3], truth, mode="deepmoon").tp == len(truth)
    res = match_craters(blocks[:, :3], truth, mode="deepmoon")
    assert res.tp == len(truth) and res.fp == 0  # every crater once: none lost or doubled at a block edge
    paired = match_craters(blocks[:, :3], whole[:, :3], mode="deepmoon")
    assert paired.tp == len(whole)
    np.testing.assert_allclose(blocks[paired.pairs[:, 0], :3], whole[paired.pairs[:, 1], :3], atol=0.5)
    path = write_synthetic_geotiff(tmp_path / "discs.tif", img, dtype=None)
    from_file = multiscale_craters(model, path, [2.0, 1.0], extract, min_radius=3, magnified_block=128)
    assert match_craters(from_file[:, :3], truth, mode="deepmoon").tp == len(truth)
    turned = multiscale_craters(model, img, [2.0, 1.0], extract, min_radius=3, magnified_block=128, sun_azimuth=180.0)
    assert match_craters(turned[:, :3], truth, mode="deepmoon").tp == len(truth)


def test_scale_craters_and_parse_scales():
    from planetcd.craters.segment import parse_scales, scale_craters

    # pixel 0 of a half-size map covers full pixels 0 and 1 (centre 0.5)
    np.testing.assert_allclose(scale_craters([[0.0, 10.0, 3.0, 0.9]], 0.5), [[0.5, 20.5, 6.0, 0.9]])
    assert parse_scales("1,0.5,0.25") == (1.0, 0.5, 0.25)
    assert parse_scales(None) is None
    assert parse_scales("2,1,0.5") == (2.0, 1.0, 0.5)
    assert parse_scales([1, 0.5, 1]) == (1.0, 0.5)
    for bad in ("0", "4.5", "a,b", "1,-0.5"):
        with pytest.raises(InputError):
            parse_scales(bad)


def test_extract_craters_takes_the_models_settings():
    import planetcd
    from planetcd.craters.extract import extract_craters, extraction_options, synthetic_probability_map

    prob, _ = synthetic_probability_map((256, 256), 30, seed=3)
    meta = planetcd.models.metadata("ctx-craters")
    expected = extract_craters(prob, **extraction_options(meta))
    assert len(expected) > 5 and "min_contrast" in extraction_options(meta)
    np.testing.assert_array_equal(planetcd.extract_craters(prob, model="ctx-craters"), expected)
    np.testing.assert_array_equal(extract_craters(prob, model=meta), expected)
    # a setting given wins over the model's; without a model the defaults stay
    np.testing.assert_array_equal(extract_craters(prob, model=meta, min_radius=10.0),
                                  extract_craters(prob, **{**extraction_options(meta), "min_radius": 10.0}))
    np.testing.assert_array_equal(extract_craters(prob), extract_craters(prob, threshold=0.5, min_radius=3.0, max_radius=50.0))


@pytest.mark.shared
def test_the_sun_read_back_from_the_craters_is_reported_and_used_when_asked(shared_dir, caplog, monkeypatch):
    """A 1024 px crop of MC11E-A: the estimate there (306°, confident) misses its labelled craters' sun by about
    40°. The craters the first pass finds show the labels' sun (within 8°): by default a warning says so and the
    estimate is kept (``readback`` in run.json); with ``sun_refine=True`` the image is segmented again in
    that frame and the catalogue's sun is the read-back's."""
    import logging

    from PIL import Image

    from planetcd.craters.sun import angle_difference, azimuth_from_craters
    from planetcd.craters.train import read_labels

    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off
    data = shared_dir / "data" / "ctx-mc11e"
    crop = np.asarray(Image.open(data / "images" / "MC11E-A.png").convert("L"), np.float32)[:1024, :1024]
    labels = read_labels(data / "annotations" / "clustered" / "MC11E-A.xml")
    labels = labels[(labels[:, 0] < 1024) & (labels[:, 1] < 1024)]
    reference, used = azimuth_from_craters(crop, labels)
    assert used > 100
    fast = {"scales": [1.0], "verify": False}
    with caplog.at_level(logging.WARNING, logger="planetcd"):
        kept = segment(crop, "ctx-craters", **fast)
    sun = kept.params["sun"]
    assert sun["source"] == "estimated" and abs(angle_difference(sun["sun_azimuth_deg"], reference)) > 30
    assert sun["readback"]["elsewhere"] and not sun["readback"]["segmented_again"]
    assert abs(angle_difference(sun["readback"]["readback_deg"], reference)) < 8
    assert "--sun-refine" in caplog.text
    refined = segment(crop, "ctx-craters", sun_refine=True, **fast)
    sun = refined.params["sun"]
    assert sun["source"] == "refined" and sun["readback"]["segmented_again"]
    assert sun["sun_azimuth_deg"] == pytest.approx(sun["readback"]["readback_deg"], abs=1e-3)
    assert refined.catalog.metadata["sun"]["source"] == "refined"
    assert sun["frame"]["sun_azimuth_deg"] == pytest.approx(sun["sun_azimuth_deg"], abs=1e-3)


@pytest.mark.shared
def test_an_image_segments_the_same_as_an_array_and_as_a_file(shared_dir, tmp_path):
    """The whole default pipeline (three scales, flip averaging, verifier and decoys) on a 640 px CTX crop, given as
    a float array and as a GeoTIFF of the same values: the same catalogue. Before, an array's other scales were
    resampled by scikit-image and a file's by GDAL, and the two catalogues differed (this test fails there)."""
    from PIL import Image

    tile = np.asarray(Image.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-I.png").convert("L"))
    crop = np.array(tile[600:1240, 600:1240], np.float32)
    path = write_synthetic_geotiff(tmp_path / "crop.tif", crop, dtype="float32")
    from_array, from_file = segment(crop, "ctx-craters"), segment(path, "ctx-craters")
    assert len(from_file.catalog) >= 10
    np.testing.assert_array_equal(from_array.probability, from_file.probability)
    np.testing.assert_allclose(from_array.catalog.pixels, from_file.catalog.pixels, atol=1e-9)
