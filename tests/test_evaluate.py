"""Evaluation metrics against a hand computation, and every method on a tiny generated set."""

import json
import math

import numpy as np
import pytest

from planetcd import evaluate as ev
from planetcd.change import patch_pairs
from planetcd.datasets.changeset import ChangeSet

# A fixed score vector; labels 1 = changed. With tau = 0.5 the first five are predicted changed:
# tp = {0.9, 0.8, 0.6} = 3, fp = {0.7, 0.55} = 2, tn = {0.4, 0.2} = 2, fn = {0.3} = 1.
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])
LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0])
HAND = {
    "accuracy": 5 / 8,
    "precision": 3 / 5,
    "recall": 3 / 4,
    "f1": 2 * 3 / (2 * 3 + 2 + 1),
    "balanced_accuracy": (3 / 4 + 2 / 4) / 2,
    # Of the 4 x 4 (changed, unchanged) score pairs, the changed score is higher in 4 + 4 + 3 + 1 = 12.
    "roc_auc": 12 / 16,
    "tau": 0.5,
}


def test_metrics_match_a_hand_computation():
    predicted = SCORES > 0.5
    assert ev.confusion(LABELS, predicted) == (3, 2, 2, 1)
    assert ev.metrics(LABELS, SCORES, 0.5) == pytest.approx(HAND)


def test_oracle_threshold_by_hand():
    # tau = 0.575 (0.9, 0.8, 0.7, 0.6 changed) and tau = 0.75 (0.9, 0.8) both reach 6/8; ties go to the lower tau.
    tau = ev.oracle_threshold(LABELS, SCORES)
    assert tau == pytest.approx(0.575)
    assert ev.accuracy(LABELS, SCORES > tau) == 0.75


def test_degenerate_cases():
    nothing = np.zeros(4, bool)
    labels = np.array([0, 1, 0, 1])
    assert ev.precision(labels, nothing) == 0.0 and ev.recall(labels, nothing) == 0.0 and ev.f1_score(labels, nothing) == 0.0
    assert ev.balanced_accuracy(labels, nothing) == 0.5
    assert math.isnan(ev.roc_auc(np.ones(3, int), np.arange(3.0)))
    with pytest.raises(ValueError):
        ev.accuracy(np.array([0, 2]), np.array([True, False]))


def test_evaluate_uses_the_scores_and_marks_oracles(monkeypatch, tmp_path):
    calls = []

    def fake(pre, post, method="paper", **kwargs):
        calls.append(method)
        assert kwargs["max_shift"] == 40.0 and kwargs["seed"] == 5
        if kwargs.get("progress") is not None:
            kwargs["progress"](8, 8)
        return patch_pairs.PairScores(SCORES.copy(), 0.5)

    monkeypatch.setattr(patch_pairs, "score_pairs", fake)
    pairs = ChangeSet([str(i) for i in range(8)], np.zeros((8, 1, 8, 8)), np.zeros((8, 1, 8, 8)), LABELS, None, "fixed")
    result = ev.evaluate(pairs, ["paper", "paper-oracle", "cva"], seed=5, max_shift=40, progress=True)
    assert calls == ["paper", "cva"]  # the oracle re-uses paper's scores
    assert result.results["paper"].metrics == pytest.approx(HAND)
    assert result.results["paper-oracle"].oracle and result.results["paper-oracle"].metrics["tau"] == pytest.approx(0.575)
    data = json.loads(result.to_json(tmp_path / "r.json").read_text())
    assert data["dataset"] == "fixed" and data["n_pairs"] == 8
    assert "nn_score" not in data["params"]  # no nn method ran
    assert set(data["methods"]["paper"]) == {"accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc", "tau"}
    assert data["methods"]["paper"]["roc_auc"] == pytest.approx(0.75)
    table = result.to_markdown()
    assert "| paper-oracle † |" in table and "† oracle: τ chosen on the labels" in table
    assert "| paper | 0.625 | 0.600 | 0.750 | 0.667 | 0.625 | 0.750 | 0.5 |" in table


def test_method_names_are_checked():
    assert ev.parse_methods("cva, nn-oracle") == ["cva", "nn-oracle"]
    assert "paper" in ev.parse_methods(None) and "nn-oracle" in ev.parse_methods(None)
    with pytest.raises(Exception, match="unknown method 'magic'"):
        ev.parse_methods("magic")


def test_every_method_runs_on_a_tiny_generated_set(shared_dir, vgg_weights):
    from planetcd.datasets.benchmark import make_benchmark

    pairs = make_benchmark("ctx-impacts", 8, seed=3, shared_dir=shared_dir, patch_size=64).changeset
    result = ev.evaluate(pairs, None, weights=vgg_weights, device="cpu", n_pseudo=8)
    names = list(patch_pairs.METHOD_NAMES) + ["paper-oracle", "nn-oracle"]
    assert list(result.results) == names
    for name, r in result.results.items():
        assert r.scores.shape == (8,) and np.all(np.isfinite(r.scores)), name
        m = r.metrics
        assert all(0.0 <= m[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1", "balanced_accuracy")), name
        assert m == pytest.approx(ev.metrics(pairs.labels, r.scores, r.tau))
    assert result.params["nn_score"]["line_weight"] > 0  # nn ran: how it scores a pair is recorded
    for base in ("paper", "nn"):  # a label-tuned tau is an upper bound on accuracy
        assert result.results[f"{base}-oracle"].metrics["accuracy"] >= result.results[base].metrics["accuracy"]
        np.testing.assert_array_equal(result.results[f"{base}-oracle"].scores, result.results[base].scores)


def test_evaluate_shows_a_progress_bar_per_method_on_stderr(monkeypatch, capsys):
    def fake(pre, post, method="paper", progress=None, **kwargs):
        for _ in range(4):
            progress(2, 8)
        return patch_pairs.PairScores(SCORES.copy(), 0.5)

    monkeypatch.setattr(patch_pairs, "score_pairs", fake)
    pairs = ChangeSet([str(i) for i in range(8)], np.zeros((8, 1, 8, 8)), np.zeros((8, 1, 8, 8)), LABELS, None, "fixed")
    ev.evaluate(pairs, ["paper", "cva"], progress=True)
    err = capsys.readouterr().err
    assert "paper" in err and "cva" in err and "8/8" in err
    ev.evaluate(pairs, ["paper", "cva"])  # default: quiet
    assert capsys.readouterr().err == ""
