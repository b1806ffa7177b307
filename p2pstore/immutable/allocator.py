"""Allocator tuning for bulk encode/decode and a small idle node (glibc only; a no-op
elsewhere).

Every segment allocates fresh megabyte-sized buffers (ciphertext, blocks). With
glibc's default thresholds those are mmap'd and page-faulted in again each time,
which measured at about 30-40% of encode throughput (docs/file-format.md,
"Performance"). :func:`tune_allocator` keeps such buffers on the heap and stops the
heap being trimmed after every segment; :func:`trim_heap` gives them back when the
node is quiet.

That only works in glibc's main arena: ``malloc_trim`` releases the top of the main
heap, but never the top of the arena a worker thread (hashing, zfec, disk) allocates
from, and with the raised trim threshold nothing else shrinks it. So
:func:`tune_allocator` also keeps every thread in the main arena
(:data:`ARENAS`): with glibc's default of up to 8 arenas per core, a node held the
peak of its busiest transfer, 7-22 MB, in its threads' arenas for as long as it
ran (docs/local-grid.md, "Memory"). Sharing one arena cost a 64 MiB encode with a
worker thread about 3 % (134 against 138 MB/s, the medians of 8 interleaved runs);
puts and gets through a node showed no difference.

Call :func:`tune_allocator` once at process start, before any thread allocates (a
thread keeps the arena it was given): the node does, first thing
(``p2pstore/node/main.py``), and the benches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from typing import cast

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
#: malloc arenas (``M_ARENA_MAX``): the main one only, the one ``malloc_trim`` empties
ARENAS = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # runs a subprocess: once per process
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds and keep all threads in the main arena;
    returns False if not applicable."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, ARENAS),
    )
    return all([mallopt(param, value) == 1 for param, value in settings])


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
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
