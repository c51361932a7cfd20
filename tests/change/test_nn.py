"""planetcd.change.nn helpers: match_resolution filters gray-as-RGB once, with the same result."""

import numpy as np
import pytest
from scipy import ndimage

from planetcd.change.nn import match_resolution


def test_match_resolution_gray_as_rgb_is_the_per_band_filter():
    rng = np.random.default_rng(0)
    gray = rng.random((2, 1, 40, 31)).astype(np.float32)
    rgb = np.repeat(gray, 3, axis=1)
    expected = ndimage.gaussian_filter(rgb, (0, 0, 1.0, 1.0), mode="nearest").astype(np.float32)
    out = match_resolution(rgb, 1.0)
    assert out.dtype == np.float32 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, expected)
    colour = rng.random((1, 3, 20, 20)).astype(np.float32)  # distinct bands: each filtered
    np.testing.assert_array_equal(match_resolution(colour, 1.0),
                                  ndimage.gaussian_filter(colour, (0, 0, 1.0, 1.0), mode="nearest"))
    assert match_resolution(rgb, 0.0) is rgb


def _disc(shape, centre, radius, level):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.where(np.hypot(yy - centre[0], xx - centre[1]) <= radius, level, 0.0)


def test_line_background_is_the_mean_along_the_best_line_over_valid_cells():
    from planetcd.change.nn import line_background

    flat = np.full((1, 30, 30), 0.4, np.float32)
    np.testing.assert_allclose(line_background(flat, np.ones(flat.shape, bool)), 0.4, rtol=1e-6)
    # a vertical stripe: along it the line sees only the stripe; across it, mostly ground
    stripe = np.zeros((1, 30, 30), np.float32)
    stripe[0, :, 14:16] = 0.8
    background = line_background(stripe, np.ones(stripe.shape, bool), length=11)
    assert np.allclose(background[0, 5:25, 14], 0.8, rtol=1e-6)
    assert background[0, 15, 2] < 0.1
    # cells that are not valid do not count: a line through them averages the valid ones only
    valid = np.ones(flat.shape, bool)
    valid[0, :, :10] = False
    holed = np.where(valid, flat, 5.0).astype(np.float32)
    np.testing.assert_allclose(line_background(holed, valid)[0, :, 10:], 0.4, rtol=1e-6)


def test_nn_patch_scores_rank_a_compact_change_above_lines_and_diffuse_disagreement():
    from planetcd.change.nn import nn_patch_scores

    shape = (37, 37)
    blob = _disc(shape, (18, 18), 3, 0.6)  # a new crater: 6-7 cells across
    track = np.zeros(shape)
    track[:, 17:20] = 0.6  # a dust-devil track or a seam at the same level, across the patch
    diffuse = np.random.default_rng(0).uniform(0.45, 0.75, shape)  # another sun on every slope
    scores = nn_patch_scores(np.stack([blob, track, diffuse]))
    assert scores[0] > 1.5 * max(scores[1], scores[2])
    # the plain worst cell ranks the diffuse disagreement first and ties the track with the crater
    worst = np.stack([blob, track, diffuse]).reshape(3, -1).max(1)
    assert worst[2] > worst[0] == worst[1]
    # scores only over valid cells; a patch with none scores 0
    valid = np.ones((2,) + shape, bool)
    valid[0, 10:27, 10:27] = False
    valid[1] = False
    masked = nn_patch_scores(np.stack([blob, blob]), valid)
    assert masked[0] < 0.1 and masked[1] == 0.0


def test_a_crater_on_a_patch_corner_scores_as_one_in_the_middle():
    """A crater on the corner of four patches shows each a quarter; the lines cut short by the corner
    (a few cells, all crater) must not count as a track through it."""
    from planetcd.change.nn import line_background, nn_patch_scores

    shape = (25, 25)
    corner = _disc(shape, (0, 0), 3, 0.6)
    middle = _disc(shape, (12, 12), 3, 0.6)
    scores = nn_patch_scores(np.stack([corner, middle]).astype(np.float32))
    assert scores[0] > 0.95 * scores[1]
    # counting the short lines, the corner's quarter reads as its own background
    short = nn_patch_scores(np.stack([corner, middle]).astype(np.float32), min_share=0.0)
    assert short[0] < 0.5 * short[1]
    # a line with fewer valid cells than the share does not count
    flat = np.full((1, 9, 9), 0.4, np.float32)
    valid = np.zeros(flat.shape, bool)
    valid[0, 4, :] = True  # one row of 9 valid cells: only the horizontal line through it sees 9 of 25
    assert line_background(flat, valid, length=25, min_share=0.3)[0, 4, 4] == pytest.approx(0.4)
    assert line_background(flat, valid, length=25, min_share=0.5)[0, 4, 4] == 0.0


def test_nn_patch_scorer_fed_tiles_in_any_order_equals_the_whole_map():
    from planetcd.change.nn import NNPatchScorer, nn_patch_scores

    rng = np.random.default_rng(3)
    whole = rng.uniform(0, 0.3, (60, 75)).astype(np.float32) + _disc((60, 75), (30, 40), 4, 0.5).astype(np.float32)
    cells = np.array([[r, c, min(r + 25, 60), min(c + 25, 75)] for r in range(0, 60, 20) for c in range(0, 75, 20)])
    tiles = [(r, c) for r in range(0, 60, 16) for c in range(0, 75, 16)]
    scorer = NNPatchScorer(cells)
    for k in rng.permutation(len(tiles)):
        r, c = tiles[k]
        scorer.add(whole[r : r + 16, c : c + 16], r, c)
    expected = [nn_patch_scores(whole[None, r0:r1, c0:c1])[0] for r0, c0, r1, c1 in cells]
    np.testing.assert_array_equal(scorer.result(), expected)
    assert not scorer._maps  # every window was scored and freed
