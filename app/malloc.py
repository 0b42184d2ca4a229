"""glibc's malloc, told to keep the memory large responses need rather than hand it back on every free.

Why: a statement is a 60-120 KiB document, built and copied a few times per request (the C rows, the
joined text, its bytes). With glibc's defaults each such buffer came from fresh pages: a chunk over the
mmap threshold is mapped and unmapped around each use, and a free that leaves more than 128 KiB at the top
of the heap gives it back (trim), so the next request faulted every page in again. Building and freeing a
119 KiB bytes object took 65 µs that way and 5 µs with the thresholds below (bench/PROFILING.md, "Eighth
look"). The price: each API process keeps up to TRIM_THRESHOLD of freed heap.

An operator's MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (glibc's own variables) win: nothing is set
then. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024  # buffers below this come from the heap and are reused
TRIM_THRESHOLD = 32 * 1024 * 1024  # free heap kept at the top before it is given back
_OPERATOR_SET = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set the thresholds above for this process; whether they were set."""
    if any(name in os.environ for name in _OPERATOR_SET):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting the mmap threshold also stops glibc moving it by itself.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
