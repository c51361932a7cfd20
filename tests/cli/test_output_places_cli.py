"""An output that cannot be written where it is asked for is one line on stderr, before any work, never a traceback.

Found by the monitor/evaluate sweep: ``--json afile/x.json`` (``afile`` a file) ran every method and then
ended in a ``FileExistsError`` traceback; ``monitor -o``, ``benchmark make`` and ``demo`` likewise.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from planetcd.cli import main
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.errors import InputError
from planetcd.raster import check_output_places


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, pattern):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("planetcd: error:"), result.stderr
    assert pattern in lines[0], lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


def test_evaluate_refuses_an_output_under_a_file_before_scoring(tmp_path, a_file):
    # DIR is not a change set at all: the output is checked first, so the message names the output
    for option in ("--json", "--markdown", "--scores"):
        result = _run(["evaluate", tmp_path, "--methods", "cva", option, a_file / "r.out", "-q"])
        _assert_one_line_error(result, f"cannot write {a_file / 'r.out'}")


def test_monitor_refuses_an_outdir_under_a_file(tmp_path, a_file):
    pair = make_change_pair((128, 128), seed=1, displacement=(0.0, 0.0), new_craters=[[64, 64, 8.0]])
    pre = write_synthetic_geotiff(tmp_path / "pre.tif", pair.pre)
    post = write_synthetic_geotiff(tmp_path / "post.tif", pair.post)
    _assert_one_line_error(_run(["monitor", pre, post, "-o", a_file / "out", "-q"]), "is a file, not a folder")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"pre,post\n{pre},{post}\n")
    _assert_one_line_error(_run(["monitor", "--pairs", pairs, "-o", a_file / "survey", "-q"]), "cannot write")


def test_benchmark_make_and_demo_refuse_an_outdir_under_a_file(shared_dir, a_file):
    result = _run(["benchmark", "make", a_file / "set", "--n-pairs", 1, "--shared", shared_dir, "-q"])
    _assert_one_line_error(result, "is a file, not a folder")
    _assert_one_line_error(_run(["demo", a_file / "demo", "-q"]), "is a file, not a folder")


def test_detect_and_segment_refuse_an_outdir_under_a_file(tmp_path, a_file):
    """Both ran the whole pair or image and then ended in a NotADirectoryError traceback (reported by the sweep)."""
    pair = make_change_pair((128, 128), seed=1, displacement=(0.0, 0.0), new_craters=[[64, 64, 8.0]])
    pre = write_synthetic_geotiff(tmp_path / "pre.tif", pair.pre)
    post = write_synthetic_geotiff(tmp_path / "post.tif", pair.post)
    _assert_one_line_error(_run(["detect", pre, post, "-o", a_file / "out", "-q"]), "is a file, not a folder")
    _assert_one_line_error(_run(["segment", pre, "-o", a_file / "craters", "-q"]), "is a file, not a folder")


def test_check_output_places_accepts_new_and_existing_places(tmp_path, a_file):
    check_output_places(files=[tmp_path / "new" / "deeper" / "r.json", a_file], folders=[tmp_path, tmp_path / "x" / "y"])
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output_places(files=[a_file / "r.json"])
    with pytest.raises(InputError, match="it is a file, not a folder"):
        check_output_places(folders=[a_file])
    with pytest.raises(InputError, match="it is a folder"):
        check_output_places(files=[tmp_path])
