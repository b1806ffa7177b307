"""What a download reads first from a share, from the size its peer listed.

Opening a share needs its header, its extension block copy, its block-tree root and
its share chain (download.py, ``_open_share``). The header says where the other
three are, so reading it first and them second costs two round trips. The layout
puts them at fixed distances from the share's end (docs/file-format.md, "Share
layout"), and ``storage.list`` gives each share's size, so one read can ask for all
of them at once:

- a primary share (number below k) of at most :data:`WHOLE_READ_MAX` bytes is read
  whole: its blocks are then at hand, and a small file's get costs one round trip
  to each peer after the listing;
- any other share: the header, then the block root where a file of the cap's size
  in default-sized segments has it, then the share chain and extension block.

Invariants:
- Nothing read here is trusted for being where it was asked: the caller takes the
  pieces at the offsets the header names (:meth:`Fetched.get`), reads whatever they
  do not cover, and verifies everything against the cap as before. A listed size
  that lies, or a file of other segment sizes, costs the second read, nothing more.
  A peer that refuses the first read (its ``max_read`` below a whole read) is asked
  for the header alone, as before this module.
- Offsets never go below 0, nor past the listed size or the header's end, whichever
  is larger; at most ``max_ranges`` ranges (three, or the header alone), at most
  :data:`WHOLE_READ_MAX` bytes (and ``max_read``).
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pstore.immutable import HEADER_SIZE, EncodingParams, VerifyCap
from p2pstore.immutable.crypto import HASH_BYTES
from p2pstore.immutable.errors import ParameterError
from p2pstore.immutable.extension import EXT_SIZE
from p2pstore.immutable.hashtree import tree_depth, tree_size
from p2pstore.immutable.params import MAX_FILE_SIZE
from p2pstore.immutable.share_layout import Range, coalesce, pick

#: a primary share this small (bytes, as listed) is read whole when opened (module doc):
#: files up to ~190 KB at 3-of-10, the sizes the uploader sends whole (sender.py)
WHOLE_READ_MAX = 64 << 10
#: longer than any share of a file of MAX_FILE_SIZE bytes (whose shares are ~1/k of it)
_MAX_SHARE = 2 * MAX_FILE_SIZE


def opening_ranges(
    cap: VerifyCap, share: int, size: int, max_read: int, max_ranges: int = 3
) -> list[Range]:
    """The ranges of the first read of ``share``, listed at ``size`` bytes, within a
    read's limits (``max_read`` bytes, ``max_ranges`` ranges)."""
    if share < cap.k and HEADER_SIZE <= size <= min(WHOLE_READ_MAX, max_read):
        return [(0, size)]
    ranges = [(0, HEADER_SIZE)]
    if size > _MAX_SHARE or max_ranges < 3:  # no share is this long; or limits too tight
        return ranges
    end = size - EXT_SIZE - tree_depth(cap.n) * HASH_BYTES  # where the share chain starts
    segment = EncodingParams.create(cap.k, cap.n).segment_size
    root = end - tree_size(max(1, -(-cap.size // segment)))
    if root >= HEADER_SIZE:
        ranges.append((root, HASH_BYTES))
    if end >= HEADER_SIZE:
        ranges.append((end, size - end))
    ranges = coalesce(ranges)
    return ranges if sum(n for _, n in ranges) <= max_read else [(0, HEADER_SIZE)]


@dataclass(frozen=True, slots=True)
class Fetched:
    """The answer to a first read: ``(offset, bytes)`` pieces, each possibly shorter
    than asked (a share shorter than listed)."""

    pieces: tuple[tuple[int, bytes], ...]

    @classmethod
    def of(cls, ranges: list[Range], answers: list[bytes]) -> Fetched:
        return cls(tuple((off, data) for (off, _), data in zip(ranges, answers, strict=True)))

    def get(self, r: Range) -> bytes | None:
        """The bytes of range ``r`` if one piece holds all of it."""
        try:
            return pick(list(self.pieces), [r])
        except ParameterError:
            return None

    def whole(self, length: int) -> bytes | None:
        """The share's first ``length`` bytes if they were read in one piece."""
        return self.get((0, length)) if length > 0 else None
