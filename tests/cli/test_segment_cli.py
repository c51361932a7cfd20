"""``planetcd segment``: outputs on the input grid, formats, bad inputs, the shipped model."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from planetcd.cli import main
from planetcd.datasets.synthetic import write_synthetic_geotiff

OUTPUTS = ("crater_prob.tif", "crater_mask.tif", "craters.csv", "craters.gpkg", "run.json")


@pytest.fixture(scope="module")
def tiny_model(untrained_unet):
    return untrained_unet(seed=0)


# A UTM-projected GeoTIFF at 6 m/px, written in the array's own type.
_geotiff = partial(write_synthetic_geotiff, crs="EPSG:32633", pixel_size=6.0, origin=(500000.0, 4000000.0), dtype=None)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_segment_geotiff_keeps_grid(tmp_path, tiny_model, rng):
    src = _geotiff(tmp_path / "in.tif", rng.integers(1, 255, (200, 180)).astype(np.uint8))
    out = tmp_path / "out"
    res = _run("segment", src, "-o", out, "--model", tiny_model, "--tile", 128, "--overlap", 32, "-q")
    assert res.exit_code == 0, res.output
    for name in OUTPUTS:
        assert (out / name).exists(), name
    with rasterio.open(out / "crater_prob.tif") as p, rasterio.open(src) as s:
        assert p.crs == s.crs and p.transform == s.transform and p.shape == s.shape
    header = (out / "craters.csv").read_text().splitlines()[0].split(",")
    assert "confidence" in header
    # existing outputs: refused without --overwrite, replaced with it
    res = _run("segment", src, "-o", out, "--model", tiny_model, "-q")
    assert res.exit_code != 0 and "exists" in res.output
    res = _run("segment", src, "-o", out, "--model", tiny_model, "--overwrite", "-q")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("suffix", [".png", ".pgm", ".jpg"])
def test_segment_accepts_plain_images(tmp_path, tiny_model, rng, suffix):
    path = tmp_path / f"img{suffix}"
    Image.fromarray(rng.integers(1, 255, (96, 120)).astype(np.uint8)).save(path)
    res = _run("segment", path, "-o", tmp_path / "o", "--model", tiny_model, "--pixel-size", 6, "-q")
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "o" / "crater_mask.tif") as m:
        assert m.shape == (96, 120)


def test_bad_inputs_one_line_nonzero_nothing_written(tmp_path, tiny_model):
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    cases = {
        "missing": tmp_path / "nope.tif",
        "not a raster": text,
        "all nodata": _geotiff(tmp_path / "zeros.tif", np.zeros((64, 64), np.uint8), nodata=0),
        "too small": _geotiff(tmp_path / "small.tif", np.ones((10, 64), np.uint8)),
    }
    for why, path in cases.items():
        out = tmp_path / f"out_{why.replace(' ', '_')}"
        res = _run("segment", path, "-o", out, "--model", tiny_model, "-q")
        assert res.exit_code != 0, why
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("planetcd: error:"), (why, res.output)
        assert not out.exists() or not any(out.iterdir()), why


def test_bad_options(tmp_path, tiny_model, rng):
    src = _geotiff(tmp_path / "in.tif", rng.integers(1, 255, (64, 64)).astype(np.uint8))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args in (("--overlap", 600), ("--threshold", 1.5), ("--tile", 8), ("--model", tmp_path / "none.pt"),
                 ("--model", bad), ("--model", "no-such-model"), ("--scales", "0"), ("--scales", "1,x"),
                 ("--min-contrast", 2), ("--decoy-fdr", "2"), ("--decoy-fdr", "x"), ("--decoy-fdr", "0"),
                 ("--decoy-sigma", "0"), ("--decoy-sigma", "x"), ("--decoy-sigma", "-3"), ("--decoy-sigma", "nan")):
        res = _run("segment", src, "-o", tmp_path / "o", "--model", tiny_model, *args, "-q")
        assert res.exit_code != 0, args
        assert res.output.strip().startswith("planetcd: error:") and len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "o" / "crater_prob.tif").exists()


def test_scales_option_merges_the_coarser_scales(tmp_path, tiny_model):
    import csv

    import planetcd.models as models
    from planetcd.craters.extract import extract_craters
    from planetcd.craters.segment import multiscale_craters

    yy, xx = np.mgrid[:160, :160]
    img = np.where((xx - 70) ** 2 + (yy - 80) ** 2 < 30**2, 200, 60).astype(np.uint8)
    src = _geotiff(tmp_path / "in.tif", img)
    res = _run("segment", src, "-o", tmp_path / "o", "--model", tiny_model, "--scales", "1,0.5", "--threshold", "0.5",
               "--precision", "fp32", "-q")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "craters.csv")))
    model = models.load(str(tiny_model))

    def extract(p, min_r):
        return extract_craters(p, threshold=0.5, min_radius=min_r, max_radius=150.0)

    expected = multiscale_craters(model, src, [1.0, 0.5], extract, min_radius=2.0)
    assert len(rows) == len(expected)
    np.testing.assert_allclose(sorted(float(r["radius_px"]) for r in rows), sorted(expected[:, 2]), rtol=1e-6)


def test_min_contrast_option_screens_the_catalog(tmp_path, tiny_model, rng):
    import csv

    from planetcd.craters.extract import extract_craters

    src = _geotiff(tmp_path / "in.tif", rng.integers(1, 255, (160, 160)).astype(np.uint8))
    counts = {}
    for value in ("-1", "0.05"):
        out = tmp_path / f"o{value}"
        res = _run("segment", src, "-o", out, "--model", tiny_model, "--threshold", "0.5", "--scales", "1",
                   "--min-contrast", value, "-q")
        assert res.exit_code == 0, res.output
        rows = list(csv.DictReader(open(out / "craters.csv")))
        with rasterio.open(out / "crater_prob.tif") as p:
            prob = np.nan_to_num(p.read(1), nan=0.0)
        expected = extract_craters(prob, threshold=0.5, min_radius=2.0, max_radius=150.0,
                                   min_contrast=None if value == "-1" else float(value))
        assert len(rows) == len(expected)
        counts[value] = len(rows)
    assert counts["-1"] > counts["0.05"]


def test_tta_option_writes_the_flip_averaged_probability(tmp_path, tiny_model, rng):
    import planetcd.models as models
    from planetcd.craters.segment import segment

    img = rng.integers(1, 255, (140, 150)).astype(np.uint8)
    src = _geotiff(tmp_path / "in.tif", img)
    probs = {}
    for flag in ("--tta", "--no-tta"):
        res = _run("segment", src, "-o", tmp_path / flag, "--model", tiny_model, "--tile", 128, "--overlap", 32, flag, "-q")
        assert res.exit_code == 0, res.output
        with rasterio.open(tmp_path / flag / "crater_prob.tif") as p:
            probs[flag] = p.read(1)
    expected = segment(img.astype(np.float32), models.load(str(tiny_model), tta=True), tile_size=128, overlap=32,
                       device="cpu").probability
    np.testing.assert_allclose(probs["--tta"], expected, atol=1e-5)
    assert np.abs(probs["--tta"] - probs["--no-tta"]).max() > 1e-3
    runs = {flag: json.loads((tmp_path / flag / "run.json").read_text())["params"] for flag in probs}
    assert runs["--tta"]["tta"] and runs["--tta"]["tta_flips"] == "all"  # not sun-aware: the four flips
    assert not runs["--no-tta"]["tta"] and runs["--no-tta"]["tta_flips"] is None


def test_registry_metadata():
    import planetcd.models as models

    assert "ctx-craters" in models.available()
    meta = models.metadata("ctx-craters")
    for key in ("instrument", "pixel_scale_m", "target", "training_data", "license", "metrics", "training_command"):
        assert key in meta, key
    assert meta["sha256"] == models.sha256(models.weights_path("ctx-craters"))
    model = models.load("ctx-craters")
    assert model.metadata["name"] == "ctx-craters"
    assert not model.training


@pytest.mark.shared
@pytest.mark.slow
def test_shipped_model_finds_ctx_craters(tmp_path, shared_dir):
    """The shipped model on validation tile I (never trained on), through the command line."""
    import csv

    from planetcd.craters.match import match_craters
    from planetcd.datasets.crater_labels import read_voc_boxes

    data = shared_dir / "data" / "ctx-mc11e"
    res = _run("segment", data / "images" / "MC11E-I.png", "-o", tmp_path / "out", "--pixel-size", 6, "-q")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "craters.csv")))
    assert "diameter_km" in rows[0] or "diameter_m" in rows[0]
    det = np.array([[float(r["x_px"]), float(r["y_px"]), float(r["radius_px"])] for r in rows]).reshape(-1, 3)
    truth = read_voc_boxes(data / "annotations" / "clustered" / "MC11E-I.xml")
    result = match_craters(det, truth, mode="deepmoon", min_diameter_px=8)
    # An untrained network finds next to nothing here; the shipped model about half of the craters.
    assert result.f1 > 0.3, result.to_dict()
    with rasterio.open(tmp_path / "out" / "crater_mask.tif") as m:
        mask = m.read(1)
    assert 0.001 < (mask == 1).mean() < 0.2
