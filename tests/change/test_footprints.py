"""Partial and disjoint footprints: post a georeferenced crop of pre's scene with no nodata tag (real CTX ground)."""

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window
from scipy import ndimage

from planetcd.change.detect import detect
from planetcd.change.register import AlignedReader, post_on_pre_grid
from planetcd.cli import main
from planetcd.errors import InputError

CRS = "+proj=eqc +lat_ts=0 +lat_0=0 +lon_0=0 +x_0=0 +y_0=0 +R=3396190 +units=m +no_defs"
PX = 6.0
R0 = C0 = 400  # pre's corner in the CTX tile
SIZE = 1024
#: post's crop of pre's grid: rows 150..950, cols 100..900 (800² = 61 % of pre)
POST_R, POST_C, POST_SIZE = 150, 100, 800
GRID = (0.3, 0.4)  # post's grid is offset from pre's by a fraction of a pixel (dy, dx)
MISREGISTRATION = (1.6, -2.3)  # and its content is misplaced by this much (dy, dx), as real pairs are


def _write(path, data, row, col, size, low=1):
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=CRS,
                   transform=from_origin(1e6 + col * PX, 5e5 - row * PX, PX, PX))  # no nodata tag
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(np.round(data), low, 255).astype(np.uint8)[None])
    return path


@pytest.fixture(scope="module")
def crop_pair(shared_dir, tmp_path_factory):
    """pre: 1024² of MC11E-H; post: the same ground (unchanged), a 800² crop on a sub-pixel-offset grid."""
    folder = tmp_path_factory.mktemp("crop")
    tile = np.array(Image.open(shared_dir / "data" / "ctx-mc11e" / "images" / "MC11E-H.png")).astype(np.float32)
    pre = _write(folder / "pre.tif", tile[R0 : R0 + SIZE, C0 : C0 + SIZE], R0, C0, SIZE)
    # post pixel (i, j) holds the ground at tile (i + dy, j + dx) - misregistration
    dy, dx = GRID[0] - MISREGISTRATION[0], GRID[1] - MISREGISTRATION[1]
    moved = ndimage.shift(tile, (-dy, -dx), order=3, mode="nearest")
    r, c = R0 + POST_R, C0 + POST_C
    post = _write(folder / "post.tif", moved[r : r + POST_SIZE, c : c + POST_SIZE], r + GRID[0], c + GRID[1],
                  POST_SIZE)
    far = _write(folder / "far.tif", moved[r : r + POST_SIZE, c : c + POST_SIZE], r + 5000, c, POST_SIZE)
    return pre, post, far


def test_outside_of_a_crop_with_no_nodata_tag_is_missing_after_the_subpixel_shift(crop_pair):
    pre, post, _ = crop_pair
    with rasterio.open(pre) as pre_ds, rasterio.open(post) as post_ds, post_on_pre_grid(pre_ds, post_ds) as grid:
        data, valid = AlignedReader(grid, (0.4, -0.3)).read(Window(0, 0, SIZE, SIZE))
    inside = np.zeros((SIZE, SIZE), bool)
    inside[POST_R + 4 : POST_R + POST_SIZE - 4, POST_C + 4 : POST_C + POST_SIZE - 4] = True
    outside = np.ones((SIZE, SIZE), bool)
    outside[POST_R - 2 : POST_R + POST_SIZE + 2, POST_C - 2 : POST_C + POST_SIZE + 2] = False
    assert valid[inside].all()
    assert not valid[outside].any()


@pytest.mark.parametrize("method", ["nn", "paper"])
def test_unchanged_partial_crop_flags_almost_nothing_and_finds_the_shift(crop_pair, trunk, method, tmp_path):
    pre, post, _ = crop_pair
    result = detect(pre, post, method=method, trunk=trunk, n_pseudo=60, seed=3)
    scored = np.isfinite(result.change_score)
    # only patches with at least half their pixels on shared ground are scored
    assert 0 < scored.sum() < len(scored)
    assert np.all(result.valid_fraction[scored] >= 0.5) and np.all(result.valid_fraction[~scored] < 0.5)
    assert result.changed.sum() <= 0.05 * scored.sum()
    np.testing.assert_allclose(result.displacement, MISREGISTRATION, atol=0.5)
    result.write(tmp_path / "out")
    with rasterio.open(tmp_path / "out" / "change_mask.tif") as mask:
        values = mask.read(1)
    assert values[20, 20] == 255  # outside post's footprint: no data
    assert values[500, 500] in (0, 1)


def test_disjoint_footprints_one_line_nonzero_exit(crop_pair, vgg_weights, tmp_path):
    pre, _, far = crop_pair
    with pytest.raises(InputError, match="footprints do not overlap"):
        detect(pre, far, weights=vgg_weights)
    out = CliRunner().invoke(main, ["detect", str(pre), str(far), "-o", str(tmp_path / "o"),
                                    "--weights", str(vgg_weights)])
    assert out.exit_code != 0
    assert len(out.output.strip().splitlines()) == 1 and "footprints do not overlap" in out.output
    assert not (tmp_path / "o").exists()


def test_data_footprints_that_miss_each_other_inside_overlapping_bounds(vgg_weights, tmp_path):
    """Bounds overlap, data does not: both rasters are zero (no nodata tag) where the other has ground."""
    rng = np.random.default_rng(0)
    ground = ndimage.gaussian_filter(rng.normal(size=(300, 300)), 2) * 40 + 120
    pre, post = ground.copy(), ground.copy()
    pre[:, 150:] = 0
    post[:, :150] = 0
    a = _write(tmp_path / "a.tif", pre, 0, 0, 300, low=0)
    b = _write(tmp_path / "b.tif", post, 0, 0, 300, low=0)
    with pytest.raises(InputError, match="share no ground"):
        detect(a, b, weights=vgg_weights, patch_size=100)
