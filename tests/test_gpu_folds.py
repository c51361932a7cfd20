"""benchmarks/gpu_folds.sh: the fold commands it would run on a GPU machine (PY=echo prints them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_folds.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "PY": "echo", **env}, timeout=60)


def test_train_runs_both_steps_of_each_fold_in_order(tmp_path):
    lines = run("train", "ADG", "BEH", RUNS=str(tmp_path)).stdout.splitlines()
    assert [(line.split("--only ")[1].split()[0], "--init" in line) for line in lines] == [
        ("ADG", False), ("ADG", True), ("BEH", False), ("BEH", True)]
    assert all("--device cuda" in line and "--hrsc" in line for line in lines)
    assert f"--init {tmp_path}/step1" in lines[1] and "--lr 3e-4" in lines[1]


def test_steps_selects_one_training_step_and_extra_reaches_it(tmp_path):
    lines = run("train", "CFI", RUNS=str(tmp_path), STEPS="2", EXTRA="--ema-decay 0.998").stdout.splitlines()
    assert len(lines) == 1 and "--init" in lines[0] and lines[0].endswith("--ema-decay 0.998")


def test_pipeline_selects_then_reselects_each_fold_then_prints_the_table(tmp_path):
    lines = run("pipeline", "ADG", RUNS=str(tmp_path), OUT=str(tmp_path / "out")).stdout.splitlines()
    assert len(lines) == 3
    assert "--reselect" not in lines[0] and "--reselect --per-tile-threshold --local-decoys 150,300" in lines[1]
    assert "--table" in lines[2] and (tmp_path / "out" / "table.txt").exists()


def test_ensemble_makes_each_pipeline_command_average_the_other_seed(tmp_path):
    other = tmp_path / "seed1" / "step2"
    lines = run("pipeline", "BEH", RUNS=str(tmp_path), ENSEMBLE=str(other)).stdout.splitlines()
    assert len(lines) == 3 and all(f"--ensemble-with {other}" in line for line in lines)
    assert all("--ensemble-with" not in line for line in run("pipeline", "BEH", RUNS=str(tmp_path)).stdout.splitlines())


def test_an_unknown_stage_is_a_usage_error():
    result = run("bogus")
    assert result.returncode == 2 and result.stderr.startswith("usage:")
