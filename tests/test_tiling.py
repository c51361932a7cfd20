import numpy as np
import pytest

from planetcd.tiling import blend_weights, halo_tiles, overlapping_tiles, patch_grid


@pytest.mark.parametrize("shape,size,stride", [((250, 330), 100, 100), ((100, 100), 100, 100), ((257, 300), 64, 40)])
def test_patch_grid_covers_every_pixel_with_full_patches(shape, size, stride):
    patches = patch_grid(*shape, size, stride)
    cover = np.zeros(shape, int)
    for r, c, h, w in patches:
        assert (h, w) == (size, size)
        assert r + h <= shape[0] and c + w <= shape[1]
        cover[r : r + h, c : c + w] += 1
    assert cover.min() >= 1
    assert patches[0, 0] == 0 and patches[-1, 0] == shape[0] - size and patches[-1, 1] == shape[1] - size


def test_patch_grid_rejects_image_smaller_than_a_patch():
    with pytest.raises(ValueError, match="smaller than one"):
        patch_grid(50, 200, 100)


def test_halo_tiles_partition_the_image_and_align():
    tiles = halo_tiles(1030, 700, 512, 17, align=4)
    cover = np.zeros((1030, 700), int)
    for t in tiles:
        r, c, h, w = t.core
        cover[r : r + h, c : c + w] += 1
        rr, cc, rh, rw = t.read
        assert rr % 4 == 0 and cc % 4 == 0
        assert rr <= r and cc <= c and rr + rh >= r + h and cc + rw >= c + w
        # the halo is at least 17 px wherever the image allows it
        assert r - rr >= min(r, 17) and (rr + rh) - (r + h) >= min(1030 - r - h, 17)
        ir, ic, ih, iw = t.inner
        assert (ir, ic) == (r - rr, c - cc) and (ih, iw) == (h, w)
    assert (cover == 1).all()


def test_overlapping_tiles_and_blend_weights_reconstruct_a_constant():
    tiles = overlapping_tiles(300, 410, 128, 32)
    acc = np.zeros((300, 410))
    wsum = np.zeros((300, 410))
    for r, c, h, w in tiles:
        weights = blend_weights(h, w, 32)
        acc[r : r + h, c : c + w] += 5.0 * weights
        wsum[r : r + h, c : c + w] += weights
    assert wsum.min() > 0
    np.testing.assert_allclose(acc / wsum, 5.0)


def test_box_distances_is_zero_inside_and_measured_from_the_pixel_edges():
    from planetcd.tiling import box_distances

    boxes = np.array([[0, 0, 10, 10], [0, 20, 10, 10], [20, 20, 10, 10]])
    np.testing.assert_allclose(box_distances(boxes, 5.0, 5.0), [0.0, 14.5, np.hypot(14.5, 14.5)])
    # a pixel centre on a box's last row is inside it; the edge lies half a pixel beyond
    np.testing.assert_allclose(box_distances(boxes[:1], 9.0, 4.0), [0.0])
    np.testing.assert_allclose(box_distances(boxes[:1], 11.0, 4.0), [1.5])
