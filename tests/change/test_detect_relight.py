"""``detect``'s ``nn`` relights pre's tiles to post's look (and ``nn-unlit`` does not): another sun, a clean pair,
and what run.json records."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from planetcd.change.detect import RELIT_TILE_SIZE, TILE_SIZE, detect
from planetcd.change.nn import RELIT_ANISOTROPY
from planetcd.change.nuisance import relight
from planetcd.datasets.synthetic import add_fresh_crater, make_change_pair

SIZE = 448
CRATER = (0.55 * SIZE, 0.35 * SIZE, 9.0)  # row, col, radius px on pre's grid
SHIFT = (1.6, -2.3)
#: where MC11E-I's light comes from, degrees clockwise from the top (planetcd.craters.sun.estimate_sun_azimuth: 292)
SUN = 292.0


def _crater_rank(result) -> tuple[int, float, float]:
    """Rank (1 = first) of the crater's patch, its score and the best score of any other patch."""
    table = result.candidates()
    y, x, _ = CRATER
    hit = (table["row_off"] <= y) & (y < table["row_off"] + table["height"]) & \
          (table["col_off"] <= x) & (x < table["col_off"] + table["width"])
    k = int(np.flatnonzero(hit)[0])
    return k + 1, float(table["score"][k]), float(np.max(np.delete(table["score"], k)))


@pytest.fixture(scope="module")
def relit_pair(shared_dir):
    """448 px of a real CTX tile; post: a new crater (r 9 px, dark halo), the sun turned by 75° and lowered from
    35° to 30°, a (1.6, -2.3) px shift and noise. (60° at the same elevation until 2026-12-04: since the
    relighting stopped reading sensor noise as topography, that turn changes this ground too little for
    ``nn-unlit``, whose pseudo pairs still carry the striations, to flag most of it.)"""
    tile = np.array(Image.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-I.png")).astype(np.float32) / 255
    big = tile[590 : 610 + SIZE, 590 : 610 + SIZE]
    post = add_fresh_crater(big, CRATER[0] + 10 + SHIFT[0], CRATER[1] + 10 + SHIFT[1], CRATER[2], halo="dark",
                            halo_strength=0.5)
    post = relight(np.clip(post, 0, 1), SUN, 35.0, SUN + 75.0, 30.0)
    post = ndimage.shift(post, SHIFT, order=3, mode="nearest")[10:-10, 10:-10]
    post = np.clip(post + np.random.default_rng(1).normal(0, 0.01, post.shape), 0.004, 1)  # no 0: missing data
    return np.clip(big[10:-10, 10:-10], 0.004, 1), post.astype(np.float32)


def test_another_sun_relit_nn_flags_the_crater_where_nn_unlit_flags_the_ground(relit_pair, trunk):
    pre, post = relit_pair
    # The pseudo-pair τ alone: it is what relighting makes hold (tau="both" adds the pair's empirical null,
    # which keeps nn-unlit's false alarms down on this pair, but not the crater's margin).
    lit = detect(pre, post, method="nn", tau="pseudo", trunk=trunk, n_pseudo=30, seed=0)
    unlit = detect(pre, post, method="nn-unlit", tau="pseudo", trunk=trunk, n_pseudo=30, seed=0)
    assert lit.relight["relit"] and lit.relight["pseudo_relit"]
    assert lit.relight["anisotropy"] > RELIT_ANISOTROPY
    assert unlit.relight == {"relit": False}
    rank, crater, other = _crater_rank(lit)
    assert rank == 1 and crater > lit.tau
    assert int(lit.changed.sum()) <= 2
    assert int(unlit.changed.sum()) >= 10  # of 25 patches: the turned sun reads as change almost everywhere
    # the crater stands out of the relit ground by more than unlit, where the ground scores closer to it
    # (3 x before 2026-12-04, when the relighting also made striations out of the ground's noise)
    _, unlit_crater, unlit_other = _crater_rank(unlit)
    assert crater - other > 0.15
    assert crater - other > 2 * (unlit_crater - unlit_other)


def test_tiles_relit_apart_leave_no_seam(relit_pair, trunk):
    # 9 tiles of 160 px, each relit by its own transfer (fitted on its window, halo included): the scores stay
    # those of one tile over the whole pair, to a few hundredths, and the crater still stands alone
    pre, post = relit_pair
    whole = detect(pre, post, method="nn", tau="pseudo", trunk=trunk, n_pseudo=30, seed=0)
    tiled = detect(pre, post, method="nn", tau="pseudo", trunk=trunk, n_pseudo=30, seed=0, tile_size=160)
    assert tiled.relight["tiles"]["n"] == 9 and whole.relight["tiles"]["n"] == 1
    assert _crater_rank(tiled)[0] == 1 and int(tiled.changed.sum()) <= 2
    assert np.nanmedian(np.abs(tiled.change_score - whole.change_score)) < 0.04


@pytest.fixture(scope="module")
def clean_runs(trunk):
    """A synthetic pair with no sun change (gain, offset, noise, a (2.4, -1.7) px shift) and one new crater."""
    pair = make_change_pair((SIZE, SIZE), seed=5, displacement=(2.4, -1.7), new_craters=[list(CRATER[:2]) + [14.0]],
                            crater_density=3e-4, halo="dark", halo_strength=0.6)
    runs = {m: detect(pair.pre, pair.post, method=m, trunk=trunk, n_pseudo=30, seed=0) for m in ("nn", "nn-unlit")}
    runs["nn", 160] = detect(pair.pre, pair.post, method="nn", trunk=trunk, n_pseudo=30, seed=0, tile_size=160)
    return runs


def test_no_sun_change_relighting_does_no_harm(clean_runs):
    lit, unlit = clean_runs["nn"], clean_runs["nn-unlit"]
    assert lit.relight["anisotropy"] < RELIT_ANISOTROPY and not lit.relight["pseudo_relit"]
    # one sun, decided on the registration window: nn runs as nn-unlit (same pseudo pairs, same τ)
    assert not lit.relight["relit"] and lit.relight["decided_on"] == "registration window"
    assert lit.thresholds["pseudo"] == pytest.approx(unlit.thresholds["pseudo"], rel=1e-6)
    assert _crater_rank(lit)[0] == 1 and _crater_rank(unlit)[0] == 1
    assert abs(int(lit.changed.sum()) - int(unlit.changed.sum())) <= 1
    scored = np.isfinite(unlit.change_score)
    diff = lit.change_score[scored] - unlit.change_score[scored]
    assert np.median(np.abs(diff)) < 0.02 and np.max(diff) < 0.05  # unchanged ground does not rise
    tiled = clean_runs["nn", 160]  # 9 tiles (not relit either: the window decides for the pair)
    assert abs(int(tiled.changed.sum()) - int(unlit.changed.sum())) <= 1 and _crater_rank(tiled)[0] == 1
    diff = tiled.change_score[scored] - unlit.change_score[scored]
    assert np.median(np.abs(diff)) < 0.03 and np.max(diff) < 0.05


def test_run_json_records_the_relighting(clean_runs, tmp_path):
    clean_runs["nn"].write(tmp_path / "nn", quicklook=False)
    record = json.loads((tmp_path / "nn" / "run.json").read_text())
    relit = record["relight"]
    assert relit["relit"] is False and relit["pseudo_relit"] is False  # one sun: decided on the window
    assert relit["anisotropy"] == pytest.approx(clean_runs["nn"].relight["anisotropy"]) == relit["window_anisotropy"]
    assert relit["anisotropy_threshold"] == RELIT_ANISOTROPY and relit["decided_on"] == "registration window"
    assert record["parameters"]["method"] == "nn" and "thresholds" in record and "misregistration" in record
    assert record["parameters"]["n_pseudo_pre_reused"] > 0  # unrelit: pre's maps kept by the main pass, as nn-unlit
    # how a patch's map became its score, so scores of runs made with other definitions are not compared blindly
    from planetcd.change.nn import NN_LINE_CELLS, NN_LINE_WEIGHT, NN_PEAK_BOX

    score = record["parameters"]["nn_score"]
    assert (score["peak_box_cells"], score["line_cells"], score["line_weight"]) == (NN_PEAK_BOX, NN_LINE_CELLS,
                                                                                     NN_LINE_WEIGHT)
    clean_runs["nn-unlit"].write(tmp_path / "unlit", quicklook=False)
    record = json.loads((tmp_path / "unlit" / "run.json").read_text())
    assert record["relight"] == {"relit": False} and record["parameters"]["method"] == "nn-unlit"
    assert record["parameters"]["n_pseudo_pre_reused"] > 0  # the previous nn: pre's maps kept by the main pass


def test_unknown_method_is_one_line(trunk):
    from planetcd.errors import InputError

    pair = make_change_pair((200, 200), seed=1)
    with pytest.raises(InputError, match="'nn', 'nn-unlit' or 'paper'"):
        detect(pair.pre, pair.post, method="nn-lit", trunk=trunk)


def test_the_default_tile_side_follows_the_relighting(relit_pair, clean_runs, trunk):
    # the features do not depend on the tile side, but a relit tile's transfer is fitted on its own window:
    # relit pairs keep the 1024 px windows the relighting was measured with, one-sun pairs take 512 px tiles
    assert not clean_runs["nn"].relight["relit"] and clean_runs["nn"].params["tile_size"] == TILE_SIZE == 512
    assert clean_runs["nn", 160].params["tile_size"] == 160  # given, kept
    relit = detect(*relit_pair, method="nn", tau="pseudo", trunk=trunk, n_pseudo=10, seed=0)
    assert relit.relight["relit"] and relit.params["tile_size"] == RELIT_TILE_SIZE == 1024
