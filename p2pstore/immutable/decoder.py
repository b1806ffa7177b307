"""Download-side verification and decoding (sans-I/O).

:class:`FileVerifier` checks bytes read from shares against a read or verify cap,
in this order per share: header (locates the extension block) -> extension block
(hash in the cap) -> header again (must equal the layout recomputed from the
verified extension block) -> share root (block-tree root + uncle chain up to the
share-tree root) -> blocks (uncle chain up to that share root). Each step that
fails raises :class:`BadShareError` naming the share, so the caller drops that share.

Invariants:
- Only :class:`VerifiedBlock` / :class:`VerifiedCrypttextLeaf` objects, which only
  the verifier creates, are accepted by the decoders; every decoded segment is also
  checked against the ciphertext hash tree before it is decrypted or returned.
- :class:`Decoder` returns plaintext strictly in order, trimmed to the requested
  range, holding at most ``max_pending`` out-of-order segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pstore.immutable import hashtree
from p2pstore.immutable.caps import ReadCap, VerifyCap
from p2pstore.immutable.crypto import (
    HASH_BYTES,
    TAG_BLOCK,
    TAG_SEGMENT,
    keystream_cipher,
    tagged_hash,
)
from p2pstore.immutable.errors import (
    BadShareError,
    CapError,
    InconsistentEncodingError,
    NotEnoughSharesError,
    ParameterError,
    UsageError,
)
from p2pstore.immutable.extension import ExtensionBlock, extension_hash
from p2pstore.immutable.gf256 import check_decoder
from p2pstore.immutable.share_layout import Range, ShareHeader, ShareLayout

#: a share chain is at most log2(256) hashes; a header claiming more is bad
_MAX_CHAIN = hashtree.tree_depth(256) * HASH_BYTES


@dataclass(frozen=True, slots=True)
class VerifiedBlock:
    """Block ``segment`` of share ``share_number``, verified against the cap."""

    share_number: int
    segment: int
    data: bytes


@dataclass(frozen=True, slots=True)
class VerifiedCrypttextLeaf:
    """The trusted ciphertext-tree leaf hash of ``segment``."""

    segment: int
    leaf: bytes


class FileVerifier:
    """Verifies shares of one file against its cap (read or verify cap)."""

    def __init__(self, cap: ReadCap | VerifyCap) -> None:
        self._read_cap = cap if isinstance(cap, ReadCap) else None
        self.cap: VerifyCap = cap.verify_cap()
        self._ext: ExtensionBlock | None = None
        self._roots: dict[int, bytes] = {}

    # -- extension block ------------------------------------------------------------
    def locate_extension(self, share_number: int, header: bytes) -> Range:
        """Parse an untrusted header; returns the (offset, length) of its extension
        block copy."""
        return self._parse_header(share_number, header).ext_range()

    def locate_pieces(self, share_number: int, header: bytes) -> list[Range]:
        """Parse an untrusted header; where its extension block copy, block-tree root
        and share chain are, to read at once (``accept_extension``, then
        ``check_header`` proves the offsets, then ``accept_share_root``)."""
        h = self._parse_header(share_number, header)
        chain_len = h.ext_offset - h.share_chain_offset
        if not 0 <= chain_len <= _MAX_CHAIN:
            raise BadShareError(share_number, "share chain length out of range")
        return [h.ext_range(), (h.block_tree_offset, HASH_BYTES), (h.share_chain_offset, chain_len)]

    def _parse_header(self, share_number: int, header: bytes) -> ShareHeader:
        """An untrusted header, sanity-checked against this share and the cap."""
        self._check_share_number(share_number)
        try:
            h = ShareHeader.parse(header)
        except ParameterError as e:
            raise BadShareError(share_number, str(e)) from None
        if h.share_number != share_number:
            raise BadShareError(share_number, f"header claims to be share {h.share_number}")
        if (h.k, h.n) != (self.cap.k, self.cap.n):
            raise BadShareError(share_number, f"header says {h.k}-of-{h.n}")
        return h

    def accept_extension(self, share_number: int, data: bytes) -> ExtensionBlock:
        """Verify an extension block copy against the cap (the first good one is kept)."""
        if extension_hash(data) != self.cap.ext_hash:
            raise BadShareError(share_number, "extension block does not match the cap's hash")
        if self._ext is not None:
            return self._ext
        try:
            ext = ExtensionBlock.from_bytes(data)
        except ParameterError as e:  # hash matched: the uploader wrote a bad block
            raise CapError("extension hash", f"names an invalid extension block: {e}") from None
        cap = self.cap
        for name, ours, theirs in (
            ("k", cap.k, ext.params.k),
            ("N", cap.n, ext.params.n),
            ("size", cap.size, ext.size),
        ):
            if ours != theirs:
                raise CapError(name, f"cap says {ours}, the extension block says {theirs}")
        if ext.storage_index != cap.storage_index:
            field = "key" if self._read_cap is not None else "storage index"
            raise CapError(field, "does not match the storage index in the extension block")
        self._ext = ext
        return ext

    @property
    def extension(self) -> ExtensionBlock:
        if self._ext is None:
            raise UsageError("no extension block accepted yet")
        return self._ext

    def layout(self, share_number: int) -> ShareLayout:
        self._check_share_number(share_number)
        return ShareLayout.from_extension(self.extension, share_number)

    def check_header(self, share_number: int, header: bytes) -> ShareLayout:
        """The header must equal the one recomputed from the verified extension block."""
        layout = self.layout(share_number)
        if bytes(header[: len(layout.header_bytes())]) != layout.header_bytes():
            raise BadShareError(share_number, "header disagrees with the extension block")
        return layout

    # -- share roots and blocks -----------------------------------------------------
    def accept_share_root(self, share_number: int, block_root: bytes, chain: bytes) -> None:
        """Verify share ``share_number``'s block-tree root via its share-tree chain."""
        ext = self.extension
        self._check_share_number(share_number)
        if len(block_root) != HASH_BYTES:
            raise BadShareError(share_number, "short read of the block-tree root")
        try:
            root = hashtree.root_from_chain(block_root, ext.params.n, share_number, chain)
        except ParameterError as e:
            raise BadShareError(share_number, f"share hash chain: {e}") from None
        if root != ext.share_tree_root:
            raise BadShareError(share_number, "share hash chain does not lead to the root")
        self._roots[share_number] = bytes(block_root)

    def has_share_root(self, share_number: int) -> bool:
        return share_number in self._roots

    def verify_block(
        self, share_number: int, segment: int, block: bytes, uncles: bytes
    ) -> VerifiedBlock:
        root = self._roots.get(share_number)
        if root is None:
            raise UsageError(f"share {share_number}: accept_share_root() first")
        g = self.extension.geometry
        try:
            want = g.block_size_of(segment)
        except ParameterError as e:
            raise UsageError(str(e)) from None
        if len(block) != want:
            raise BadShareError(
                share_number, f"block is {len(block)} bytes, expected {want}", segment=segment
            )
        leaf = tagged_hash(TAG_BLOCK, block)
        try:
            got = hashtree.root_from_chain(leaf, g.num_segments, segment, uncles)
        except ParameterError as e:
            raise BadShareError(share_number, f"block uncles: {e}", segment=segment) from None
        if got != root:
            raise BadShareError(share_number, "block fails its hash check", segment=segment)
        return VerifiedBlock(share_number, segment, bytes(block))

    def verify_crypttext_proof(
        self, share_number: int, segment: int, proof: bytes
    ) -> VerifiedCrypttextLeaf:
        """``proof`` = leaf node then uncle chain, as read from
        :meth:`ShareLayout.crypttext_proof_ranges` of share ``share_number``."""
        ext = self.extension
        leaf, chain = bytes(proof[:HASH_BYTES]), bytes(proof[HASH_BYTES:])
        try:
            if len(leaf) != HASH_BYTES:
                raise ParameterError("short leaf")
            root = hashtree.root_from_chain(leaf, ext.geometry.num_segments, segment, chain)
        except ParameterError as e:
            raise BadShareError(share_number, f"ciphertext tree: {e}", segment=segment) from None
        if root != ext.crypttext_root:
            raise BadShareError(
                share_number, "ciphertext hash tree nodes are corrupt", segment=segment
            )
        return VerifiedCrypttextLeaf(segment, leaf)

    def _check_share_number(self, share_number: int) -> None:
        if not 0 <= share_number < self.cap.n:
            raise UsageError(f"share number {share_number} out of range 0..{self.cap.n - 1}")


class SegmentDecoder:
    """Decodes k verified blocks of a segment into verified ciphertext (no key)."""

    def __init__(self, verifier: FileVerifier) -> None:
        self.verifier = verifier
        ext = verifier.extension
        self._ext = ext
        self._fec = check_decoder(ext.params.k, ext.params.n)

    def decode(self, blocks: Sequence[VerifiedBlock], leaf: VerifiedCrypttextLeaf) -> bytes:
        k = self._ext.params.k
        j = leaf.segment
        chosen: dict[int, bytes] = {}
        for b in blocks:
            if not isinstance(b, VerifiedBlock):
                raise UsageError("decode() takes VerifiedBlock objects from FileVerifier")
            if b.segment != j:
                raise UsageError(f"block of segment {b.segment} given for segment {j}")
            if len(chosen) < k:
                chosen.setdefault(b.share_number, b.data)
        if len(chosen) < k:
            raise NotEnoughSharesError(need=k, have=len(chosen), segment=j)
        nums = tuple(sorted(chosen))
        if nums == tuple(range(k)):
            padded = b"".join(chosen[i] for i in nums)
        else:
            padded = b"".join(self._fec.decode(tuple(chosen[i] for i in nums), nums))
        ciphertext = padded[: self._ext.geometry.segment_size_of(j)]
        if tagged_hash(TAG_SEGMENT, ciphertext) != leaf.leaf:
            raise InconsistentEncodingError(j, nums)
        return ciphertext


class Decoder:
    """Plaintext decoder for a read cap over the byte range ``[offset, offset+length)``.

    Give it the segments listed in :attr:`segments` (any order within a window of
    ``max_pending``); :meth:`add_segment` returns the plaintext now deliverable in
    order.
    """

    def __init__(
        self,
        cap: ReadCap,
        verifier: FileVerifier,
        *,
        offset: int = 0,
        length: int | None = None,
        max_pending: int = 4,
    ) -> None:
        if verifier.cap != cap.verify_cap():
            raise UsageError("verifier belongs to another cap")
        self._key = cap.key
        self._seg = SegmentDecoder(verifier)
        g = verifier.extension.geometry
        self._g = g
        if length is None:
            length = max(0, g.size - offset)
        self.segments = g.segments_for_range(offset, length)
        self._start = offset
        self._end = min(g.size, offset + length)
        self._next = self.segments.start
        self._pending: dict[int, bytes] = {}
        self._max_pending = max_pending

    @property
    def done(self) -> bool:
        return self._next >= self.segments.stop

    @property
    def next_segment(self) -> int:
        return self._next

    def add_segment(
        self, blocks: Sequence[VerifiedBlock], leaf: VerifiedCrypttextLeaf
    ) -> list[bytes]:
        j = leaf.segment
        if j not in self.segments or j < self._next or j in self._pending:
            raise UsageError(f"segment {j} is not wanted (next is {self._next})")
        if j >= self._next + self._max_pending:
            raise UsageError(f"segment {j} is too far ahead of {self._next}")
        self._pending[j] = self._seg.decode(blocks, leaf)
        out: list[bytes] = []
        while self._next in self._pending:
            out.append(self._plaintext(self._next, self._pending.pop(self._next)))
            self._next += 1
        return out

    def _plaintext(self, j: int, ciphertext: bytes) -> bytes:
        seg_off = self._g.segment_offset(j)
        lo = max(self._start, seg_off) - seg_off
        hi = min(self._end, seg_off + len(ciphertext)) - seg_off
        part = ciphertext if (lo, hi) == (0, len(ciphertext)) else ciphertext[lo:hi]
        return keystream_cipher(self._key, seg_off + lo).update(part)
