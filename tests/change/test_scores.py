import numpy as np

from planetcd.change.scores import (
    PatchPooler, change_scores, cva_scores, patch_cells, pool_patches, rcva_scores, upsample_cells,
)


def test_pool_patches_by_hand():
    features = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    patches = np.array([[0, 0, 8, 8], [8, 8, 8, 8]])  # stride 4: 2x2 cells each
    pooled_max = pool_patches(features, patches, stride=4, pooling="max")
    pooled_avg = pool_patches(features, patches, stride=4, pooling="avg")
    np.testing.assert_array_equal(pooled_max, [[5, 21], [15, 31]])
    np.testing.assert_allclose(pooled_avg, [[2.5, 18.5], [12.5, 28.5]])


def test_pooler_over_tiles_equals_whole_map(rng):
    features = rng.normal(size=(8, 30, 41)).astype(np.float32)
    patches = rng.integers(0, 60, size=(25, 2))
    patches = np.concatenate([patches, np.full((25, 2), 50)], axis=1)
    cells = patch_cells(patches, 2, 30, 41)
    for pooling in ("max", "avg"):
        whole = PatchPooler(cells, 8, pooling)
        whole.add(features, 0, 0)
        tiled = PatchPooler(cells, 8, pooling)
        for r in range(0, 30, 7):
            for c in range(0, 41, 9):
                tiled.add(features[:, r : r + 7, c : c + 9], r, c)
        np.testing.assert_allclose(tiled.result(), whole.result(), rtol=1e-5, atol=1e-6)


def test_change_score_is_l1():
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[2.0, 0.0, 3.5]])
    np.testing.assert_allclose(change_scores(a, b), [3.5])


def test_rcva_tolerates_a_one_pixel_shift_that_cva_does_not(rng):
    image = rng.random((1, 64, 64))
    shifted = np.roll(image, 1, axis=2)
    patches = np.array([[8, 8, 48, 48]])
    assert cva_scores(image, shifted, patches)[0] > 0.2
    assert rcva_scores(image, shifted, patches, radius=1)[0] < 1e-9
    changed = shifted.copy()
    changed[:, 20:30, 20:30] += 1.0
    assert rcva_scores(image, changed, patches, radius=1)[0] > 0.005


def test_upsample_cells_keeps_constant_and_shape():
    up = upsample_cells(np.full((5, 6), 2.0), 4, (20, 24))
    assert up.shape == (20, 24)
    np.testing.assert_allclose(up, 2.0)


def test_box_sums_equal_slicing_sums():
    from planetcd.tiling import box_sums

    rng = np.random.default_rng(2)
    image = rng.normal(size=(40, 50))
    boxes = np.array([[0, 0, 40, 50], [3, 7, 10, 5], [39, 49, 1, 1], [10, 0, 0, 4]])
    expected = [image[r : r + h, c : c + w].sum() for r, c, h, w in boxes]
    np.testing.assert_allclose(box_sums(image, boxes), expected, atol=1e-9)
    mask = image > 0
    counts = box_sums(mask, boxes)
    assert counts.dtype == np.int64
    assert list(counts) == [int(mask[r : r + h, c : c + w].sum()) for r, c, h, w in boxes]
