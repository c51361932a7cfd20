"""Segmentation and the sun: ``sun_azimuth`` given, estimated or off; the canonical frame round trip; the records."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from planetcd.craters.catalog import read_catalog_gpkg
from planetcd.craters.match import match_craters
from planetcd.craters.segment import parse_sun_azimuth, resolve_sun, segment
from planetcd.datasets.synthetic import hillshade, random_craters, terrain_height, write_synthetic_geotiff
from planetcd.errors import InputError


class LitFromLeft(torch.nn.Module):
    """A stand-in sun-aware segmenter: it sees craters lit from the left only.

    A crater lit from the left is dark on its left inner wall and bright on its
    right one; the kernel (+1 on the right half-disc, -1 on the left) answers
    that pattern and nothing turned by 90° or more.
    """

    def __init__(self, radius: int = 7, bias: float = 0.25, sun_aware: bool = True):
        super().__init__()
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        disc = xx**2 + yy**2 <= radius**2
        self.conv = torch.nn.Conv2d(1, 1, 2 * radius + 1, padding=radius, bias=False)
        self.conv.weight.data[:] = torch.from_numpy((np.sign(xx) * disc / disc.sum()).astype(np.float32))
        self.bias = bias
        self.metadata = {"threshold": 0.5, "name": "lit-from-left", "tta": False, "sun_aware": sun_aware,
                         "extraction": {"scales": [1.0]}}

    def forward(self, x):
        return torch.sigmoid(40 * (self.conv(x) - self.bias))


def _terrain(size: int, n: int, seed: int = 3):
    """A cratered height field (craters of radius 6-10 px only) and its craters ``x, y, radius``."""
    rng = np.random.default_rng(seed)
    craters = random_craters((size, size), n, rng, r_min=6, r_max=10)
    height = terrain_height((size, size), craters, rng, relief=0.0)
    return height, craters[:, [1, 0, 2]]


def _xyr(result) -> np.ndarray:
    cat = result.catalog
    return np.c_[cat.x_px, cat.y_px, cat.radius_px]


def _rotated_back(craters: np.ndarray, rows: int) -> np.ndarray:
    """Craters of ``np.rot90(image, -1)`` (a clockwise quarter turn of an image with ``rows`` rows) on the image."""
    out = np.array(craters, float, copy=True)
    out[:, 0], out[:, 1] = craters[:, 1], rows - 1 - craters[:, 0]
    return out


def _seg(image, model, **kw):
    return segment(image, model, tile_size=128, overlap=16, device="cpu", **kw)


@pytest.fixture(scope="module")
def lit_left():
    height, truth = _terrain(512, 200)
    return hillshade(height, 270.0, 30.0) * 0.8 + 0.1, truth


def test_the_stand_in_sees_only_craters_lit_from_the_left(lit_left):
    image, truth = lit_left
    model = LitFromLeft().eval()
    found = _seg(image, model, sun_azimuth="none")
    assert match_craters(_xyr(found), truth, mode="deepmoon").tp >= 0.25 * len(truth)
    turned = _seg(np.rot90(image, 2).copy(), model, sun_azimuth="none")
    assert match_craters(_xyr(turned), truth, mode="deepmoon").tp == 0  # turned 180°: mounds to it


def test_quarter_turn_with_the_matching_azimuth_gives_the_same_catalogue(lit_left, tmp_path):
    image, _ = lit_left
    model = LitFromLeft().eval()
    ref = _seg(image, model, sun_azimuth=270)
    rotated = np.rot90(image, -1).copy()  # clockwise: the light now comes from the top
    res = _seg(rotated, model, sun_azimuth=0)
    # the network ran on the same canonical image: the probability is the reference's, turned
    np.testing.assert_allclose(np.rot90(res.probability, 1), ref.probability, atol=1e-6)
    # the extraction runs on the input grid, where it sees the turned map: the same craters (DeepMoon rule)
    back = _rotated_back(_xyr(res), image.shape[0])
    got = match_craters(back, _xyr(ref), mode="deepmoon")
    assert len(ref) > 50 and got.tp >= 0.95 * max(len(ref), len(back)), (got.tp, len(ref), len(back))
    pairs = np.asarray(got.pairs)
    assert np.median(np.hypot(*(back[pairs[:, 0], :2] - _xyr(ref)[pairs[:, 1], :2]).T)) <= 0.5
    # without the frame the turned image is not understood: the test can fail
    off = _seg(rotated, model, sun_azimuth="none")
    assert match_craters(_rotated_back(_xyr(off), image.shape[0]), _xyr(ref), mode="deepmoon").tp < 0.2 * len(ref)
    # the record
    sun = res.params["sun"]
    assert sun["source"] == "given" and sun["sun_azimuth_deg"] == 0.0 and sun["canonical_frame"]
    assert sun["frame"]["quarter_turns"] == 3 and sun["frame"]["input_shape"] == [512, 512]
    res.write(tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["params"]["sun"] == json.loads(json.dumps(sun)) and run["craters"] == len(res.catalog)
    # a non-finite number in the record is written as null: run.json stays standard JSON (jq, JSON.parse)
    res.params["sun"]["confidence"] = float("nan")
    res.write(tmp_path / "nan")
    run = json.loads((tmp_path / "nan" / "run.json").read_text(), parse_constant=_no_constants)
    assert run["params"]["sun"]["confidence"] is None


def _no_constants(name: str):
    raise ValueError(f"{name} is not standard JSON")


def test_off_axis_azimuth_round_trip():
    height, truth = _terrain(512, 200)
    model = LitFromLeft().eval()
    ref = _seg(hillshade(height, 270.0, 30.0) * 0.8 + 0.1, model, sun_azimuth=270)
    lit = hillshade(height, 300.0, 30.0) * 0.8 + 0.1  # the same ground lit from the upper left
    res = _seg(lit, model, sun_azimuth=300)
    assert res.params["sun"]["frame"]["quarter_turns"] is None  # resampled by 330°
    assert res.probability.shape == lit.shape
    got = match_craters(_xyr(res), _xyr(ref), mode="deepmoon")
    assert got.tp >= 0.7 * len(ref), (got.tp, len(ref))
    assert match_craters(_xyr(res), truth, mode="deepmoon").tp >= 0.7 * match_craters(_xyr(ref), truth, mode="deepmoon").tp
    wrong = _seg(lit, model, sun_azimuth=120)  # told the opposite: finds mounds only
    assert match_craters(_xyr(wrong), truth, mode="deepmoon").tp < 0.1 * len(truth)


def test_the_estimated_azimuth_turns_a_quarter_turned_image_back(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off
    height, truth = _terrain(1024, 600)
    image = hillshade(height, 270.0, 30.0) * 0.8 + 0.1
    model = LitFromLeft().eval()
    ref = _seg(image, model, sun_azimuth=270)
    rotated = np.rot90(image, -1).copy()
    with caplog.at_level(logging.INFO, logger="planetcd"):
        res = _seg(rotated, model)  # sun left to the estimator
    sun = res.params["sun"]
    assert sun["source"] == "estimated" and sun["estimate"]["confident"], sun
    assert abs((sun["sun_azimuth_deg"] + 180) % 360 - 180) < 20  # the light now comes from the top
    back = _rotated_back(_xyr(res), image.shape[0])
    got = match_craters(back, _xyr(ref), mode="deepmoon")
    assert got.tp >= 0.8 * len(ref), (got.tp, len(ref))
    assert any("estimated" in r.getMessage() for r in caplog.records)


def test_not_confident_falls_back_with_one_log_line(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off
    rng = np.random.default_rng(0)
    flat = (100 + 5 * rng.standard_normal((256, 256))).astype(np.float32)  # white noise: no light direction
    with caplog.at_level(logging.INFO, logger="planetcd"):
        res = _seg(flat, LitFromLeft().eval())
    sun = res.params["sun"]
    assert sun["source"] == "fallback" and sun["sun_azimuth_deg"] == 270.0 and not sun["estimate"]["confident"]
    assert sun["frame"]["quarter_turns"] == 0
    lines = [r for r in caplog.records if "not confident" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    # the line names the option as the user types it, and the API's argument
    assert "--sun-azimuth (sun_azimuth= in Python)" in lines[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="planetcd"):
        resolve_sun(None, {"sun_aware": True}, flat, what="post_sun_azimuth", name="post")
    assert "--post-sun-azimuth (post_sun_azimuth= in Python)" in caplog.records[-1].getMessage()


def test_a_model_that_is_not_sun_aware_is_not_turned(lit_left):
    image, _ = lit_left
    rotated = np.rot90(image, -1).copy()
    model = LitFromLeft(sun_aware=False).eval()
    plain = _seg(rotated, model, sun_azimuth="none")
    given = _seg(rotated, model, sun_azimuth=0)
    estimated = _seg(rotated, model)
    for res in (given, estimated):
        np.testing.assert_array_equal(res.probability, plain.probability)
        assert not res.params["sun"]["canonical_frame"] and "frame" not in res.params["sun"]
    assert given.params["sun"]["source"] == "given" and given.params["sun"]["sun_azimuth_deg"] == 0.0
    assert estimated.params["sun"]["source"] in ("estimated", "fallback") and "estimate" in estimated.params["sun"]
    assert plain.params["sun"] == {"sun_aware_model": False, "sun_azimuth_deg": None, "source": "none",
                                   "canonical_frame": False}


def test_sun_azimuth_values():
    assert parse_sun_azimuth(None) is None and parse_sun_azimuth("auto") is None
    assert parse_sun_azimuth("none") == "none" and parse_sun_azimuth("OFF") == "none"
    assert parse_sun_azimuth(-90) == 270.0 and parse_sun_azimuth("450") == 90.0 and parse_sun_azimuth(360) == 0.0
    for bad in ("west", "nan", float("inf"), [1, 2]):
        with pytest.raises(InputError) as info:
            parse_sun_azimuth(bad)
        assert "\n" not in str(info.value) and "sun_azimuth" in str(info.value)
    with pytest.raises(InputError, match="sun_azimuth"):
        _seg(np.ones((64, 64), np.float32), LitFromLeft().eval(), sun_azimuth="west")


def test_cli_sun_azimuth(tmp_path, lit_left, monkeypatch):
    from planetcd.cli import main

    image, _ = lit_left
    path = write_synthetic_geotiff(tmp_path / "img.tif", np.rot90(image, -1).copy(), dtype=None)
    model = LitFromLeft().eval()
    monkeypatch.setattr("planetcd.models.cached", lambda *a, **k: model)
    runner = CliRunner()
    out = runner.invoke(main, ["segment", str(path), "-o", str(tmp_path / "o"), "--sun-azimuth", "-270",
                               "--tile", "128", "--overlap", "16"])
    assert out.exit_code == 0, out.output
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["params"]["sun"]["sun_azimuth_deg"] == 90.0 and run["params"]["sun"]["source"] == "given"
    # the catalogue carries the same record (GeoPackage layer metadata)
    catalog = read_catalog_gpkg(tmp_path / "o" / "craters.gpkg")
    assert catalog.metadata["sun"] == run["params"]["sun"] and catalog.metadata["command"] == "segment"
    bad = runner.invoke(main, ["segment", str(path), "-o", str(tmp_path / "p"), "--sun-azimuth", "west"])
    assert bad.exit_code != 0 and "--sun-azimuth" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "p").exists()


@pytest.mark.shared
@pytest.mark.slow
def test_shipped_model_on_a_quarter_turned_ctx_crop(shared_dir):
    """The shipped model (taken as sun-aware for the test) on a 90°-turned 1024² crop of MC11E-H with the
    matching azimuth gives the catalogue of the unturned crop, mapped back."""
    import planetcd.models
    from PIL import Image

    crop = np.asarray(Image.open(shared_dir / "data/ctx-mc11e/images/MC11E-H.png"), np.float32)
    crop = crop[..., 0] if crop.ndim == 3 else crop
    crop = crop[976:2000, 976:2000].copy()  # the corner with the most labelled craters (24)
    net = planetcd.models.load("ctx-craters", device="cpu")
    net.metadata = {**net.metadata, "sun_aware": True}
    options = dict(tile_size=512, overlap=64, device="cpu")
    ref = segment(crop, net, sun_azimuth=270, **options)  # H is lit from about 264°: no turn
    res = segment(np.rot90(crop, -1).copy(), net, sun_azimuth=0, **options)
    back = _rotated_back(_xyr(res), crop.shape[0])
    got = match_craters(back, _xyr(ref), mode="deepmoon")
    fraction = got.tp / max(len(ref), 1)
    print(f"MC11E-H 1024² crop turned 90°: {len(ref)} craters unturned, {len(res)} turned, match fraction {fraction:.3f}")
    assert len(ref) > 5 and fraction >= 0.95 and abs(len(res) - len(ref)) <= 0.05 * len(ref) + 1


@pytest.fixture(scope="module")
def sun_aware_model():
    """The shipped ``ctx-craters`` when its metadata says ``sun_aware: true``, else the stand-in :class:`LitFromLeft`."""
    import planetcd.models

    shipped = planetcd.models.load("ctx-craters", device="cpu")
    if shipped.metadata.get("sun_aware", False):
        return shipped
    return LitFromLeft().eval()


def _h_crop(shared_dir) -> np.ndarray:
    """The 1024² corner of MC11E-H with the most labelled craters (24); H is lit from about 264°."""
    from PIL import Image

    tile = np.asarray(Image.open(shared_dir / "data/ctx-mc11e/images/MC11E-H.png"))
    tile = tile[..., 0] if tile.ndim == 3 else tile
    return np.ascontiguousarray(tile[976:2000, 976:2000])


@pytest.mark.shared
@pytest.mark.slow
def test_cli_quarter_turned_ctx_crop_gives_the_mapped_catalogue(shared_dir, sun_aware_model, tmp_path, monkeypatch):
    """``planetcd segment`` on a crop of MC11E-H turned 90° clockwise gives the catalogue of the unturned crop,
    mapped back (DeepMoon rule): with the matching ``--sun-azimuth``, and with the sun left to the estimator."""
    from planetcd.cli import main
    from planetcd.craters.catalog import read_catalog_csv

    monkeypatch.setattr("planetcd.models.cached", lambda *a, **k: sun_aware_model)
    crop = _h_crop(shared_dir)
    n = crop.shape[0]
    paths = {"plain": write_synthetic_geotiff(tmp_path / "plain.tif", crop, dtype=None),
             "turned": write_synthetic_geotiff(tmp_path / "turned.tif", np.rot90(crop, -1).copy(), dtype=None)}
    runner = CliRunner()

    def run(name, *sun):
        out = tmp_path / f"{name}{'-' + sun[1] if sun else '-auto'}"
        res = runner.invoke(main, ["segment", str(paths[name]), "-o", str(out), "--tile", "512", "--overlap", "64", *sun, "-q"])
        assert res.exit_code == 0, res.output
        record = json.loads((out / "run.json").read_text())["params"]["sun"]
        assert read_catalog_gpkg(out / "craters.gpkg").metadata["sun"] == record  # the catalogue says it too
        cat = read_catalog_csv(out / "craters.csv")
        with rasterio.open(out / "crater_prob.tif") as src:
            prob = src.read(1)
        return np.c_[cat.x_px, cat.y_px, cat.radius_px], prob, record

    for how, plain_sun, turned_sun in (("given", ("--sun-azimuth", "270"), ("--sun-azimuth", "0")), ("estimated", (), ())):
        ref, ref_prob, ref_sun = run("plain", *plain_sun)
        got, got_prob, got_sun = run("turned", *turned_sun)
        assert ref_sun["source"] == got_sun["source"] == how and ref_sun["canonical_frame"] and got_sun["canonical_frame"]
        turn = (got_sun["sun_azimuth_deg"] - ref_sun["sun_azimuth_deg"]) % 360.0
        assert abs(turn - 90.0) < 1.0, (ref_sun, got_sun)  # the light turned with the image
        if how == "estimated":  # the estimate is near the labels' 264° (the crop's own: about 245°)
            assert abs((ref_sun["sun_azimuth_deg"] - 264.0 + 180.0) % 360.0 - 180.0) < 30.0, ref_sun
        else:  # the network saw the same canonical image: the probability maps back exactly
            np.testing.assert_allclose(np.rot90(got_prob, 1), ref_prob, atol=1e-6)
        back = _rotated_back(got, n)
        matched = match_craters(back, ref, mode="deepmoon")
        fraction = matched.tp / max(len(ref), len(back), 1)
        print(f"{how}: {len(ref)} craters unturned, {len(back)} turned, {matched.tp} matched ({fraction:.2f}); "
              f"azimuths {ref_sun['sun_azimuth_deg']:.1f} / {got_sun['sun_azimuth_deg']:.1f}")
        # connected components split touching blobs a little differently on the turned grid: not every one
        assert len(ref) >= 10 and fraction >= 0.8, (how, matched.tp, len(ref), len(back))


class CountingNet(torch.nn.Module):
    """A small convolutional net (a receptive field of 9 px) that counts the tiles it is given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 5, padding=2))
        self.tiles = 0

    def forward(self, x):
        self.tiles += len(x)
        return torch.sigmoid(self.net(x))


@pytest.mark.parametrize("azimuth", [225.0, 315.0])
def test_tiles_of_fill_only_are_not_segmented_and_change_nothing(lit_left, azimuth, monkeypatch):
    """A resampled turn's canvas corners are fill only: skipping their tiles leaves the window's probability as
    it was with every tile segmented (the skipped tiles hold no pixel the way back reads)."""
    import planetcd.craters.segment as seg

    image = lit_left[0][:300, :260].astype(np.float32) * 2 - 1
    model = CountingNet().eval()
    options = dict(tile_size=96, overlap=16, batch_size=3, precision="fp32")
    skipped = seg.canonical_probability(model, image, azimuth, **options)
    n_skipped = model.tiles
    model.tiles = 0
    monkeypatch.setattr(seg, "FOOTPRINT_MARGIN", 1e9)  # every tile meets the footprint
    every = seg.canonical_probability(model, image, azimuth, **options)
    assert n_skipped < model.tiles  # some tiles were skipped ...
    np.testing.assert_allclose(skipped, every, rtol=0, atol=1e-6)  # ... and no pixel of the window changed
