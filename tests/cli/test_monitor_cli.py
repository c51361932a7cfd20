"""``planetcd monitor`` from the command line: outputs, refusals, bad input, resumable batch mode."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from planetcd.cli import main
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff


@pytest.fixture(scope="module")
def tiny_model(untrained_unet):
    """An untrained small UNet checkpoint: the command's plumbing does not depend on the shipped weights."""
    return untrained_unet(seed=0)


@pytest.fixture(scope="module")
def pair_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    pair = make_change_pair((300, 300), seed=5, displacement=(1.5, -2.0), new_craters=[[150, 150, 18.0]])
    return write_synthetic_geotiff(folder / "pre.tif", pair.pre), write_synthetic_geotiff(folder / "post.tif", pair.post)


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _fast(tiny_model, vgg_weights):
    return ["--model", tiny_model, "--weights", vgg_weights, "--n-pseudo", "8", "--block-size", "256", "-q"]


def test_monitor_writes_every_output_and_refuses_to_overwrite(pair_paths, tiny_model, vgg_weights, tmp_path):
    pre, post = pair_paths
    out = tmp_path / "out"
    result = _run(["monitor", pre, post, "-o", out, *_fast(tiny_model, vgg_weights)])
    assert result.exit_code == 0, result.output
    for name in ("new_craters.csv", "new_craters.gpkg", "pre_craters.csv", "post_craters.csv", "report.html",
                 "monitor.json", "change/change_score.tif", "change/candidates.csv", "change/run.json"):
        assert (out / name).exists(), name
    record = json.loads((out / "monitor.json").read_text())
    n = record["n_candidates"]
    assert len((out / "new_craters.csv").read_text().splitlines()) == n + 1
    assert len(list((out / "chips").glob("candidate_*.png"))) == n
    assert record["parameters"]["method"] == "nn"
    assert record["parameters"]["tta"] is False  # a checkpoint's default
    again = _run(["monitor", pre, post, "-o", out, *_fast(tiny_model, vgg_weights)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_monitor_bad_input_is_one_line_and_writes_nothing(pair_paths, tiny_model, vgg_weights, tmp_path):
    pre, _ = pair_paths
    out = tmp_path / "out"
    result = _run(["monitor", pre, tmp_path / "missing.tif", "-o", out, *_fast(tiny_model, vgg_weights)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("planetcd: error:") and "missing.tif" in lines[0]
    assert not out.exists() or not any(out.iterdir())
    nothing = _run(["monitor", "-o", out])
    assert nothing.exit_code == 1 and "PRE and POST" in nothing.output


def test_batch_mode_is_resumable_with_one_summary(pair_paths, tiny_model, vgg_weights, tmp_path):
    pre, post = pair_paths
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"pre,post,id\n{pre},{post},good\n{pre},{tmp_path / 'nope.tif'},broken\n")
    out = tmp_path / "batch"
    first = _run(["monitor", "--pairs", pairs, "-o", out, *_fast(tiny_model, vgg_weights)])
    assert first.exit_code == 1 and "1 pair(s) failed" in first.output
    marker = out / "good" / "monitor.json"
    assert marker.exists() and not (out / "broken" / "monitor.json").exists()
    stamp = marker.stat().st_mtime_ns

    second = _run(["monitor", "--pairs", pairs, "-o", out, *_fast(tiny_model, vgg_weights)])
    assert second.exit_code == 1
    assert marker.stat().st_mtime_ns == stamp  # the finished pair was skipped, not redone
    with open(out / "summary.csv", newline="") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    assert rows["good"]["status"] == "skipped" and rows["broken"]["status"] == "failed"
    assert int(rows["good"]["n_candidates"]) == json.loads(marker.read_text())["n_candidates"]
    assert "nope.tif" in rows["broken"]["message"]


def test_batch_mode_says_why_a_pair_failed(pair_paths, tiny_model, vgg_weights, tmp_path):
    """The summary lines at the end said 'broken  failed  -1 candidates  best score nan', not why."""
    pre, post = pair_paths
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"pre,post,id\n{pre},{tmp_path / 'nope.tif'},broken\n")
    args = ["monitor", "--pairs", pairs, "-o", tmp_path / "batch", *_fast(tiny_model, vgg_weights)]
    result = CliRunner().invoke(main, [str(a) for a in args if a != "-q"])
    assert result.exit_code == 1
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("broken")][-1]  # the summary's line
    assert "failed" in line and "nope.tif" in line and "-1 candidates" not in line and "nan" not in line


def test_monitor_tta_override_is_recorded(pair_paths, tiny_model, vgg_weights, tmp_path):
    pre, post = pair_paths
    result = _run(["monitor", pre, post, "-o", tmp_path / "out", "--tta", *_fast(tiny_model, vgg_weights)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "monitor.json").read_text())["parameters"]["tta"] is True
    bad = _run(["monitor", pre, post, "-o", tmp_path / "bad", "--tta", "--model", "no-such-model", "-q"])
    assert bad.exit_code != 0 and bad.output.strip().startswith("planetcd: error:")
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_batch_and_two_workers_give_the_candidates_of_the_single_run(pair_paths, tiny_model, vgg_weights, tmp_path):
    """``--pairs`` and ``--workers 2`` write the same typed candidates as a plain run (every changed patch has one)."""
    pre, post = pair_paths
    single = _run(["monitor", pre, post, "-o", tmp_path / "single", *_fast(tiny_model, vgg_weights)])
    assert single.exit_code == 0, single.output
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"pre,post,id\n{pre},{post},only\n")
    batch = _run(["monitor", "--pairs", pairs, "-o", tmp_path / "batch", *_fast(tiny_model, vgg_weights)])
    assert batch.exit_code == 0, batch.output
    dask = _run(["monitor", pre, post, "-o", tmp_path / "dask", "--workers", "2", *_fast(tiny_model, vgg_weights)])
    assert dask.exit_code == 0, dask.output

    def rows(folder):
        with open(folder / "new_craters.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    expected = rows(tmp_path / "single")
    record = json.loads((tmp_path / "single" / "monitor.json").read_text())
    assert len(expected) >= 1 and record["n_changed_patches"] >= 1
    assert {r["type"] for r in expected} <= {"new_crater", "change"}
    for other in (tmp_path / "batch" / "only", tmp_path / "dask"):
        got = rows(other)
        assert [r["type"] for r in got] == [r["type"] for r in expected]
        for a, b in zip(got, expected):
            for name in ("x_px", "y_px", "radius_px", "score", "change_ratio"):
                assert float(a[name]) == pytest.approx(float(b[name]), rel=1e-6, abs=1e-6), name


def test_monitor_threshold_out_of_range_names_the_option(pair_paths, tmp_path):
    """``--threshold 2`` was refused as 'prob_threshold 2: must be between 0 and 1' (the API's name)."""
    pre, post = pair_paths
    result = _run(["monitor", pre, post, "-o", tmp_path / "out", "--threshold", 2, "-q"])
    assert result.exit_code != 0 and "--threshold" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_monitor_says_so_when_nothing_changed(pair_paths, tiny_model, vgg_weights, tmp_path):
    """A pair whose dates are the same image ended with '0 candidates' and 'open report.html to vet them'."""
    pre, _ = pair_paths
    out = tmp_path / "out"
    args = ["monitor", pre, pre, "-o", out, *_fast(tiny_model, vgg_weights)]
    result = CliRunner().invoke(main, [str(a) for a in args if a != "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "monitor.json").read_text())
    assert record["n_candidates"] == 0 and record["n_changed_patches"] == 0
    assert "no new-crater candidates: no patch changed" in result.stderr
    assert "to vet them" not in result.stderr
    assert (out / "new_craters.csv").read_text().count("\n") == 1  # the header only


def test_monitor_records_what_it_segmented(pair_paths, tiny_model, vgg_weights, tmp_path):
    """``--catalogues`` (default near-change) and the share of the image segmented are in monitor.json; a bad
    value is one line and writes nothing."""
    pre, post = pair_paths
    shares = {}
    for extent in ("near-change", "all"):
        args = ["monitor", pre, post, "-o", tmp_path / extent, *_fast(tiny_model, vgg_weights)]
        result = _run(args if extent == "near-change" else [*args, "--catalogues", "all"])
        assert result.exit_code == 0, result.output
        params = json.loads((tmp_path / extent / "monitor.json").read_text())["parameters"]
        assert params["catalogues"] == extent
        shares[extent] = params["segmented_fraction"]
    assert shares["all"] == 1.0 and 0.0 <= shares["near-change"] <= 1.0
    bad = _run(["monitor", pre, post, "-o", tmp_path / "bad", "--catalogues", "some", *_fast(tiny_model, vgg_weights)])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
    assert bad.output.strip().splitlines() == [
        "planetcd: error: Invalid value for '--catalogues': 'some' is not one of 'near-change', 'all'. "
        "(see 'main monitor --help')"]
