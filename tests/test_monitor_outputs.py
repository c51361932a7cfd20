"""What ``MonitorResult.write`` leaves on disk, read the way other tools read it (strict JSON parsers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from planetcd.datasets.synthetic import write_synthetic_geotiff
from planetcd.monitor import monitor
from planetcd.jsonio import strict_json


class FindsNothing(torch.nn.Module):
    """A stand-in segmenter that finds no crater anywhere: every candidate is a ``change`` candidate."""

    metadata = {"name": "finds-nothing", "threshold": 0.5}

    def forward(self, x):
        return x * 0.0


def _reject_constant(name):
    raise ValueError(f"not JSON: {name}")


@pytest.fixture(scope="module")
def change_result(trunk, tmp_path_factory):
    """A 200 px pair whose post holds one dark disc (r 6 px): one ``change`` candidate, its crater columns NaN."""
    from scipy import ndimage

    folder = tmp_path_factory.mktemp("strict")
    rng = np.random.default_rng(0)
    pre = np.clip(0.5 + ndimage.gaussian_filter(rng.normal(0, 0.2, (200, 200)), 2.0), 0.05, 1.0).astype(np.float32)
    post = pre + rng.normal(0, 0.005, pre.shape).astype(np.float32)
    yy, xx = np.mgrid[:200, :200]
    post[(yy - 60) ** 2 + (xx - 140) ** 2 <= 36] -= 0.4
    a = write_synthetic_geotiff(folder / "pre.tif", pre, pixel_size=6.0)
    b = write_synthetic_geotiff(folder / "post.tif", np.clip(post, 0.01, 1.0), pixel_size=6.0)
    return monitor(a, b, model=FindsNothing(), trunk=trunk, n_pseudo=20, seed=0, patch_size=50)


def test_monitor_json_is_standard_json_with_versions(change_result, tmp_path):
    """monitor.json was written with Python's default ``NaN`` for the empty score columns (``change_peak`` of a
    ``new_crater``, ``confidence``/``pre_support`` of a ``change``), which jq and JSON.parse reject."""
    assert len(change_result) >= 1
    assert np.isnan(change_result.table()["pre_support"]).any()  # the case that wrote NaN
    change_result.write(tmp_path / "out")
    text = (tmp_path / "out" / "monitor.json").read_text()
    record = json.loads(text, parse_constant=_reject_constant)
    top = record["top_candidates"][0]
    assert top["type"] == "change" and top["pre_support"] is None and isinstance(top["score"], float)
    assert set(record["versions"]) >= {"python", "numpy", "torch", "rasterio", "gdal"}
    assert record["n_candidates"] == len(change_result)


def test_strict_json_replaces_non_finite_numbers_only():
    value = {"a": [1.5, float("nan"), np.float32(np.inf)], "b": (np.int64(3), np.bool_(True)), "c": "NaN",
             "d": np.array([0.25, -np.inf])}
    assert strict_json(value) == {"a": [1.5, None, None], "b": [3, True], "c": "NaN", "d": [0.25, None]}
    json.dumps(strict_json(value), allow_nan=False)


def test_an_interrupted_write_leaves_nothing_that_blocks_the_next_run(change_result, tmp_path, monkeypatch):
    """Ctrl-C while the outputs were written (found by interrupting ``planetcd monitor`` 8.4 s into an 8.8 s run)
    left change/*.tif and the tables; the same command then refused with 'exists ... use --overwrite'."""
    import planetcd.report as report

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(report, "write_report", interrupted)  # after change/, chips and tables are written
        with pytest.raises(KeyboardInterrupt):
            change_result.write(out)
    assert sorted(p.name for p in out.rglob("*")) == ["notes.txt"]  # the user's file and folder stay
    change_result.write(out)  # no overwrite needed
    assert (out / "monitor.json").is_file() and (out / "notes.txt").is_file()


def test_a_pair_without_georeferencing_says_what_the_outputs_lack(trunk, tmp_path, caplog, monkeypatch):
    """A PNG pair without ``--pixel-size`` silently gave a table without map, lon/lat or diameter columns and a
    GeoPackage without CRS; nothing told the user why, or how to get diameters."""
    import logging

    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off

    from PIL import Image

    rng = np.random.default_rng(1)
    image = (np.clip(0.5 + 0.1 * rng.standard_normal((128, 128)), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "pre.png")
    Image.fromarray(image).save(tmp_path / "post.png")
    with caplog.at_level(logging.WARNING, logger="planetcd"):
        result = monitor(tmp_path / "pre.png", tmp_path / "post.png", model=FindsNothing(), trunk=trunk,
                         n_pseudo=8, patch_size=64)
    assert "diameter_km" not in result.table()
    assert any("not georeferenced" in r.getMessage() and "--pixel-size" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="planetcd"):
        result = monitor(tmp_path / "pre.png", tmp_path / "post.png", model=FindsNothing(), trunk=trunk,
                         n_pseudo=8, patch_size=64, pixel_size_m=6.0)
    assert "diameter_km" in result.table()
    assert not any("not georeferenced" in r.getMessage() for r in caplog.records)


def test_monitor_json_records_the_grid_of_the_pixel_columns(change_result, tmp_path):
    """monitor.json had no CRS or transform (change/run.json has them): x_px/y_px could not be mapped from it."""
    import rasterio

    change_result.write(tmp_path / "out")
    record = json.loads((tmp_path / "out" / "monitor.json").read_text())
    with rasterio.open(change_result.params["pre"]) as ds:
        assert rasterio.crs.CRS.from_wkt(record["crs"]) == ds.crs
        np.testing.assert_allclose(record["transform"], list(ds.transform)[:6])


def test_the_local_crater_search_does_not_log_per_window_counts(caplog, monkeypatch):
    """Every changed window's local search logged 'scale 2: N craters' at INFO (three lines per window, found
    on the demo pair), lines that say nothing to a monitor user between the run's own summary lines."""
    import logging

    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off

    from planetcd.monitor import local_craters

    rng = np.random.default_rng(0)
    windows = [rng.uniform(-1, 1, (96, 96)).astype(np.float32) for _ in range(3)]
    with caplog.at_level(logging.INFO, logger="planetcd"):
        local_craters(FindsNothing(), *windows, threshold=0.3, scales=(1.0, 2.0))
    assert not [r for r in caplog.records if r.name == "planetcd.craters.segment" and r.levelno < logging.WARNING]
    assert logging.getLogger("planetcd.craters.segment").level == logging.NOTSET  # restored
    with caplog.at_level(logging.INFO, logger="planetcd"):
        logging.getLogger("planetcd.craters.segment").info("probe")  # outside the search its lines still show
    assert any(r.getMessage() == "probe" for r in caplog.records)


def test_monitor_json_records_the_settings_used_not_only_those_asked(change_result, tmp_path):
    """monitor.json said n_pseudo 20 and pixel_size_m null for a georeferenced 6 m/px pair whose detect stopped
    early, and not how post was put on pre's grid (a post at another resolution or CRS is resampled)."""
    change_result.write(tmp_path / "out")
    params = json.loads((tmp_path / "out" / "monitor.json").read_text())["parameters"]
    assert params["n_pseudo"] == 20 and 2 <= params["n_pseudo_used"] <= 20
    assert params["n_pseudo_used"] == len(change_result.change.pseudo_scores)
    assert params["pixel_size_m"] is None and params["pixel_size_m_used"] == pytest.approx(6.0)
    assert params["inputs"]["post_on_pre_grid"] == "same grid"


class FindsNothingSunAware(FindsNothing):
    metadata = {"name": "finds-nothing-sun-aware", "threshold": 0.5, "sun_aware": True}


def test_a_date_whose_estimate_agrees_with_the_other_dates_keeps_it(trunk, tmp_path, monkeypatch):
    """Pre's sun estimated confidently at 311°, post's own estimate 310.9° below the confidence bar: post fell
    back to 270°, so a sun-aware model segmented the two dates in frames 41° apart (on a CTX crop this made a
    false new crater). Post now keeps its own estimate; a disagreeing one (200°) still falls back."""
    import planetcd.craters.segment as segment
    from planetcd.craters.sun import SunEstimate

    pre_path, post_path = tmp_path / "pre.tif", tmp_path / "post.tif"
    rng = np.random.default_rng(2)
    image = np.clip(0.5 + 0.1 * rng.standard_normal((128, 128)), 0, 1).astype(np.float32)
    write_synthetic_geotiff(pre_path, image, pixel_size=6.0)
    write_synthetic_geotiff(post_path, image, pixel_size=6.0)

    def estimates(post_azimuth):
        def estimate(image, band=1, **kwargs):
            if str(image) == str(pre_path):
                return SunEstimate(311.1, 0.94, True, "clipped-gradient", 41.0, 0.3, 20)
            return SunEstimate(post_azimuth, 0.85, False, "clipped-gradient", 41.0, 0.3, 20)
        return estimate

    monkeypatch.setattr(segment, "image_sun_estimate", estimates(310.9))
    sun = monitor(pre_path, post_path, model=FindsNothingSunAware(), trunk=trunk, n_pseudo=8, patch_size=64).params["sun"]
    assert sun["pre"]["source"] == "estimated" and sun["pre"]["sun_azimuth_deg"] == pytest.approx(311.1)
    assert sun["post"]["source"] == "estimated (corroborated by pre)"
    assert sun["post"]["sun_azimuth_deg"] == pytest.approx(310.9)
    assert sun["post"]["frame"]["sun_azimuth_deg"] == pytest.approx(310.9)
    monkeypatch.setattr(segment, "image_sun_estimate", estimates(200.0))
    sun = monitor(pre_path, post_path, model=FindsNothingSunAware(), trunk=trunk, n_pseudo=8, patch_size=64).params["sun"]
    assert sun["post"]["source"] == "fallback" and sun["post"]["sun_azimuth_deg"] == pytest.approx(270.0)


def test_monitor_json_names_the_inputs_by_absolute_paths(trunk, tmp_path, monkeypatch):
    """'monitor pre.tif post.tif -o out' recorded "pre": "pre.tif": relative to a working folder the record does
    not hold, so the inputs could not be found from the outputs once the shell had moved on."""
    rng = np.random.default_rng(3)
    image = np.clip(0.5 + 0.1 * rng.standard_normal((128, 128)), 0, 1).astype(np.float32)
    write_synthetic_geotiff(tmp_path / "pre.tif", image, pixel_size=6.0)
    write_synthetic_geotiff(tmp_path / "post.tif", image, pixel_size=6.0)
    monkeypatch.chdir(tmp_path)
    result = monitor("pre.tif", "post.tif", model=FindsNothing(), trunk=trunk, n_pseudo=8, patch_size=64)
    result.write(tmp_path / "out")
    params = json.loads((tmp_path / "out" / "monitor.json").read_text())["parameters"]
    assert params["pre"] == str(tmp_path.resolve() / "pre.tif") and params["post"] == str(tmp_path.resolve() / "post.tif")
