"""Window grids: patches for change detection, tiles with a halo for network passes.

One implementation of each grid, shared by feature extraction, crater
segmentation and the distributed path. All offsets and sizes are in pixels,
``(row, col)`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _starts(length: int, size: int, stride: int) -> np.ndarray:
    """Window starts covering ``0..length`` with windows of ``size``; the last one is flush with the end."""
    if length <= size:
        return np.array([0])
    starts = np.arange(0, length - size + 1, stride)
    if starts[-1] != length - size:
        starts = np.append(starts, length - size)
    return starts


def patch_grid(height: int, width: int, patch_size: int, stride: int | None = None) -> np.ndarray:
    """Patch windows covering an image.

    Patches start every ``stride`` pixels; a last row/column of patches flush
    with the bottom/right edge is added when the size is not a multiple, so
    every pixel is covered and every patch is full size.

    Parameters
    ----------
    height, width : int
        Image size in pixels; both must be at least ``patch_size``.
    patch_size : int
        Side of the square patches in pixels.
    stride : int, optional
        Step between patch starts (default: ``patch_size``, no overlap).

    Returns
    -------
    ndarray, int64, shape (n_patches, 4)
        ``row_off, col_off, height, width`` per patch, in row-major order.
    """
    stride = patch_size if stride is None else stride
    if patch_size < 1 or stride < 1:
        raise ValueError("patch_size and stride must be positive")
    if height < patch_size or width < patch_size:
        raise ValueError(f"image of {height}x{width} px is smaller than one {patch_size} px patch")
    rows = _starts(height, patch_size, stride)
    cols = _starts(width, patch_size, stride)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    n = rr.size
    return np.stack([rr.ravel(), cc.ravel(), np.full(n, patch_size), np.full(n, patch_size)], axis=1).astype(np.int64)


@dataclass(frozen=True)
class Tile:
    """One tile of a halo grid.

    ``core`` is the part of the image this tile is responsible for; ``read``
    is the core grown by the halo and clipped to the image; ``inner`` is the
    position of the core inside the read window.  All are
    ``(row_off, col_off, height, width)``.
    """

    core: tuple[int, int, int, int]
    read: tuple[int, int, int, int]

    @property
    def inner(self) -> tuple[int, int, int, int]:
        return (self.core[0] - self.read[0], self.core[1] - self.read[1], self.core[2], self.core[3])


def halo_tile(core: tuple[int, int, int, int], halo: int, height: int, width: int) -> Tile:
    """The :class:`Tile` of a core ``(row_off, col_off, height, width)``: read with ``halo`` pixels of context on
    each side, clipped to the ``height`` x ``width`` image."""
    r0, c0, h, w = core
    rr0, cc0 = max(0, r0 - halo), max(0, c0 - halo)
    rr1, cc1 = min(height, r0 + h + halo), min(width, c0 + w + halo)
    return Tile(core=(r0, c0, h, w), read=(rr0, cc0, rr1 - rr0, cc1 - cc0))


def halo_tiles(height: int, width: int, tile: int, halo: int, align: int = 1) -> list[Tile]:
    """Non-overlapping core tiles, each read with a halo of context.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    tile : int
        Core tile side in pixels; rounded down to a multiple of ``align``.
    halo : int
        Context on each side in pixels; rounded up to a multiple of ``align``.
    align : int
        Every core and read window starts at a multiple of ``align`` (the
        network's total stride), so feature grids of tiles line up with the
        feature grid of the whole image.

    Returns
    -------
    list of Tile
    """
    tile = max(align, (tile // align) * align)
    halo = -(-halo // align) * align
    tiles = []
    for r0 in range(0, height, tile):
        for c0 in range(0, width, tile):
            tiles.append(halo_tile((r0, c0, min(tile, height - r0), min(tile, width - c0)), halo, height, width))
    return tiles


def overlapping_tiles(height: int, width: int, tile: int, overlap: int) -> np.ndarray:
    """Tiles of side ``tile`` (or the image side if smaller) overlapping by ``overlap`` pixels.

    Returns ``(n, 4)`` int64 ``row_off, col_off, height, width``, covering every pixel.
    """
    if overlap >= tile:
        raise ValueError("overlap must be smaller than the tile size")
    th, tw = min(tile, height), min(tile, width)
    rows = _starts(height, th, max(1, th - overlap))
    cols = _starts(width, tw, max(1, tw - overlap))
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    n = rr.size
    return np.stack([rr.ravel(), cc.ravel(), np.full(n, th), np.full(n, tw)], axis=1).astype(np.int64)


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Weights that fade a tile's borders linearly over ``overlap`` pixels.

    Accumulating ``prediction * weights`` and ``weights`` over
    :func:`overlapping_tiles`, then dividing, blends tiles without seams.
    Weights never reach zero, so image borders (covered by one tile) stay
    defined.

    Returns
    -------
    ndarray, float32, shape (height, width)
    """
    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, np.float32)
        pos = np.arange(n, dtype=np.float32)
        edge = np.minimum(pos + 1, n - pos) / (overlap + 1)
        return np.clip(edge, 0.0, 1.0).astype(np.float32)

    return np.outer(ramp(height), ramp(width))


def box_sums(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Sum of an image over rectangular boxes, from one integral image (any number of boxes, any overlap).

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
        Numbers or a boolean mask (summed as int64: a count of ``True`` pixels).
    boxes : ndarray, int, shape (n, 4)
        ``row_off, col_off, height, width`` per box, pixels, inside the image.

    Returns
    -------
    ndarray, shape (n,)
        int64 for integer and boolean images, the image's float dtype otherwise.
    """
    image = np.asarray(image)
    if image.dtype == bool or np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.int64)
    integral = np.pad(image, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    boxes = np.asarray(boxes)
    r0, c0 = boxes[:, 0], boxes[:, 1]
    r1, c1 = r0 + boxes[:, 2], c0 + boxes[:, 3]
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def box_distances(boxes: np.ndarray, row: float, col: float) -> np.ndarray:
    """Distance from a point to each rectangular box, pixels (0 inside a box).

    Parameters
    ----------
    boxes : ndarray, shape (n, 4)
        ``row_off, col_off, height, width`` per box, pixels; a box spans the pixel centres ``row_off ..
        row_off + height - 1`` and its edges lie half a pixel beyond them.
    row, col : float
        The point, in pixel coordinates of the same grid (pixel centres at integers).

    Returns
    -------
    ndarray, float64, shape (n,)
    """
    p = np.asarray(boxes, np.float64).reshape(-1, 4)
    dy = np.maximum(0.0, np.maximum(p[:, 0] - 0.5 - row, row - (p[:, 0] + p[:, 2] - 0.5)))
    dx = np.maximum(0.0, np.maximum(p[:, 1] - 0.5 - col, col - (p[:, 1] + p[:, 3] - 0.5)))
    return np.hypot(dy, dx)
