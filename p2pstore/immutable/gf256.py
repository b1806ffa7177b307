"""Check blocks through the SIMD kernel in ``_gf256.c``, zfec's output byte for byte.

:func:`check_encoder` returns an object with zfec's ``Encoder.encode(blocks, nums)``:
the kernel where it was built and the CPU has AVX2, else ``zfec.Encoder`` itself.
The kernel computes each check block as a GF(2^8) combination of the k primary
blocks with the coefficients of zfec's own encoding matrix, read from zfec once per
``(k, n)`` by encoding unit blocks (check block j of unit block i is the matrix
entry (j, i)), so the two can never disagree on a matrix. It measured ~20 times
zfec's speed for 3-of-10 (docs/file-format.md, "Erasure coding kernel").

Invariants:
- Output equals ``zfec.Encoder(k, n).encode(blocks, nums)`` for every input zfec
  accepts; an input zfec refuses (unequal block lengths, a share number out of
  range) raises :class:`ValueError` here too.
- The kernel is plain C loaded with :mod:`ctypes` (no Python API), which releases
  the GIL while it runs, as zfec does.
- ``P2PSTORE_ERASURE_KERNEL=zfec`` in the environment selects zfec (benchmarks
  compare the two; a user can rule the kernel out).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import zfec

__all__ = ["CheckEncoder", "SimdEncoder", "check_encoder", "kernel"]

ENV = "P2PSTORE_ERASURE_KERNEL"

_u8p = ctypes.POINTER(ctypes.c_uint8)


class CheckEncoder(Protocol):
    def encode(self, blocks: Sequence[bytes], nums: Sequence[int]) -> list[bytes]: ...


@functools.cache
def kernel() -> ctypes.CDLL | None:
    """The built kernel if it is usable here (built, loadable, the CPU has AVX2)."""
    if os.environ.get(ENV, "").strip().lower() == "zfec":
        return None
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_gf256{suffix}"
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            return None
        lib.p2ps_gf256_simd.restype = ctypes.c_int
        lib.p2ps_gf256_simd.argtypes = []
        lib.p2ps_gf256_rows.restype = ctypes.c_int
        lib.p2ps_gf256_rows.argtypes = [
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_size_t,
        ]
        return lib if lib.p2ps_gf256_simd() == 1 else None
    return None


# An uninitialised bytes object and its buffer (the C API's documented way to build
# bytes in place): the kernel writes every byte before anything else sees it.
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_bytes_buffer = ctypes.pythonapi.PyBytes_AsString
_bytes_buffer.restype = ctypes.c_void_p
_bytes_buffer.argtypes = [ctypes.py_object]


@functools.cache
def _matrix(k: int, n: int) -> tuple[bytes, ...]:
    """Row j - k: the coefficients of check block j over the k primary blocks."""
    coder = zfec.Encoder(k, n)
    units = [[bytes([int(i == x)]) for x in range(k)] for i in range(k)]
    columns = [coder.encode(unit, list(range(k, n))) for unit in units]
    return tuple(bytes(columns[i][j - k][0] for i in range(k)) for j in range(k, n))


class SimdEncoder:
    """zfec's ``Encoder(k, n).encode`` through the kernel (see :func:`kernel`)."""

    def __init__(self, lib: ctypes.CDLL, k: int, n: int) -> None:
        if not 1 <= k <= n <= 256:
            raise ValueError(f"need 1 <= k <= n <= 256, got k={k}, n={n}")
        self.k, self.n = k, n
        self._lib = lib
        self._rows = _matrix(k, n)

    def encode(self, blocks: Sequence[bytes], nums: Sequence[int]) -> list[bytes]:
        k = self.k
        if len(blocks) != k:
            raise ValueError(f"need {k} primary blocks, got {len(blocks)}")
        size = len(blocks[0])
        if any(len(b) != size for b in blocks):
            raise ValueError("primary blocks must all have the same length")
        if any(not 0 <= j < self.n for j in nums):
            raise ValueError(f"share numbers must be in 0..{self.n - 1}, got {list(nums)}")
        checks = [j for j in nums if j >= k]
        made: dict[int, bytes] = {}
        if checks and size:
            outs = [_new_bytes(None, size) for _ in checks]
            coeffs = b"".join(self._rows[j - k] for j in checks)
            src = (ctypes.c_char_p * k)(*[bytes(b) for b in blocks])
            dst = (ctypes.c_void_p * len(outs))(*[_bytes_buffer(o) for o in outs])
            if self._lib.p2ps_gf256_rows(coeffs, len(checks), k, src, dst, size) != 0:
                raise ValueError(f"the erasure kernel refused k={k}")
            made = dict(zip(checks, outs, strict=True))
        return [made.get(j, b"") if j >= k else bytes(blocks[j]) for j in nums]


def check_encoder(k: int, n: int) -> CheckEncoder:
    """The kernel's encoder for ``k``-of-``n`` where it is usable, else zfec's."""
    lib = kernel()
    if lib is None:
        return zfec.Encoder(k, n)  # type: ignore[no-any-return]
    return SimdEncoder(lib, k, n)
