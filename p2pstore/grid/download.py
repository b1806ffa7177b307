"""Download: a cap in, verified plaintext chunks out, fetched from the nearest peers.

Steps (docs/grid.md, "Download"): look up peers near the storage index; ask each
which shares it holds and their sizes; open every share found (header -> extension
block -> share root, all verified against the cap; one read each where the listed
size places them, a small primary share read whole: opening.py); then fetch each
needed segment's block, uncles and ciphertext proof from k distinct shares, the
fastest peers first (a share read whole first of all), verify every block, decode
and decrypt, and yield plaintext in order.

Invariants:
- Only bytes that passed verification reach the caller: blocks are checked against
  the share root, the share root against the extension block, the extension block
  against the cap, and every decoded segment against the ciphertext hash tree
  (``p2pstore.immutable.Decoder``) before it is decrypted.
- A bad block, a failed read, a timeout or a vanished peer drops that share copy
  (a timeout or connection failure drops every share on that peer) and the segment
  is completed from another share; the file is never restarted.
- A block read that runs well past its peer's block reads (``OVERDUE_FACTOR``,
  ``OVERDUE_MIN``; nothing is, before one block read of the download finished) is
  overdue: while a spare share exists, another peer is asked for a different share
  of the segment, the first k blocks that verify are used and the reads still
  running are cancelled; the abandoned read's time counts as a block read of its
  peer, so later segments prefer other peers. At most one extra read per overdue
  read, and never two copies of one share in flight.
- Memory is bounded by ``window`` segments in flight plus the decoder's pending
  segments, whatever the file size, and for a small file one copy of each primary
  share read whole (at most k x ``WHOLE_READ_MAX``; a second copy is not kept). A
  byte range fetches only its segments (of a small file, its primary shares are
  read whole when opened: opening.py).
- Peers still answering the share listing when the download starts are kept as
  background tasks owned by the session, consulted if shares run out, and
  cancelled when the iterator ends (normally, by error, or by ``aclose``).
- Verifying, decoding and decrypting run on the event loop for segments up to
  ``INLINE_SEGMENT`` (~2 ms per 1 MiB segment, the default): handing each to a
  worker thread cost more in thread switches than the overlap gained (gets of 100
  MiB took 0.77-0.91 of the time inline, docs/grid.md). Larger segments, which an
  uploader may choose (up to 64 MiB), go to a worker thread, so the loop never
  waits a whole large segment's hashing and decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from p2pstore.base.tasks import bounded, cancel_and_wait
from p2pstore.immutable import (
    HEADER_SIZE,
    BadShareError,
    Decoder,
    FileVerifier,
    LiteralCap,
    ReadCap,
    ShareLayout,
    VerifiedBlock,
    VerifiedCrypttextLeaf,
    VerifyCap,
)
from p2pstore.immutable.errors import ImmutableError, LocalError
from p2pstore.storage import StorageAPI, StorageError
from quic_transport.identity import NodeId

from .errors import DownloadError, GridLocalError
from .opening import Fetched, opening_ranges
from .peers import READ_CHUNK, FindPeers, P, Progress, StorageFor, describe
from .placement import PeerKey

_EWMA = 0.3
#: A primary share (0..k-1) is read in preference to a secondary one whose peer answers
#: up to this many times faster: blocks of primary shares decode for free, each
#: secondary block costs the downloader a decoding pass over the segment (cheap
#: through the SIMD kernel, 0.17 CPU-s per 100 MiB through zfec).
SECONDARY_COST = 1.5

#: A block read still running OVERDUE_FACTOR times past what its peer's block reads
#: take (_Session.overdue_after), and at least OVERDUE_MIN seconds, is overdue:
#: the segment asks another peer for a different share and takes whichever k blocks
#: verify first (module doc). A peer slowed down or gone silent without failing
#: delays a segment by about a second, not by op_timeout.
OVERDUE_FACTOR = 3.0
OVERDUE_MIN = 1.0

#: segments up to this size are verified and decoded on the event loop (module doc)
INLINE_SEGMENT = 2 << 20

T = TypeVar("T")


async def _cpu(inline: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the loop, or in a worker thread for a large segment."""
    return fn(*args) if inline else await asyncio.to_thread(fn, *args)


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    lookup_count: int | None = None  # peers to ask the lookup for; None means 2*N
    op_timeout: float = 30.0  # every storage call
    locate_timeout: float = 15.0  # bound on finding k good shares
    locate_grace: float = 0.2  # after k good shares, wait this long for the rest
    window: int = 4  # segments fetched ahead of the one being delivered
    max_read: int = READ_CHUNK  # within the servers' max_read, with room for framing
    max_readv_ranges: int = 64  # the servers' max_readv_ranges


@dataclass
class _Source:
    """One verified copy of one share on one peer."""

    share: int
    peer: PeerKey
    api: StorageAPI
    layout: ShareLayout
    data: bytes | None = None  # the whole share, read when it was opened (opening.py)


@dataclass
class _Session(Generic[P]):
    verifier: FileVerifier
    peers: dict[PeerKey, P]
    k: int
    sources: list[_Source] = field(default_factory=list)
    latency: dict[PeerKey, float] = field(default_factory=dict)
    #: per peer, an EWMA of its block reads alone (what an overdue read is judged by)
    block_time: dict[PeerKey, float] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)  # "peer/share" -> why
    dead: set[PeerKey] = field(default_factory=set)
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    asked: int = 0
    cap_error: LocalError | None = None  # the cap itself is wrong (seen on a share)

    def good_shares(self) -> set[int]:
        return {s.share for s in self.sources}

    @property
    def inline(self) -> bool:
        """Verify and decode this file's segments on the loop (INLINE_SEGMENT)?"""
        return self.verifier.extension.params.segment_size <= INLINE_SEGMENT

    def where(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, list[int]] = {}
        for s in self.sources:
            out.setdefault(NodeId(s.peer).b32, []).append(s.share)
        return {p: tuple(sorted(v)) for p, v in out.items()}

    def drop(self, src: _Source, e: BaseException) -> None:
        why = describe(e)
        self.bad[f"{NodeId(src.peer).b32[:8]}/{src.share}"] = why
        peer_gone = not isinstance(e, ImmutableError | StorageError) or (
            isinstance(e, StorageError) and e.code == "unavailable"
        )
        if peer_gone:
            self.dead.add(src.peer)
        # a copy read whole needs its peer no more: it stays while its own blocks verify
        self.sources = [
            s
            for s in self.sources
            if s is not src and not (peer_gone and s.peer == src.peer and s.data is None)
        ]

    def observe(self, peer: PeerKey, seconds: float, *, block: bool = False) -> None:
        for table in (self.latency, self.block_time) if block else (self.latency,):
            old = table.get(peer)
            table[peer] = seconds if old is None else (1 - _EWMA) * old + _EWMA * seconds

    def overdue_after(self, peer: PeerKey, slowest: float) -> float | None:
        """Seconds after which a block read from ``peer`` is overdue (module doc), or
        None while no block read has finished in this download to judge by: the
        peer's block reads or, before it has any, the slowest peer's, or this
        segment's slowest finished read, whichever is larger."""
        if not self.block_time:  # (a finished read of this segment would be in it)
            return None
        typical = self.block_time.get(peer)
        if typical is None:
            typical = max(self.block_time.values())
        return max(OVERDUE_MIN, OVERDUE_FACTOR * max(typical, slowest))

    def choose(self, need: int, tried: set[int], taken: set[int]) -> list[_Source]:
        """Up to ``need`` sources to read next, fastest first (:meth:`ranked`): not
        tried for this segment (``id()``s in ``tried``), of distinct shares none of
        which is in ``taken``."""
        choice: list[_Source] = []
        shares = set(taken)
        for src in self.ranked():
            if len(choice) >= need:
                break
            if id(src) not in tried and src.share not in shares:
                choice.append(src)
                shares.add(src.share)
        return choice

    def ranked(self) -> list[_Source]:
        """The sources, those read whole first, then fastest first, a secondary
        share's latency weighted by :data:`SECONDARY_COST`."""

        def cost(s: _Source) -> tuple[float, int]:
            if s.data is not None:
                return (-1.0, s.share)
            weight = 1.0 if s.share < self.k else SECONDARY_COST
            return (self.latency.get(s.peer, 1e9) * weight, s.share)

        return sorted(self.sources, key=cost)

    def error(self, segment: int | None = None) -> DownloadError:
        return DownloadError(
            found=len(self.good_shares()),
            need=self.k,
            where=self.where(),
            bad=self.bad,
            peers_asked=self.asked,
            segment=segment,
        )

    async def cancel_pending(self) -> None:
        await cancel_and_wait(list(self.pending))
        self.pending.clear()


async def read_ranges(
    api: StorageAPI,
    si: bytes,
    share: int,
    ranges: Sequence[tuple[int, int]],
    *,
    max_read: int,
    max_ranges: int,
    timeout: float,  # noqa: ASYNC109 (one bound per readv call, not for the whole)
) -> list[bytes]:
    """Read ``ranges`` of a share exactly (readv calls of at most ``max_read`` bytes
    and ``max_ranges`` ranges, concurrently); a short answer is a BadShareError."""
    pieces: list[tuple[int, int, int]] = []  # (range index, offset, length)
    for idx, (off, length) in enumerate(ranges):
        for o in range(off, off + length, max_read):
            pieces.append((idx, o, min(max_read, off + length - o)))
    calls: list[list[tuple[int, int, int]]] = [[]]
    total = 0
    for p in pieces:
        if calls[-1] and (total + p[2] > max_read or len(calls[-1]) >= max_ranges):
            calls.append([])
            total = 0
        calls[-1].append(p)
        total += p[2]

    async def one(call: list[tuple[int, int, int]]) -> list[bytes]:
        return await bounded(api.readv(si, share, [(o, n) for _, o, n in call]), timeout)

    answers = await asyncio.gather(*(one(c) for c in calls if c))
    parts: list[list[bytes]] = [[] for _ in ranges]
    for call, datas in zip(calls, answers, strict=True):
        if len(datas) != len(call):
            raise BadShareError(share, f"{len(datas)} answers to {len(call)} reads")
        for (idx, o, n), data in zip(call, datas, strict=True):
            if len(data) != n:
                raise BadShareError(share, f"short read at offset {o}")
            parts[idx].append(data)
    return [p[0] if len(p) == 1 else b"".join(p) for p in parts]


class Downloader(Generic[P]):
    def __init__(
        self,
        find_peers: FindPeers[P],
        storage_for: StorageFor[P],
        config: DownloadConfig | None = None,
    ) -> None:
        self.find_peers = find_peers
        self.storage_for = storage_for
        self.config = config or DownloadConfig()

    async def read(
        self,
        cap: ReadCap | LiteralCap,
        *,
        offset: int = 0,
        length: int | None = None,
        progress: Progress | None = None,
    ) -> AsyncIterator[bytes]:
        """Yield the verified plaintext of ``[offset, offset+length)`` in order."""
        if not isinstance(cap, ReadCap | LiteralCap):
            raise GridLocalError("download needs a read cap or a literal cap")
        if offset < 0 or (length is not None and length < 0):
            raise GridLocalError(f"bad range: offset {offset}, length {length}")
        if isinstance(cap, LiteralCap):
            end = len(cap.data) if length is None else offset + length
            data = cap.data[offset:end]
            if progress is not None:
                progress(len(data), len(data))
            if data:
                yield data
            return
        total = max(0, min(cap.size, offset + (cap.size if length is None else length)) - offset)
        session = await self._open_session(cap)
        try:
            dec = Decoder(
                cap,
                session.verifier,
                offset=offset,
                length=length,
                max_pending=self.config.window + 1,
            )
            done = 0
            async for pieces in self._segments(session, dec):
                for piece in pieces:
                    done += len(piece)
                    if progress is not None:
                        progress(done, total)
                    yield piece
        finally:
            await session.cancel_pending()

    async def read_all(
        self, cap: ReadCap | LiteralCap, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Convenience for small files and tests: the whole range as bytes."""
        return b"".join([c async for c in self.read(cap, offset=offset, length=length)])

    async def _segments(self, s: _Session[P], dec: Decoder) -> AsyncIterator[list[bytes]]:
        wanted = list(dec.segments)
        tasks: dict[int, asyncio.Task[tuple[list[VerifiedBlock], VerifiedCrypttextLeaf]]] = {}
        try:
            for pos, j in enumerate(wanted):
                for ahead in wanted[pos : pos + self.config.window]:
                    if ahead not in tasks:
                        tasks[ahead] = asyncio.create_task(self._fetch_segment(s, ahead))
                blocks, leaf = await tasks.pop(j)
                try:
                    out = await _cpu(s.inline, dec.add_segment, blocks, leaf)
                except ImmutableError as e:  # blocks verified but decode mismatched
                    raise DownloadError(
                        found=len(s.good_shares()),
                        need=s.k,
                        where=s.where(),
                        bad={**s.bad, "decode": str(e)},
                        peers_asked=s.asked,
                        segment=j,
                    ) from e
                yield out
        finally:
            await cancel_and_wait(tasks.values())

    # -- locating and opening shares ----------------------------------------------------
    async def _open_session(self, cap: ReadCap | VerifyCap) -> _Session[P]:
        """Find and verify shares until k distinct good ones are open (or give up)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        verifier = FileVerifier(cap)
        si = verifier.cap.storage_index
        found = await self.find_peers(si, cfg.lookup_count or 2 * cap.n)
        peers: dict[PeerKey, P] = {}
        for p in found:
            peers.setdefault(p.node_id.raw, p)
        s: _Session[P] = _Session(verifier, peers, cap.k, asked=len(peers))
        changed = asyncio.Event()

        def spawn(coro: Coroutine[None, None, None]) -> None:
            t = asyncio.create_task(coro)
            s.pending.add(t)

            def done(t: asyncio.Task[None]) -> None:
                s.pending.discard(t)
                changed.set()

            t.add_done_callback(done)

        async def open_one(share: int, key: PeerKey, size: int) -> None:
            api = self.storage_for(peers[key])
            t0 = loop.time()
            try:
                src = await self._open_share(verifier, si, share, key, api, size)
            except LocalError as e:  # e.g. CapError: the cap disagrees with the file
                s.cap_error = s.cap_error or e
                return
            except Exception as e:
                s.bad[f"{NodeId(key).b32[:8]}/{share}"] = describe(e)
                return
            s.observe(key, loop.time() - t0)
            if src.data is not None and any(
                x.share == share and x.data is not None for x in s.sources
            ):
                src.data = None  # one whole copy of a share is enough (module doc, memory)
            if key not in s.dead:
                s.sources.append(src)

        async def list_one(key: PeerKey) -> None:
            t0 = loop.time()
            try:
                held = await bounded(self.storage_for(peers[key]).list_shares(si), cfg.op_timeout)
            except Exception as e:
                s.dead.add(key)
                s.bad[f"{NodeId(key).b32[:8]}/list"] = describe(e)
                return
            s.observe(key, loop.time() - t0)
            for share, size in held.items():
                if 0 <= share < cap.n:
                    spawn(open_one(share, key, size))

        for key in peers:
            spawn(list_one(key))
        deadline = loop.time() + cfg.locate_timeout
        enough_at: float | None = None
        while s.pending and s.cap_error is None:
            now = loop.time()
            if len(s.good_shares()) >= cap.k:
                enough_at = now if enough_at is None else enough_at
                if now >= enough_at + cfg.locate_grace:
                    break
                wait_until = min(deadline, enough_at + cfg.locate_grace)
            else:
                wait_until = deadline
            if now >= deadline:
                break
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await bounded(changed.wait(), wait_until - now)
        if s.cap_error is not None or len(s.good_shares()) < cap.k:
            await s.cancel_pending()
            if s.cap_error is not None:
                raise s.cap_error
            raise s.error()
        return s

    async def _open_share(
        self,
        verifier: FileVerifier,
        si: bytes,
        share: int,
        key: PeerKey,
        api: StorageAPI,
        size: int,
    ) -> _Source:
        """One copy of ``share``, verified; ``size`` is what its peer listed
        (untrusted: it only decides what the first read asks for, opening.py)."""
        cfg = self.config

        async def rd(ranges: list[tuple[int, int]]) -> list[bytes]:
            return await read_ranges(
                api,
                si,
                share,
                ranges,
                max_read=cfg.max_read,
                max_ranges=cfg.max_readv_ranges,
                timeout=cfg.op_timeout,
            )

        first = opening_ranges(verifier.cap, share, size, cfg.max_read, cfg.max_readv_ranges)
        try:
            answers = await bounded(api.readv(si, share, first), cfg.op_timeout)
        except StorageError as e:  # e.g. a peer whose max_read is below WHOLE_READ_MAX
            if e.code == "unavailable" or first == [(0, HEADER_SIZE)]:
                raise
            first = [(0, HEADER_SIZE)]
            answers = await bounded(api.readv(si, share, first), cfg.op_timeout)
        fetched = Fetched.of(first, answers)
        header = fetched.get((0, HEADER_SIZE))
        if header is None:
            raise BadShareError(share, "short read at offset 0")
        wanted = verifier.locate_pieces(share, header)
        got = [fetched.get(r) for r in wanted]
        missing = [r for r, g in zip(wanted, got, strict=True) if g is None]
        more = iter(await rd(missing) if missing else [])
        ext, root, chain = [g if g is not None else next(more) for g in got]
        verifier.accept_extension(share, ext)
        layout = verifier.check_header(share, header)  # offsets used above were right
        verifier.accept_share_root(share, root, chain)
        return _Source(share, key, api, layout, fetched.whole(layout.share_length))

    # -- segments -------------------------------------------------------------------------
    async def _fetch_segment(
        self, s: _Session[P], j: int
    ) -> tuple[list[VerifiedBlock], VerifiedCrypttextLeaf]:
        """k verified blocks of segment j from distinct shares, and its ciphertext leaf."""
        loop = asyncio.get_running_loop()
        blocks: dict[int, VerifiedBlock] = {}
        leaf: VerifiedCrypttextLeaf | None = None
        tried: set[int] = set()  # id() of sources tried for this segment

        # each read in flight: its source and when it started; a read running past
        # its expected time is overdue and no longer counts toward the k (module doc)
        running: dict[
            asyncio.Task[tuple[_Source, VerifiedBlock, VerifiedCrypttextLeaf]],
            tuple[_Source, float],
        ] = {}
        overdue: set[asyncio.Task[Any]] = set()
        slowest = 0.0  # seconds the slowest finished read of this segment took
        try:
            while len(blocks) < s.k:
                need = s.k - len(blocks) - (len(running) - len(overdue))
                busy = {src.share for src, _ in running.values()}
                choice = s.choose(need, tried, {*blocks, *busy})
                if len(blocks) + len(busy) + len(choice) < s.k and not s.pending:
                    # k distinct shares are out of reach, and no listing can bring more
                    raise s.error(segment=j)
                tried.update(id(c) for c in choice)
                now = loop.time()
                for c in choice:
                    running[asyncio.create_task(self._read_block(s, j, c))] = (c, now)
                wait = None
                if any(id(x) not in tried and x.share not in blocks for x in s.sources):
                    # a spare share exists: wake when the next read becomes overdue
                    due = [
                        t0 + after
                        for t, (src, t0) in running.items()
                        if t not in overdue
                        and (after := s.overdue_after(src.peer, slowest)) is not None
                    ]
                    wait = max(0.0, min(due) - now) if due else None
                # also woken by a listing that ends: the next turn sees the shares it added
                waits: set[asyncio.Future[Any]] = {*running, *s.pending}
                await asyncio.wait(waits, timeout=wait, return_when=FIRST_COMPLETED)
                now = loop.time()
                for t in [t for t in running if t.done()]:
                    src, t0 = running.pop(t)
                    overdue.discard(t)
                    r = t.exception()
                    if r is not None:
                        if isinstance(r, LocalError) or not isinstance(r, Exception):
                            raise r
                        s.drop(src, r)
                        continue
                    _, vb, vl = t.result()
                    slowest = max(slowest, now - t0)
                    if src.share not in blocks and len(blocks) < s.k:
                        blocks[src.share] = vb
                        leaf = leaf or vl
                for t, (src, t0) in running.items():
                    after = s.overdue_after(src.peer, slowest)
                    if t not in overdue and after is not None and now >= t0 + after:
                        overdue.add(t)
        finally:
            # reads no longer needed (k blocks in, or an error): stop them; a read
            # abandoned as overdue counts as slow as it was for its peer's ranking
            now = loop.time()
            for t, (src, t0) in running.items():
                if t in overdue and not t.done():
                    s.observe(src.peer, now - t0, block=True)
            await cancel_and_wait(list(running))
        assert leaf is not None
        return list(blocks.values()), leaf

    async def _read_block(
        self, s: _Session[P], j: int, src: _Source
    ) -> tuple[_Source, VerifiedBlock, VerifiedCrypttextLeaf]:
        """Segment j's block of ``src``'s share, verified, with its ciphertext leaf."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        lay = src.layout
        ct = lay.crypttext_proof_ranges(j)
        ranges = [lay.block_range(j), *lay.block_uncle_ranges(j), *ct]
        t0 = loop.time()
        if src.data is not None:  # read whole when opened, share_length bytes
            got = [src.data[o : o + n] for o, n in ranges]
        else:
            got = await read_ranges(
                src.api,
                s.verifier.cap.storage_index,
                src.share,
                ranges,
                max_read=cfg.max_read,
                max_ranges=cfg.max_readv_ranges,
                timeout=cfg.op_timeout,
            )
            s.observe(src.peer, loop.time() - t0, block=True)
        nu = len(ranges) - 1 - len(ct)
        uncles = b"".join(got[1 : 1 + nu])
        proof = b"".join(got[1 + nu :])
        vb = await _cpu(s.inline, s.verifier.verify_block, src.share, j, got[0], uncles)
        vl = s.verifier.verify_crypttext_proof(src.share, j, proof)
        return src, vb, vl
