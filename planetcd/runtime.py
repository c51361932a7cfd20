"""Process settings: :func:`tune_allocator`, an opt-in trade of peak memory for speed; and
:func:`library_versions`, what the process runs on, for the records of a run.

planetcd's passes allocate and free arrays of tens to hundreds of MB many times (every layer of a
network on a tile, every tile of an image). glibc's ``malloc`` serves blocks over its mmap threshold
(at most 32 MB by default) with fresh pages from the kernel and hands them back on ``free``, so each such
allocation pays a page fault per 4 KB page while the kernel zeroes it. Keeping freed blocks for reuse
(what PyTorch's CPU performance guides reach with an ``LD_PRELOAD`` of jemalloc or tcmalloc) removes that
cost, but the heap then fragments and the peak resident size grows over a long run. Measured on the 2-core
development machine (docs/performance.md, "The C allocator"): ``detect`` on the 20000² pair of
``benchmarks/bench_memory.py`` ran its feature pass about 25 % faster, and its peak RSS rose by about
60 %, past the memory bound planetcd keeps by default. So it is off unless asked for:

- ``PLANETCD_MALLOC_TUNING=on`` in the environment: the ``planetcd`` command (and the speed and memory
  benchmarks) call :func:`tune_allocator_from_env`, which then applies it;
- a script may call :func:`tune_allocator` once at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["tune_allocator", "tune_allocator_from_env", "ALLOCATOR_ENV", "library_versions"]

log = logging.getLogger(__name__)

#: ``on`` (or ``1``, ``true``, ``yes``) makes the ``planetcd`` command call :func:`tune_allocator`.
ALLOCATOR_ENV = "PLANETCD_MALLOC_TUNING"
#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (and are reused there), not from fresh kernel pages.
MMAP_THRESHOLD_BYTES = 256 << 20
#: Free memory at the top of the heap beyond this goes back to the kernel.
TRIM_THRESHOLD_BYTES = 64 << 20

_applied: bool | None = None


def tune_allocator() -> bool:
    """Keep freed memory for reuse in this process (glibc only; once per process): faster, more memory.

    Sets glibc's mmap threshold and trim threshold to :data:`MMAP_THRESHOLD_BYTES` and
    :data:`TRIM_THRESHOLD_BYTES` with ``mallopt``. Does nothing, and returns False, on another C library
    (macOS, Windows, musl), or when ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` are set in the
    environment (the user's own settings win).

    Returns
    -------
    bool
        Whether the settings are in effect.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        # gnu_get_libc_version exists in glibc only: other C libraries' mallopt takes other parameters
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    log.debug("C allocator keeps freed memory for reuse: %s", _applied)
    return _applied


def tune_allocator_from_env() -> bool:
    """:func:`tune_allocator` when :data:`ALLOCATOR_ENV` is ``on`` (``1``, ``true``, ``yes``); else nothing.

    Returns whether the settings are in effect.
    """
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() in ("on", "1", "true", "yes"):
        return tune_allocator()
    return bool(_applied)


def library_versions() -> dict[str, str]:
    """The versions a run's record names: Python, NumPy, PyTorch, rasterio and its GDAL (run.json, monitor.json,
    evaluate's JSON)."""
    import platform

    import numpy as np
    import rasterio
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}
