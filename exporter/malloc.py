"""glibc's allocator, told to give memory back.

Contract: `tune()` (called once at start, before any thread) sets two glibc malloc options,
and does nothing where they do not exist (another libc):
- at most 2 arenas: every thread that allocates (transforms and gzip run in worker threads)
  otherwise gets arenas of its own, up to 8 per core, whose freed memory stays in the process;
- a fixed 1 MiB mmap threshold: blocks from 1 MiB up (payloads, bodies, their gzip) are mapped
  and unmapped on free. glibc's default threshold rises to the size of the largest freed
  block (up to 32 MiB), after which such bodies come from the heap and its high-water mark
  stays resident.
`trim()` gives the free pages of every arena back to the system (glibc's malloc_trim: about
2 ms at 250 pods). It runs after each large transform or parse and each body build: what a
scrape freed otherwise stays resident in fragmented heaps, and the next scrape's peak comes on
top. `large()` runs the large transforms and parses one at a time.
Measured in docs/performance.md ("Memory budget").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("kubebridge.malloc")
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
_TRIM = getattr(_LIBC, "malloc_trim", None)
if _TRIM is not None:
    _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int


def trim() -> None:
    """Return free heap pages to the system (nothing where malloc_trim does not exist)."""
    if _TRIM is not None:
        _TRIM(0)


_LARGE = threading.Lock()
T = TypeVar("T")


def large(work: Callable[[], T]) -> T:
    """Run a large transform or parse (from a worker thread): one at a time in the process, so
    that their transient memory does not add up (they hold the GIL for most of their time, so
    running them side by side saved little time), then trim what it freed."""
    with _LARGE:
        try:
            return work()
        finally:
            trim()


def tune() -> bool:
    """Apply the options; True if glibc took them."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_ARENA_MAX, ARENAS)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("malloc tuned: %s", ok)
    return ok
