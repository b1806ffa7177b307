"""A synchronous reference driver over the sans-I/O pieces: read, verify, repair.

It reads share bytes through the small :class:`ShareSource` protocol (an in-memory
dict in tests; the grid's downloader follows the same sequence asynchronously). A
source that also has ``readv`` (:class:`RangesSource`) gets the several ranges of
one step in one call: a segment's ciphertext proof, each share's block with its
uncles, a run of blocks when a whole share is checked; with an ``executor``, the k
shares of a segment are read at once. Over a network that is a round trip or two
per segment instead of one per range (repair and verify read this way).

Invariants:
- A share that cannot be read, or fails a check of the whole share, is dropped for
  the rest of the operation and the work continues with the remaining shares. A
  share whose block or ciphertext proof fails at one segment is passed over at that
  segment only, after the shares never found bad: one damaged block costs its share
  that segment, and whether a segment can be rebuilt does not depend on the order in
  which reads of other segments finished (repair reads several segments at once).
  :class:`NotEnoughSharesError` is raised (listing the shares found bad) only when
  fewer than k shares give a good block of a segment.
- Memory is bounded by a few segments: shares are read by range, never whole
  (checking whole shares: runs of at most 4 MiB or 256 blocks per share being
  checked).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from p2pstore.immutable import hashtree
from p2pstore.immutable.caps import LiteralCap, ReadCap, VerifyCap
from p2pstore.immutable.crypto import HASH_BYTES, TAG_BLOCK, tagged_hash
from p2pstore.immutable.decoder import (
    Decoder,
    FileVerifier,
    SegmentDecoder,
    VerifiedBlock,
    VerifiedCrypttextLeaf,
)
from p2pstore.immutable.encoder import EncodedSegment, SegmentCoder, ShareTrailer
from p2pstore.immutable.errors import (
    BadShareError,
    NotEnoughSharesError,
    ParameterError,
    RemoteError,
)
from p2pstore.immutable.share_layout import HEADER_SIZE, Range

#: segments fetched ahead of the one being regenerated (``regenerate_shares`` with an
#: executor; give it (k + 1) x this many threads for all their reads to run at once)
READ_AHEAD = 4

#: Tree nodes per read when checking whole shares (128 KiB), bounding memory.
_CHECK_CHUNK = 4096
#: Block bytes, and blocks, asked for in one ``readv`` when checking a whole share
#: (a run of small blocks stays a few calls of the servers' 64 ranges each).
_BLOCK_BATCH = 4 << 20
_BLOCK_RUN = 256


class ShareSource(Protocol):
    """Reads ``length`` bytes at ``offset`` of a share; may return fewer at the end
    or raise :class:`RemoteError` if the share is unavailable."""

    def read(self, share_number: int, offset: int, length: int) -> bytes: ...


class RangesSource(ShareSource, Protocol):
    """A :class:`ShareSource` that also reads several ranges of one share in one call
    (each answer exactly as long as asked, or a short one at the end)."""

    def readv(self, share_number: int, ranges: Sequence[Range]) -> list[bytes]: ...


@dataclass
class MemoryShares:
    """A :class:`ShareSource` over complete shares held in memory."""

    shares: Mapping[int, bytes]

    def read(self, share_number: int, offset: int, length: int) -> bytes:
        data = self.shares.get(share_number)
        if data is None:
            raise RemoteError(f"share {share_number} is not available")
        return data[offset : offset + length]


@dataclass
class _Session:
    verifier: FileVerifier
    source: ShareSource
    good: list[int]
    bad: dict[int, str] = field(default_factory=dict)
    #: share -> the segments at which its block or proof failed (it stays in ``good``)
    bad_at: dict[int, set[int]] = field(default_factory=dict)
    #: guards the three above (several segments may be fetched at once)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drop(self, e: BadShareError) -> None:
        """Share ``e.share_number`` is not used again."""
        with self.lock:
            if e.share_number in self.good:
                self.good.remove(e.share_number)
            self.bad[e.share_number] = e.reason

    def drop_at(self, e: BadShareError) -> None:
        """A failure while reading a segment: the share is passed over at the segment
        that failed its check (``e.segment``), dropped if it failed as a whole."""
        if e.segment is None:
            self.drop(e)
            return
        with self.lock:
            self.bad_at.setdefault(e.share_number, set()).add(e.segment)
            self.bad[e.share_number] = e.reason

    def usable(self, segment: int) -> tuple[list[int], tuple[int, ...]]:
        """The shares to read ``segment`` from, those never found bad first, and the
        numbers of the shares found bad so far: a consistent copy."""
        with self.lock:
            fine = [i for i in self.good if i not in self.bad_at]
            once = [i for i in self.good if i in self.bad_at and segment not in self.bad_at[i]]
            return fine + once, tuple(sorted(self.bad))

    def read(self, share: int, r: Range) -> bytes:
        try:
            data = self.source.read(share, r[0], r[1])
        except BadShareError:
            raise
        except RemoteError as e:  # unavailable mid-read: drop this share, keep going
            raise BadShareError(share, f"read failed: {e}") from None
        if len(data) != r[1]:
            raise BadShareError(share, f"short read at offset {r[0]}")
        return data

    def read_many(self, share: int, ranges: Sequence[Range]) -> list[bytes]:
        """Each of ``ranges``, in one call where the source can (``readv``)."""
        readv = getattr(self.source, "readv", None)
        if readv is None or len(ranges) < 2:
            return [self.read(share, r) for r in ranges]
        try:
            got: list[bytes] = readv(share, list(ranges))
        except BadShareError:
            raise
        except RemoteError as e:
            raise BadShareError(share, f"read failed: {e}") from None
        if len(got) != len(ranges):
            raise BadShareError(share, f"{len(got)} answers to {len(ranges)} reads")
        for (off, length), data in zip(ranges, got, strict=True):
            if len(data) != length:
                raise BadShareError(share, f"short read at offset {off}")
        return got

    def read_all(self, share: int, ranges: Sequence[Range]) -> bytes:
        return b"".join(self.read_many(share, ranges))


def open_shares(
    cap: ReadCap | VerifyCap,
    source: ShareSource,
    share_numbers: Iterable[int],
    *,
    need: int | None = None,
    executor: Executor | None = None,
) -> _Session:
    """Verify the extension block and share roots of every candidate share; at least
    ``need`` (default k) must pass. With ``executor``, the shares are opened at once
    (threads only add to the verifier's state, each its own share root, or set its
    extension block, which every copy that passes the cap's hash makes equal, maybe
    more than once); the session's lists are changed here, in share order."""
    verifier = FileVerifier(cap)
    s = _Session(verifier, source, [])

    def open_one(i: int) -> BadShareError | RemoteError | None:
        try:
            header = s.read(i, (0, HEADER_SIZE))
            ext, root, chain = s.read_many(i, verifier.locate_pieces(i, header))
            verifier.accept_extension(i, ext)
            verifier.check_header(i, header)  # the offsets just used were right
            verifier.accept_share_root(i, root, chain)
        except (BadShareError, RemoteError) as e:
            return e
        return None

    nums = [i for i in sorted(set(share_numbers)) if 0 <= i < cap.n]
    outcomes = list(executor.map(open_one, nums) if executor else map(open_one, nums))
    for i, failed in zip(nums, outcomes, strict=True):
        if failed is None:
            s.good.append(i)
        elif isinstance(failed, BadShareError):
            s.drop(failed)
        else:
            s.bad[i] = str(failed)
    want = cap.k if need is None else need
    if len(s.good) < want:
        raise NotEnoughSharesError(need=want, have=len(s.good), bad=tuple(sorted(s.bad)))
    return s


def _fetch_segment(
    s: _Session, j: int, executor: Executor | None
) -> tuple[list[VerifiedBlock], VerifiedCrypttextLeaf]:
    """k verified blocks of segment j (from distinct shares) and its ciphertext leaf;
    with ``executor``, the leaf's proof is read alongside the blocks."""
    k = s.verifier.cap.k

    def proof_of(i: int) -> VerifiedCrypttextLeaf:
        proof = s.read_all(i, s.verifier.layout(i).crypttext_proof_ranges(j))
        return s.verifier.verify_crypttext_proof(i, j, proof)

    good, _ = s.usable(j)
    early = executor.submit(proof_of, good[0]) if executor is not None and good else None
    proof_tried = set(good[:1]) if early is not None else set()

    def check(i: int) -> VerifiedBlock | BadShareError:
        try:
            layout = s.verifier.layout(i)
            block, *uncles = s.read_many(i, [layout.block_range(j), *layout.block_uncle_ranges(j)])
            return s.verifier.verify_block(i, j, block, b"".join(uncles))
        except BadShareError as e:
            return e

    blocks: list[VerifiedBlock] = []
    tried: set[int] = set()
    try:
        while len(blocks) < k:
            good, bad = s.usable(j)
            want = [i for i in good if i not in tried][: k - len(blocks)]
            if len(want) < k - len(blocks):
                raise NotEnoughSharesError(need=k, have=len(blocks) + len(want), segment=j, bad=bad)
            tried.update(want)
            results = list(executor.map(check, want)) if executor else [check(i) for i in want]
            for r in results:
                if isinstance(r, BadShareError):
                    s.drop_at(r)
                else:
                    blocks.append(r)
    finally:
        if early is not None:
            # never left running against the session. Not ``wait([early])``: a pool
            # shut down with its queue cancelled cancels the read without telling
            # ``wait``'s waiters, and the thread would wait for ever
            with contextlib.suppress(CancelledError):
                early.exception()
    leaf: VerifiedCrypttextLeaf | None = None
    while leaf is None:
        try:
            if early is not None:
                leaf = early.result()  # a verified leaf, whatever became of its share
            else:
                good, bad = s.usable(j)
                left = [i for i in good if i not in proof_tried]
                if not left:
                    raise NotEnoughSharesError(need=k, have=0, segment=j, bad=bad)
                proof_tried.add(left[0])
                leaf = proof_of(left[0])
        except BadShareError as e:
            s.drop_at(e)
        early = None
    return blocks, leaf


def _segments_ahead(
    s: _Session, count: int, executor: Executor | None
) -> Iterator[tuple[list[VerifiedBlock], VerifiedCrypttextLeaf]]:
    """Each of the ``count`` segments' blocks and leaf, in order. With ``executor``,
    the next :data:`READ_AHEAD` segments are fetched (each by a thread of its own,
    which hands its reads to ``executor``) while the caller works on this one: over
    a link the round trips of several segments overlap. The fetches share the
    session's lists under its lock; the verifier's checks change nothing; the
    decoding and coding the caller does meanwhile touch neither. A share whose block
    fails at a segment read ahead is passed over at that segment only (``drop_at``),
    so the segments before it are read as they would be in order. Fetches still
    running when the caller stops are left to finish on their own (a source that
    was stopped fails their next read)."""
    if executor is None or count == 0:
        for j in range(count):
            yield _fetch_segment(s, j, None)
        return
    driver = ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="p2ps-read-ahead")
    try:
        ahead = deque(
            driver.submit(_fetch_segment, s, j, executor) for j in range(min(READ_AHEAD, count))
        )
        for j in range(count):
            got = ahead.popleft().result()
            if j + READ_AHEAD < count:
                ahead.append(driver.submit(_fetch_segment, s, j + READ_AHEAD, executor))
            yield got
    finally:
        driver.shutdown(wait=False, cancel_futures=True)


def read_ciphertext(
    cap: ReadCap | VerifyCap,
    source: ShareSource,
    share_numbers: Iterable[int],
    *,
    executor: Executor | None = None,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(segment, verified ciphertext)`` for every segment (verify-cap path)."""
    s = open_shares(cap, source, share_numbers)
    dec = SegmentDecoder(s.verifier)
    for j in range(s.verifier.extension.geometry.num_segments):
        blocks, leaf = _fetch_segment(s, j, executor)
        yield j, dec.decode(blocks, leaf)


def read_plaintext(
    cap: ReadCap | LiteralCap,
    source: ShareSource,
    share_numbers: Iterable[int],
    *,
    offset: int = 0,
    length: int | None = None,
    executor: Executor | None = None,
) -> Iterator[bytes]:
    """Yield the plaintext of ``[offset, offset+length)`` in order, verified."""
    if offset < 0 or (length is not None and length < 0):
        raise ParameterError(f"bad range: offset {offset}, length {length}")
    if isinstance(cap, LiteralCap):
        end = len(cap.data) if length is None else offset + length
        if cap.data[offset:end]:
            yield cap.data[offset:end]
        return
    s = open_shares(cap, source, share_numbers)
    dec = Decoder(cap, s.verifier, offset=offset, length=length)
    for j in dec.segments:
        blocks, leaf = _fetch_segment(s, j, executor)
        yield from dec.add_segment(blocks, leaf)


def read_bytes(
    cap: ReadCap | LiteralCap,
    shares: Mapping[int, bytes],
    *,
    offset: int = 0,
    length: int | None = None,
) -> bytes:
    """Convenience: the whole (or a range of the) plaintext from in-memory shares."""
    src = MemoryShares(shares)
    return b"".join(read_plaintext(cap, src, shares.keys(), offset=offset, length=length))


def _check_whole_share(s: _Session, i: int) -> None:
    ext = s.verifier.extension
    ns = ext.geometry.num_segments
    slots = hashtree.next_power_of_two(ns)
    layout = s.verifier.layout(i)

    def reader(base: int) -> Callable[[int, int], bytes]:
        return lambda first, count: s.read(i, (base + first * HASH_BYTES, count * HASH_BYTES))

    ct_nodes = reader(layout.crypttext_tree_offset)
    bt_nodes = reader(layout.block_tree_offset)
    if not hashtree.check_tree_chunked(ct_nodes, ns, ext.crypttext_root, _CHECK_CHUNK):
        raise BadShareError(i, "ciphertext hash tree is corrupt")
    root = s.read(i, layout.block_root_range())
    if not hashtree.check_tree_chunked(bt_nodes, ns, root, _CHECK_CHUNK):
        raise BadShareError(i, "block hash tree is corrupt")
    batch = max(1, min(_BLOCK_BATCH // max(1, ext.params.block_size), _BLOCK_RUN))
    for first in range(0, ns, _CHECK_CHUNK):
        count = min(_CHECK_CHUNK, ns - first)
        leaves = bt_nodes(slots - 1 + first, count)
        for start in range(first, first + count, batch):
            run = range(start, min(start + batch, first + count))
            blocks = s.read_many(i, [layout.block_range(j) for j in run])
            for j, block in zip(run, blocks, strict=True):
                x = (j - first) * HASH_BYTES
                if tagged_hash(TAG_BLOCK, block) != leaves[x : x + HASH_BYTES]:
                    raise BadShareError(i, "block fails its hash check", segment=j)
    if len(s.source.read(i, layout.share_length, 1)) != 0:
        raise BadShareError(i, "share is longer than its layout")


def check_shares(
    cap: ReadCap | VerifyCap,
    source: ShareSource,
    share_numbers: Iterable[int],
    *,
    alone: bool = False,
    executor: Executor | None = None,
) -> dict[int, str | None]:
    """Verify every byte of every candidate share against the cap (no decryption):
    header, extension copy, share chain, both whole hash trees (read in chunks, so
    memory stays bounded whatever the file size) and every block. With ``alone``,
    fewer than k shares can be checked (a holder scrubbing the shares it holds);
    with ``executor``, several shares are checked at once.
    Returns, per share number, None if the share is intact or why it is not."""
    nums = sorted(set(share_numbers))
    report: dict[int, str | None] = {}
    try:
        s = open_shares(cap, source, nums, need=1 if alone else None, executor=executor)
    except NotEnoughSharesError:
        s = None
    if s is None or not s.good:
        # no verified extension block: every share is bad or missing
        for i in nums:
            report[i] = "cannot verify: fewer than k shares have a valid extension block"
        return report

    def check(i: int) -> BadShareError | None:
        try:
            _check_whole_share(s, i)
        except BadShareError as e:
            return e
        return None

    good = list(s.good)
    for failed in executor.map(check, good) if executor else map(check, good):
        if failed is not None:
            s.drop(failed)
    for i in nums:
        report[i] = None if i in s.good else s.bad.get(i, "missing")
    return report


def regenerate_shares(
    cap: ReadCap | VerifyCap,
    source: ShareSource,
    share_numbers: Iterable[int],
    *,
    executor: Executor | None = None,
) -> Generator[EncodedSegment | tuple[ShareTrailer, ...], None, None]:
    """Re-encode verified ciphertext from any k good shares (no read key needed);
    with ``executor``, each segment's k shares are read at once, and the next
    :data:`READ_AHEAD` segments' reads run while this one is re-encoded and handed
    over (over a link a segment then costs its transfer, not also a round trip).

    Yields every segment's blocks for all N shares (the caller keeps those it is
    replacing), then the tuple of N trailers. Raises before yielding the trailers if
    the re-encoding does not reproduce the extension block, so a repaired share is
    never completed unless it is byte-identical to the original.
    """
    s = open_shares(cap, source, share_numbers, executor=executor)
    ext = s.verifier.extension
    dec = SegmentDecoder(s.verifier)
    coder = SegmentCoder(ext.params)
    for blocks, leaf in _segments_ahead(s, ext.geometry.num_segments, executor):
        yield coder.code(dec.decode(blocks, leaf))
    new_ext, trailers = coder.finish(ext.storage_index)
    if new_ext != ext:
        raise RemoteError("re-encoding does not reproduce the extension block")
    yield trailers
