"""Run planetcd's per-tile work on a Dask distributed cluster.

The functions that do the work are the single-process ones; this module only
schedules them:

* ``detect``: every halo tile of :func:`planetcd.change.detect.detect` is a
  task running :func:`planetcd.change.detect.detect_tile` (read both windows,
  one trunk pass, per-patch partial pooling); the partial results are merged
  on the client in tile order with :func:`planetcd.change.detect.merge_tile`,
  exactly as the local loop merges them. Registration, statistics and the τ
  calibration run on the client, as in a local run.
* ``monitor`` (and its segmentation): every block of
  :func:`planetcd.monitor.block_grid` is a task running
  :func:`planetcd.monitor.run_block` (segment pre and post, extract craters,
  decide which are new), merged in block order.

Workers open the rasters by path (they must see the same files: a shared file
system on a real cluster) and keep one VGG trunk and one crater segmenter per
process, loaded on first use (:data:`_CACHE`), so models are loaded once per
worker, not once per task. Results equal the single-process run: the same
functions on the same windows, merged in the same order (floats may differ in
the last bits where a worker's BLAS uses another thread count).

``make_client(workers=N)`` starts a local cluster of N single-threaded worker
processes; ``make_client(scheduler="tcp://host:8786")`` connects to a running one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

#: Per-process cache of loaded models (one VGG trunk and one segmenter per configuration).
_CACHE: dict = {}


def make_client(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int = 1):
    """A ``distributed.Client``: connected to ``scheduler``, or on a new local cluster of ``workers`` processes.

    Raises
    ------
    InputError
        When Dask is not installed (``pip install planetcd[dask]``) or the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("Dask is not installed: pip install 'planetcd[dask]'") from None
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s")
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster)


# ----------------------------------------------------------------------------- worker-side models


def worker_trunk(layer: int, relu: bool, weights: str | None, device: str):
    """The VGG trunk of this process for a configuration, loaded on first use."""
    import torch

    from .features import VGGFeatures

    key = ("trunk", layer, relu, weights, device)
    if key not in _CACHE:
        _CACHE[key] = VGGFeatures(layer=layer, weights=weights, relu=relu).to(torch.device(device))
    return _CACHE[key]


def worker_segmenter(model, device: str = "cpu"):
    """The crater segmenter of this process: a registry name or checkpoint path loaded once, or a module as given."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model.eval()
    key = ("segmenter", str(model), device)
    if key not in _CACHE:
        from .monitor import load_segmenter

        _CACHE[key] = load_segmenter(model, device)
    return _CACHE[key]


# ----------------------------------------------------------------------------- detect


def detect_tile_task(spec, tile, patches: np.ndarray, cells: np.ndarray):
    """One tile of :func:`planetcd.change.detect.detect` on a worker: open the pair, run :func:`detect_tile`."""
    import torch

    from .change.detect import TileContext, detect_tile
    from .change.register import AlignedReader, post_on_pre_grid
    from .raster import open_raster

    trunk = worker_trunk(spec.layer, spec.relu, spec.weights, spec.device)
    with open_raster(spec.pre) as pre_ds, open_raster(spec.post) as post_ds, post_on_pre_grid(pre_ds, post_ds) as grid:
        context = TileContext(AlignedReader(pre_ds), AlignedReader(grid, spec.displacement), spec.pre_stats,
                              spec.post_stats, trunk, torch.device(spec.device), patches, cells, spec.method,
                              spec.nn_radius, spec.pooling)
        return detect_tile(context, tile)


def _in_order(futures) -> Iterator:
    """Results of futures in submission order, each released as soon as it is read."""
    for future in futures:
        yield future.result()
        future.release()


class DaskTileRunner:
    """A ``tile_runner`` for :func:`planetcd.change.detect.detect`: one task per tile on a Dask cluster."""

    def __init__(self, client):
        self.client = client

    def __call__(self, spec, tiles, patches: np.ndarray, cells: np.ndarray) -> Iterator:
        spec_f, patches_f, cells_f = self.client.scatter([spec, patches, cells], broadcast=True, hash=False)
        futures = self.client.map(detect_tile_task, [spec_f] * len(tiles), tiles, [patches_f] * len(tiles),
                                  [cells_f] * len(tiles), pure=False)
        return _in_order(futures)


def detect_distributed(client, pre, post, **options):
    """:func:`planetcd.change.detect.detect` with its tiles as tasks on ``client``'s cluster.

    ``pre`` and ``post`` must be paths the workers can open; every option of
    ``detect`` is accepted. Returns the same :class:`ChangeResult` as a local run.
    """
    from .change.detect import detect

    for name, path in (("pre", pre), ("post", post)):
        if isinstance(path, np.ndarray):
            raise InputError(f"{name}: a distributed run reads raster files (paths), not arrays")
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
    return detect(pre, post, tile_runner=DaskTileRunner(client), **options)


# ----------------------------------------------------------------------------- segmentation blocks (monitor)


def segment_block_task(setup, tile, model, device: str = "cpu"):
    """One block of :func:`planetcd.monitor.monitor`'s segmentation on a worker."""
    from .monitor import run_block

    return run_block(setup, tile, worker_segmenter(model, device))


def segment_blocks_distributed(client, setup, blocks: list, model, device: str = "cpu") -> list:
    """:func:`planetcd.monitor.run_block` for every block on the cluster; results in block order.

    ``model`` is a registry name or checkpoint path (each worker loads it
    once) or a loaded module (sent to each worker once).
    """
    import torch

    setup_f = client.scatter(setup, broadcast=True, hash=False)
    model_ref = client.scatter(model, broadcast=True, hash=False) if isinstance(model, torch.nn.Module) else str(model)
    futures = client.map(segment_block_task, [setup_f] * len(blocks), blocks, [model_ref] * len(blocks),
                         [device] * len(blocks), pure=False)
    return list(_in_order(futures))


def monitor_distributed(client, pre, post, **options):
    """:func:`planetcd.monitor.monitor` with detect's tiles and the segmentation blocks as tasks on ``client``."""
    from .monitor import monitor

    return monitor(pre, post, client=client, **options)
