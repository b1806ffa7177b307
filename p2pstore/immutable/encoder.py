"""Streaming encoder: plaintext chunks in, per-share blocks and trailers out.

Invariants:
- Memory is bounded by about one segment of buffered plaintext plus one encoded
  segment (``N/k`` times its size), plus 32 bytes per segment per share of hash-tree
  leaves (kept until the trailers are built).
- Blocks of segment j go to offset ``72 + j*block_size`` of every share; the
  trailers (hash trees, share chain, extension copy) and the header are produced by
  :meth:`Encoder.finish`, so an uploader can stream without knowing the file size.
- A file of at most LITERAL_MAX bytes yields no segments and a literal cap; no
  segment is emitted before more than LITERAL_MAX bytes have been fed.
- Given the same key, parameters and plaintext, output is byte-for-byte identical
  (zfec is deterministic, and the SIMD kernel of gf256.py is zfec byte for byte),
  so a repairer regenerates shares exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from p2pstore.immutable import hashtree
from p2pstore.immutable.caps import LiteralCap, ReadCap, VerifyCap
from p2pstore.immutable.crypto import (
    TAG_BLOCK,
    TAG_SEGMENT,
    ConvergenceHasher,
    keystream_cipher,
    random_key,
    storage_index,
    tagged_hash,
)
from p2pstore.immutable.errors import ParameterError, UsageError
from p2pstore.immutable.extension import ExtensionBlock
from p2pstore.immutable.gf256 import SimdEncoder, check_encoder
from p2pstore.immutable.params import LITERAL_MAX, MAX_FILE_SIZE, EncodingParams, SegmentGeometry
from p2pstore.immutable.share_layout import HEADER_SIZE, ShareLayout


@dataclass(frozen=True, slots=True)
class EncodedSegment:
    """Segment ``index``: ``blocks[i]`` is written to share i at ``share_offset``."""

    index: int
    share_offset: int
    blocks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ShareTrailer:
    """What to write to share ``share_number`` once all blocks are written:
    ``trailer`` at ``trailer_offset`` and ``header`` at offset 0."""

    share_number: int
    trailer_offset: int
    trailer: bytes
    header: bytes
    share_length: int


@dataclass(frozen=True, slots=True)
class EncodeResult:
    """Returned by :meth:`Encoder.finish`. Write ``segments`` (the last ones), then
    ``trailers``. For a literal cap both are empty and ``extension`` is None."""

    cap: ReadCap | LiteralCap | VerifyCap  # VerifyCap from a CiphertextEncoder
    segments: tuple[EncodedSegment, ...]
    trailers: tuple[ShareTrailer, ...]
    extension: ExtensionBlock | None


class SegmentCoder:
    """Erasure codes ciphertext segments and collects the hash-tree leaves.

    Shared by :class:`Encoder` (plaintext in) and the repairer (verified ciphertext
    in). With an ``executor`` half of the zfec check blocks and their hashes are
    computed on a worker thread (zfec and hashlib release the GIL).
    """

    def __init__(self, params: EncodingParams, *, executor: Executor | None = None) -> None:
        self.params = params
        self._fec = check_encoder(params.k, params.n)
        self._executor = executor
        self.crypttext_leaves: list[bytes] = []
        self.block_leaves: list[list[bytes]] = [[] for _ in range(params.n)]
        self.size = 0
        # Split the check blocks between this thread (which also hashes the k
        # primaries and the ciphertext, k block hashes each) and the worker so both
        # finish together. A check block costs its hash plus its coding: ~3.6 block
        # hashes through zfec, ~1.1 through the SIMD kernel (measured).
        checks = list(range(params.k, params.n))
        per_check = 1.1 if isinstance(self._fec, SimdEncoder) else 3.6
        mine = round((len(checks) * per_check - 2 * params.k) / (2 * per_check))
        mine = min(len(checks), max(0, mine))
        self._checks_a = tuple(checks[:mine])
        self._checks_b = tuple(checks[mine:])

    def code(self, ciphertext: bytes) -> EncodedSegment:
        """Encode the next segment (full size, except possibly the last)."""
        p = self.params
        j = len(self.crypttext_leaves)
        if not 0 < len(ciphertext) <= p.segment_size:
            raise UsageError(f"segment of {len(ciphertext)} bytes (max {p.segment_size})")
        if self.size % p.segment_size:
            raise UsageError("a short segment must be the last one")
        self.size += len(ciphertext)
        bs = -(-len(ciphertext) // p.k)
        padded = (
            ciphertext + bytes(bs * p.k - len(ciphertext))
            if bs * p.k > len(ciphertext)
            else ciphertext
        )
        primaries = tuple(padded[i * bs : (i + 1) * bs] for i in range(p.k))

        def checks(nums: tuple[int, ...]) -> tuple[list[bytes], list[bytes]]:
            if not nums:
                return [], []
            out = self._fec.encode(primaries, nums)
            return out, [tagged_hash(TAG_BLOCK, b) for b in out]

        fut: Future[tuple[list[bytes], list[bytes]]] | None = None
        if self._executor is not None and self._checks_b:
            fut = self._executor.submit(checks, self._checks_b)
            a_blocks, a_hashes = checks(self._checks_a)
        else:
            a_blocks, a_hashes = checks(self._checks_a + self._checks_b)
        prim_hashes = [tagged_hash(TAG_BLOCK, b) for b in primaries]
        self.crypttext_leaves.append(tagged_hash(TAG_SEGMENT, ciphertext))
        if fut is not None:
            b_blocks, b_hashes = fut.result()
            a_blocks += b_blocks
            a_hashes += b_hashes
        blocks = primaries + tuple(a_blocks)
        for i, h in enumerate(prim_hashes + a_hashes):
            self.block_leaves[i].append(h)
        return EncodedSegment(j, HEADER_SIZE + j * p.block_size, blocks)

    def finish(self, si: bytes) -> tuple[ExtensionBlock, tuple[ShareTrailer, ...]]:
        """Build the hash trees, the extension block and every share's trailer."""
        p = self.params
        geometry = SegmentGeometry(p, self.size)
        ns = geometry.num_segments
        assert len(self.crypttext_leaves) == ns
        ct_nodes = hashtree.build_tree(self.crypttext_leaves)
        ct_tree = b"".join(ct_nodes)
        block_trees = [hashtree.build_tree(leaves) for leaves in self.block_leaves]
        share_tree = hashtree.build_tree([t[0] for t in block_trees])
        ext = ExtensionBlock(p, self.size, si, share_tree[0], ct_nodes[0])
        ext_bytes = ext.to_bytes()
        trailers = []
        for i, tree in enumerate(block_trees):
            layout = ShareLayout.for_share(geometry, i)
            chain = hashtree.uncle_chain(share_tree, p.n, i)
            trailer = ct_tree + b"".join(tree) + chain + ext_bytes
            assert layout.trailer_offset + len(trailer) == layout.share_length
            trailers.append(
                ShareTrailer(
                    i, layout.trailer_offset, trailer, layout.header_bytes(), layout.share_length
                )
            )
        return ext, tuple(trailers)


class Encoder:
    """Encrypts and encodes one file streamed in chunks.

    ``feed`` returns the segments completed so far; ``finish`` returns the rest, the
    trailers and the cap. Use :meth:`convergent` / :meth:`with_random_key` or pass a
    key. The key is never exposed in reprs.
    """

    def __init__(
        self,
        key: bytes,
        params: EncodingParams | None = None,
        *,
        executor: Executor | None = None,
        expected_size: int | None = None,
        recheck: ConvergenceHasher | None = None,
    ) -> None:
        """``recheck``, a fresh hasher with the convergence secret and ``params``,
        hashes the bytes fed: ``finish`` then refuses a second pass whose bytes give
        another key than ``key`` (a file rewritten between the passes)."""
        self.params = params or EncodingParams()
        self._key = key
        self._recheck = recheck
        self._si = storage_index(key)
        self._cipher = keystream_cipher(key, 0)
        self._coder = SegmentCoder(self.params, executor=executor)
        self._buf = bytearray()
        self._total = 0
        self._expected = expected_size
        self._finished = False

    @classmethod
    def with_random_key(
        cls, params: EncodingParams | None = None, *, executor: Executor | None = None
    ) -> Encoder:
        """One-pass mode, for input that cannot be read twice."""
        return cls(random_key(), params, executor=executor)

    @classmethod
    def convergent(
        cls,
        secret: bytes,
        plaintext_chunks: Iterable[bytes | memoryview],
        params: EncodingParams | None = None,
        *,
        executor: Executor | None = None,
    ) -> Encoder:
        """Hash a first pass of the plaintext into the convergent key. Feed the same
        bytes again afterwards; ``finish`` refuses a second pass of another size."""
        params = params or EncodingParams()
        h = ConvergenceHasher(secret, params)
        for chunk in plaintext_chunks:
            h.update(chunk)
        return cls(h.key(), params, executor=executor, expected_size=h.size)

    @property
    def storage_index(self) -> bytes:
        return self._si

    def block_hash(self, share: int, segment: int) -> bytes:
        """The hash-tree leaf of ``share``'s block of ``segment`` (encoded already):
        what a re-encoded copy of that block must hash to."""
        return self._coder.block_leaves[share][segment]

    def feed(self, data: bytes | bytearray | memoryview) -> list[EncodedSegment]:
        """Take the next plaintext chunk; returns the segments it completed. The
        chunk is not retained beyond this call (a partial segment is copied)."""
        if self._finished:
            raise UsageError("feed() after finish()")
        if self._total + len(data) > MAX_FILE_SIZE:
            raise ParameterError(f"file exceeds the maximum size {MAX_FILE_SIZE}")
        self._total += len(data)
        if self._recheck is not None:
            self._recheck.update(data)
        out: list[EncodedSegment] = []
        if self._total <= LITERAL_MAX:
            self._buf += data
            return out
        s = self.params.segment_size
        view = memoryview(data).cast("B")
        try:
            if self._buf:  # complete the buffered segment(s) first
                take = min((-len(self._buf)) % s, len(view))
                self._buf += view[:take]
                view = view[take:]
                full = len(self._buf) - len(self._buf) % s  # >s only after literal hold-back
                if full:
                    with memoryview(self._buf) as buf:
                        for i in range(0, full, s):
                            out.append(self._coder.code(self._cipher.update(buf[i : i + s])))
                    del self._buf[:full]
            # whole segments straight from the caller's buffer, without a copy
            while len(view) >= s:
                out.append(self._coder.code(self._cipher.update(view[:s])))
                view = view[s:]
            self._buf += view
        finally:
            view.release()
        return out

    def finish(self) -> EncodeResult:
        if self._finished:
            raise UsageError("finish() called twice")
        self._finished = True
        if self._expected is not None and self._expected != self._total:
            raise UsageError(
                f"convergent key was computed over {self._expected} bytes but "
                f"{self._total} were fed"
            )
        if self._recheck is not None and self._recheck.key() != self._key:
            raise UsageError(
                "the file changed while it was uploaded: its bytes differ from the first "
                "read, which gave the key; nothing was kept (upload it again once it is "
                "not being written)"
            )
        if self._total <= LITERAL_MAX:
            return EncodeResult(LiteralCap(bytes(self._buf)), (), (), None)
        segs: tuple[EncodedSegment, ...] = ()
        if self._buf:
            segs = (self._coder.code(self._cipher.update(bytes(self._buf))),)
            self._buf = bytearray()
        ext, trailers = self._coder.finish(self._si)
        return EncodeResult(self._cap(ext), segs, trailers, ext)

    def _cap(self, ext: ExtensionBlock) -> ReadCap | VerifyCap:
        p = self.params
        return ReadCap(p.k, p.n, self._total, self._key, ext.hash())

    def __repr__(self) -> str:
        return f"Encoder(params={self.params}, fed={self._total})"


class _AsIs:
    """The "cipher" of a :class:`CiphertextEncoder`: its input is ciphertext already."""

    @staticmethod
    def update(data: bytes | bytearray | memoryview) -> bytes:
        return bytes(data)


class CiphertextEncoder(Encoder):
    """Erasure codes a file's **ciphertext** without its key (an upload helper,
    docs/helper.md): the same segments, trailers and extension block as the
    :class:`Encoder` that made the ciphertext, and a :class:`VerifyCap` in place of
    the read cap. The size must be known and above ``LITERAL_MAX`` (literal files
    are never sent anywhere)."""

    def __init__(
        self,
        storage_index: bytes,
        params: EncodingParams,
        expected_size: int,
        *,
        executor: Executor | None = None,
    ) -> None:
        if not LITERAL_MAX < expected_size <= MAX_FILE_SIZE:
            raise ParameterError(f"ciphertext of {expected_size} bytes cannot be encoded")
        super().__init__(bytes(32), params, executor=executor, expected_size=expected_size)
        self._key = b""
        self._si = storage_index
        self._cipher = _AsIs()  # type: ignore[assignment]

    def _cap(self, ext: ExtensionBlock) -> VerifyCap:
        p = self.params
        return VerifyCap(p.k, p.n, self._total, self._si, ext.hash())

    def __repr__(self) -> str:
        return f"CiphertextEncoder(params={self.params}, fed={self._total})"


def encode_chunks(
    encoder: Encoder, chunks: Iterable[bytes | memoryview]
) -> Iterator[EncodedSegment | EncodeResult]:
    """Drive ``encoder`` over ``chunks``: yields every segment, then the result."""
    for chunk in chunks:
        yield from encoder.feed(chunk)
    res = encoder.finish()
    yield from res.segments
    yield res


def encode_bytes(
    data: bytes,
    params: EncodingParams | None = None,
    *,
    convergence_secret: bytes | None = None,
    key: bytes | None = None,
    executor: Executor | None = None,
) -> tuple[ReadCap | LiteralCap, list[bytes]]:
    """Encode a whole in-memory file into its cap and the N complete shares (empty
    for a literal cap). Convergent if a secret is given, else ``key`` or random."""
    if convergence_secret is not None:
        enc = Encoder.convergent(convergence_secret, [data], params, executor=executor)
    else:
        enc = Encoder(key if key is not None else random_key(), params, executor=executor)
    shares: list[bytearray] = []
    result: EncodeResult | None = None
    for item in encode_chunks(enc, [data]):
        if isinstance(item, EncodeResult):
            result = item
            continue
        if not shares:
            shares = [bytearray(HEADER_SIZE) for _ in item.blocks]
        for i, block in enumerate(item.blocks):
            assert len(shares[i]) == item.share_offset
            shares[i] += block
    assert result is not None
    for t in result.trailers:
        assert len(shares[t.share_number]) == t.trailer_offset
        shares[t.share_number] += t.trailer
        shares[t.share_number][:HEADER_SIZE] = t.header
    assert not isinstance(result.cap, VerifyCap)  # a keyed Encoder makes read caps
    return result.cap, [bytes(s) for s in shares]
