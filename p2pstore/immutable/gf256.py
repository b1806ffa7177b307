"""Erasure coding through the SIMD kernel in ``_gf256.c``, zfec's output byte for byte.

:func:`check_encoder` returns an object with zfec's ``Encoder.encode(blocks, nums)``,
:func:`check_decoder` one with ``Decoder.decode(blocks, nums)``: the kernel where it
was built and the CPU has AVX2, else zfec's own.

The kernel computes each check block as a GF(2^8) combination of the k primary
blocks with the coefficients of zfec's own encoding matrix, read from zfec once per
``(k, n)`` by encoding unit blocks (check block j of unit block i is the matrix
entry (j, i)), so the two can never disagree on a matrix. Decoding likewise reads
zfec's inverse for each set of share numbers (decoding unit blocks), once per set,
and computes only the primary blocks that are missing. It measured ~20 times
zfec's speed for 3-of-10 (docs/file-format.md, "Erasure coding kernel").

Invariants:
- Output equals ``zfec.Encoder(k, n).encode(blocks, nums)`` for every input zfec
  accepts, and ``zfec.Decoder(k, n).decode(blocks, nums)`` for distinct share
  numbers in increasing order (zfec's decoder needs that order; this one sorts).
  Blocks of unequal lengths, share numbers out of range and repeated share numbers
  for decoding raise :class:`ValueError` (zfec raises its own error for the first
  and does not check the others).
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

__all__ = [
    "CheckDecoder",
    "CheckEncoder",
    "SimdDecoder",
    "SimdEncoder",
    "check_decoder",
    "check_encoder",
    "describe",
    "kernel",
]

ENV = "P2PSTORE_ERASURE_KERNEL"


class CheckEncoder(Protocol):
    def encode(self, blocks: Sequence[bytes], nums: Sequence[int]) -> list[bytes]: ...


class CheckDecoder(Protocol):
    def decode(self, blocks: Sequence[bytes], nums: Sequence[int]) -> list[bytes]: ...


def _ruled_out() -> bool:
    return os.environ.get(ENV, "").strip().lower() == "zfec"


@functools.cache
def kernel() -> ctypes.CDLL | None:
    """The built kernel if it is usable here (built, loadable, the CPU has AVX2)."""
    if _ruled_out():
        return None
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_gf256{suffix}"
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path))
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
        except (OSError, AttributeError):  # not loadable, or a stale build
            return None
        return lib if lib.p2ps_gf256_simd() == 1 else None
    return None


# An uninitialised bytes object and its buffer (the C API's documented way to build
# bytes in place): the kernel writes every byte before anything else sees it. Our own
# prototypes, so that no setting on the shared ctypes.pythonapi functions is changed.
_new_bytes = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
    ("PyBytes_FromStringAndSize", ctypes.pythonapi)
)
_bytes_buffer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(
    ("PyBytes_AsString", ctypes.pythonapi)
)


def _unit_blocks(k: int) -> list[list[bytes]]:
    """k sets of k one-byte blocks, set i all zero but block i (a one): coded by zfec,
    set i gives column i of its matrix."""
    return [[bytes([int(i == x)]) for x in range(k)] for i in range(k)]


@functools.cache
def _matrix(k: int, n: int) -> tuple[bytes, ...]:
    """Row j - k: the coefficients of check block j over the k primary blocks."""
    coder = zfec.Encoder(k, n)
    units = _unit_blocks(k)
    columns = [coder.encode(unit, list(range(k, n))) for unit in units]
    return tuple(bytes(columns[i][j - k][0] for i in range(k)) for j in range(k, n))


def _as_bytes(blocks: Sequence[bytes], k: int) -> tuple[list[bytes], int]:
    """The blocks as bytes (a memoryview of another item size counts in bytes), and
    their common length."""
    if len(blocks) != k:
        raise ValueError(f"need {k} blocks, got {len(blocks)}")
    data = [bytes(b) for b in blocks]
    size = len(data[0])
    if any(len(b) != size for b in data):
        raise ValueError("blocks must all have the same length")
    return data, size


def _rows(lib: ctypes.CDLL, coeffs: bytes, blocks: list[bytes], size: int) -> list[bytes]:
    """``len(coeffs) // len(blocks)`` new blocks, row r = sum_i coeffs[r*k+i] * blocks[i]
    (``blocks``: bytes of ``size`` bytes each; the array below keeps them alive)."""
    k = len(blocks)
    outs = [_new_bytes(None, size) for _ in range(len(coeffs) // k)]
    src = (ctypes.c_char_p * k)(*blocks)
    dst = (ctypes.c_void_p * len(outs))(*[_bytes_buffer(o) for o in outs])
    if lib.p2ps_gf256_rows(coeffs, len(outs), k, src, dst, size) != 0:
        raise ValueError(f"the erasure kernel refused k={k}")
    return outs


@functools.lru_cache(maxsize=512)
def _inverse(k: int, n: int, nums: tuple[int, ...]) -> tuple[bytes, ...]:
    """Row r: the coefficients of primary block r over the blocks of shares ``nums``
    (sorted, distinct), read from zfec's decoder."""
    coder = zfec.Decoder(k, n)
    units = _unit_blocks(k)
    columns = [coder.decode(unit, list(nums)) for unit in units]
    return tuple(bytes(columns[i][r][0] for i in range(k)) for r in range(k))


class _SimdCoder:
    def __init__(self, lib: ctypes.CDLL, k: int, n: int) -> None:
        if not 1 <= k <= n <= 256:
            raise ValueError(f"need 1 <= k <= n <= 256, got k={k}, n={n}")
        self.k, self.n = k, n
        self._lib = lib


class SimdEncoder(_SimdCoder):
    """zfec's ``Encoder(k, n).encode`` through the kernel (see :func:`kernel`)."""

    def __init__(self, lib: ctypes.CDLL, k: int, n: int) -> None:
        super().__init__(lib, k, n)
        self._rows = _matrix(k, n)

    def encode(self, blocks: Sequence[bytes], nums: Sequence[int]) -> list[bytes]:
        k = self.k
        data, size = _as_bytes(blocks, k)
        if any(not 0 <= j < self.n for j in nums):
            raise ValueError(f"share numbers must be in 0..{self.n - 1}, got {list(nums)}")
        checks = [j for j in nums if j >= k]
        made: dict[int, bytes] = {}
        if checks and size:
            coeffs = b"".join(self._rows[j - k] for j in checks)
            made = dict(zip(checks, _rows(self._lib, coeffs, data, size), strict=True))
        return [made.get(j, b"") if j >= k else data[j] for j in nums]


class SimdDecoder(_SimdCoder):
    """zfec's ``Decoder(k, n).decode`` through the kernel (see :func:`kernel`)."""

    def decode(self, blocks: Sequence[bytes], nums: Sequence[int]) -> list[bytes]:
        """The k primary blocks, from k blocks of the distinct shares ``nums``."""
        k = self.k
        data, size = _as_bytes(blocks, k)
        if len(nums) != k or len(set(nums)) != k or any(not 0 <= j < self.n for j in nums):
            raise ValueError(f"need {k} distinct share numbers in 0..{self.n - 1}: {nums}")
        order = sorted(range(k), key=lambda i: nums[i])
        by_share = {nums[i]: data[i] for i in order}
        missing = [r for r in range(k) if r not in by_share]
        made: dict[int, bytes] = {}
        if missing and size:
            inverse = _inverse(k, self.n, tuple(nums[i] for i in order))
            coeffs = b"".join(inverse[r] for r in missing)
            ordered = [data[i] for i in order]
            made = dict(zip(missing, _rows(self._lib, coeffs, ordered, size), strict=True))
        return [by_share[r] if r in by_share else made.get(r, b"") for r in range(k)]


def describe() -> str:
    """Which erasure coder this process uses, for a node's log and status."""
    if kernel() is not None:
        return "SIMD kernel (AVX2)"
    if _ruled_out():
        return f"zfec ({ENV}=zfec)"
    return "zfec (the SIMD kernel is not built or this CPU lacks AVX2: uploads are slower)"


def check_encoder(k: int, n: int) -> CheckEncoder:
    """The kernel's encoder for ``k``-of-``n`` where it is usable, else zfec's."""
    lib = kernel()
    if lib is None:
        return zfec.Encoder(k, n)  # type: ignore[no-any-return]
    return SimdEncoder(lib, k, n)


def check_decoder(k: int, n: int) -> CheckDecoder:
    """The kernel's decoder for ``k``-of-``n`` where it is usable, else zfec's."""
    lib = kernel()
    if lib is None:
        return zfec.Decoder(k, n)  # type: ignore[no-any-return]
    return SimdDecoder(lib, k, n)
