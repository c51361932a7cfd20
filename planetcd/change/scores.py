"""Change scores per patch: pooled deep features (the paper) and pixel baselines (CVA, RCVA).

Feature maps are pooled per patch window once per image, so overlapping
patches cost nothing extra; the same pooling is accumulated tile by tile for
rasters larger than memory (:class:`PatchPooler`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..tiling import box_sums

POOLINGS = ("max", "avg")


def patch_cells(patches: np.ndarray, stride: int, n_rows: int, n_cols: int) -> np.ndarray:
    """Feature-cell windows of pixel patches.

    Parameters
    ----------
    patches : ndarray, shape (n, 4)
        ``row_off, col_off, height, width`` in pixels.
    stride : int
        Pixels per feature cell.
    n_rows, n_cols : int
        Size of the whole feature grid (cells), used to clip.

    Returns
    -------
    ndarray, int64, shape (n, 4)
        ``r0, c0, r1, c1`` (exclusive ends) in cells; every window holds at least one cell.
    """
    r0 = patches[:, 0] // stride
    c0 = patches[:, 1] // stride
    r1 = -(-(patches[:, 0] + patches[:, 2]) // stride)
    c1 = -(-(patches[:, 1] + patches[:, 3]) // stride)
    r1 = np.clip(r1, None, n_rows)
    c1 = np.clip(c1, None, n_cols)
    r0 = np.minimum(r0, r1 - 1)
    c0 = np.minimum(c0, c1 - 1)
    return np.stack([r0, c0, r1, c1], axis=1).astype(np.int64)


def windows_meeting(cells: np.ndarray, row0: int, col0: int, height: int, width: int) -> np.ndarray:
    """Indexes of the cell windows ``(n, 4)`` (``r0, c0, r1, c1``, exclusive ends) that meet the tile of
    ``height`` x ``width`` cells whose first cell is ``(row0, col0)``."""
    return np.flatnonzero((cells[:, 0] < row0 + height) & (cells[:, 2] > row0)
                          & (cells[:, 1] < col0 + width) & (cells[:, 3] > col0))


class PatchPooler:
    """Accumulates global max or average pooling of patch windows over feature tiles.

    Feed it the tiles of one feature map in any order (:meth:`add`); then
    :meth:`result` gives one vector per patch, identical to pooling the whole
    map at once.

    Parameters
    ----------
    cells : ndarray, shape (n, 4)
        Patch windows in cells (from :func:`patch_cells`).
    channels : int
    pooling : {"max", "avg"}
    """

    def __init__(self, cells: np.ndarray, channels: int, pooling: str = "max"):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.cells = cells
        self.pooling = pooling
        fill = -np.inf if pooling == "max" else 0.0
        self.acc = np.full((len(cells), channels), fill, np.float32)
        self.count = np.zeros(len(cells), np.int64)

    def add(self, features: np.ndarray, row0: int, col0: int) -> None:
        """Add a tile ``(C, h, w)`` of the feature map whose first cell is ``(row0, col0)``."""
        _, h, w = features.shape
        cells = self.cells
        for i in windows_meeting(cells, row0, col0, h, w):
            r0, c0, r1, c1 = cells[i]
            part = features[:, max(r0, row0) - row0 : min(r1, row0 + h) - row0, max(c0, col0) - col0 : min(c1, col0 + w) - col0]
            if self.pooling == "max":
                np.maximum(self.acc[i], part.max(axis=(1, 2)), out=self.acc[i])
            else:
                self.acc[i] += part.sum(axis=(1, 2))
            self.count[i] += part.shape[1] * part.shape[2]

    def result(self) -> np.ndarray:
        """Pooled vectors ``(n, C)`` float32."""
        if self.pooling == "max":
            return self.acc
        return self.acc / np.maximum(self.count, 1)[:, None]


def pool_patches(features: np.ndarray, patches: np.ndarray, stride: int, pooling: str = "max") -> np.ndarray:
    """Pool a whole feature map ``(C, h, w)`` per pixel patch ``(n, 4)`` -> ``(n, C)``."""
    pooler = PatchPooler(patch_cells(patches, stride, features.shape[1], features.shape[2]), features.shape[0], pooling)
    pooler.add(features, 0, 0)
    return pooler.result()


def change_scores(pre_vectors: np.ndarray, post_vectors: np.ndarray) -> np.ndarray:
    """Change score ρ: L1 norm of the difference of pooled vectors.

    ``(n, C)`` and ``(n, C)`` -> ``(n,)`` float64. (Saha's public code takes the
    mean over channels instead of the sum: a constant factor, same ranking.)
    """
    return np.abs(pre_vectors.astype(np.float64) - post_vectors.astype(np.float64)).sum(axis=1)


# --------------------------------------------------------------------------- pixel baselines


def cva_scores(pre: np.ndarray, post: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Change vector analysis: mean per-pixel change magnitude in each patch.

    Parameters
    ----------
    pre, post : ndarray, shape (bands, rows, cols)
        Co-registered, radiometrically scaled images.
    patches : ndarray, shape (n, 4)

    Returns
    -------
    ndarray, float64, shape (n,)
    """
    magnitude = np.sqrt(((post.astype(np.float64) - pre) ** 2).sum(axis=0))
    return box_sums(magnitude, patches) / (patches[:, 2] * patches[:, 3])


def rcva_magnitude(pre: np.ndarray, post: np.ndarray, radius: int = 2) -> np.ndarray:
    """Robust change vector analysis magnitude (Thonfeld et al. 2016).

    Each post pixel is compared with the most similar pre pixel within
    ``radius`` (and each pre pixel with the most similar post pixel); the
    smaller of the two minimum differences is kept, so small misregistration
    does not read as change. ``(bands, rows, cols)`` x2 -> ``(rows, cols)``.
    """
    pre = pre.astype(np.float64)
    post = post.astype(np.float64)

    def min_distance(a, b):
        best = np.full(a.shape[1:], np.inf)
        padded = np.pad(b, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
        rows, cols = a.shape[1:]
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                shifted = padded[:, dy : dy + rows, dx : dx + cols]
                np.minimum(best, np.sqrt(((a - shifted) ** 2).sum(axis=0)), out=best)
        return best

    return np.minimum(min_distance(post, pre), min_distance(pre, post))


def rcva_scores(pre: np.ndarray, post: np.ndarray, patches: np.ndarray, radius: int = 2) -> np.ndarray:
    """Patch-level RCVA: mean :func:`rcva_magnitude` in each patch, ``(n,)``."""
    return box_sums(rcva_magnitude(pre, post, radius), patches) / (patches[:, 2] * patches[:, 3])


def upsample_cells(cells: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a ``(h, w)`` cell map by ``stride`` to pixel ``shape`` (cell centres aligned)."""
    rows = (np.arange(shape[0]) + 0.5) / stride - 0.5
    cols = (np.arange(shape[1]) + 0.5) / stride - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(cells.astype(np.float32), [rr, cc], order=1, mode="nearest")
