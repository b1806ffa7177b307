"""HTTP ``Range`` requests (RFC 9110 §14), sans-I/O.

:func:`select_range` turns a ``Range`` header value (and optional ``If-Range``)
plus the representation size into one of three outcomes:

* :class:`Whole` — serve ``200`` with the whole body. Used when there is no Range
  header, when it is syntactically invalid or names another unit (RFC 9110 §14.2:
  such a header is ignored), when ``If-Range`` does not match, and — a documented
  choice — when it asks for more than one range (we never send
  ``multipart/byteranges``; ignoring the header is allowed by §14.2).
* :class:`Partial` — serve ``206`` with ``Content-Range: bytes first-last/size``.
* :class:`Unsatisfiable` — serve ``416`` with ``Content-Range: bytes */size``:
  a single valid range that selects no byte (first-pos ≥ size, a zero suffix, or
  any range of an empty representation).

Invariants: ``0 <= start``, ``length >= 1`` and ``start + length <= size`` for every
``Partial``; the parser never raises on any input string and reads at most
:data:`MAX_HEADER` characters (longer headers are ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_HEADER: Final = 1024
_INT_RANGE: Final = re.compile(r"^([0-9]+)-([0-9]*)$")
_SUFFIX_RANGE: Final = re.compile(r"^-([0-9]+)$")
_OWS: Final = " \t"


@dataclass(frozen=True, slots=True)
class Whole:
    size: int


@dataclass(frozen=True, slots=True)
class Partial:
    start: int
    length: int
    size: int

    def __post_init__(self) -> None:
        if not (self.start >= 0 and self.length >= 1 and self.start + self.length <= self.size):
            raise ValueError(f"bad partial range {self.start}+{self.length} of {self.size}")

    @property
    def last(self) -> int:
        return self.start + self.length - 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.last}/{self.size}"


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    size: int

    def content_range(self) -> str:
        return f"bytes */{self.size}"


RangeChoice = Whole | Partial | Unsatisfiable


def _spec(text: str, size: int) -> Partial | Unsatisfiable | None:
    """One range-spec; None if it is syntactically invalid."""
    m = _INT_RANGE.match(text)
    if m:
        first_s, last_s = m.group(1), m.group(2)
        first = int(first_s)  # at most MAX_HEADER digits: cheap
        if last_s:
            last = int(last_s)
            if last < first:
                return None  # invalid int-range (§14.1.1)
        else:
            last = size - 1
        if first >= size:
            return Unsatisfiable(size)
        last = min(last, size - 1)
        return Partial(first, last - first + 1, size)
    m = _SUFFIX_RANGE.match(text)
    if m:
        suffix = int(m.group(1))
        if suffix == 0 or size == 0:
            return Unsatisfiable(size)
        suffix = min(suffix, size)
        return Partial(size - suffix, suffix, size)
    return None


def select_range(
    range_header: str | None,
    size: int,
    *,
    if_range: str | None = None,
    etag: str | None = None,
) -> RangeChoice:
    """What to serve for ``Range: range_header`` of a ``size``-byte representation."""
    if size < 0:
        raise ValueError("negative size")
    if range_header is None or len(range_header) > MAX_HEADER:
        return Whole(size)
    if if_range is not None and (etag is None or if_range.strip(_OWS) != etag):
        return Whole(size)  # §13.1.5: a validator that does not match (dates never do)
    unit, sep, rest = range_header.strip(_OWS).partition("=")
    if not sep or unit.strip(_OWS).lower() != "bytes":
        return Whole(size)
    specs = [s.strip(_OWS) for s in rest.split(",")]
    specs = [s for s in specs if s]  # §5.6.1: empty list elements are allowed
    if len(specs) != 1:
        return Whole(size)  # none, or a multi-range request: we serve the whole
    choice = _spec(specs[0], size)
    return Whole(size) if choice is None else choice
