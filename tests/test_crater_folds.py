"""benchmarks/crater_folds.py: the network a fold is scored with (ensemble and flip averaging)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from planetcd.craters.unet import SymmetricUNet, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folds_module():
    spec = importlib.util.spec_from_file_location("crater_folds", ROOT / "benchmarks" / "crater_folds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fold_model(run: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = SymmetricUNet(filter_multiple=0.25, dropout=False)
    path = run / "fold-ADG" / "best.pt"
    save_checkpoint(path, model, "symmetric", {"sun_aware": True, "target": "filled"})
    return path


def _args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**({"device": "cpu", "ensemble_with": None, "tta": "model"} | overrides))


@pytest.fixture
def two_runs(tmp_path):
    _fold_model(tmp_path / "a", 0)
    _fold_model(tmp_path / "b", 1)
    return tmp_path


def test_fold_network_alone_is_the_checkpoint(folds_module, two_runs):
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    from planetcd import models

    alone = models.load(two_runs / "a" / "fold-ADG" / "best.pt", tta=False)
    for tta in ("model", "off"):
        net = folds_module.fold_network(_args(tta=tta), two_runs / "a" / "fold-ADG")
        assert not hasattr(net, "flips")
        with torch.no_grad():
            torch.testing.assert_close(net(x), alone(x))


def test_fold_network_ensemble_is_the_mean(folds_module, two_runs):
    from planetcd import models

    x = torch.rand(1, 1, 32, 32) * 2 - 1
    a = models.load(two_runs / "a" / "fold-ADG" / "best.pt", tta=False)
    b = models.load(two_runs / "b" / "fold-ADG" / "best.pt", tta=False)
    net = folds_module.fold_network(_args(ensemble_with=str(two_runs / "b")), two_runs / "a" / "fold-ADG")
    with torch.no_grad():
        pa, pb, mean = a(x), b(x), net(x)
    assert not torch.allclose(pa, pb)  # two different networks
    torch.testing.assert_close(mean, (pa + pb) / 2)
    assert net.metadata["sun_aware"] is True


def test_fold_network_tta_keeps_the_light_axis(folds_module, two_runs):
    from planetcd import models

    x = torch.rand(1, 1, 32, 32) * 2 - 1
    a = models.load(two_runs / "a" / "fold-ADG" / "best.pt", tta=False)
    net = folds_module.fold_network(_args(tta="on"), two_runs / "a" / "fold-ADG")
    assert net.flips == "light-axis"  # a sun-aware model: the left-right mirror would turn craters into mounds
    with torch.no_grad():
        expected = (a(x) + torch.flip(a(torch.flip(x, (2,))), (2,))) / 2
        torch.testing.assert_close(net(x), expected)
    assert net.metadata["target"] == "filled"


def test_print_table_names_what_each_fold_chose_by_and_pools_ctx_tiles_only(folds_module, capsys):
    tiles = {"A": {"tp": 8, "fp": 2, "fn": 2, "precision": 0.8, "recall": 0.8, "f1": 0.8},
             "HRSC": {"tp": 1, "fp": 9, "fn": 9, "precision": 0.1, "recall": 0.1, "f1": 0.1}}
    folds_module.print_table([{"test": ["A", "D", "G"], "threshold": 0.3, "tiles": tiles,
                               "inner_val_f1": {"0.3": 0.5, "0.4": 0.6123}}])
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "fold ADG: inner-validation F1 0.6123 (what the fold chose by)"
    assert "tp 8 fp 2 fn 2" in out[-2] and out[-1] == "worst tile: A F1 0.800"  # HRSC is printed, not pooled


# --------------------------------------------------------------------------- --refit


def _refit_args(out: Path, refit: Path | None, **overrides) -> argparse.Namespace:
    base = {"out": str(out), "refit": None if refit is None else str(refit), "score_only": False, "init": None,
            "threads": 0, "hrsc": False, "recipe": "sun-aware", "confidence_weights": "off"}
    return _args(**(base | overrides))


@pytest.fixture
def fake_fold(folds_module, monkeypatch, tmp_path):
    """run_fold with the training and the tiles faked: what it trains on, and what it scores with."""
    import numpy as np

    import planetcd.craters.train as train_module

    calls = {}

    def fake_train(train_set, val_set, config, outdir, extra_metadata=None):
        calls.update(train=list(train_set), val=list(val_set), patience=config.patience, epochs=config.epochs)
        _fold_model(Path(outdir).parent, 0)  # best.pt: an early epoch's weights
        torch.manual_seed(7)
        save_checkpoint(Path(outdir) / "last.pt", SymmetricUNet(filter_multiple=0.25, dropout=False), "symmetric",
                        {"sun_aware": True, "target": "filled", "epoch": config.epochs})
        return {"best_epoch": 1, "epochs_run": config.epochs, "history": []}

    truth = np.array([[50.0, 50.0, 10.0]])

    def fake_detect(model, image, thresholds, target="filled", device="cpu"):
        calls.setdefault("detected", []).append(thresholds)
        return {th: truth.copy() for th in thresholds}, {"azimuth_deg": 270.0}

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(train_module, "load_labelled", lambda image_path, labels_path: Path(image_path).stem)
    monkeypatch.setattr(folds_module, "make_config", lambda args: argparse.Namespace(epochs=5, patience=2, init=None))
    monkeypatch.setattr(folds_module, "raw_tile", lambda tile: (None, truth))
    monkeypatch.setattr(folds_module, "detect", fake_detect)
    return calls


def _chosen_run(folds_module, run: Path, threshold: float = 0.6) -> None:
    folds = folds_module.parse_folds("ADG,BEH,CFI")
    train_tiles, val_tiles = folds_module.inner_split(folds, 0)
    (run / "fold-ADG").mkdir(parents=True)
    (run / "fold-ADG" / "result.json").write_text(
        json.dumps({"test": ["A", "D", "G"], "train": train_tiles, "val": val_tiles, "threshold": threshold}))


def test_refit_trains_on_the_inner_tiles_and_takes_their_earlier_choice(folds_module, fake_fold, tmp_path):
    from planetcd import models

    _chosen_run(folds_module, tmp_path / "chosen", threshold=0.6)
    folds = folds_module.parse_folds("ADG,BEH,CFI")
    result = folds_module.run_fold(_refit_args(tmp_path / "refit", tmp_path / "chosen"), folds, 0)
    assert fake_fold["train"] == ["MC11E-B", "MC11E-E", "MC11E-C", "MC11E-F", "MC11E-H", "MC11E-I"]
    assert fake_fold["val"] == []
    assert fake_fold["patience"] > fake_fold["epochs"]  # no early stop on the training loss
    assert fake_fold["detected"] == [(0.6,)] * 3  # only the held-out tiles, at the choice made on H and I
    assert result["threshold"] == 0.6 and result["inner_val_f1"] == {}
    assert result["train"] == ["B", "E", "C", "F", "H", "I"] and result["val"] == []
    assert result["refit"] == {"choices_of": str(tmp_path / "chosen"), "inner_tiles": ["H", "I"], "threshold": 0.6}
    assert folds_module.inner_f1(result) == float("-inf")  # never chosen among runs by an inner F1
    fold = tmp_path / "refit" / "fold-ADG"
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():  # best.pt is the last epoch, whatever the training loss chose
        torch.testing.assert_close(models.load(fold / "best.pt", tta=False)(x), models.load(fold / "last.pt", tta=False)(x))


def test_refit_refuses_a_run_of_other_tiles_and_the_verifier(folds_module, fake_fold, tmp_path):
    folds = folds_module.parse_folds("ADG,BEH,CFI")
    with pytest.raises(SystemExit, match="no .*result.json"):
        folds_module.run_fold(_refit_args(tmp_path / "refit", tmp_path / "missing"), folds, 0)
    _chosen_run(folds_module, tmp_path / "chosen")
    other = folds_module.parse_folds("ADG,BHE,CFI")  # inner tiles E, I: not the run's choices
    with pytest.raises(SystemExit, match="is not fold ADG"):
        folds_module.run_fold(_refit_args(tmp_path / "refit", tmp_path / "chosen"), other, 0)
    folds_module.run_fold(_refit_args(tmp_path / "refit", tmp_path / "chosen"), folds, 0)
    with pytest.raises(SystemExit, match="rescore it with --refit"):
        folds_module.run_fold(_refit_args(tmp_path / "refit", None, score_only=True), folds, 0)
    with pytest.raises(SystemExit, match="refitted fold"):
        folds_module.verifier_inference(_refit_args(tmp_path / "refit", None), folds, 0)
