"""Run planetcd's per-tile work on a Dask distributed cluster.

The functions that do the work are the single-process ones; this module only
schedules them:

* ``detect``: every halo tile of :func:`planetcd.change.detect.detect` is a
  task running :func:`planetcd.change.detect.detect_tile` (read both windows,
  one trunk pass, per-patch partial pooling); the partial results are merged
  on the client in tile order with :func:`planetcd.change.detect.merge_tile`,
  exactly as the local loop merges them. Registration, statistics and the τ
  calibration run on the client, as in a local run.
* ``planetcd segment``: :func:`segment_raster_distributed` makes each network
  batch of :func:`planetcd.craters.segment.segment_raster` (up to ``batch_size``
  overlapping tiles of one tile row) a task returning its probabilities; the
  client blends them with ``segment_raster``'s own row loop, in the same order,
  and writes the same probability and mask GeoTIFFs (craters are then extracted
  from the whole probability map, as in a local run).
* ``segment_catalog``: cuts one raster into the blocks of
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
                           dashboard_address=":0")  # any free port: never clashes with a running cluster
    return Client(cluster)


class DaskRunner:
    """A :class:`planetcd.runners.Runner` whose work items are tasks on a Dask cluster.

    ``map(func, items, **shared)`` sends each shared argument to every worker
    once (``scatter(broadcast=True)``), submits one task per item and yields
    the results in the items' order, releasing each as soon as it is read.
    ``func`` must be importable by name on the workers.
    """

    def __init__(self, client):
        self.client = client

    def map(self, func, items, **shared):
        items = list(items)
        if not items:
            return iter(())
        names = list(shared)
        scattered = self.client.scatter([shared[n] for n in names], broadcast=True, hash=False) if names else []
        futures = self.client.map(func, items, pure=False, **dict(zip(names, scattered)))
        return _in_order(futures)

    def __repr__(self) -> str:
        return f"DaskRunner({self.client!r})"


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
                              spec.nn_radius, spec.pooling, spec.capture)
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
    from .craters.extract import extraction_options
    from .monitor import block_grid, load_segmenter
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


# ----------------------------------------------------------------------------- segment (probability rasters)


@dataclass(frozen=True)
class RasterSetup:
    """What a worker needs to compute crater probabilities of tiles of one raster (small and picklable)."""

    path: str
    stats: object  #: :class:`planetcd.craters.segment.ImageStats` of the whole image
    band: int = 1
    batch_size: int = 4


def segment_chunks(height: int, width: int, tile: int, overlap: int, batch_size: int) -> list[list[tuple]]:
    """The tiles of :func:`planetcd.craters.segment.segment_raster` as its network batches, in its order.

    Each batch is a list of ``(row_off, col_off, height, width)``: up to ``batch_size`` tiles of one tile row,
    the same batches ``segment_raster`` gives the network (so each tile's probabilities are the same numbers).
    """
    from .craters.segment import _iter_tile_rows

    if overlap >= min(tile, height, width) and min(height, width) > 1:  # as craters.segment._run
        overlap = max(0, min(tile, height, width) // 2)
    chunks = []
    for r0, th, cols, tw in _iter_tile_rows(height, width, tile, overlap):
        for i in range(0, len(cols), batch_size):
            chunks.append([(r0, c, th, tw) for c in cols[i : i + batch_size]])
    return chunks


def segment_tiles(model, setup: RasterSetup, chunk: list[tuple], device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``(n, h, w)`` float32 and missing masks ``(n, h, w)`` of one batch of tiles of a raster.

    Reads and prepares each tile as :func:`planetcd.craters.segment.segment_raster` does (whole-image
    statistics, missing pixels at the mean) and runs the network once on the batch.
    """
    from rasterio.windows import Window

    from .craters.segment import _missing, _prepare, predict_tiles
    from .raster import open_raster, read_window

    stack, masks = [], []
    with open_raster(setup.path) as ds:
        for r, c, h, w in chunk:
            data, valid = read_window(ds, Window(c, r, w, h), bands=[setup.band])
            missing = _missing(data[0], valid, ds.nodata)
            stack.append(_prepare(data[0], missing, setup.stats))
            masks.append(missing)
    return predict_tiles(model, np.stack(stack), device, setup.batch_size), np.stack(masks)


def segment_tiles_task(setup: RasterSetup, chunk: list[tuple], model, device: str = "cpu"):
    """:func:`segment_tiles` on a worker, with the worker's segmenter."""
    return segment_tiles(worker_segmenter(model, device), setup, chunk, device)


class _Given:
    """Stands in for the network in ``craters.segment._run``: returns the probabilities it is given."""

    def __call__(self, x):
        return x

    def eval(self):
        return self


def segment_raster_distributed(client, path, outdir, model, *, threshold: float = 0.5, tile: int = 512,
                               overlap: int = 64, device: str = "cpu", batch_size: int = 4, band: int = 1,
                               progress: bool = False):
    """:func:`planetcd.craters.segment.segment_raster` with its network batches as tasks on ``client``'s cluster.

    Each task reads its tiles, prepares them with the whole-image statistics and
    runs the segmenter (``model``: registry name or checkpoint path, loaded once
    per worker, or a module sent to each worker); the client blends the
    returned probabilities with ``segment_raster``'s own row loop, in the same
    order, and writes the same ``crater_prob.tif`` and ``crater_mask.tif``
    (each appears only when complete). Returns a
    :class:`planetcd.craters.segment.SegmentResult`.
    """
    import time

    import torch

    from .craters.segment import (
        MASK_NAME, PROB_NAME, SegmentResult, _run, check_input, image_stats, prob_mask_writers,
    )
    from .raster import open_raster

    t0 = time.monotonic()
    outdir = Path(outdir)
    with open_raster(path) as ds:
        check_input(ds, path, band)
        stats = image_stats(ds, band)
        profile = ds.profile
        h, w = ds.height, ds.width
    setup = RasterSetup(os.path.abspath(path), stats, band, batch_size)
    chunks = segment_chunks(h, w, tile, overlap, batch_size)
    setup_f = client.scatter(setup, broadcast=True, hash=False)
    if isinstance(model, torch.nn.Module):
        model_ref = client.scatter(model, broadcast=True, hash=False)
    else:  # a registry name, or a checkpoint path the workers open from wherever they run
        model_ref = os.path.abspath(model) if os.path.isfile(str(model)) else str(model)
    futures = client.map(segment_tiles_task, [setup_f] * len(chunks), chunks, [model_ref] * len(chunks),
                         [device] * len(chunks), pure=False)
    where = {(r, c): (k, i) for k, chunk in enumerate(chunks) for i, (r, c, _, _) in enumerate(chunk)}
    results = _in_order(futures)
    current = {"k": -1, "value": None}

    def read(r, c, th, tw):  # the tile's probability stands in for its pixels; _Given passes it through
        k, i = where[(r, c)]
        while current["k"] < k:
            current["value"] = next(results)
            current["k"] += 1
        prob, missing = current["value"]
        if current["k"] != k or prob.shape[1:] != (th, tw):
            raise RuntimeError(f"tile ({r}, {c}) arrived out of segment_raster's order")
        return prob[i], missing[i]

    try:
        with prob_mask_writers(outdir, profile, w, threshold) as (emit, counts):
            _run(h, w, read, emit, _Given(), tile=tile, overlap=overlap, device="cpu", batch_size=batch_size,
                 progress=progress)
    finally:
        for future in futures:
            future.release()
    return SegmentResult(outdir / PROB_NAME, outdir / MASK_NAME, (h, w), counts["crater"], time.monotonic() - t0)
