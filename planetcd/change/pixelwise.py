"""Deep change vector analysis (DCVA): pixel-level change magnitude inside the changed patches of ``detect``."""

from __future__ import annotations

import numpy as np
import torch
from rasterio.windows import Window

from ..features import VGGFeatures, run_trunk
from ..raster import IntensityStats
from .preparation import prepare_pair, read_present
from .scores import upsample_cells


def region_window(patch: np.ndarray, pad: int) -> Window:
    """The window of a patch ``(row_off, col_off, height, width)`` grown by ``pad`` pixels on each side."""
    return Window(int(patch[1]) - pad, int(patch[0]) - pad, int(patch[3]) + 2 * pad, int(patch[2]) + 2 * pad)


def pixelwise_maps(trunk: VGGFeatures, device: torch.device, pre_reader, post_reader, pre_stats: IntensityStats,
                   post_stats: IntensityStats, patches: np.ndarray, changed_index: np.ndarray, context: int,
                   batch_size: int = 8, precision: str | None = None) -> tuple[dict[int, np.ndarray], float | None]:
    """Deep change vector analysis inside changed patches.

    Per changed patch: the L2 magnitude of the feature difference per cell,
    upsampled (bilinear) to pixels. Returns ``{patch index: (h, w) float32}``
    and the Otsu threshold of all those magnitudes (``None`` without a changed patch).
    ``precision``: of the trunk (``"fp32"``, ``"bf16"``; None: the caller's context).
    """
    from skimage.filters import threshold_otsu

    maps: dict[int, np.ndarray] = {}
    s = trunk.stride
    for start in range(0, len(changed_index), batch_size):
        batch = changed_index[start : start + batch_size]
        crops = []
        for i in batch:
            window = region_window(patches[i], context)
            pre_data, pre_valid = read_present(pre_reader, window)
            post_data, post_valid = read_present(post_reader, window)
            crops += list(prepare_pair(pre_data, pre_valid, post_data, post_valid, pre_stats, post_stats))
        feats = run_trunk(trunk, np.stack(crops), device, precision)
        for k, i in enumerate(batch):
            magnitude = np.sqrt(((feats[2 * k + 1] - feats[2 * k]) ** 2).sum(axis=0))
            h, w = int(patches[i, 2]), int(patches[i, 3])
            full = upsample_cells(magnitude, s, (h + 2 * context, w + 2 * context))
            maps[int(i)] = full[context : context + h, context : context + w]
    if not maps:
        return maps, None
    values = np.concatenate([m.ravel() for m in maps.values()])
    return maps, float(threshold_otsu(values)) if np.ptp(values) > 0 else float(values.max())
