"""Dask for planetcd: a client, and a runner whose work items are tasks on the cluster.

:class:`DaskRunner` is a :class:`planetcd.runners.Runner`: ``detect``,
:func:`planetcd.craters.segment.segment` and :func:`planetcd.monitor.monitor`
accept it as ``runner=`` and map their module-level per-tile or per-block
functions over it (detect's tiles; the blocks of segment and monitor). The
functions are the single-process ones and their results are merged in item
order, so a cluster run gives the single-process result (floats may differ in
the last bits where a worker's BLAS uses another thread count).

Workers open the rasters by path (on a real cluster they must see the same
files: a shared file system) and get their models from the per-process caches
(:func:`planetcd.models.cached`, the VGG trunk cache of :mod:`planetcd.features`),
so a model is loaded once per worker, not once per task. This module imports
nothing else of planetcd but its errors.

``make_client(workers=N)`` starts a local cluster of N single-threaded worker
processes; ``make_client(scheduler="tcp://host:8786")`` connects to a running one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .errors import InputError

__all__ = ["make_client", "DaskRunner"]

log = logging.getLogger(__name__)


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
        # the shared arguments travel as one scattered dict: their names never meet client.map's own
        # keywords (batch_size, workers, key, ...)
        [shared_f] = self.client.scatter([shared], broadcast=True, hash=False)
        futures = self.client.map(_call, items, task=func, shared=shared_f, pure=False)
        return _in_order(futures)

    def __repr__(self) -> str:
        return f"DaskRunner({self.client!r})"


def _call(item, task, shared: dict):
    """A task's body: ``task(item, **shared)``."""
    return task(item, **shared)


def _in_order(futures) -> Iterator:
    """Results of futures in submission order, each released as soon as it is read."""
    for future in futures:
        yield future.result()
        future.release()
