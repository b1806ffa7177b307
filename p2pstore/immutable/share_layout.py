"""Share layout v1: where each piece of share i lives, as pure offset arithmetic.

Invariants (docs/file-format.md, "Share layout")::

    [0, 72)                 header (fixed size; written last by a streaming uploader)
    [72, ...)               blocks: block j at 72 + j*block_size (the last may be short)
    crypttext_tree_offset   ciphertext hash tree, (2L-1)*32 bytes, L = pow2(segments)
    block_tree_offset       this share's block hash tree, same size
    share_chain_offset      uncle chain of this share in the share tree, log2(pow2(N))*32
    ext_offset              extension block copy, 110 bytes; ext_offset + 110 == length

- Block offsets do not depend on the file size, so blocks can be written before the
  size is known; everything after the blocks, and the header, is written at the end.
- The header is untrusted: it is only used to find the extension block. Once the
  extension block has been verified against the cap, :meth:`ShareLayout.for_share`
  recomputes the whole layout and a header that differs byte for byte is refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from p2pstore.immutable import hashtree
from p2pstore.immutable.crypto import HASH_BYTES
from p2pstore.immutable.errors import ParameterError
from p2pstore.immutable.extension import EXT_SIZE, ExtensionBlock
from p2pstore.immutable.params import MAX_SHARES, SegmentGeometry

SHARE_MAGIC: Final = b"p2ps-shr"
SHARE_VERSION: Final = 1
_HDR: Final = struct.Struct(">8sHHHHIIQQQQQQ")
HEADER_SIZE: Final = _HDR.size
assert HEADER_SIZE == 72

Range = tuple[int, int]  # (offset, length) within a share


@dataclass(frozen=True, slots=True)
class ShareLayout:
    """Offsets of every piece of one share. Build it with :meth:`for_share`."""

    share_number: int
    geometry: SegmentGeometry
    crypttext_tree_offset: int
    block_tree_offset: int
    share_chain_offset: int
    ext_offset: int
    share_length: int

    @classmethod
    def for_share(cls, geometry: SegmentGeometry, share_number: int) -> ShareLayout:
        p = geometry.params
        if not 0 <= share_number < p.n:
            raise ParameterError(f"share number {share_number} out of range 0..{p.n - 1}")
        ns = geometry.num_segments
        blocks_end = HEADER_SIZE + (ns - 1) * p.block_size + geometry.tail_block_size
        tree = hashtree.tree_size(ns)
        ct_off = blocks_end
        bt_off = ct_off + tree
        sc_off = bt_off + tree
        ext_off = sc_off + hashtree.tree_depth(p.n) * HASH_BYTES
        return cls(share_number, geometry, ct_off, bt_off, sc_off, ext_off, ext_off + EXT_SIZE)

    @classmethod
    def from_extension(cls, ext: ExtensionBlock, share_number: int) -> ShareLayout:
        return cls.for_share(ext.geometry, share_number)

    # -- pieces -------------------------------------------------------------------
    @property
    def num_segments(self) -> int:
        return self.geometry.num_segments

    def header_bytes(self) -> bytes:
        g = self.geometry
        p = g.params
        return _HDR.pack(
            SHARE_MAGIC,
            SHARE_VERSION,
            self.share_number,
            p.k,
            p.n,
            p.block_size,
            g.tail_block_size,
            g.num_segments,
            self.crypttext_tree_offset,
            self.block_tree_offset,
            self.share_chain_offset,
            self.ext_offset,
            self.share_length,
        )

    def block_range(self, j: int) -> Range:
        size = self.geometry.block_size_of(j)
        return (HEADER_SIZE + j * self.geometry.params.block_size, size)

    @property
    def trailer_offset(self) -> int:
        """Where the part written at the end (trees, chain, extension copy) starts."""
        return self.crypttext_tree_offset

    def ext_range(self) -> Range:
        return (self.ext_offset, EXT_SIZE)

    def crypttext_tree_range(self) -> Range:
        return (self.crypttext_tree_offset, self.block_tree_offset - self.crypttext_tree_offset)

    def block_tree_range(self) -> Range:
        return (self.block_tree_offset, self.share_chain_offset - self.block_tree_offset)

    def share_chain_range(self) -> Range:
        return (self.share_chain_offset, self.ext_offset - self.share_chain_offset)

    def block_root_range(self) -> Range:
        """Node 0 of the block tree: this share's root, a leaf of the share tree."""
        return (self.block_tree_offset, HASH_BYTES)

    def block_uncle_ranges(self, j: int) -> list[Range]:
        """The uncle chain of block j, in chain order (concatenate what you read)."""
        ns = self.num_segments
        return [self._node(self.block_tree_offset, i) for i in hashtree.uncle_indices(ns, j)]

    def crypttext_proof_ranges(self, j: int) -> list[Range]:
        """Leaf node of segment j in the ciphertext tree, then its uncle chain."""
        ns = self.num_segments
        off = self.crypttext_tree_offset
        return [self._node(off, hashtree.leaf_index(ns, j))] + [
            self._node(off, i) for i in hashtree.uncle_indices(ns, j)
        ]

    def share_root_ranges(self) -> list[Range]:
        """What :meth:`FileVerifier.accept_share_root` needs: block root, then chain."""
        return [self.block_root_range(), self.share_chain_range()]

    def segment_ranges(self, j: int, *, with_crypttext_proof: bool) -> list[Range]:
        """Everything needed for segment j from this share, coalesced and sorted."""
        ranges = [self.block_range(j), *self.block_uncle_ranges(j)]
        if with_crypttext_proof:
            ranges += self.crypttext_proof_ranges(j)
        return coalesce(ranges)

    @staticmethod
    def _node(base: int, index: int) -> Range:
        return (base + index * HASH_BYTES, HASH_BYTES)


def coalesce(ranges: list[Range]) -> list[Range]:
    """Sort ranges and merge those that touch or overlap."""
    out: list[list[int]] = []
    for off, length in sorted(ranges):
        if out and off <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], off + length - out[-1][0])
        else:
            out.append([off, length])
    return [(o, n) for o, n in out]


def pick(fetched: list[tuple[int, bytes]], wanted: list[Range]) -> bytes:
    """Concatenate the ``wanted`` ranges (in the order given) out of ``fetched``
    pieces ``(offset, data)``, e.g. the answers to :func:`coalesce`'d reads. Raises
    ParameterError if a wanted range is not inside one fetched piece (short read)."""
    out = []
    for off, length in wanted:
        for base, data in fetched:
            if base <= off and off + length <= base + len(data):
                out.append(data[off - base : off - base + length])
                break
        else:
            raise ParameterError(f"range ({off}, {length}) was not fetched in full")
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class ShareHeader:
    """A parsed, untrusted share header: only sanity-checked, used to find the
    extension block."""

    share_number: int
    k: int
    n: int
    block_size: int
    tail_block_size: int
    num_segments: int
    crypttext_tree_offset: int
    block_tree_offset: int
    share_chain_offset: int
    ext_offset: int
    share_length: int

    @classmethod
    def parse(cls, data: bytes) -> ShareHeader:
        """Raises ParameterError naming what is wrong."""
        if len(data) < HEADER_SIZE:
            raise ParameterError(f"share header is {len(data)} bytes, expected {HEADER_SIZE}")
        fields = _HDR.unpack(bytes(data[:HEADER_SIZE]))
        magic, version, *rest = fields
        if magic != SHARE_MAGIC:
            raise ParameterError("share header: bad magic (not a p2pstore share)")
        if version != SHARE_VERSION:
            raise ParameterError(f"share header: unknown version {version}")
        h = cls(*rest)
        if not (0 <= h.share_number < h.n <= MAX_SHARES and 1 <= h.k <= h.n):
            raise ParameterError("share header: share number, k or N out of range")
        if not (
            HEADER_SIZE
            < h.crypttext_tree_offset
            < h.block_tree_offset
            < h.share_chain_offset
            <= h.ext_offset
        ):
            raise ParameterError("share header: section offsets are not increasing")
        if h.ext_offset + EXT_SIZE != h.share_length:
            raise ParameterError("share header: extension block does not end the share")
        return h

    def ext_range(self) -> Range:
        return (self.ext_offset, EXT_SIZE)
