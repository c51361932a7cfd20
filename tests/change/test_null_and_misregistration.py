"""The pair's own empirical null (``tau="empirical"|"both"``) and the misregistration found by the tool (``max_shift="auto"``)."""

import json

import numpy as np
import pytest

from planetcd.change.detect import auto_shift, detect
from planetcd.change.threshold import combine_thresholds, empirical_threshold
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff
from planetcd.errors import InputError


def test_empirical_null_ignores_a_minority_of_changed_patches(rng):
    unchanged = rng.normal(1.0, 0.1, 400)
    changed = rng.normal(3.0, 0.2, 60)  # 13 % of the patches changed
    tau = empirical_threshold(np.concatenate([unchanged, changed, [np.nan]]))
    assert 1.2 < tau < 1.45  # median + 3 σ of the unchanged bulk, barely moved by the changes
    assert np.mean(unchanged > tau) < 0.02 and np.all(changed > tau)
    assert np.isnan(empirical_threshold(unchanged[:19]))  # too few patches for a null


def test_both_takes_the_larger_and_falls_back_to_pseudo():
    assert combine_thresholds(0.3, 0.5) == 0.5
    assert combine_thresholds(0.7, 0.5) == 0.7
    assert combine_thresholds(0.3, float("nan")) == 0.3


def test_auto_shift_has_a_floor_per_method():
    assert auto_shift(0.2, "nn") == 4.0 and auto_shift(0.2, "paper") == 10.0
    assert auto_shift(19.9, "nn") == 21.0


@pytest.fixture(scope="module")
def shifted_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shift")
    pair = make_change_pair((400, 400), seed=5, displacement=(20.0, -6.5), new_craters=np.zeros((0, 3)),
                            crater_density=3e-4)
    return write_synthetic_geotiff(folder / "pre.tif", pair.pre), write_synthetic_geotiff(folder / "post.tif", pair.post)


def test_auto_max_shift_recovers_a_20px_misregistration(shifted_pair, trunk, tmp_path):
    pre, post = shifted_pair
    # without global registration the local windows see the whole misregistration
    raw = detect(pre, post, method="nn", register=False, trunk=trunk, n_pseudo=20)
    assert raw.misregistration["residual_px"] == pytest.approx(20.0, abs=2.0)
    assert raw.params["max_shift"] >= 20.0 and raw.misregistration["nn_radius"] >= 10
    # with it, the global shift is found and what remains is small
    result = detect(pre, post, method="nn", trunk=trunk, n_pseudo=20)
    np.testing.assert_allclose(result.displacement, (20.0, -6.5), atol=2.0)
    assert result.misregistration["residual_px"] < 1.0 and result.params["max_shift"] == 4.0
    assert result.params["max_shift_policy"] == "auto"
    result.write(tmp_path / "out")
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["misregistration"]["max_shift_px"] == 4.0
    assert set(record["thresholds"]) >= {"pseudo", "empirical", "used", "policy"}
    assert record["thresholds"]["policy"] == "both" and record["thresholds"]["pseudo"] is not None


def test_threshold_policies(shifted_pair, trunk):
    pre, post = shifted_pair
    fixed = detect(pre, post, method="nn", trunk=trunk, tau=0.5, max_shift=4, patch_size=64, stride=32)
    assert fixed.tau == 0.5 and fixed.params["max_shift_policy"] == "fixed"
    scored = np.isfinite(fixed.change_score)
    assert scored.sum() >= 20
    emp = detect(pre, post, method="nn", trunk=trunk, tau="empirical", max_shift=4, patch_size=64, stride=32)
    assert emp.tau == pytest.approx(empirical_threshold(fixed.change_score))
    assert emp.thresholds["pseudo"] is None
    both = detect(pre, post, method="nn", trunk=trunk, tau="both", max_shift=4, patch_size=64, stride=32,
                  n_pseudo=20)
    assert both.tau == pytest.approx(max(both.thresholds["pseudo"], both.thresholds["empirical"]))
    with pytest.raises(InputError, match="20 scored patches"):
        detect(pre, post, method="nn", trunk=trunk, tau="empirical")  # 16 patches of 100 px
    with pytest.raises(InputError, match="tau must be"):
        detect(pre, post, trunk=trunk, tau="median")
