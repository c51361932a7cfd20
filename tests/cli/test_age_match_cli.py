"""``planetcd age`` and ``planetcd match`` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from planetcd.cli import main
from planetcd.craters.catalog import Catalog, read_scc
from planetcd.craters.dating import fit_age


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def samples(shared_dir):
    return shared_dir / "data" / "craterstats-samples"


def test_age_json_matches_api_and_reference(samples):
    with open(samples / "reference_ages.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["file"] == "Pickering.scc" and r["method"] == "poisson")
    result = _run("age", samples / "Pickering.scc", "--system", "mars-neukum-ivanov", "--range", row["d_min_km"], row["d_max_km"], "--method", "poisson", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    for key in ("age_ga", "age_lo_ga", "age_hi_ga", "n1", "n1_lo", "n1_hi", "n_craters", "area_km2", "system", "method", "d_min_km", "d_max_km"):
        assert key in record
    api = fit_age(read_scc(samples / "Pickering.scc"), "mars-neukum-ivanov", (0.2, 0.7), "poisson")
    assert record["age_ga"] == pytest.approx(api.age_ga)
    assert record["age_ga"] == pytest.approx(float(row["age_Ga"]), rel=0.02)
    assert record["n_craters"] == float(row["N"])


def test_age_text_plot_and_overwrite(tmp_path, samples):
    plot = tmp_path / "csfd.png"
    args = ["age", samples / "CE-6_8km_vicinity.scc", "--system", "moon-neukum-1983", "--range", "0.1", "1", "--plot", plot]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    assert "Model age:" in result.output and "Ga" in result.output and "N(1)" in result.output
    assert plot.stat().st_size > 10_000
    again = _run(*args)
    assert again.exit_code == 1 and "exists" in again.output and "Traceback" not in again.output
    assert _run(*args, "--overwrite", "--method", "differential", "--presentation", "R").exit_code == 0


def test_age_from_a_segment_style_catalog_needs_an_area(tmp_path):
    rng = np.random.default_rng(0)
    radius_px = 0.2 * rng.uniform(size=500) ** (-1 / 2) * 1000 / 2 / 20  # D^-2 law above 0.2 km at 20 m/px
    pixels = np.column_stack([rng.uniform(0, 2000, 500), rng.uniform(0, 2000, 500), radius_px, np.ones(500)])
    path = tmp_path / "craters.csv"
    Catalog.from_pixels(pixels, pixel_size_m=20.0).to_csv(path)
    missing = _run("age", path, "--system", "mars-ivanov", "--range", "0.3", "2")
    assert missing.exit_code == 1 and "area" in missing.output
    result = _run("age", path, "--system", "mars-ivanov", "--range", "0.3", "2", "--area", "1600", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    diameters = 2 * radius_px * 20 / 1000
    assert record["n_craters"] == np.count_nonzero((diameters >= 0.3) & (diameters < 2))
    assert record["area_km2"] == 1600 and record["age_lo_ga"] < record["age_ga"] < record["age_hi_ga"]


def test_age_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.scc"
    bad.write_text("nothing here\n")
    result = _run("age", bad, "--system", "mars-ivanov")
    assert result.exit_code == 1 and result.output.startswith("planetcd: error:")
    assert _run("age", bad, "--system", "venus").exit_code == 2


def test_match_self_and_json(tmp_path, shared_dir):
    labels = shared_dir / "data" / "hrsc-pycda" / "holdout_tile_labels.csv"
    out = tmp_path / "scores.json"
    for mode in ("deepmoon", "strict", "iou"):
        result = _run("match", labels, labels, "--mode", mode, "--json", out, "--overwrite")
        assert result.exit_code == 0, result.output
        assert "precision" in result.output and "1.000" in result.output
        report = json.loads(out.read_text())
        assert report["pooled"]["precision"] == 1.0 and report["pooled"]["recall"] == 1.0
        assert report["pooled"]["tp"] == 409
    refused = _run("match", labels, labels, "--json", out)  # exists, no --overwrite
    assert refused.exit_code == 1
    assert "use --overwrite to replace" in refused.output and "overwrite=True" not in refused.output


def test_match_folders_pairs_by_name_and_pools(tmp_path):
    rng = np.random.default_rng(2)
    det_dir, truth_dir = tmp_path / "det", tmp_path / "truth"
    det_dir.mkdir()
    truth_dir.mkdir()
    expected_tp = 0
    for k, n in enumerate((20, 30)):
        truth = np.column_stack([rng.uniform(0, 1000, n), rng.uniform(0, 1000, n), rng.uniform(3, 8, n)])
        Catalog.from_pixels(truth).to_csv(truth_dir / f"img{k}.csv")
        det = truth[: n - 5]  # 5 missed per image
        expected_tp += len(det)
        Catalog.from_pixels(det).to_csv(det_dir / f"img{k}.csv")
    result = _run("match", det_dir, truth_dir, "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [im["name"] for im in report["images"]] == ["img0", "img1"]
    assert report["pooled"]["tp"] == expected_tp and report["pooled"]["fn"] == 10 and report["pooled"]["fp"] == 0


# ----------------------------------------------------------------------------- science sweep


def _diameter_list(tmp_path, diameters_km):
    path = tmp_path / "diameters.csv"
    path.write_text("diameter_km\n" + "".join(f"{d:.6f}\n" for d in diameters_km))
    return path


def test_age_plot_without_a_range(tmp_path):
    # `age COUNTS --plot` without --range fits up to infinity; the plot raised a TypeError traceback.
    rng = np.random.default_rng(4)
    path = _diameter_list(tmp_path, 0.2 * rng.uniform(size=300) ** -0.5)
    plot = tmp_path / "csfd.png"
    result = _run("age", path, "--area", "1000", "--system", "mars-ivanov", "--method", "differential", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert plot.stat().st_size > 10_000 and "Model age:" in result.output


def test_age_of_a_range_without_craters_is_an_upper_limit(tmp_path):
    # A range typed in metres held no crater and gave "Model age: 2.4 +1.7/-1.7 Ga".
    path = _diameter_list(tmp_path, [0.3, 0.5, 0.8, 1.2])
    result = _run("age", path, "--area", "1000", "--system", "mars-ivanov", "--range", "200", "700")
    assert result.exit_code == 0, result.output
    assert "Model age: < " in result.output and "upper limit" in result.output
    assert "its craters are 0.3-1.2 km" in result.output
    record = json.loads(_run("age", path, "--area", "1000", "--system", "mars-ivanov", "--range", "200", "700", "--json",
                             "-qq").output)
    assert record["upper_limit"] is True and record["n_craters"] == 0


def test_age_refuses_a_system_of_another_body(samples):
    result = _run("age", samples / "c1.scc", "--system", "mars-ivanov")  # c1.scc: a lunar count
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("planetcd: error:") and "Mars system" in result.output
    assert _run("age", samples / "c1.scc", "--system", "moon-neukum-1983").exit_code == 0


def test_match_plain_lonlat_lists_on_a_named_body(tmp_path):
    rng = np.random.default_rng(5)
    lon, lat, diameter = rng.uniform(0, 360, 50), rng.uniform(-50, 50, 50), rng.uniform(2, 10, 50)
    truth, det = tmp_path / "truth.csv", tmp_path / "det.csv"
    truth.write_text("lon,lat,diameter_km\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(lon, lat, diameter)))
    # Detections 1 km east of the truth: on Mars 1 km is 0.0169 deg / cos(lat); on the Moon it would be 0.033 deg.
    shift = np.rad2deg(1.0 / 3396.19) / np.cos(np.deg2rad(lat))
    det.write_text("lon,lat,diameter_km\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(lon + shift, lat, diameter)))
    unnamed = _run("match", det, truth, "--json", "-")
    assert unnamed.exit_code == 0 and "neither list names its body" in unnamed.output
    result = _run("match", det, truth, "--body", "mars", "--json", "-", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["pooled"]["tp"] == 50
    assert report["pooled"]["position_error"]["median"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("args, message", [
    (["match", "{labels}", "{labels}", "--mode", "iou", "--iou-threshold", "1.5"], "--iou-threshold must lie in (0, 1]"),
    (["match", "{labels}", "{labels}", "--pixel-size", "-12.5"], "--pixel-size must be positive"),
    (["age", "{labels}", "--system", "mars-ivanov", "--area", "451", "--pixel-size", "-12.5"], "--pixel-size must be positive"),
    (["age", "{labels}", "--system", "mars-ivanov", "--area", "451"], "--pixel-size"),
])
def test_bad_options_are_one_line(shared_dir, args, message):
    # --iou-threshold 1.5 matched nothing without a word; a negative pixel size was reported as
    # 409 negative diameters.
    labels = shared_dir / "data" / "hrsc-pycda" / "holdout_tile_labels.csv"
    result = _run(*(a.format(labels=labels) for a in args))
    assert result.exit_code == 1 and result.output.startswith("planetcd: error:")
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_poisson_range_below_the_smallest_crater_is_warned(tmp_path):
    # --range 0 1 on a count complete only above 0.1 km gave "0.883 Ma" (vs 0.5 Ga from the
    # cumulative fit) without a word: the Poisson method takes the count as complete.
    path = _diameter_list(tmp_path, np.geomspace(0.1, 1.0, 50))
    warned = _run("age", path, "--area", "100", "--system", "mars-ivanov", "--range", "0", "1")
    assert warned.exit_code == 0 and "well below the smallest crater counted (0.1 km)" in warned.output
    quiet = _run("age", path, "--area", "100", "--system", "mars-ivanov", "--range", "0.1", "1")
    assert quiet.exit_code == 0 and "well below" not in quiet.output


@pytest.mark.parametrize("text", [
    "lon,lat,diameter_km\n10,20,1.5\nnan,5,2\n",  # cKDTree raised "data must be finite" (traceback)
    "lon,lat,diameter_km\n10,20,1.5\n30,5,-2\n",
    "x_px,y_px,radius_px\n10,20,1.5\nnan,5,2\n",  # _as_points raised ValueError (traceback)
])
def test_match_refuses_unusable_rows_in_one_line(tmp_path, text):
    path = tmp_path / "list.csv"
    path.write_text(text)
    result = _run("match", path, path, "--body", "mars")
    assert result.exit_code == 1 and result.output.startswith("planetcd: error: list: 1 of 2 craters")
    assert "first: crater 2" in result.output and "Traceback" not in result.output


def test_match_an_empty_detection_list(tmp_path):
    # A detector that found nothing: "pixel matching needs pixel positions in both crater lists".
    det, truth = tmp_path / "det.csv", tmp_path / "truth.csv"
    det.write_text("x_px,y_px,radius_px\n")
    truth.write_text("x_px,y_px,radius_px\n10,20,3\n40,50,4\n")
    report = json.loads(_run("match", det, truth, "--json", "-").output)
    assert report["pooled"]["tp"] == 0 and report["pooled"]["fn"] == 2 and report["pooled"]["recall"] == 0.0


def test_age_writes_the_count_for_craterstats(tmp_path):
    # planetcd could date a crater list but not hand its count on to craterstats.
    from planetcd.craters.catalog import read_diam

    rng = np.random.default_rng(6)
    diameters = np.round(0.2 * rng.uniform(size=200) ** -0.5, 6)  # as _diameter_list writes them
    path, diam = _diameter_list(tmp_path, diameters), tmp_path / "count.diam"
    result = _run("age", path, "--area", "250", "--system", "mars-ivanov", "--diam", diam)
    assert result.exit_code == 0, result.output
    back = read_diam(diam)
    np.testing.assert_allclose(np.sort(back.diameter_km), np.sort(diameters), rtol=1e-6)
    assert back.area_km2 == 250.0
    again = json.loads(_run("age", diam, "--system", "mars-ivanov", "--json").output)
    first = json.loads(_run("age", path, "--area", "250", "--system", "mars-ivanov", "--json").output)
    assert again["age_ga"] == pytest.approx(first["age_ga"], rel=1e-6)
    refused = _run("age", path, "--area", "250", "--system", "mars-ivanov", "--diam", diam)
    assert refused.exit_code == 1 and "--overwrite" in refused.output
