"""Runners: who executes the per-tile and per-block work of ``detect``, ``segment`` and ``monitor``.

A runner maps a module-level function over work items and yields the results
in the items' order, so a caller merges them the same way whoever ran them.
:class:`LocalRunner` runs them here, one after the other; ``planetcd.distributed.DaskRunner``
runs them as tasks on a Dask cluster. Callers accept ``runner=`` (default: a
:class:`LocalRunner`) and never import Dask themselves.

Work functions must be importable by name (module-level) and take the item as
their first argument and the shared arguments by keyword; whatever they need
that is expensive to build (a VGG trunk, a segmenter) they get from the
per-process caches (:func:`planetcd.features.cached_trunk`, :func:`planetcd.models.cached`),
so that a worker process builds it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

__all__ = ["Runner", "LocalRunner", "resolve_runner"]


class Runner(Protocol):
    """What ``detect``, ``segment`` and ``monitor`` need of a runner."""

    def map(self, func: Callable[..., Any], items: Iterable[Any], **shared: Any) -> Iterator[Any]:
        """``func(item, **shared)`` for every item, yielded in the items' order."""
        ...


class LocalRunner:
    """Runs the work in this process, lazily, in order (results are produced as they are read)."""

    def map(self, func: Callable[..., Any], items: Iterable[Any], **shared: Any) -> Iterator[Any]:
        for item in items:
            yield func(item, **shared)

    def __repr__(self) -> str:
        return "LocalRunner()"


def resolve_runner(runner: Runner | None) -> Runner:
    """``runner``, or a :class:`LocalRunner` when ``None``."""
    return LocalRunner() if runner is None else runner
