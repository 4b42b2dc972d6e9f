"""glibc's allocator, told to give memory back.

Contract: `tune()` (called once at start, before any thread) sets two glibc malloc options,
and does nothing where they do not exist (another libc):
- at most 2 arenas: every thread that allocates (transforms and gzip run in worker threads)
  otherwise gets arenas of its own, up to 8 per core, whose freed memory stays in the process;
- a fixed 1 MiB mmap threshold: blocks from 1 MiB up (payloads, bodies, their gzip) are mapped
  and unmapped on free. glibc's default threshold rises to the size of the largest freed
  block (up to 32 MiB), after which such bodies come from the heap and its high-water mark
  stays resident.
Measured in docs/performance.md ("Memory budget").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("kubebridge.malloc")
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def tune() -> bool:
    """Apply the options; True if glibc took them."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_ARENA_MAX, ARENAS)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("malloc tuned: %s", ok)
    return ok
