"""The chip verifier: chips in the canonical frame, the 180° turn, training on craters against mounds, the loader,
and segment's second stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from planetcd.craters import sun
from planetcd.craters.verify import (
    ChipVerifier, chip_stack, crater_chips, decoy_competition, image_pyramid, load_verifier, pyramid_levels_for,
    save_verifier, train_verifier, verifier_contexts, verifier_scores, verifier_training_chips, verify_craters,
)
from planetcd.datasets.synthetic import crater_height, hillshade
from planetcd.errors import InputError, WeightsError


def relief(size: int, craters: np.ndarray, mounds: np.ndarray = np.zeros((0, 3))) -> np.ndarray:
    """Height field of bowls (``craters``) and domes (``mounds``), rows ``x, y, r``."""
    height = np.zeros((size, size), np.float32)
    for sign, items in ((1.0, craters), (-1.0, mounds)):
        for x, y, r in items:
            height += sign * crater_height((size, size), y, x, r)
    return height


def scattered(n: int, size: int, rng, radius=(5.0, 12.0)) -> np.ndarray:
    """``n`` non-overlapping circles ``x, y, r`` at least 2.5 radii from the edges."""
    out = []
    while len(out) < n:
        r = rng.uniform(*radius)
        x, y = rng.uniform(2.5 * r, size - 2.5 * r, 2)
        if all(np.hypot(x - a, y - b) > 2.2 * (r + c) for a, b, c in out):
            out.append((x, y, r))
    return np.array(out)


def test_pyramid_levels_halve_and_fill_missing_pixels():
    image = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    missing = np.zeros_like(image, bool)
    missing[:4] = True
    pyramid = image_pyramid(image, 4, missing)
    assert [p.shape for p in pyramid] == [(64, 48), (32, 24), (16, 12), (8, 6)]
    assert pyramid[0][0, 0] == pytest.approx(image[~missing].mean())
    assert pyramid[1][5, 3] == pytest.approx(image[10:12, 6:8].mean())
    assert pyramid_levels_for(3.0) == 1 and pyramid_levels_for(100.0) >= 4


def test_turned_chip_is_the_chip_rotated_180_degrees():
    image = hillshade(relief(96, np.array([[48.0, 40.0, 10.0]])), azimuth_deg=270.0)
    pyramid = image_pyramid(image)
    crater = np.array([[48.0, 40.0, 10.0]])
    chip = crater_chips(pyramid, crater)[0]
    turned = crater_chips(pyramid, crater, turn=True)[0]
    np.testing.assert_allclose(turned, chip[::-1, ::-1], atol=1e-5)
    # standardised, and lit from the left: the left inner wall (facing the sun) is the dark one
    assert abs(chip.mean()) < 1e-4 and 0.5 < chip.std() <= 1.0  # std + 0.02 in the denominator
    mid = chip.shape[0] // 2
    assert chip[mid - 3 : mid + 3, mid - 5 : mid].mean() < chip[mid - 3 : mid + 3, mid : mid + 5].mean() - 0.5


@pytest.mark.parametrize("azimuth", [0.0, 90.0, 180.0, 313.0])
def test_chip_axes_follow_the_canonical_frame(azimuth):
    """A crater lit from ``azimuth`` gives, through its frame, the chip of the same crater lit from the left."""
    crater = np.array([[60.0, 64.0, 11.0]])
    reference = crater_chips(image_pyramid(hillshade(relief(128, crater), azimuth_deg=270.0)), crater)[0]
    image = hillshade(relief(128, crater), azimuth_deg=azimuth)
    frame = sun.canonical_frame(image.shape, azimuth)
    chip = crater_chips(image_pyramid(image), crater, frame)[0]
    assert np.corrcoef(chip.ravel(), reference.ravel())[0, 1] > 0.95


def test_big_craters_are_sampled_from_a_coarser_level_without_aliasing():
    rng = np.random.default_rng(1)
    image = hillshade(relief(512, np.array([[256.0, 256.0, 80.0]])), azimuth_deg=270.0)
    noisy = image + rng.normal(0, 0.3, image.shape).astype(np.float32)  # pixel noise a level-0 sample would keep
    crater = np.array([[256.0, 256.0, 80.0]])
    clean = crater_chips(image_pyramid(image), crater)[0]
    chip = crater_chips(image_pyramid(noisy), crater)[0]
    assert np.corrcoef(chip.ravel(), clean.ravel())[0, 1] > 0.9


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(InputError):
        image_pyramid(np.zeros((2, 3, 4)))
    with pytest.raises(InputError):
        crater_chips(image_pyramid(np.zeros((32, 32))), np.zeros((2, 2)))
    with pytest.raises(InputError):
        train_verifier(np.zeros((4, 24, 24)), np.ones(4))
    assert crater_chips(image_pyramid(np.zeros((32, 32))), np.zeros((0, 3))).shape == (0, 24, 24)


def test_decoy_threshold_rises_until_the_decoys_are_a_small_share():
    """Few decoys: the verifier's own threshold. Many: the lowest threshold where decoys <= fdr x kept."""
    from planetcd.craters.verify import decoy_threshold

    rng = np.random.default_rng(1)
    craters = np.concatenate([rng.uniform(0.7, 1.0, 80), rng.uniform(0.3, 0.6, 40)])  # 80 good, 40 texture
    assert decoy_threshold(craters, np.array([0.35]), floor=0.3, max_fdr=0.1) == 0.3
    texture = rng.uniform(0.3, 0.6, 40)  # the same texture under the opposite sun
    cut = decoy_threshold(craters, texture, floor=0.3, max_fdr=0.1)
    kept, false = (craters >= cut).sum(), (texture >= cut).sum()
    assert false <= 0.1 * kept and 0.45 < cut <= 0.7
    below = np.unique(craters[(craters >= 0.3) & (craters < cut)])
    assert all((texture >= t).sum() > 0.1 * (craters >= t).sum() for t in below)  # the lowest such threshold
    assert decoy_threshold(np.array([0.5]), np.array([0.9]), floor=0.3, max_fdr=0.1) == np.inf
    assert decoy_threshold(np.zeros(0), texture, floor=0.4, max_fdr=0.1) == 0.4
    with pytest.raises(InputError):
        decoy_threshold(craters, texture, floor=0.3, max_fdr=0.0)


def test_decoy_competition_keeps_the_better_scored_of_one_feature():
    """A crater and a decoy that are one feature by the DeepMoon rule: the higher verifier score wins, a tie keeps
    both, and craters and decoys that do not overlap are left alone."""
    craters = np.array([[50.0, 50.0, 10.0], [150.0, 50.0, 8.0], [300.0, 300.0, 5.0], [400.0, 80.0, 6.0]])
    scores = np.array([0.9, 0.4, 0.7, 0.5])
    decoys = np.array([[53.0, 48.0, 9.0], [156.0, 50.0, 7.0], [200.0, 200.0, 6.0], [400.0, 80.0, 6.0]])
    decoy_scores = np.array([0.6, 0.8, 0.95, 0.5])
    won, decoy_won = decoy_competition(craters, scores, decoys, decoy_scores)
    assert won.tolist() == [True, False, True, True]  # crater 1 is the echo of a mound the decoy pass sees better
    assert decoy_won.tolist() == [False, True, True, True]
    apart = decoys.copy()
    apart[1, 0] = 150.0 + 2.0 * 8.0  # two radii away: not the same feature
    assert decoy_competition(craters, scores, apart, decoy_scores)[0].all()
    no_decoys = decoy_competition(craters, scores, np.zeros((0, 3)), np.zeros(0))
    assert no_decoys[0].all() and no_decoys[1].shape == (0,)


def test_local_decoy_thresholds_are_strict_among_decoys_and_lax_on_smooth_ground():
    """A tile whose left half is smooth (good craters, no decoys) and right half knobby (crater-like texture and
    its decoys): one threshold for the tile would cut the left half's weaker craters; the local thresholds keep the
    verifier's floor on the left and rise on the right until the decoys around each crater are a small share."""
    from planetcd.craters.verify import decoy_threshold, local_decoy_thresholds, local_decoys_passing

    rng = np.random.default_rng(2)
    left = np.column_stack([rng.uniform(0, 600, 60), rng.uniform(0, 2000, 60), rng.uniform(4, 9, 60)])
    right = np.column_stack([rng.uniform(1400, 2000, 60), rng.uniform(0, 2000, 60), rng.uniform(4, 9, 60)])
    left_scores = rng.uniform(0.35, 0.8, 60)  # real craters, some weakly scored
    right_scores = np.concatenate([rng.uniform(0.8, 1.0, 20), rng.uniform(0.3, 0.6, 40)])  # 20 craters, 40 knobs
    decoys = np.column_stack([rng.uniform(1400, 2000, 40), rng.uniform(0, 2000, 40), rng.uniform(4, 9, 40)])
    decoy_scores = rng.uniform(0.3, 0.6, 40)  # the knobs under the opposite sun
    craters, scores = np.vstack([left, right]), np.concatenate([left_scores, right_scores])
    limits = local_decoy_thresholds(craters, scores, decoys, decoy_scores, floor=0.3, max_fdr=0.1, sigma=200.0)
    assert limits.shape == (120,)
    assert np.all(limits[:60] == 0.3)  # 4 sigma or more from every decoy: the verifier's own threshold
    assert np.all(limits[60:] > 0.4) and np.median(limits[60:]) > 0.5  # among the knobs: up into their scores
    kept = scores >= limits
    assert kept[:60].all() and kept[60:80].all() and kept[80:].sum() <= 10
    tile_wide = decoy_threshold(scores, decoy_scores, floor=0.3, max_fdr=0.1)
    assert (scores[:60] >= tile_wide).sum() < 60  # one threshold for the tile loses smooth ground's weak craters
    assert local_decoys_passing(craters, limits, decoys, decoy_scores) <= 0.1 * kept.sum()
    with pytest.raises(InputError):
        local_decoy_thresholds(craters, scores, decoys, decoy_scores, floor=0.3, max_fdr=0.1, sigma=0.0)
    assert local_decoy_thresholds(np.zeros((0, 3)), np.zeros(0), decoys, decoy_scores, 0.3, 0.1, 200.0).shape == (0,)
    no_decoys = local_decoy_thresholds(craters, scores, np.zeros((0, 3)), np.zeros(0), 0.3, 0.1, 200.0)
    assert np.all(no_decoys == 0.3)
    # a length far beyond the tile: every crater sees all alike, the lowest step where the tile's decoys are a
    # small enough share (decoy_threshold's rule on the steps of 0.02)
    uniform = local_decoy_thresholds(craters, scores, decoys, decoy_scores, 0.3, 0.1, 1e6)
    steps = np.round(np.arange(0.3, 1.0001, 0.02), 2)
    expected = next(t for t in steps if (decoy_scores >= t).sum() <= 0.1 * (scores >= t).sum() + 1e-9)
    np.testing.assert_allclose(uniform, expected)


def test_decoy_cut_is_the_competition_then_the_decoys_threshold():
    """decoy_cut: a crater a decoy outscores is dropped; the rest pass the one threshold the winning decoys set, or
    (sigma) each crater's own from the winning decoys around it; the decoys passing are counted the same way."""
    from planetcd.craters.verify import decoy_cut, decoy_threshold, local_decoy_thresholds, local_decoys_passing

    rng = np.random.default_rng(4)
    craters = np.column_stack([rng.uniform(0, 2000, (80, 2)), rng.uniform(4, 9, 80)])
    scores = rng.uniform(0.2, 1.0, 80)
    decoys = np.vstack([craters[:10] + [1.0, -1.0, 0.0], np.column_stack([rng.uniform(1000, 2000, (30, 2)),
                                                                          rng.uniform(4, 9, 30)])])
    decoy_scores = np.concatenate([scores[:10] + np.where(np.arange(10) < 5, 0.05, -0.05), rng.uniform(0.3, 0.7, 30)])
    won, decoy_won = decoy_competition(craters, scores, decoys, decoy_scores)
    assert (~won).sum() == 5 and (~decoy_won).sum() == 5  # five features went to the decoys, five to the craters
    one = decoy_cut(craters, scores, decoys, decoy_scores, 0.3, 0.2)
    cut = decoy_threshold(scores[won], decoy_scores[decoy_won], 0.3, 0.2)
    assert one.threshold == cut and cut > 0.3
    assert np.array_equal(one.keep, won & (scores >= cut)) and np.array_equal(one.won, won)
    assert one.passing == np.count_nonzero(decoy_scores[decoy_won] >= cut)
    local = decoy_cut(craters, scores, decoys, decoy_scores, 0.3, 0.2, 200.0)
    limits = local_decoy_thresholds(craters[won], scores[won], decoys[decoy_won], decoy_scores[decoy_won], 0.3, 0.2,
                                    200.0)
    assert np.array_equal(local.threshold[won], limits) and np.all(np.isinf(local.threshold[~won]))
    assert np.array_equal(local.keep[won], scores[won] >= limits) and not local.keep[~won].any()
    assert local.passing == local_decoys_passing(craters[won], limits, decoys[decoy_won], decoy_scores[decoy_won])
    again = decoy_cut(craters, scores, decoys, decoy_scores, 0.3, 0.2, competition=(won, decoy_won))
    assert np.array_equal(again.keep, one.keep)


def test_local_decoy_weights_are_the_gaussian_of_the_distance():
    """The sparse weights equal the dense Gaussian within the cut-off (4 sigma) and are zero beyond it."""
    from planetcd.craters.verify import LOCAL_CUTOFF_SIGMAS, local_decoy_weights

    rng = np.random.default_rng(3)
    craters, decoys = rng.uniform(0, 1000, (50, 3)), rng.uniform(0, 1000, (30, 3))
    w_craters, w_decoys = local_decoy_weights(craters, decoys, 100.0)
    for points, w in ((craters, w_craters), (decoys, w_decoys)):
        d = np.hypot(*(craters[:, None, :2] - points[None, :, :2]).transpose(2, 0, 1))
        dense = np.where(d <= LOCAL_CUTOFF_SIGMAS * 100.0, np.exp(-0.5 * (d / 100.0) ** 2), 0.0)
        np.testing.assert_allclose(w.toarray(), dense, atol=1e-12)
    assert np.all(w_craters.diagonal() == 1.0)


@pytest.fixture(scope="module")
def synthetic_verifier():
    """A verifier trained on shaded bowls (light from the left) and domes of one image; and a second image."""
    rng = np.random.default_rng(0)
    craters = scattered(24, 384, rng)
    train_image = hillshade(relief(384, craters), azimuth_deg=270.0) + rng.normal(0, 0.02, (384, 384)).astype(np.float32)
    torch.set_num_threads(2)
    chips, labels = verifier_training_chips(image_pyramid(train_image), craters, np.zeros((0, 4)), rng=rng)
    model = train_verifier(chips, labels, epochs=15, seed=0)
    both = scattered(24, 384, np.random.default_rng(5))
    test_craters, test_mounds = both[:12], both[12:]
    test_image = hillshade(relief(384, test_craters, test_mounds), azimuth_deg=270.0)
    test_image = test_image + np.random.default_rng(6).normal(0, 0.02, test_image.shape).astype(np.float32)
    return model, test_image, test_craters, test_mounds


def test_verifier_tells_unseen_craters_from_mounds(synthetic_verifier):
    model, image, craters, mounds = synthetic_verifier
    pyramid = image_pyramid(image)
    crater_scores = verify_craters(model, pyramid, craters)
    mound_scores = verify_craters(model, pyramid, mounds)
    assert (crater_scores >= 0.5).mean() >= 0.9
    assert (mound_scores >= 0.5).mean() <= 0.1


def test_verifier_sees_mounds_when_the_frame_is_wrong(synthetic_verifier):
    """The same craters lit from the right, chips cut without turning them: they look like mounds."""
    model, _, craters, _ = synthetic_verifier
    image = hillshade(relief(384, craters), azimuth_deg=90.0)
    pyramid = image_pyramid(image)
    assert (verify_craters(model, pyramid, craters) >= 0.5).mean() <= 0.2
    frame = sun.canonical_frame(image.shape, 90.0)
    assert (verify_craters(model, pyramid, craters, frame) >= 0.5).mean() >= 0.9


def test_save_and_load_round_trip(tmp_path, synthetic_verifier):
    model, image, craters, _ = synthetic_verifier
    path = save_verifier(model, tmp_path / "v.pt", name="test-verifier", threshold=0.6)
    loaded = load_verifier(path)
    assert loaded.metadata["name"] == "test-verifier" and loaded.metadata["threshold"] == 0.6
    chips = crater_chips(image_pyramid(image), craters)
    np.testing.assert_allclose(verifier_scores(loaded, chips), verifier_scores(model, chips), atol=1e-6)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_verifier(tmp_path / "bad.pt")


def test_verifier_with_two_contexts_trains_saves_and_loads(tmp_path):
    """Chips at two contexts stacked as channels: each channel is crater_chips at its context, the flips of the
    training chips act on both alike, and the network survives a save and load with its contexts."""
    rng = np.random.default_rng(1)
    craters = scattered(16, 320, rng)
    image = hillshade(relief(320, craters), azimuth_deg=270.0) + rng.normal(0, 0.02, (320, 320)).astype(np.float32)
    pyramid = image_pyramid(image)
    stack = chip_stack(pyramid, craters, contexts=(2.0, 3.5))
    assert stack.shape == (16, 2, 24, 24)
    np.testing.assert_array_equal(stack[:, 1], crater_chips(pyramid, craters, context=3.5))
    chips, labels = verifier_training_chips(pyramid, craters, np.zeros((0, 4)), rng=np.random.default_rng(2),
                                            contexts=(2.0, 3.5))
    assert chips.shape[1:] == (2, 24, 24) and len(chips) == len(labels)
    inside = int(labels.sum()) // 3  # positives: plain, jittered, mirrored
    np.testing.assert_array_equal(chips[2 * inside : 3 * inside], chips[:inside, :, ::-1, :])  # mirrored: both channels
    with pytest.raises(InputError):
        train_verifier(chips, labels, epochs=1, contexts=(2.0,))
    model = train_verifier(chips, labels, epochs=2, seed=0, contexts=(2.0, 3.5))
    assert verifier_contexts(model) == (2.0, 3.5) and model.features[0].in_channels == 2
    loaded = load_verifier(save_verifier(model, tmp_path / "v2.pt"))
    assert verifier_contexts(loaded) == (2.0, 3.5)
    np.testing.assert_allclose(verify_craters(loaded, pyramid, craters), verify_craters(model, pyramid, craters), atol=1e-6)
    assert verifier_contexts(ChipVerifier()) == (2.0,)


def test_mound_offsets_add_mounds_turned_beside_each_crater():
    """``mound_offsets``: one more turned chip per crater (and its mirror), centred 0.5-1 radii off the crater,
    labelled 0; the chips drawn before them are unchanged."""
    craters = scattered(12, 256, np.random.default_rng(3))
    pyramid = image_pyramid(hillshade(relief(256, craters), azimuth_deg=270.0))
    base, base_labels = verifier_training_chips(pyramid, craters, np.zeros((0, 4)), rng=np.random.default_rng(4))
    more, more_labels = verifier_training_chips(pyramid, craters, np.zeros((0, 4)), rng=np.random.default_rng(4),
                                                mound_offsets=(0.5, 1.0))
    n = len(craters)
    assert len(more) == len(base) + 2 * n and more_labels.sum() == base_labels.sum() == 3 * n
    np.testing.assert_array_equal(more[: len(base)], base)
    beside, mirrored = more[len(base) : len(base) + n], more[len(base) + n :]
    np.testing.assert_array_equal(mirrored, beside[:, ::-1, :])
    centred = crater_chips(pyramid, craters, turn=True)
    assert np.abs(beside - centred).mean(axis=(1, 2)).min() > 0.1  # off the crater, not its own turned chip


def test_registry_verifier_checks_its_hash(tmp_path, monkeypatch, synthetic_verifier):
    from planetcd import models

    model = synthetic_verifier[0]
    save_verifier(model, tmp_path / "v.pt")
    monkeypatch.setattr(models, "MODEL_DIR", tmp_path)
    assert models.load_verifier({"name": "x"}) is None
    good = {"verifier": {"file": "v.pt", "sha256": models.sha256(tmp_path / "v.pt"), "threshold": 0.7}}
    assert models.load_verifier(good).metadata["threshold"] == 0.7
    models._CACHE.pop(("verifier", str(tmp_path / "v.pt")), None)
    with pytest.raises(WeightsError):
        models.load_verifier({"verifier": {"file": "v.pt", "sha256": "0" * 64}})


def test_segment_second_stage_keeps_only_verified_craters(tmp_path, synthetic_verifier):
    """``segment(verify=PATH)``: the catalogue is the unverified one minus the craters the verifier rejects."""
    from planetcd.craters.segment import segment

    model, image, craters, mounds = synthetic_verifier
    path = save_verifier(model, tmp_path / "v.pt", threshold=0.5)
    raw = (image * 200 + 20).astype(np.float32)
    unverified = segment(raw, "ctx-craters", verify=False, sun_azimuth=270.0, scales="1", tta=False)
    verified = segment(raw, "ctx-craters", verify=path, sun_azimuth=270.0, scales="1", tta=False)
    assert unverified.params["verifier"] is None
    record = verified.params["verifier"]
    assert record["checked"] == len(unverified.catalog) and record["kept"] == len(verified.catalog)
    assert record["threshold"] == 0.5 and verified.catalog.metadata["verifier"] == record
    kept = {tuple(np.round(c[:3], 3)) for c in verified.catalog.pixels}
    assert kept <= {tuple(np.round(c[:3], 3)) for c in unverified.catalog.pixels}
    with pytest.raises(InputError):
        segment(raw, "ctx-craters", verify=path, verify_threshold=1.5, sun_azimuth=270.0, scales="1", tta=False)


def test_segment_decoys_raise_the_verifier_threshold_to_the_asked_share(tmp_path, synthetic_verifier):
    """``segment(decoy_fdr=...)``: the image segmented again under the opposite sun (its mounds look like
    craters there); the verifier threshold rises until the decoys passing are at most that share of the
    catalogue, which is the decoy-free catalogue's best-scored craters."""
    from planetcd.craters.segment import segment

    model, image, craters, mounds = synthetic_verifier
    path = save_verifier(model, tmp_path / "v.pt", threshold=0.3)
    raw = (image * 200 + 20).astype(np.float32)
    options = dict(verify=path, sun_azimuth=270.0, scales="1", tta=False)
    plain = segment(raw, "ctx-craters", decoy_fdr=False, **options)
    assert plain.params["verifier"]["decoys"] is None
    strict = segment(raw, "ctx-craters", decoy_fdr=0.05, **options)
    decoys = strict.params["verifier"]["decoys"]
    assert decoys["max_fdr"] == 0.05 and decoys["sun_azimuth_deg"] == 90.0 and decoys["found"] > 0
    assert decoys["passing"] <= 0.05 * len(strict.catalog)
    assert isinstance(decoys["lost_to_decoys"], int) and decoys["lost_to_decoys"] >= 0
    assert decoys["threshold"] is None or decoys["threshold"] > 0.3  # the mounds pass as decoys at 0.3
    kept = {tuple(np.round(c[:3], 3)) for c in strict.catalog.pixels}
    assert kept <= {tuple(np.round(c[:3], 3)) for c in plain.catalog.pixels}
    with pytest.raises(InputError):
        segment(raw, "ctx-craters", decoy_fdr=1.5, **options)
    with pytest.raises(InputError):  # the verifier has no decoy_fdr of its own
        segment(raw, "ctx-craters", decoy_fdr=True, **options)


def test_segment_local_decoys_set_each_craters_threshold(tmp_path, synthetic_verifier):
    """``segment(decoy_sigma=PX)``: each crater's threshold from the decoys around it, recorded with the length and
    the thresholds' spread; the catalogue is within the verifier's own (no decoys). With a length much larger than
    the image every crater sees every decoy alike: one threshold for all."""
    from planetcd.craters.segment import segment

    model, image, craters, mounds = synthetic_verifier
    path = save_verifier(model, tmp_path / "v.pt", threshold=0.3)
    raw = (image * 200 + 20).astype(np.float32)
    options = dict(verify=path, sun_azimuth=270.0, scales="1", tta=False)
    plain = segment(raw, "ctx-craters", decoy_fdr=False, **options)
    tile_wide = segment(raw, "ctx-craters", decoy_fdr=0.3, decoy_sigma=False, **options)
    assert tile_wide.params["verifier"]["decoys"]["sigma_px"] is None
    for sigma in (100.0, 1e6):
        local = segment(raw, "ctx-craters", decoy_fdr=0.3, decoy_sigma=sigma, **options)
        decoys = local.params["verifier"]["decoys"]
        assert decoys["sigma_px"] == sigma and decoys["threshold"]["sigma_px"] == sigma and decoys["found"] > 0
        spread = decoys["threshold"]
        assert 0.3 <= spread["min"] <= spread["median"] <= spread["max"] <= 1.0
        if sigma == 1e6:
            assert spread["min"] == spread["max"]
        kept = {tuple(np.round(c[:3], 3)) for c in local.catalog.pixels}
        assert kept <= {tuple(np.round(c[:3], 3)) for c in plain.catalog.pixels}
        assert local.catalog.metadata["verifier"]["decoys"] == decoys
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(InputError):
            segment(raw, "ctx-craters", decoy_fdr=0.3, decoy_sigma=bad, **options)
    with pytest.raises(InputError):  # the verifier has no decoy_sigma of its own
        segment(raw, "ctx-craters", decoy_fdr=0.3, decoy_sigma=True, **options)


@pytest.mark.parametrize("tile", ["H", "I"])
def test_shipped_verifier_accepts_real_craters_and_rejects_them_turned(shared_dir, tile):
    """The registry's verifier on chips of the labelled craters (radius >= 4 px) of the validation tiles, in the
    frame of the sun their labels give: upright craters pass, the same chips turned 180° (mounds) do not."""
    from PIL import Image

    from planetcd import models
    from planetcd.craters.train import read_labels

    verifier = models.load_verifier(models.metadata("ctx-craters"))
    threshold = verifier.metadata["threshold"]
    image = np.asarray(Image.open(shared_dir / f"data/ctx-mc11e/images/MC11E-{tile}.png"), np.float32)
    truth = read_labels(shared_dir / f"data/ctx-mc11e/annotations/clustered/MC11E-{tile}.xml")
    truth = truth[truth[:, 2] >= 4]
    azimuth, _ = sun.azimuth_from_craters(image, truth)
    frame = sun.canonical_frame(image.shape, azimuth)
    pyramid = image_pyramid(image)
    upright = verifier_scores(verifier, crater_chips(pyramid, truth, frame))
    turned = verifier_scores(verifier, crater_chips(pyramid, truth, frame, turn=True))
    assert (upright >= threshold).mean() >= 0.85
    assert (turned >= threshold).mean() <= 0.1


def test_a_scale_too_small_to_segment_is_said_once_with_the_decoy_pass(tmp_path, synthetic_verifier, caplog,
                                                                        monkeypatch):
    """The decoy pass segments every scale again; a scale whose image is too small is skipped by both passes and
    the warning is one line, not one per pass."""
    import logging

    from planetcd.craters.segment import MIN_SIZE, segment

    monkeypatch.setattr(logging.getLogger("planetcd"), "propagate", True)  # a CLI test may have cut it off
    model, image, _, _ = synthetic_verifier
    path = save_verifier(model, tmp_path / "v.pt", threshold=0.3)
    raw = (image[: 2 * MIN_SIZE - 2, : 2 * MIN_SIZE - 2] * 200 + 20).astype(np.float32)  # half scale < MIN_SIZE
    with caplog.at_level("WARNING", logger="planetcd"):
        result = segment(raw, "ctx-craters", verify=path, decoy_fdr=0.3, sun_azimuth=270.0, scales="1,0.5", tta=False)
    skipped = [r for r in caplog.records if "too small to segment" in r.getMessage()]
    assert len(skipped) == 1 and "scale 0.5" in skipped[0].getMessage()
    assert result.params["verifier"]["decoys"]["max_fdr"] == 0.3  # the decoy pass did run
