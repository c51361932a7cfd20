"""Hostile inputs: every bad input of every command gives one line on stderr, an exit code and no output.

Cases (issue 12, item 5): missing, unreadable, empty and truncated rasters, all-nodata and all-NaN rasters,
rasters smaller than one patch or tile, band mismatch and footprints that do not overlap (pairs), crater lists
without position or radius columns (match) and count files that are not counts (age). Plus a ``monitor --pairs``
batch in which a bad pair does not stop the good one, and a ``detect`` killed mid-run that leaves no file under a
final output name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import pytest
from click.testing import CliRunner, Result

from planetcd.cli import main
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.errors import InputError

SIZE = 128  # image side of the good rasters, px
PATCH = 32  # --patch-size of detect and monitor
RASTER_CASES = ("missing", "unreadable", "empty", "truncated", "all_nodata", "all_nan", "too_small")
PAIR_CASES = (*RASTER_CASES, "band_mismatch", "no_overlap")


def _random(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 1.0, shape)


def _truncated(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def make_bad_raster(folder: Path, case: str, name: str = "bad") -> Path:
    """A raster that is bad in the way ``case`` says (beside good ones made by :func:`make_good_pair`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{case}.tif"
    if case == "missing":
        return path
    if case == "unreadable":
        path.write_text("this is not a raster\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        # big enough that the header survives the cut and GDAL fails only on the blocks past it
        full = write_synthetic_geotiff(folder / f"{name}_full.tif", _random((SIZE, SIZE), 3), dtype="float32")
        _truncated(path, full)
        full.unlink()
    elif case == "all_nodata":
        write_synthetic_geotiff(path, np.full((SIZE, SIZE), -9999, np.float32), dtype="float32", nodata=-9999)
    elif case == "all_nan":
        write_synthetic_geotiff(path, np.full((SIZE, SIZE), np.nan, np.float32), dtype="float32")
    elif case == "too_small":
        write_synthetic_geotiff(path, _random((12, 12)), dtype="float32")
    elif case == "band_mismatch":
        write_synthetic_geotiff(path, _random((3, SIZE, SIZE)), dtype="float32")
    elif case == "no_overlap":
        write_synthetic_geotiff(path, _random((SIZE, SIZE), 4), dtype="float32", origin=(9_000_000.0, -4_000_000.0))
    else:  # pragma: no cover - a typo in a parameter list
        raise ValueError(case)
    return path


@pytest.fixture(scope="module")
def good_pair(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("good")
    pair = make_change_pair((SIZE, SIZE), seed=1, displacement=(1.0, -1.0), new_craters=[[64.0, 64.0, 8.0]])
    return (write_synthetic_geotiff(folder / "pre.tif", pair.pre), write_synthetic_geotiff(folder / "post.tif", pair.post))


@pytest.fixture(scope="module")
def unet(untrained_unet) -> Path:
    return untrained_unet(0)


def _invoke(args) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_failure(result, outdir: Path | None = None) -> str:
    """Exit code != 0, exactly one line on stderr (planetcd: error: ...), no traceback, no file in ``outdir``."""
    stderr = result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result.exit_code != 0, stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    assert len(lines) == 1, stderr
    assert lines[0].startswith("planetcd: error: "), lines[0]
    if outdir is not None:
        left = [p for p in outdir.rglob("*") if p.is_file()] if outdir.exists() else []
        assert not left, left
    return lines[0]


# ----------------------------------------------------------------------------- pair commands


def _pair_args(command, pre, post, out, vgg_weights, unet):
    if command == "detect":
        return ["detect", pre, post, "-o", out, "--patch-size", PATCH, "--n-pseudo", 4, "--weights", vgg_weights]
    return ["monitor", pre, post, "-o", out, "--patch-size", PATCH, "--n-pseudo", 4, "--weights", vgg_weights,
            "--model", unet, "--block-size", 64]


# band mismatch and footprints are properties of the pair: tested once, with the odd image as post
PAIR_PARAMS = [(side, case) for case in PAIR_CASES for side in ("pre", "post") if side == "post" or case in RASTER_CASES]


@pytest.mark.parametrize("side,case", PAIR_PARAMS)
@pytest.mark.parametrize("command", ["detect", "monitor"])
def test_pair_commands(command, case, side, good_pair, tmp_path, vgg_weights, unet):
    bad = make_bad_raster(tmp_path / "in", case)
    pre, post = (bad, good_pair[1]) if side == "pre" else (good_pair[0], bad)
    out = tmp_path / "out"
    line = assert_one_line_failure(_invoke(_pair_args(command, pre, post, out, vgg_weights, unet)), out)
    if case == "no_overlap":
        assert "footprints do not overlap" in line
    elif case == "band_mismatch":
        assert "band counts differ" in line
    else:
        assert str(bad) in line


# ----------------------------------------------------------------------------- single-image commands


@pytest.mark.parametrize("case", RASTER_CASES)
def test_segment(case, tmp_path, unet):
    bad = make_bad_raster(tmp_path / "in", case)
    out = tmp_path / "out"
    line = assert_one_line_failure(_invoke(["segment", bad, "-o", out, "--model", unet]), out)
    assert str(bad) in line


@pytest.mark.parametrize("case", RASTER_CASES)
def test_train(case, tmp_path):
    bad = make_bad_raster(tmp_path / "in", case)
    (bad.parent / f"{bad.stem}.csv").write_text("long,lat,diameter\n40,40,10\n")
    out = tmp_path / "out"
    args = ["train", bad, "-o", out, "--epochs", 1, "--crop", 32, "--crops-per-epoch", 2, "--device", "cpu"]
    line = assert_one_line_failure(_invoke(args), out)
    assert str(bad) in line


EVALUATE_CASES = ("missing", "unreadable", "empty", "truncated", "all_nodata", "all_nan", "too_small", "band_mismatch")


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate(case, good_pair, tmp_path, vgg_weights):
    folder = tmp_path / "set"
    for sub in ("pre", "post"):
        (folder / sub).mkdir(parents=True)
    for pair_id in ("a", "b"):
        (folder / "pre" / f"{pair_id}.tif").write_bytes(good_pair[0].read_bytes())
        (folder / "post" / f"{pair_id}.tif").write_bytes(good_pair[1].read_bytes())
    (folder / "labels.csv").write_text("id,label\na,0\nb,1\n")
    bad = make_bad_raster(tmp_path / "in", case)
    target = folder / "post" / "b.tif"
    target.unlink()
    if bad.exists():
        bad.rename(target)
    out = tmp_path / "out"
    args = ["evaluate", folder, "--methods", "paper", "--weights", vgg_weights, "--json", out / "m.json"]
    assert_one_line_failure(_invoke(args), out)


# ----------------------------------------------------------------------------- crater lists and counts


def _crater_list(folder: Path, case: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case}.csv"
    if case == "missing":
        return path
    if case == "empty":
        path.write_bytes(b"")
    elif case == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif case == "no_columns":
        path.write_text("name,colour\nalpha,red\nbeta,blue\n")
    elif case == "no_radius":
        path.write_text("x_px,y_px\n10,20\n30,40\n")
    elif case == "no_position":
        path.write_text("radius_px,confidence\n5,0.9\n6,0.8\n")
    elif case == "folder":
        path.mkdir()
    return path


MATCH_CASES = ("missing", "empty", "binary", "no_columns", "no_radius", "no_position", "folder")


@pytest.mark.parametrize("case", MATCH_CASES)
@pytest.mark.parametrize("side", ["detections", "truth"])
def test_match(case, side, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("x_px,y_px,radius_px\n10,20,5\n30,40,6\n")
    bad = _crater_list(tmp_path / "in", case)
    out = tmp_path / "out"
    args = ["match", bad, good] if side == "detections" else ["match", good, bad]
    line = assert_one_line_failure(_invoke([*args, "--json", out / "scores.json"]), out)
    if case != "folder":  # a folder beside a file is refused as such
        assert str(bad) in line


#: Crater-count files the age command must refuse: case -> (file name, contents).
COUNT_FILES = {
    "scc_no_table": ("a.scc", "Total_area = 100 <km^2>\n"),
    "scc_text_diameters": ("a.scc", "Total_area = 100\ncrater = {diam, fraction\nbig, 1\nsmall, 1\n}\n"),
    "scc_negative": ("a.scc", "Total_area = 100\ncrater = {diam, fraction\n-1, 1\n0.5, 1\n}\n"),
    "scc_no_area": ("a.scc", "crater = {diam, fraction\n1, 1\n0.5, 1\n}\n"),
    "diam_image": ("a.diam", b"\x89PNG\r\n\x1a\n" + bytes(200)),
    "pixel_list_no_size": ("craters.csv", "x_px,y_px,radius_px\n10,20,5\n"),  # no diameters in km: not counts
    "no_craters": ("a.scc", "Total_area = 100\ncrater = {diam, fraction\n}\n"),
}


def _count_file(folder: Path, case: str) -> tuple[Path, list]:
    folder.mkdir(parents=True, exist_ok=True)
    if case in ("missing", "empty", "binary", "no_columns", "no_radius", "folder"):
        return _crater_list(folder, case), ["--area", 100]
    name, content = COUNT_FILES[case]
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path, []


AGE_CASES = ("missing", "empty", "binary", "no_columns", "no_radius", "folder", "scc_no_table", "scc_text_diameters",
             "scc_negative", "scc_no_area", "diam_image", "pixel_list_no_size", "no_craters")


@pytest.mark.parametrize("case", AGE_CASES)
def test_age(case, tmp_path):
    path, extra = _count_file(tmp_path / "in", case)
    out = tmp_path / "out"
    args = ["age", path, "--system", "mars-ivanov", "--plot", out / "csfd.png", *extra]
    line = assert_one_line_failure(_invoke(args), out)
    assert str(path) in line


# ----------------------------------------------------------------------------- the API speaks of its arguments


def test_api_checks_are_the_same_one_line_errors(good_pair, tmp_path):
    from planetcd.change.detect import detect
    from planetcd.inputs import check_counts, check_crater_table, check_pair, check_raster

    bad = make_bad_raster(tmp_path, "truncated")
    for call in (lambda: check_raster(bad), lambda: check_pair(good_pair[0], bad), lambda: detect(good_pair[0], bad)):
        with pytest.raises(InputError) as info:
            call()
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
    far = make_bad_raster(tmp_path, "no_overlap")
    with pytest.raises(InputError, match="footprints do not overlap"):
        check_pair(good_pair[0], far)
    with pytest.raises(InputError, match="arrays differ in size"):
        check_pair(np.ones((40, 40)), np.ones((40, 50)))
    with pytest.raises(InputError, match="no valid pixels"):
        check_raster(np.full((40, 40), np.nan))
    with pytest.raises(InputError, match="without radius_px"):
        check_crater_table(_crater_list(tmp_path, "no_radius"))
    with pytest.raises(InputError, match="area_km2"):
        check_counts(_crater_list(tmp_path, "no_columns"))
    info = check_raster(good_pair[0], min_size=PATCH)
    assert (info.height, info.width, info.count, info.georeferenced) == (SIZE, SIZE, 1, True)


def test_truncated_file_fails_only_when_read_and_is_caught(tmp_path):
    """The header survives the cut: GDAL opens the file and fails on a later block; read_window says so in one line."""
    from planetcd.raster import open_raster, read_window

    bad = make_bad_raster(tmp_path, "truncated")
    with open_raster(bad) as ds:  # opens fine
        with pytest.raises(InputError, match="truncated or corrupt") as info:
            read_window(ds)
    assert str(bad) in str(info.value)


# ----------------------------------------------------------------------------- warnings as one log line


def test_warnings_reach_the_user_as_one_log_line(tmp_path):
    """An unreferenced raster makes rasterio warn (NotGeoreferencedWarning): one line, no source line."""
    import warnings

    import click

    from planetcd.cli import PlanetcdGroup
    from planetcd.cli.options import setup_logging

    @click.group(cls=PlanetcdGroup)
    def group():
        pass

    @group.command()
    def warn():
        setup_logging(0, 0)  # as every command does
        warnings.warn("first part\nsecond part", UserWarning)

    result = CliRunner().invoke(group, ["warn"])
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines() == ["warning: first part second part"]


def test_gdal_errors_that_escape_are_one_line(tmp_path):
    import click
    from rasterio.errors import RasterioIOError

    from planetcd.cli import PlanetcdGroup

    @click.group(cls=PlanetcdGroup)
    def group():
        pass

    @group.command()
    def fail():
        raise RasterioIOError("something.tif: Read failed\nmore detail")

    result = CliRunner().invoke(group, ["fail"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["planetcd: error: something.tif: Read failed more detail"]


# ----------------------------------------------------------------------------- batch and kill


def test_monitor_batch_bad_pair_does_not_stop_good_ones(good_pair, tmp_path, vgg_weights, unet):
    bad = make_bad_raster(tmp_path / "in", "truncated")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"id,pre,post\nbad,{good_pair[0]},{bad}\ngood,{good_pair[0]},{good_pair[1]}\n")
    out = tmp_path / "out"
    result = _invoke(["monitor", "--pairs", pairs, "-o", out, "--patch-size", PATCH, "--n-pseudo", 4,
                      "--weights", vgg_weights, "--model", unet, "--block-size", 64])
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert "1 pair(s) failed" in result.stderr.strip().splitlines()[-1]
    summary = (out / "summary.csv").read_text().splitlines()
    status = {line.split(",")[0]: line.split(",")[1] for line in summary[1:]}
    assert status == {"bad": "failed", "good": "done"}, summary
    assert (out / "good" / "monitor.json").is_file()
    assert not (out / "bad").exists() or not any(p.is_file() for p in (out / "bad").rglob("*"))


def test_detect_killed_mid_run_leaves_no_final_file(tmp_path, vgg_weights):
    pair = make_change_pair((1024, 1024), seed=2, displacement=(2.0, 1.0), new_craters=[[500.0, 500.0, 20.0]])
    pre = write_synthetic_geotiff(tmp_path / "pre.tif", pair.pre)
    post = write_synthetic_geotiff(tmp_path / "post.tif", pair.post)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "planetcd", "detect", str(pre), str(post), "-o", str(out), "--weights", str(vgg_weights),
         "--tile-size", "256", "--device", "cpu"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # wait until the work has begun (registration is logged before the features)
            if "displaced" in line or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "detect finished before it could be killed; use a larger pair"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finals = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")] if out.exists() else []
    assert not finals, finals


def test_warning_of_a_real_run_is_one_log_line(good_pair, tmp_path, vgg_weights):
    """Only pre is georeferenced: detect runs, and its UserWarning reaches stderr as one log line."""
    with rasterio.open(good_pair[1]) as src:
        plain = tmp_path / "plain.tif"
        write_synthetic_geotiff(plain, src.read(1), crs=None, dtype=None)
    with rasterio.open(plain) as ds:
        assert ds.crs is None
    out = tmp_path / "out"
    result = _invoke(["detect", good_pair[0], plain, "-o", out, "--patch-size", PATCH, "--n-pseudo", 4,
                      "--weights", vgg_weights, "--no-quicklook"])
    assert result.exit_code == 0, result.stderr
    assert "warning: only one image is georeferenced; assuming both share pre's grid" in result.stderr.splitlines()
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_end_to_end_truncated_input_is_one_line(good_pair, tmp_path):
    bad = make_bad_raster(tmp_path / "in", "truncated")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "planetcd", "detect", str(good_pair[0]), str(bad), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(f"planetcd: error: {bad}: ")
    assert not out.exists()


def test_demo_removes_what_it_wrote_when_it_fails(tmp_path, vgg_weights):
    out = tmp_path / "demo"
    failed = _invoke(["demo", out, "--size", 200, "--weights", tmp_path / "none.pth", "-q"])
    assert failed.exit_code != 0 and "Traceback" not in failed.stderr
    assert not out.exists()
    (out / "keep").mkdir(parents=True)  # a folder the user made is kept, and only what demo wrote goes
    failed = _invoke(["demo", out, "--size", 200, "--weights", tmp_path / "none.pth", "-q"])
    assert failed.exit_code != 0
    assert sorted(p.name for p in out.iterdir()) == ["keep"]


def test_a_raster_checked_once_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    """check_raster remembers a file that passed (monitor checks its pair, then detect does); a file rewritten
    in place is checked again and refused when it no longer passes."""
    import planetcd.raster as raster
    from planetcd.inputs import check_raster
    from planetcd.datasets.synthetic import write_synthetic_geotiff

    path = write_synthetic_geotiff(tmp_path / "a.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32))
    calls = []
    original = raster.dataset_stats
    monkeypatch.setattr(raster, "dataset_stats", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = check_raster(path, min_size=8)
    second = check_raster(str(path), min_size=8)
    assert len(calls) == 1 and (second.height, second.width) == (first.height, first.width) == (64, 64)
    assert second.path == Path(str(path))
    check_raster(path, min_size=16)  # other options: checked again
    assert len(calls) == 2
    write_synthetic_geotiff(path, np.zeros((64, 64), np.float32))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    with pytest.raises(InputError, match="no valid pixels"):
        check_raster(path, min_size=8)
