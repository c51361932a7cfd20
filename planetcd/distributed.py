"""Run planetcd's per-tile work on a Dask distributed cluster.

The functions that do the work are the single-process ones; this module only
schedules them:

* ``detect``: every halo tile of :func:`planetcd.change.detect.detect` is a
  task running :func:`planetcd.change.detect.detect_tile` (read both windows,
  one trunk pass, per-patch partial pooling); the partial results are merged
  on the client in tile order with :func:`planetcd.change.detect.merge_tile`,
  exactly as the local loop merges them. Registration, statistics and the τ
  calibration run on the client, as in a local run.
* ``segment``: :func:`segment_catalog` cuts one raster into the blocks of
  :func:`planetcd.monitor.block_grid`; each block (segmentation in
  overlapping tiles and crater extraction, craters kept by the block whose
  core holds them) is a task, locally or on the cluster.
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
from dataclasses import dataclass
from pathlib import Path

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


# ----------------------------------------------------------------------------- segment (craters of one image)


@dataclass(frozen=True)
class ImageSetup:
    """How to segment one raster block by block (small and picklable, like :class:`planetcd.monitor.SegmentSetup`)."""

    path: str
    stats: object  #: :class:`planetcd.craters.segment.ImageStats` of the whole image
    extraction: dict  #: keyword arguments of :func:`planetcd.craters.extract.extract_craters`
    tile: int = 512
    overlap: int = 64
    batch_size: int = 4
    band: int = 1


def segment_image_block(model, setup: ImageSetup, block) -> np.ndarray:
    """Craters ``(n, 4)`` (``x_px, y_px, radius_px, confidence``, whole-image pixels) centred in one block's core.

    The block's window (core and halo) is read, prepared with the whole-image
    statistics, segmented in overlapping tiles and its craters extracted, with
    the functions :func:`planetcd.monitor.segment_block` uses for pre and post.
    """
    from rasterio.windows import Window

    from .craters.extract import extract_craters
    from .monitor import _in_core, _prepared_window, _probability
    from .raster import open_raster, read_window

    r, c, h, w = block.read
    with open_raster(setup.path) as ds:
        data, valid = read_window(ds, Window(c, r, w, h), bands=[setup.band])
        prepared, missing = _prepared_window(data, valid, ds.nodata, setup.stats)
    prob = _probability(model, prepared, missing, setup)
    craters = extract_craters(prob, **setup.extraction) + np.array([c, r, 0.0, 0.0])
    return craters[_in_core(craters, block)].reshape(-1, 4)


def segment_block_image_task(setup: ImageSetup, block, model, device: str = "cpu") -> np.ndarray:
    """:func:`segment_image_block` on a worker, with the worker's segmenter."""
    return segment_image_block(worker_segmenter(model, device), setup, block)


def segment_catalog(image, model="ctx-craters", *, client=None, threshold: float | None = None,
                    block_size: int = 2048, block_halo: int = 192, tile: int = 512, overlap: int = 64,
                    batch_size: int = 4, band: int = 1, pixel_size_m: float | None = None, device: str = "cpu"):
    """Craters of one raster, block by block, locally or with the blocks as tasks on ``client``'s cluster.

    Parameters
    ----------
    image : path
        A raster GDAL reads (workers must be able to open it).
    model : str, path or torch.nn.Module
        Registry name, checkpoint path, or a loaded segmenter.
    client : distributed.Client, optional
        Run the blocks on this cluster; ``None`` runs them here, in the same order.
    threshold : float, optional
        Crater probability threshold (default: the model's).
    block_size, block_halo, tile, overlap, batch_size : int
        Blocks (pixels; memory bound and unit of work) and network tiles inside them.
    band : int
        1-based band to segment.
    pixel_size_m : float, optional
        Pixel size for diameters when the raster is not georeferenced.

    Returns
    -------
    planetcd.craters.catalog.Catalog
        Every crater, in block order (each crater belongs to the block whose core holds its centre).
    """
    import torch

    from .craters.catalog import Catalog
    from .craters.segment import check_input, image_stats
    from .monitor import block_grid, extraction_options, load_segmenter
    from .raster import is_georeferenced, open_raster

    with open_raster(image) as ds:
        check_input(ds, image, band)
        stats = image_stats(ds, band)
        shape = (ds.height, ds.width)
        georef = {"transform": ds.transform, "crs": ds.crs} if is_georeferenced(ds) else {"pixel_size_m": pixel_size_m}
    segmenter = load_segmenter(model, device)
    meta = getattr(segmenter, "metadata", {})
    threshold = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    setup = ImageSetup(str(image), stats, extraction_options(meta, threshold), tile, overlap, batch_size, band)
    blocks = block_grid(shape[0], shape[1], block_size, block_halo)
    if client is None:
        parts = [segment_image_block(segmenter, setup, block) for block in blocks]
    else:
        setup_f = client.scatter(setup, broadcast=True, hash=False)
        model_ref = client.scatter(segmenter, broadcast=True, hash=False) if isinstance(model, torch.nn.Module) else str(model)
        futures = client.map(segment_block_image_task, [setup_f] * len(blocks), blocks, [model_ref] * len(blocks),
                             [device] * len(blocks), pure=False)
        parts = list(_in_order(futures))
    craters = np.concatenate(parts) if parts else np.zeros((0, 4))
    return Catalog.from_pixels(craters, name=Path(str(image)).stem, **georef)
