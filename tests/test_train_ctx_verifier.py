"""benchmarks/train_ctx_verifier.py: a candidate segmenter's verifier is never installed as ctx-craters'."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_ctx_verifier


def test_install_refuses_a_verifier_of_another_segmenter(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_ctx_verifier.main(["--out", str(tmp_path / "run"), "--model", "candidate.pt", "--install"])
    assert exit_info.value.code == 2
    assert "ctx-craters" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_install_only_reads_which_segmenter_the_summary_was_chosen_on(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"segmenter": "runs/gpu/best.pt"}))
    with pytest.raises(SystemExit) as exit_info:
        train_ctx_verifier.main(["--out", str(tmp_path), "--install-only"])
    assert exit_info.value.code == 2
    assert "runs/gpu/best.pt" in capsys.readouterr().err
