"""Process settings that make planetcd's large arrays cheap to allocate: :func:`tune_allocator`.

planetcd's passes allocate and free arrays of tens to hundreds of MB many times (every layer of a
network on a tile, every tile of an image). glibc's ``malloc`` serves blocks over its mmap threshold
(at most 32 MB by default) with fresh pages from the kernel and hands them back on ``free``, so each such
allocation pays a page fault per 4 KB page while the kernel zeroes it. On the 2-core development machine,
a ReLU on a 112 x 512² bfloat16 map took 19.6 ms into a new array and 4.0 ms once freed memory is kept
for reuse, and ``planetcd detect`` on a 2048² pair ran about 18 % faster (``benchmarks/bench_detect.py``,
docs/performance.md). The ``planetcd`` command calls :func:`tune_allocator` before every command; scripts
that call the Python API may call it once at start (the benchmarks in ``benchmarks/`` do).

This is what PyTorch's CPU performance guides reach with a ``LD_PRELOAD`` of jemalloc or tcmalloc,
without a preload: freed memory stays with the process (up to the trim threshold) instead of going back to
the kernel, so the resident size after a peak stays near that peak; the peak itself does not grow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["tune_allocator", "ALLOCATOR_ENV"]

log = logging.getLogger(__name__)

#: Set to ``off`` (or ``0``) to leave the C allocator as the process found it.
ALLOCATOR_ENV = "PLANETCD_MALLOC_TUNING"
#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (and are reused there), not from fresh kernel pages.
MMAP_THRESHOLD_BYTES = 256 << 20
#: Free memory at the top of the heap beyond this goes back to the kernel.
TRIM_THRESHOLD_BYTES = 64 << 20

_applied: bool | None = None


def tune_allocator() -> bool:
    """Keep freed memory for reuse in this process (glibc only; once per process).

    Sets glibc's mmap threshold and trim threshold to :data:`MMAP_THRESHOLD_BYTES` and
    :data:`TRIM_THRESHOLD_BYTES` with ``mallopt``. Does nothing, and returns False, on another C library
    (macOS, Windows, musl) or when the environment variable :data:`ALLOCATOR_ENV` is ``off`` or ``0``.
    Explicit ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment settings win: they are
    left alone.

    Returns
    -------
    bool
        Whether the settings are in effect.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return False
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
