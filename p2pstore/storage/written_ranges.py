"""A bounded set of disjoint half-open byte ranges: which bytes of an upload exist.

Sans-I/O. Invariants: ``spans`` is sorted, spans are disjoint and non-adjacent
(touching spans are merged), every span has ``start < end``, and there are never
more than ``limit`` spans (``add`` raises :class:`RangeLimitError` instead and
leaves the set unchanged), so an uploader cannot grow server memory by writing
single bytes at scattered offsets.
"""

from __future__ import annotations

import bisect


class RangeLimitError(Exception):
    """Adding the range would exceed the span limit; the set is unchanged."""


class RangeSet:
    __slots__ = ("_ends", "_limit", "_starts")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self._starts: list[int] = []
        self._ends: list[int] = []

    @property
    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def high_water(self) -> int:
        """One past the last byte written (0 when empty)."""
        return self._ends[-1] if self._ends else 0

    @property
    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def add(self, start: int, end: int) -> None:
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if start == end:
            return
        # Spans that overlap or touch [start, end): indexes lo .. hi-1.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        new_count = len(self._starts) - (hi - lo) + 1
        if new_count > self._limit:
            raise RangeLimitError(f"more than {self._limit} disjoint ranges")
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def covers(self, start: int, end: int) -> bool:
        """True iff every byte of [start, end) has been added."""
        if start >= end:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def first_gap(self, end: int) -> tuple[int, int] | None:
        """The first missing range inside [0, end), or None if it is fully covered."""
        pos = 0
        for s, e in zip(self._starts, self._ends, strict=True):
            if pos >= end:
                return None
            if s > pos:
                return (pos, min(s, end))
            pos = max(pos, e)
        return (pos, end) if pos < end else None
