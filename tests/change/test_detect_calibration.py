"""τ calibration of ``detect --method nn-unlit``: pre's feature maps kept by the main pass stand in for the pre crops.

(``nn`` relights pre's tiles, so its pseudo pairs compute their pre crops: tests/change/test_detect_relight.py.)"""

import numpy as np
import pytest

import planetcd.change.calibration as calibration
from planetcd.change.detect import detect
from planetcd.datasets.synthetic import make_change_pair, write_synthetic_geotiff


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """360 x 400 px, post displaced by (2.6, -3.4) px, one new crater; a nodata corner in pre."""
    folder = tmp_path_factory.mktemp("calib")
    made = make_change_pair((360, 400), seed=5, displacement=(2.6, -3.4), new_craters=[[210, 220, 14.0]])
    pre = made.pre.astype(np.float32)
    pre[:60, :90] = np.nan
    return write_synthetic_geotiff(folder / "pre.tif", pre, dtype="float32", nodata=np.nan), write_synthetic_geotiff(folder / "post.tif", made.post)


# Small tiles: each pseudo pair's crop window is assembled from the cores of several tiles.
OPTIONS = dict(method="nn-unlit", n_pseudo=10, tile_size=128, seed=4)


@pytest.fixture(scope="module")
def recomputed(pair, trunk):
    """The calibration as before: every pseudo pair runs the trunk on its pre crop too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(calibration, "PSEUDO_REUSE_BYTES", 0)
        result = detect(*pair, trunk=trunk, **OPTIONS)
    assert result.params["n_pseudo_pre_reused"] == 0
    return result


def _assert_same_calibration(result, reference):
    np.testing.assert_allclose(result.pseudo_scores, reference.pseudo_scores, rtol=1e-5, atol=1e-7)
    assert result.tau == pytest.approx(reference.tau, rel=1e-5)
    np.testing.assert_array_equal(result.change_score, reference.change_score)
    np.testing.assert_array_equal(result.changed, reference.changed)


def test_pre_maps_of_the_main_pass_give_the_same_pseudo_scores(pair, trunk, recomputed):
    result = detect(*pair, trunk=trunk, **OPTIONS)
    assert result.params["n_pseudo_pre_reused"] == OPTIONS["n_pseudo"]  # the overview guess of the draw was right
    _assert_same_calibration(result, recomputed)


def test_a_wrong_guess_of_the_draw_falls_back_to_pre_crops(pair, trunk, recomputed, monkeypatch):
    """Pairs whose pre map was not kept (the guess missed them) compute their pre crop: same scores."""
    guess = calibration.guess_valid_fraction

    def half_wrong(pre, post, patches, height, width):
        fraction = guess(pre, post, patches, height, width)
        fraction[::2] = 0.0  # every other patch guessed unusable: a different draw
        return fraction

    monkeypatch.setattr(calibration, "guess_valid_fraction", half_wrong)
    result = detect(*pair, trunk=trunk, **OPTIONS)
    assert 0 <= result.params["n_pseudo_pre_reused"] < OPTIONS["n_pseudo"]
    _assert_same_calibration(result, recomputed)


def test_a_memory_budget_of_one_window_reuses_one_pre_map(pair, trunk, recomputed, monkeypatch):
    # one 184 px crop (46² cells at conv3_2: the patch, the halo of the search and of the low-pass)
    monkeypatch.setattr(calibration, "PSEUDO_REUSE_BYTES", 4 * 256 * 46 * 46)
    result = detect(*pair, trunk=trunk, **OPTIONS)
    assert 1 <= result.params["n_pseudo_pre_reused"] < OPTIONS["n_pseudo"]
    _assert_same_calibration(result, recomputed)


@pytest.fixture(scope="module")
def sequential(pair, trunk):
    """The same draw of 50 pseudo pairs scored whole (tolerance 0) and stopped after the first stage (tolerance ∞)."""
    options = dict(OPTIONS, n_pseudo=50, tau="pseudo")
    return {tol: detect(*pair, trunk=trunk, pseudo_tolerance=tol, **options) for tol in (0.0, float("inf"))}


def test_a_sequential_sample_scores_a_prefix_of_one_draw(sequential):
    whole, first = sequential[0.0], sequential[float("inf")]
    assert whole.thresholds["pseudo_sample"] == dict(n=50, n_max=50, stopped="n_max", first=40, step=20, tolerance=0.0)
    assert first.thresholds["pseudo_sample"]["n"] == 40 and first.thresholds["pseudo_sample"]["stopped"] == "tolerance"
    np.testing.assert_allclose(first.pseudo_scores, whole.pseudo_scores[:40], rtol=1e-5, atol=1e-7)
    # τ and its reported spread are of the pairs scored
    assert first.thresholds["pseudo"] == pytest.approx(np.percentile(first.pseudo_scores, 95))
    assert first.thresholds["pseudo_spread"]["n"] == 40 and whole.thresholds["pseudo_spread"]["n"] == 50
    np.testing.assert_array_equal(first.change_score, whole.change_score)  # the main pass does not depend on it


def test_without_a_tolerance_every_pseudo_pair_is_scored(pair, trunk, recomputed):
    assert recomputed.thresholds["pseudo_sample"]["stopped"] == "n_max"  # n_pseudo (10) is within the first stage
    result = detect(*pair, trunk=trunk, pseudo_tolerance=None, **dict(OPTIONS, n_pseudo=45))
    assert result.thresholds["pseudo_sample"] == dict(n=45, n_max=45, stopped="fixed")
    assert result.params["pseudo_tolerance"] is None and len(result.pseudo_scores) == 45


@pytest.mark.parametrize("tolerance", [-0.1, float("nan")])
def test_a_bad_pseudo_tolerance_is_one_line(pair, trunk, tolerance):
    from planetcd.errors import InputError

    with pytest.raises(InputError, match="pseudo_tolerance"):
        detect(*pair, trunk=trunk, pseudo_tolerance=tolerance, **OPTIONS)
