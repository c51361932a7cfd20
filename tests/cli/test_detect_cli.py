"""``planetcd detect`` and ``planetcd demo`` from the command line, good and bad input."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from planetcd import features
from planetcd.cli import main
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff


@pytest.fixture(scope="module")
def pair_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    pair = make_change_pair((300, 300), seed=3, displacement=(2.0, -3.0), new_craters=[[150, 150, 20.0]])
    return write_synthetic_geotiff(folder / "pre.tif", pair.pre), write_synthetic_geotiff(folder / "post.tif", pair.post)


def _run(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def _assert_one_line_error(result, pattern, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("planetcd: error:"), result.stderr
    assert pattern in lines[0]
    assert "Traceback" not in result.output


def test_detect_writes_outputs_and_refuses_to_overwrite(pair_paths, vgg_weights, tmp_path):
    pre, post = pair_paths
    out = tmp_path / "out"
    args = ["detect", pre, post, "-o", out, "--weights", vgg_weights, "--n-pseudo", "10", "-q"]
    result = _run(args)
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"change_score.tif", "change_mask.tif", "candidates.csv", "candidates.gpkg", "quicklook.png", "run.json"}
    before = (out / "candidates.csv").stat().st_mtime_ns
    _assert_one_line_error(_run(args), "--overwrite")
    assert (out / "candidates.csv").stat().st_mtime_ns == before
    assert _run(args + ["--overwrite"]).exit_code == 0


def _bad_inputs(tmp_path, pre):
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    nodata = write_synthetic_geotiff(tmp_path / "nodata.tif", np.zeros((300, 300), np.float32), dtype="float32", nodata=0)
    tiny = write_synthetic_geotiff(tmp_path / "tiny.tif", np.random.default_rng(0).random((60, 60)))
    rgb = write_synthetic_geotiff(tmp_path / "rgb.tif", np.random.default_rng(0).random((3, 300, 300)))
    other_size = write_synthetic_geotiff(tmp_path / "other.png.tif", np.random.default_rng(0).random((280, 300)), crs=None)
    unreferenced = write_synthetic_geotiff(tmp_path / "plain.tif", np.random.default_rng(1).random((300, 300)), crs=None)
    return [
        ([tmp_path / "missing.tif", pre], "no such file"),
        ([text, pre], "not a raster"),
        ([pre, nodata], "no valid pixels"),
        ([tiny, tiny], "smaller than one 100 px patch"),
        ([pre, rgb], "band counts differ"),
        ([unreferenced, other_size], "cannot be put on one grid"),
    ]


def test_bad_inputs_get_one_line_and_no_output(pair_paths, vgg_weights, tmp_path):
    pre, _ = pair_paths
    for k, (inputs, pattern) in enumerate(_bad_inputs(tmp_path, pre)):
        out = tmp_path / f"out{k}"
        result = _run(["detect", *inputs, "-o", out, "--weights", vgg_weights, "-q"])
        _assert_one_line_error(result, pattern)
        assert not out.exists() or not any(out.iterdir()), pattern


def test_weights_of_the_wrong_shape(pair_paths, tmp_path):
    pre, post = pair_paths
    model = features.VGGFeatures(layer=13, pretrained=False)
    state = {f"features.{k}": v for k, v in model.features.state_dict().items()}
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    torch.save(state, tmp_path / "gray.pth")
    result = _run(["detect", pre, post, "-o", tmp_path / "out", "--weights", tmp_path / "gray.pth", "-q"])
    _assert_one_line_error(result, "features.0.weight has shape (64, 1, 3, 3)")
    assert not (tmp_path / "out").exists()


def test_offline_without_weights_exits_2_naming_the_variable(pair_paths, tmp_path, monkeypatch):
    pre, post = pair_paths
    monkeypatch.delenv("PLANETCD_VGG16_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))

    def offline(*args):
        raise OSError("no network")

    monkeypatch.setattr(features, "_download", offline)
    result = _run(["detect", pre, post, "-o", tmp_path / "out", "-q"])
    _assert_one_line_error(result, "PLANETCD_VGG16_WEIGHTS", code=2)


def test_console_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "planetcd", "detect", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"planetcd: error: {tmp_path / 'a.tif'}: no such file"


def test_help_lists_every_command():
    result = _run(["--help"])
    assert result.exit_code == 0
    for command in ("detect", "demo"):
        assert command in result.output


def test_demo_flags_its_own_crater_with_the_defaults(vgg_weights, tmp_path):
    out = _run(["demo", tmp_path / "demo", "--weights", vgg_weights])
    assert out.exit_code == 0, out.output
    assert "the new crater, flagged" in out.output, out.output
    import json

    record = json.loads((tmp_path / "demo" / "detect" / "run.json").read_text())
    assert record["parameters"]["method"] == "nn" and record["thresholds"]["policy"] == "both"
    assert record["misregistration"]["max_shift_px"] >= 4.0
    assert 1 <= record["n_changed"] <= 3  # its crater, and next to nothing else


def test_threshold_and_max_shift_options(pair_paths, vgg_weights, tmp_path):
    pre, post = pair_paths
    bad = _run(["detect", pre, post, "-o", tmp_path / "a", "--weights", vgg_weights, "--max-shift", "far"])
    assert bad.exit_code != 0 and "max-shift" in bad.output
    ok = _run(["detect", pre, post, "-o", tmp_path / "b", "--weights", vgg_weights, "--method", "paper",
               "--threshold", "pseudo", "--max-shift", "10", "--n-pseudo", "20", "--pseudo-tolerance", "none"])
    assert ok.exit_code == 0, ok.output
    import json

    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["parameters"]["max_shift"] == 10.0 and record["thresholds"]["empirical"] is None
    assert record["tau"] == record["thresholds"]["pseudo"]
    assert record["parameters"]["pseudo_tolerance"] is None
    assert record["thresholds"]["pseudo_sample"] == {"n": 20, "n_max": 20, "stopped": "fixed"}
    for value in ("-1", "many"):
        bad = _run(["detect", pre, post, "-o", tmp_path / "c", "--weights", vgg_weights, "--pseudo-tolerance", value])
        assert bad.exit_code == 2 and "--pseudo-tolerance" in bad.output


def test_method_nn_unlit_is_nn_without_relighting(pair_paths, vgg_weights, tmp_path):
    import json

    pre, post = pair_paths
    for method in ("nn-unlit", "nn"):
        result = _run(["detect", pre, post, "-o", tmp_path / method, "--weights", vgg_weights, "--method", method,
                       "--n-pseudo", "10", "--no-quicklook", "-q"])
        assert result.exit_code == 0, result.output
    unlit = json.loads((tmp_path / "nn-unlit" / "run.json").read_text())
    lit = json.loads((tmp_path / "nn" / "run.json").read_text())
    assert unlit["parameters"]["method"] == "nn-unlit" and unlit["relight"] == {"relit": False}
    assert isinstance(lit["relight"]["window_anisotropy"], float)
    assert lit["relight"]["relit"] is (lit["relight"]["window_anisotropy"] > lit["relight"]["anisotropy_threshold"])
    assert "--method" in _run(["detect", pre, post, "-o", tmp_path / "x", "--method", "lit"]).output
