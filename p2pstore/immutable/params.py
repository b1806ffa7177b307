"""Encoding parameters and the segment arithmetic derived from them.

Invariants:
- ``1 <= k <= n <= 256`` (zfec's limit); anything else raises :class:`ParameterError`.
- ``segment_size`` is a positive multiple of ``k`` no larger than
  :data:`MAX_SEGMENT_SIZE`, so every full segment splits into k equal blocks without
  padding; :meth:`EncodingParams.create` rounds a requested size up to that.
- Files of at most :data:`LITERAL_MAX` bytes are never erasure coded (literal caps).
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pstore.immutable.errors import ParameterError

#: Files this small (bytes) live inside a literal cap and produce no shares.
LITERAL_MAX = 55
#: Default requested segment size (bytes), rounded up to a multiple of k; see
#: docs/file-format.md "Segment size" for the measurements behind it.
DEFAULT_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 64 << 20
#: Largest file the format accepts (2^50 bytes, 1 PiB); bounds every offset we compute.
MAX_FILE_SIZE = 1 << 50
#: Most segments a file may have (bounds hash-tree sizes; 2^40 covers MAX_FILE_SIZE
#: at any segment size of 1 KiB or more).
MAX_SEGMENTS = 1 << 40
MAX_SHARES = 256
DEFAULT_K = 3
DEFAULT_N = 10
#: The default segment size after rounding up to a multiple of DEFAULT_K (1,048,578).
_DEFAULT_EFFECTIVE_SEGMENT = -(-DEFAULT_SEGMENT_SIZE // DEFAULT_K) * DEFAULT_K


@dataclass(frozen=True, slots=True)
class EncodingParams:
    """k-of-n erasure coding with ``segment_size``-byte segments (already normalized)."""

    k: int = DEFAULT_K
    n: int = DEFAULT_N
    segment_size: int = _DEFAULT_EFFECTIVE_SEGMENT

    def __post_init__(self) -> None:
        check_k_n(self.k, self.n)
        s = self.segment_size
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ParameterError(f"segment size must be a positive integer, got {s!r}")
        if s > MAX_SEGMENT_SIZE:
            raise ParameterError(f"segment size {s} exceeds the maximum {MAX_SEGMENT_SIZE}")
        if s % self.k:
            raise ParameterError(f"segment size {s} is not a multiple of k={self.k}")

    @classmethod
    def create(
        cls, k: int = DEFAULT_K, n: int = DEFAULT_N, segment_size: int = DEFAULT_SEGMENT_SIZE
    ) -> EncodingParams:
        """Validate k and n, and round ``segment_size`` up to a multiple of k."""
        check_k_n(k, n)
        if not isinstance(segment_size, int) or isinstance(segment_size, bool):
            raise ParameterError(f"segment size must be an integer, got {segment_size!r}")
        if segment_size < 1:
            raise ParameterError(f"segment size must be positive, got {segment_size}")
        return cls(k, n, -(-segment_size // k) * k)

    @property
    def block_size(self) -> int:
        """Size of every block of a full segment."""
        return self.segment_size // self.k


def check_k_n(k: object, n: object) -> None:
    for name, v in (("k", k), ("N", n)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ParameterError(f"{name} must be an integer, got {v!r}")
    assert isinstance(k, int) and isinstance(n, int)
    if not 1 <= k <= MAX_SHARES:
        raise ParameterError(f"k must be between 1 and {MAX_SHARES}, got {k}")
    if not 1 <= n <= MAX_SHARES:
        raise ParameterError(f"N must be between 1 and {MAX_SHARES}, got {n}")
    if k > n:
        raise ParameterError(f"k ({k}) must not exceed N ({n})")


@dataclass(frozen=True, slots=True)
class SegmentGeometry:
    """How a file of ``size`` bytes (> LITERAL_MAX) splits into segments and blocks."""

    params: EncodingParams
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not LITERAL_MAX < self.size <= MAX_FILE_SIZE:
            raise ParameterError(
                f"size {self.size!r} out of range for a coded file "
                f"({LITERAL_MAX + 1}..{MAX_FILE_SIZE})"
            )
        if self.num_segments > MAX_SEGMENTS:
            raise ParameterError(
                f"{self.num_segments} segments exceeds the maximum {MAX_SEGMENTS}; "
                "use a larger segment size"
            )

    @property
    def num_segments(self) -> int:
        return -(-self.size // self.params.segment_size)

    @property
    def tail_segment_size(self) -> int:
        return self.size - (self.num_segments - 1) * self.params.segment_size

    @property
    def tail_block_size(self) -> int:
        return -(-self.tail_segment_size // self.params.k)

    def segment_size_of(self, j: int) -> int:
        self._check_segment(j)
        if j == self.num_segments - 1:
            return self.tail_segment_size
        return self.params.segment_size

    def block_size_of(self, j: int) -> int:
        self._check_segment(j)
        if j == self.num_segments - 1:
            return self.tail_block_size
        return self.params.block_size

    def segment_offset(self, j: int) -> int:
        self._check_segment(j)
        return j * self.params.segment_size

    def segments_for_range(self, offset: int, length: int) -> range:
        """The segment indexes covering plaintext bytes ``[offset, offset+length)``
        (clipped to the file; empty when the range is empty)."""
        if offset < 0 or length < 0:
            raise ParameterError(f"bad range: offset {offset}, length {length}")
        end = min(self.size, offset + length)
        if offset >= end:
            return range(0)
        s = self.params.segment_size
        return range(offset // s, (end - 1) // s + 1)

    def _check_segment(self, j: int) -> None:
        if not 0 <= j < self.num_segments:
            raise ParameterError(f"segment {j} out of range (file has {self.num_segments})")
