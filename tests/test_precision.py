"""Network precision: the resolver, the autocast context, and bf16 against fp32 on small inputs.

Tolerances (bf16 keeps 8 mantissa bits, a relative rounding of 2^-9 ≈ 0.2 % per value; the
sums inside a conv are accumulated in fp32 by oneDNN):

* VGG trunk to conv3_2 on a 128 px crop: relative L2 error of the feature map < 2 % (measured 0.6 %).
* ``detect`` (``nn`` and ``paper``) on the 500 × 600 planted pair: the same top-ranked patch, the same
  changed flags, Spearman ρ of the scores > 0.99 and τ within 3 % (measured: 0.2 % nn, 1.2 % paper;
  τ's own bootstrap spread on 40 pseudo pairs is 20-30 %).
* ``segment`` with the shipped model on a 448 px CTX crop: mean |Δprob| < 0.005 and max < 0.05
  (measured 0.0004 and 0.010), and the craters found match (DeepMoon rule) with F1 ≥ 0.85
  (one crater at the threshold may appear or vanish).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from planetcd import precision as prec
from planetcd.errors import InputError
from planetcd.precision import autocast, check_precision, precision_record, resolve_precision


# --------------------------------------------------------------------------- the resolver


def test_explicit_values_are_kept_and_bad_ones_are_one_line_input_errors():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    for bad in ("fp16", "", "BF16", None):
        with pytest.raises(InputError) as info:
            resolve_precision(bad, "cpu")
        assert "\n" not in str(info.value) and "auto, fp32, bf16" in str(info.value)
    with pytest.raises(ValueError):  # TrainConfig's checks have always raised ValueError
        check_precision("half")


def test_auto_follows_the_native_bf16_check(monkeypatch):
    monkeypatch.setattr(prec, "cpu_bf16_native", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(prec, "cpu_bf16_native", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(prec, "cuda_bf16_native", lambda: False)
    assert resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(prec, "cuda_bf16_native", lambda: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"


def test_native_check_asks_torch_at_run_time(monkeypatch):
    """No native bf16 reported (AVX512-BF16 and AMX both missing) -> not native, and auto is fp32."""
    prec.cpu_bf16_native.cache_clear()
    try:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert prec.cpu_bf16_native() is False
        assert resolve_precision("auto", "cpu") == "fp32"
        prec.cpu_bf16_native.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
        assert prec.cpu_bf16_native() is torch.backends.mkldnn.is_available()
    finally:
        prec.cpu_bf16_native.cache_clear()


def test_autocast_contexts():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        with autocast("bf16", "cpu"):
            assert conv(x).dtype == torch.bfloat16
            with autocast("fp32", "cpu"):  # fp32 inside an outer bf16 context: float32
                assert conv(x).dtype == torch.float32
            with autocast(None, "cpu"):  # None: the caller's context holds
                assert conv(x).dtype == torch.bfloat16
        with autocast("fp32", "cpu"):
            assert conv(x).dtype == torch.float32
    record = precision_record("auto", "bf16")
    assert record["asked"] == "auto" and record["used"] == "bf16" and isinstance(record["cpu_bf16_native"], bool)


# --------------------------------------------------------------------------- bf16 against fp32


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff

    folder = tmp_path_factory.mktemp("precision_pair")
    pair = make_change_pair((500, 600), seed=12, displacement=(3.6, -7.3), new_craters=[[250, 350, 22.0]],
                            crater_density=2e-4, halo="dark", halo_strength=0.8)
    return (write_synthetic_geotiff(folder / "pre.tif", pair.pre), write_synthetic_geotiff(folder / "post.tif", pair.post),
            pair)


def test_trunk_features_bf16_close_to_fp32(trunk, planted):
    from planetcd.features import run_trunk

    image = np.asarray(planted[2].pre, np.float32)[:128, :128]
    image = (image - image.min()) / (image.max() - image.min())
    batch = np.repeat(image[None, None], 3, axis=1)
    f32 = run_trunk(trunk, batch, torch.device("cpu"), "fp32")
    b16 = run_trunk(trunk, batch, torch.device("cpu"), "bf16")
    assert b16.dtype == np.float32 and b16.shape == f32.shape
    assert not np.array_equal(b16, f32)  # bf16 did run
    assert np.linalg.norm(b16 - f32) / np.linalg.norm(f32) < 0.02


@pytest.mark.parametrize("method", ["nn", "paper"])
def test_detect_bf16_ranks_and_flags_as_fp32(trunk, planted, method):
    from scipy.stats import spearmanr

    from planetcd.change.detect import detect

    pre, post, _ = planted
    runs = {p: detect(pre, post, trunk=trunk, n_pseudo=40, seed=1, method=method, precision=p) for p in ("fp32", "bf16")}
    a, b = runs["fp32"], runs["bf16"]
    assert a.params["precision"]["used"] == "fp32" and b.params["precision"]["used"] == "bf16"
    assert b.change_score.dtype == a.change_score.dtype
    ok = np.isfinite(a.change_score)
    np.testing.assert_array_equal(ok, np.isfinite(b.change_score))
    assert not np.array_equal(a.change_score[ok], b.change_score[ok])
    assert np.nanargmax(a.change_score) == np.nanargmax(b.change_score)
    table = a.candidates()
    assert (table["row_off"][0], table["col_off"][0]) == (200, 300)
    np.testing.assert_array_equal(a.changed, b.changed)
    assert spearmanr(a.change_score[ok], b.change_score[ok]).correlation > 0.99
    assert abs(a.tau - b.tau) / a.tau < 0.03
    spread = a.thresholds["pseudo_spread"]
    assert spread["low"] <= a.thresholds["pseudo"] <= spread["high"] and spread["n"] == 40


def test_segment_bf16_probability_and_craters_close_to_fp32(shared_dir):
    import rasterio

    from planetcd.craters.match import match_craters
    from planetcd.craters.segment import segment

    with rasterio.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-A.png") as ds:
        crop = ds.read(1, window=((600, 1048), (600, 1048))).astype(np.float32)
    runs = {p: segment(crop, "ctx-craters", device="cpu", precision=p, scales=[1.0], sun_azimuth="none")
            for p in ("fp32", "bf16")}
    a, b = runs["fp32"], runs["bf16"]
    assert a.params["precision"]["used"] == "fp32" and b.params["precision"]["used"] == "bf16"
    assert b.probability.dtype == np.float32
    diff = np.abs(a.probability - b.probability)
    assert 0 < np.nanmean(diff) < 0.005 and np.nanmax(diff) < 0.05
    assert len(a.catalog) >= 4
    match = match_craters(b.catalog.pixels, a.catalog.pixels)
    assert match.f1 >= 0.85


# --------------------------------------------------------------------------- the option on the command line


def test_precision_option_reaches_run_json(planted, vgg_weights, tmp_path):
    from click.testing import CliRunner

    from planetcd.cli import main

    pre, post, _ = planted
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["detect", str(pre), str(post), "-o", str(out), "--weights", str(vgg_weights),
                                       "--n-pseudo", "10", "--precision", "fp32", "--no-quicklook", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["parameters"]["precision"]["asked"] == "fp32"
    assert record["parameters"]["precision"]["used"] == "fp32"
    assert set(record["thresholds"]["pseudo_spread"]) >= {"low", "high", "n"}
    bad = CliRunner().invoke(main, ["detect", str(pre), str(post), "-o", str(tmp_path / "bad"), "--precision", "fp16"])
    assert bad.exit_code == 2 and "fp16" in bad.output
    for command in ("segment", "monitor", "evaluate", "train"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        assert "--precision [auto|fp32|bf16]" in help_text, command
