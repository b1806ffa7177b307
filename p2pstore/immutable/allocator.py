"""Allocator tuning for bulk encode/decode (glibc only; a no-op elsewhere).

Every segment allocates fresh megabyte-sized buffers (ciphertext, blocks). With
glibc's default thresholds those are mmap'd and page-faulted in again each time,
which measured at about 30-40% of encode throughput (docs/file-format.md,
"Performance"). :func:`tune_allocator` keeps such buffers on the heap and stops the
heap being trimmed after every segment. Call it once at process start (node, bench).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import cast

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; returns False if not applicable."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")  # runs a subprocess: once per process
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return cast(Callable[[int], int], trim)


def trim_heap() -> bool:
    """Give freed heap memory back to the system (glibc ``malloc_trim``): the tuned
    thresholds keep up to :data:`TRIM_THRESHOLD` after a transfer, which an idle node
    should not hold. Returns whether anything was released."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))
