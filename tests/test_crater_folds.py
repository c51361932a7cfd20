"""benchmarks/crater_folds.py: the network a fold is scored with (ensemble and flip averaging)."""

from __future__ import annotations

import argparse
import importlib.util
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
