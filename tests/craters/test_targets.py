"""Targets drawn from crater lists, and the synthetic dots set."""

from __future__ import annotations

import numpy as np
import pytest

from planetcd.craters.targets import filled_circles, make_target, outlines, rings, synthetic_dots


def test_filled_circle_known_crater():
    t = filled_circles([[10, 8, 3]], (20, 20))
    assert t.dtype == np.uint8 and t.shape == (20, 20)
    yy, xx = np.mgrid[0:20, 0:20]
    expected = ((xx - 10) ** 2 + (yy - 8) ** 2 <= 9).astype(np.uint8)
    np.testing.assert_array_equal(t, expected)
    assert t[8, 10] == 1 and t[8, 13] == 1 and t[8, 14] == 0 and t[5, 10] == 1 and t[4, 10] == 0


def test_outline_has_hole_at_70_percent():
    t = outlines([[20, 20, 10]], (41, 41))
    assert t[20, 20] == 0  # centre cleared
    assert t[20, 26] == 0  # 6 px < 7 px inner radius
    assert t[20, 28] == 1 and t[20, 30] == 1  # 8 and 10 px: on the outline
    assert t[20, 31] == 0


def test_nested_crater_stays_visible_whatever_the_order():
    big, small = [30, 30, 20], [30, 30 + 16, 3]  # small crater on the big one's rim band
    a = outlines([big, small], (64, 64))
    b = outlines([small, big], (64, 64))
    np.testing.assert_array_equal(a, b)
    assert a[46, 30] == 0  # the small crater's own centre is cleared inside the big rim band
    assert a[46, 33] == 1  # its rim is drawn
    # and a small crater inside the big one's hole still gets its ring
    c = outlines([big, [30, 30, 4]], (64, 64))
    assert c[30, 34] == 1 and c[30, 30] == 0


def test_rings_are_thin_and_deepmoon_like():
    t = rings([[20, 20, 8]], (41, 41))
    assert t[20, 28] == 1 and t[20, 20] == 0 and t[20, 24] == 0
    # a 1 px ring covers much less than the filled disk
    assert t.sum() < 0.3 * filled_circles([[20, 20, 8]], (41, 41)).sum()
    assert make_target([[20, 20, 8]], (41, 41), "rings").sum() == t.sum()


def test_craters_off_the_edge_and_empty_lists():
    t = filled_circles([[-2, 5, 4], [100, 100, 3]], (10, 10))
    assert t[5, 0] == 1 and t[5, 3] == 0
    assert filled_circles(np.zeros((0, 3)), (5, 5)).sum() == 0
    with pytest.raises(ValueError):
        make_target([[1, 1, 1]], (5, 5), "squares")
    with pytest.raises(ValueError):
        filled_circles([[1, 1, -1]], (5, 5))


def test_synthetic_dots_are_seeded_and_consistent():
    imgs, tgts, craters = synthetic_dots(4, 64, seed=3)
    imgs2, _, _ = synthetic_dots(4, 64, seed=3)
    np.testing.assert_array_equal(imgs, imgs2)
    assert imgs.shape == tgts.shape == (4, 64, 64)
    for img, tgt, cr in zip(imgs, tgts, craters):
        np.testing.assert_array_equal(tgt, filled_circles(cr, (64, 64)))
        # dots are bright on black: target pixels are brighter on average
        assert img[tgt == 1].mean() > img[tgt == 0].mean() + 0.2
