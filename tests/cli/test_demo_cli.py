"""``planetcd demo`` at the sizes its ``--size`` accepts."""

from __future__ import annotations

import json

from click.testing import CliRunner

from planetcd.cli import main


def test_demo_runs_at_the_smallest_size_it_accepts(vgg_weights, tmp_path):
    """``--size`` accepts 200..8192, but 200..299 ended in 'ValueError: low >= high' (a traceback): the crater's
    patch was drawn from an empty range of inner patches."""
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", str(out), "--size", "200", "--weights", str(vgg_weights), "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "detect" / "run.json").read_text())
    assert record["image_shape"] == [200, 200]
    assert (out / "pre.tif").is_file() and (out / "post.tif").is_file()
