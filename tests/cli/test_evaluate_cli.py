"""``planetcd benchmark make`` and ``planetcd evaluate`` from the command line, good and bad input."""

import json

import pytest
from click.testing import CliRunner

from planetcd.cli import main


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, pattern, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("planetcd: error:"), result.stderr
    assert pattern in lines[0]


@pytest.fixture(scope="module")
def bench_dir(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "set"
    result = _run(["benchmark", "make", out, "--preset", "lroc", "--n-pairs", 6, "--seed", 4, "--patch-size", 64,
                   "--max-shift", 12, "--shared", shared_dir, "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_benchmark_make_writes_the_layout_and_refuses_to_overwrite(bench_dir, shared_dir, tmp_path):
    names = sorted(p.name for p in bench_dir.iterdir())
    assert names == ["benchmark.json", "labels.csv", "pairs.csv", "post", "pre"]
    meta = json.loads((bench_dir / "benchmark.json").read_text())
    assert meta["preset"] == "lroc" and meta["images"] == ["MC11E-H", "MC11E-I", "hrsc-holdout"]
    assert len(list((bench_dir / "pre").glob("*.png"))) == 6
    args = ["benchmark", "make", bench_dir, "--n-pairs", 2, "--shared", shared_dir, "-q"]
    _assert_one_line_error(_run(args), "--overwrite")
    training = ["benchmark", "make", tmp_path / "t", "--images", "MC11E-A", "--shared", shared_dir, "-q"]
    _assert_one_line_error(_run(training), "never used for test sets")
    assert not (tmp_path / "t").exists()


def test_evaluate_table_json_markdown(bench_dir, tmp_path, vgg_weights):
    out_json, out_md, out_scores = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "s.csv"
    args = ["evaluate", bench_dir, "--methods", "cva,rcva,nn,nn-oracle", "--json", out_json, "--markdown", out_md,
            "--scores", out_scores,
            "--weights", vgg_weights, "--device", "cpu", "--n-pseudo", 6, "-q"]
    result = _run(args)
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["dataset"] == "set" and data["n_pairs"] == 6
    assert list(data["methods"]) == ["cva", "rcva", "nn", "nn-oracle"]
    assert set(data["methods"]["nn"]) == {"accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc", "tau"}
    table = out_md.read_text()
    assert "| nn-oracle † |" in table and "| ROC AUC |" in table
    assert "| cva |" in result.stdout  # the table is printed too
    rows = out_scores.read_text().splitlines()
    assert rows[0] == "id,label,cva,cva_changed,rcva,rcva_changed,nn,nn_changed,nn-oracle,nn-oracle_changed"
    assert len(rows) == 7 and rows[1].startswith("lroc-0,")
    _assert_one_line_error(_run(args), "--overwrite")


@pytest.mark.parametrize("extra, message", [
    (["--methods", "cva,magic"], "unknown method 'magic'"),
    (["--split", "train"], "no pair in split 'train'"),
    (["--methods", ""], "names no method"),  # ran every method (found with an unset $METHODS)
    (["--methods", " , "], "names no method"),
])
def test_evaluate_bad_options(bench_dir, extra, message):
    _assert_one_line_error(_run(["evaluate", bench_dir, *extra, "-q"]), message)


def test_evaluate_bad_folders(tmp_path):
    _assert_one_line_error(_run(["evaluate", tmp_path / "missing", "-q"]), "no such folder")
    _assert_one_line_error(_run(["evaluate", tmp_path, "-q"]), "not a change set")
    (tmp_path / "labels.csv").write_text("id,label\na,1\n")
    _assert_one_line_error(_run(["evaluate", tmp_path, "--methods", "cva", "-q"]), "no pre/ folder")


def test_evaluate_shows_progress_unless_quiet(bench_dir, vgg_weights):
    args = ["evaluate", bench_dir, "--methods", "cva,rcva", "--n-pseudo", 4, "--weights", vgg_weights]
    shown = _run(args)
    assert shown.exit_code == 0, shown.output
    assert "cva" in shown.stderr and "rcva" in shown.stderr and "10/10" in shown.stderr  # 6 pairs + 4 pseudo
    quiet = _run(args + ["-q"])
    assert quiet.exit_code == 0 and "10/10" not in quiet.stderr


def test_evaluate_json_records_what_was_used(bench_dir, tmp_path):
    """The JSON said ``"n_pseudo": null`` (the default asked) but not how many pseudo pairs each method scored,
    nor how long each took, nor the versions: a table could not be traced back to its run."""
    out = tmp_path / "r.json"
    result = _run(["evaluate", bench_dir, "--methods", "cva,rcva,cva-oracle", "--json", out, "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert data["params"]["n_pseudo"] is None
    used = data["params"]["n_pseudo_used"]
    assert set(used) == {"cva", "rcva"} and all(isinstance(n, int) and n >= 2 for n in used.values())
    assert set(data["timings_s"]) == {"cva", "rcva"} and all(t >= 0 for t in data["timings_s"].values())
    assert set(data["versions"]) >= {"python", "numpy", "torch"} and data["planetcd_version"]



def test_evaluate_json_records_the_set_as_read(bench_dir, tmp_path):
    """The JSON named the set by its folder name only, without the path, the layout or --split: a 'test'
    table and an all-splits table of one set could not be told apart."""
    out = tmp_path / "r.json"
    result = _run(["evaluate", bench_dir, "--methods", "cva", "--n-pseudo", 4, "--split", "test", "--json", out, "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())["params"]["set"]
    assert record == {"path": str(bench_dir.resolve()), "layout": "canonical", "split": "test", "labels": None}


def test_benchmark_make_help_explains_every_preset():
    """``--help`` described ctx-impacts, lroc and rsl but not small-craters or real-nuisance."""
    from planetcd.datasets.benchmark import PRESETS

    text = CliRunner().invoke(main, ["benchmark", "make", "--help"], terminal_width=1000).output
    for name in PRESETS:
        assert f"{name}:" in text, name


def test_benchmark_make_shows_progress_unless_quiet(shared_dir, tmp_path):
    """``benchmark make`` was silent while it made the pairs (1000 pairs: 21 s without a line)."""
    args = ["benchmark", "make", tmp_path / "a", "--n-pairs", 3, "--patch-size", 48, "--shared", shared_dir]
    shown = _run(args)
    assert shown.exit_code == 0, shown.output
    assert "pairs" in shown.stderr and "3/3" in shown.stderr
    quiet = _run([*args[:2], tmp_path / "b", *args[3:], "-q"])
    assert quiet.exit_code == 0 and "3/3" not in quiet.stderr


def test_evaluate_interrupted_while_writing_leaves_none_of_its_outputs(bench_dir, tmp_path, monkeypatch):
    """Ctrl-C after --json was written but before --markdown left r.json; the same command then refused
    ('r.json exists ... use --overwrite')."""
    from planetcd.evaluate import Evaluation

    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    args = ["evaluate", bench_dir, "--methods", "cva", "--n-pseudo", 4, "--json", out_json, "--markdown", out_md, "-q"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Evaluation, "write_markdown", interrupted)
        result = _run(args)
    assert result.exit_code == 130, result.output
    assert not out_json.exists() and not out_md.exists()
    again = _run(args)
    assert again.exit_code == 0, again.output
    assert out_json.is_file() and out_md.is_file()


def test_benchmark_make_checks_every_source_size_up_front(shared_dir, tmp_path):
    """--patch-size 1690 fits the 2000 px CTX tiles but not the 1700 px HRSC tile: with 1 pair (drawn from a CTX
    tile) the set was written, with more pairs the command failed, depending on which tiles were drawn."""
    args = ["benchmark", "make", tmp_path / "s", "--n-pairs", 1, "--seed", 1, "--patch-size", 1690,  # seed 1: MC11E-I
            "--shared", shared_dir, "-q"]
    _assert_one_line_error(_run(args), "hrsc-holdout: image (1700x1700 px) is too small")
    assert not (tmp_path / "s").exists()
