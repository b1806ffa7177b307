"""Streams encoded shares to the peers a :class:`SharePlacer` chooses (upload, repair).

One writer task per share: it allocates the share on its peer (moving to the next
peer on refusal, timeout or disconnect, which costs nothing since no data has been
sent yet), then writes that share's block of every segment as the producer hands
them over, then the trailer and the header (at once: the server takes writes in
any order, and a round trip saved counts for small files over a home link), then
closes the share. A small share (at most ``WHOLE_SHARE_MAX``) is taken whole from
the queue first and stored with one call (``storage.put``) instead.

A peer that vanishes or stalls mid-share (docs/grid.md, "Peers that vanish"):
with a ``regenerate`` source (the uploader can re-read and re-encode its input),
the share moves to the next peer *at once* and the upload never waits for it:
the replacement writer takes over the blocks still queued and every later one
live, while the blocks already gone (segments before the first queued one) are
re-encoded from the source and written on a second stream beside it. A writer
counts as stalled when it made no progress for ``lag_timeout`` (or three times as
long as a block takes at the pace of all writers together, when that is longer:
over a slow uplink each block takes seconds) while every other writer sat idle waiting for the
producer; a writer whose stream failed (the transport closes connections to silent
peers within seconds, quic_transport/liveness.py) is replaced the same way.
Without a source the share is marked unplaced at once (stalled or failed) and the
caller re-places it after the pass by regeneration from the placed shares.

Invariants:
- Memory is bounded: each writer has a queue of at most ``window`` blocks (two more
  for a replacement, which takes over a full queue); the producer
  (:meth:`ShareSender.send`) waits when a live writer's queue is full, so at most
  about ``window`` segments' blocks are buffered whatever the file size. A small
  share's writer (``WHOLE_SHARE_MAX``) holds its whole share, 64 KiB at most.
- A replacement share is closed only when every byte of it was written: the
  server refuses to close a share with a gap, and regenerated blocks are checked
  against the block hashes of the original encoding before they are sent.
- Every call to a peer is bounded by ``op_timeout``; all tasks belong to the sender
  and :meth:`aclose` cancels them and aborts unfinished uploads, including those of
  writers that were replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Generic

from p2pstore.base.tasks import bounded, cancel_and_wait
from p2pstore.immutable import HEADER_SIZE, EncodedSegment, ShareTrailer
from p2pstore.storage import ShareExists, StorageAPI, put_in_steps
from quic_transport.identity import NodeId

from .peers import BulkShareWriter, P, StorageFor, WholeShareWriter, describe, share_specific
from .placement import PeerKey, SharePlacer
from .whole import Block as _Block
from .whole import whole_share

MiB = 1 << 20
#: bytes handed to the transport at a time by a streaming writer (progress is per piece)
PIECE = 64 * 1024
#: a writer is stalled after this many times a block's time at the writers' pace ...
LAG_BLOCKS = 3.0
#: ... that pace measured over this many seconds of blocks taken; before an upload
#: has that much history, a writer may lag at least START_LAG seconds
RATE_WINDOW = 5.0
START_LAG = 3.0
#: a share this small (a small file's) is stored in one call where the peer's client
#: can (``storage.put``): one round trip instead of allocate, write, trailer and
#: header, close; its writer collects the blocks and the trailer first
WHOLE_SHARE_MAX = 64 * 1024
log = logging.getLogger(__name__)

#: ``regenerate(share, end)``: that share's blocks of segments ``[0, end)`` in order
#: (every segment when ``end`` is None), re-encoded from the upload's source.
Regenerate = Callable[[int, int | None], AsyncGenerator[bytes, None]]


@dataclass(frozen=True, slots=True)
class SendConfig:
    window: int = 4  # blocks buffered per share (segments in flight)
    op_timeout: float = 30.0  # every storage call
    max_write: int = MiB  # largest single write call (the server's default max_write)
    use_bulk: bool = True  # use BulkShareWriter.stream_write when the client has it
    #: a writer with no progress this long while all the others wait is replaced
    #: (only with a regenerate source; docs/grid.md, "Peers that vanish")
    lag_timeout: float = 1.0


@dataclass
class _Writer:
    share: int
    queue: asyncio.Queue[_Block | ShareTrailer]
    progress_at: float  # loop time it last took a block (or started)
    alive: bool = True
    blocks_written: int = 0
    peer: PeerKey | None = None  # where it is allocated (for abort)
    api: StorageAPI | None = None
    done: bool = False
    #: a replacement: segments before its first queued block are regenerated
    replacement: bool = False
    idle_since: float | None = None  # waiting on an empty queue since
    trailer: ShareTrailer | None = None  # taken from the queue (a successor needs it)
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class ShareSender(Generic[P]):
    def __init__(
        self,
        storage_index: bytes,
        placer: SharePlacer,
        peers: Mapping[PeerKey, P],
        storage_for: StorageFor[P],
        *,
        alloc_size: int | None,
        config: SendConfig,
        on_progress: Callable[[int], None] | None = None,
        regenerate: Regenerate | None = None,
        lease: int | None = None,
    ) -> None:
        self.si = storage_index
        self.lease = lease  # the lease term new shares get (a repair carries it over)
        self.placer = placer
        self.peers = peers
        self.storage_for = storage_for
        self.alloc_size = alloc_size
        self.config = config
        self._on_progress = on_progress
        self._writers: dict[int, _Writer] = {}
        self._taken: deque[tuple[float, int]] = deque()  # (loop time, bytes) of blocks taken
        self._started: float | None = None  # when the first block was taken
        self._progress = 0
        self.sent: set[int] = set()  # shares written and closed now
        self.present: set[int] = set()  # shares found already stored on allocate
        self._background: set[asyncio.Task[None]] = set()  # aborts after timeouts
        self._regenerate = regenerate
        self._replaced: list[_Writer] = []  # writers superseded by a replacement
        self.replacements = 0  # shares moved mid-stream to another peer

    # -- producer side ---------------------------------------------------------------
    def start(self, shares: Sequence[int], *, replacement: bool = False) -> None:
        """Start writers for ``shares``, each already pending in the placer. With
        ``replacement``, blocks not handed over by :meth:`send` (all of them, if only
        the trailer comes) are regenerated (needs a regenerate source)."""
        if replacement and self._regenerate is None:
            raise ValueError("replacement writers need a regenerate source")
        for s in shares:
            if s in self._writers:
                raise ValueError(f"share {s} already has a writer")
            room = self.config.window + (2 if replacement else 0)
            self._spawn(self._new_writer(s, room, replacement=replacement))

    def _new_writer(self, share: int, size: int, *, replacement: bool = False) -> _Writer:
        now = asyncio.get_running_loop().time()
        return _Writer(share, asyncio.Queue(maxsize=max(1, size)), now, replacement=replacement)

    def _spawn(self, w: _Writer) -> None:
        self._writers[w.share] = w
        w.task = asyncio.create_task(self._run(w), name=f"share-writer-{w.share}")

    @property
    def live_shares(self) -> list[int]:
        return [s for s, w in self._writers.items() if w.alive]

    async def send(self, seg: EncodedSegment) -> None:
        """Hand every live writer its block of ``seg`` (waits for queue space)."""
        for share in list(self._writers):
            w = self._writers.get(share)
            if w is not None and w.alive:
                await self._put(w, (seg.index, seg.share_offset, seg.blocks[share]))
        if self._on_progress is not None and not self.live_shares:
            self._on_progress(seg.index + 1)  # nothing to send (all present): encoded

    async def finish(self, trailers: Sequence[ShareTrailer]) -> None:
        """Hand over the trailers and wait for every writer to end."""
        by_share = {t.share_number: t for t in trailers}
        for share in list(self._writers):
            w = self._writers.get(share)
            if w is not None and w.alive:
                await self._put(w, by_share[share])
        while True:  # a writer may be replaced while we wait: wait for its successor
            pending = {w.task for w in self._writers.values() if w.task and not w.task.done()}
            if not pending:
                return
            await asyncio.wait(pending)

    async def _put(self, w: _Writer, item: _Block | ShareTrailer) -> None:
        """Queue ``item`` for ``w``'s share, following the share to a replacement
        writer if ``w`` is replaced (or replaced as stalled) meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            if not w.alive:
                nxt = self._writers.get(w.share)
                if nxt is None or nxt is w or not nxt.alive:
                    return  # the share is unplaced: nothing to send
                w = nxt
                continue
            if not w.queue.full():
                w.queue.put_nowait(item)
                return
            tick = max(0.05, self.config.lag_timeout / 4)
            try:
                async with asyncio.timeout(tick):
                    await w.queue.put(item)
            except TimeoutError:
                if w.alive and self._stalled(w, loop.time()):
                    why = f"stalled: no progress for {loop.time() - w.progress_at:.1f} s"
                    if self._regenerate is not None:
                        self._replace(w, why)
                    else:
                        self._lose(w, why)
                continue
            self._forward_if_replaced(w)
            return

    def _forward_if_replaced(self, w: _Writer) -> None:
        """``w`` was replaced (or lost) while the producer waited on it: move what was
        put along (or drop it)."""
        if not w.alive:
            self._forward(w)

    def _give_up(self, w: _Writer, why: str, *, reassign: bool) -> PeerKey | None:
        """End ``w`` (its task cancelled unless it is the caller, its upload aborted in
        the background) and fail its placement; returns the next peer if reassigned."""
        w.alive = False
        w.done = True
        self._replaced.append(w)
        if w.task is not None and w.task is not asyncio.current_task():
            w.task.cancel()
        if w.api is not None:
            self._abort_soon(w.api, w.share)
        if w.peer is not None and self.placer.pending.get(w.share) == w.peer:
            return self.placer.failed(w.share, w.peer, why, reassign=reassign)
        return None

    def _lose(self, w: _Writer, why: str) -> None:
        """Give up a stalled share (no regenerate source): it stays unplaced for the
        caller to regenerate after the pass; the other shares go on at once."""
        self._give_up(w, why, reassign=False)
        log.info(
            "share %d: peer %s %s; it is regenerated after the pass", w.share, _short(w.peer), why
        )
        del self._writers[w.share]
        _drain(w)
        self._report()

    def _lag(self, now: float) -> float:
        """How long a writer may take no block: ``lag_timeout``, or ``LAG_BLOCKS``
        times as long as one block takes a writer at the pace all writers together
        have kept over the last ``RATE_WINDOW`` seconds, if that is longer. Over a
        slow uplink shared by every writer, one block takes each of them seconds."""
        taken = self._taken
        while taken and now - taken[0][0] > RATE_WINDOW:
            taken.popleft()
        if not taken or self._started is None:
            return self.config.lag_timeout
        # the first seconds have no pace yet (blocks go into empty send backlogs at
        # once): a writer may lag START_LAG then, whatever the link
        floor = self.config.lag_timeout
        if now - self._started < RATE_WINDOW:
            floor = max(floor, START_LAG)
        span = max(now - max(self._started, now - RATE_WINDOW), 0.5)
        writers = sum(1 for x in self._writers.values() if x.alive)
        per_block = span * writers / len(taken)  # seconds per block, for each writer
        return max(floor, LAG_BLOCKS * per_block)

    def _stalled(self, w: _Writer, now: float) -> bool:
        """``w`` holds the upload up: it has blocks queued and took none for its lag
        (:meth:`_lag`), while no other writer is making progress and at least one
        has sat idle, waiting for the producer, for half of that. (Writers stuck the
        same way do not count against it; on a slow uplink all writers have work and
        none sits idle, so none is replaced.)"""
        lag = self._lag(now)
        if w.queue.empty() or now - w.progress_at < lag:
            return False
        idle = 0
        for x in self._writers.values():
            if x is w or not x.alive:
                continue
            if x.idle_since is not None:
                if now - x.idle_since < lag / 2:
                    return False
                idle += 1
            elif now - x.progress_at < lag:
                return False  # it is moving: the upload is not waiting on w alone
        return idle > 0

    def _forward(self, old: _Writer) -> None:
        """Move blocks queued for a replaced writer to its successor (or drop them)."""
        nxt = self._writers.get(old.share)
        while True:
            try:
                item = old.queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if nxt is not None and nxt is not old and nxt.alive:
                try:
                    nxt.queue.put_nowait(item)
                except asyncio.QueueFull:  # its stream sees the gap and it is replaced
                    log.debug("share %d: replacement queue full, block dropped", old.share)

    def _replace(self, w: _Writer, why: str) -> None:
        """Move ``w``'s share to the next peer now (needs a regenerate source): the
        successor takes over the queued blocks; the earlier ones are regenerated."""
        assert self._regenerate is not None
        share = w.share
        peer = w.peer
        nxt = self._give_up(w, why, reassign=True)
        log.info(
            "share %d: peer %s %s; %s",
            share,
            _short(peer),
            why,
            f"moving it to {_short(nxt)}" if nxt is not None else "no peer left to take it",
        )
        if nxt is None:
            del self._writers[share]
            _drain(w)
            self._report()
            return
        self.replacements += 1
        # room for what it takes over, the producer's pending block and a trailer
        room = max(self.config.window, w.queue.qsize()) + 2
        w2 = self._new_writer(share, room, replacement=True)
        w2.blocks_written = w.blocks_written
        self._spawn(w2)
        self._forward(w)
        if w.trailer is not None:  # it had every block already: the successor regenerates all
            w2.queue.put_nowait(w.trailer)

    async def aclose(self) -> None:
        """Cancel writers still running and abort their unfinished uploads."""
        every = [*self._writers.values(), *self._replaced]
        await cancel_and_wait(w.task for w in every if w.task is not None)
        aborts = [self._abort(w.api, w.share) for w in every if w.api is not None and not w.done]
        if aborts:
            await asyncio.gather(*aborts)
        if self._background:  # each abort is bounded by min(5 s, op_timeout)
            await asyncio.wait(set(self._background), timeout=5.0)
            await cancel_and_wait(set(self._background))

    # -- writers ---------------------------------------------------------------------
    def _retire(self, w: _Writer) -> None:
        w.alive = False
        _drain(w)
        self._report()

    def _report(self) -> None:
        if self._on_progress is None:
            return
        live = [w.blocks_written for w in self._writers.values() if w.alive]
        done = min(live) if live else 0
        if done > self._progress:
            self._progress = done
            self._on_progress(done)

    async def _claim(
        self, w: _Writer, call: Callable[[StorageAPI], Awaitable[object]]
    ) -> tuple[PeerKey, StorageAPI] | None:
        """``call`` on the share's pending peer (an allocation, or a whole share), moving
        to the next peer the placer offers on refusal, timeout or disconnect; the peer
        and client it succeeded with, or None (the writer retired) when the share is
        there already or no peer is left."""
        share = w.share
        peer = self.placer.pending[share]
        while True:
            api = self.storage_for(self.peers[peer])
            w.peer, w.api = peer, api  # if cancelled mid-call, aclose aborts here
            try:
                await bounded(call(api), self.config.op_timeout)
                return peer, api
            except ShareExists:  # checked against our extension block after the upload
                self.placer.found_present(share, peer)
                self.present.add(share)
                w.done = True
                self._retire(w)
                return None
            except Exception as e:
                if isinstance(e, TimeoutError):  # it may still succeed there: undo it,
                    self._abort_soon(api, share)  # without holding up the fallback
                nxt = self.placer.failed(
                    share, peer, describe(e), exclude_peer=not share_specific(e)
                )
                if nxt is None:  # nothing stands anywhere (timeouts: aborted above)
                    w.done = True
                    self._retire(w)
                    return None
                peer = nxt
                w.progress_at = asyncio.get_running_loop().time()

    def _stored(self, w: _Writer, peer: PeerKey) -> None:
        w.done = True
        self.placer.stored(w.share, peer)
        self.sent.add(w.share)
        w.alive = False
        self._report()

    def _whole(self, w: _Writer) -> bool:
        """Whether ``w``'s share goes in one call (small, and the peers' client can)."""
        if w.replacement or self.alloc_size is None or self.alloc_size > WHOLE_SHARE_MAX:
            return False
        peer = self.placer.pending[w.share]
        return isinstance(self.storage_for(self.peers[peer]), WholeShareWriter)

    async def _run_whole(self, w: _Writer) -> None:
        """Take every block and the trailer, then store the share with one call per
        peer tried (nothing is sent before the whole share is at hand)."""
        blocks: list[_Block] = []
        item = await self._next(w)
        while not isinstance(item, ShareTrailer):
            blocks.append(item)
            item = await self._next(w)
        try:
            data = whole_share(blocks, item)
        except RuntimeError as e:  # as a failed write would: the share is unplaced
            self._retire(w)
            pending = self.placer.pending[w.share]  # never asked: not the peer's fault
            self.placer.failed(w.share, pending, str(e), exclude_peer=False, reassign=False)
            w.done = True
            return

        def put(api: StorageAPI) -> Awaitable[object]:
            if isinstance(api, WholeShareWriter):
                return api.put_share(self.si, w.share, data, self.lease)
            return put_in_steps(api, self.si, w.share, data, self.lease)

        claimed = await self._claim(w, put)
        if claimed is not None:
            w.blocks_written = len(blocks)  # (the upload reports the whole file at its end)
            self._stored(w, claimed[0])

    async def _run(self, w: _Writer) -> None:
        if self._whole(w):
            await self._run_whole(w)
            return
        share = w.share

        def allocate(api: StorageAPI) -> Awaitable[object]:
            if self.lease is None:
                return api.allocate(self.si, share, self.alloc_size)
            return api.allocate(self.si, share, self.alloc_size, self.lease)

        claimed = await self._claim(w, allocate)
        if claimed is None:
            return
        peer, api = claimed
        try:
            await self._stream(w, api)
        except Exception as e:
            if not w.alive:  # already replaced (stalled) while this stream ended
                return
            if self._regenerate is not None:
                self._replace(w, f"failed mid-share: {describe(e)}")
                return
            self._retire(w)
            self.placer.failed(share, peer, describe(e), reassign=False)
            await self._abort(api, share)
            w.done = True
            return
        self._stored(w, peer)

    async def _next(self, w: _Writer) -> _Block | ShareTrailer:
        if w.queue.empty():
            w.idle_since = asyncio.get_running_loop().time()
        item = await w.queue.get()
        if isinstance(item, ShareTrailer):
            w.trailer = item
        w.idle_since = None
        now = w.progress_at = asyncio.get_running_loop().time()
        if not isinstance(item, ShareTrailer):
            self._taken.append((now, len(item[2])))
            if self._started is None:
                self._started = now
        return item

    async def _stream(self, w: _Writer, api: StorageAPI) -> None:
        t = self.config.op_timeout
        trailer: ShareTrailer | None = None
        first = await self._next(w)
        regen: asyncio.Task[None] | None = None
        if w.replacement:  # the blocks before the first queued one are gone: re-encode
            end = None if isinstance(first, ShareTrailer) else first[0]
            if end != 0:
                regen = asyncio.create_task(self._fill(w, api, end))
        try:
            if self.config.use_bulk and isinstance(api, BulkShareWriter):
                if isinstance(first, ShareTrailer):
                    trailer = first
                else:
                    box: list[ShareTrailer] = []
                    await api.stream_write(self.si, w.share, first[1], self._blocks(w, first, box))
                    trailer = box[0] if box else None
            else:
                item = first
                while not isinstance(item, ShareTrailer):
                    _, offset, data = item
                    await self._write(api, w.share, offset, data)
                    w.blocks_written += 1
                    self._report()
                    item = await self._next(w)
                trailer = item
            if regen is not None:
                await regen
        finally:
            if regen is not None and not regen.done():
                await cancel_and_wait([regen])
        if trailer is None:
            raise RuntimeError("share stream ended without a trailer")
        ends = [
            asyncio.ensure_future(
                self._write(api, w.share, trailer.trailer_offset, trailer.trailer)
            ),
            asyncio.ensure_future(self._write(api, w.share, 0, trailer.header)),
        ]
        try:
            await asyncio.gather(*ends)
        finally:
            await cancel_and_wait([e for e in ends if not e.done()])
        await bounded(api.close_share(self.si, w.share), t)

    async def _fill(self, w: _Writer, api: StorageAPI, end: int | None) -> None:
        """Write the regenerated blocks of segments ``[0, end)`` of ``w``'s share."""
        assert self._regenerate is not None
        blocks = self._regenerate(w.share, end)
        try:
            if self.config.use_bulk and isinstance(api, BulkShareWriter):
                await api.stream_write(self.si, w.share, HEADER_SIZE, blocks)
            else:
                offset = HEADER_SIZE
                async for block in blocks:
                    await self._write(api, w.share, offset, block)
                    offset += len(block)
        finally:
            await blocks.aclose()

    async def _blocks(
        self, w: _Writer, first: _Block, box: list[ShareTrailer]
    ) -> AsyncIterator[bytes]:
        item: _Block | ShareTrailer = first
        expect = first[1]
        while True:
            if isinstance(item, ShareTrailer):
                box.append(item)
                return
            _, offset, data = item
            if offset != expect:
                raise RuntimeError(f"block at {offset}, expected {expect}")
            loop = asyncio.get_running_loop()
            for i in range(0, len(data), PIECE):
                # the transport asks for the next piece once it sent this one within
                # the peer's credit: a writer whose peer takes its data slowly (its
                # share of a slow uplink) still shows progress, piece by piece
                yield data if len(data) <= PIECE else data[i : i + PIECE]
                w.progress_at = loop.time()
            expect += len(data)
            w.blocks_written += 1
            self._report()
            item = await self._next(w)

    async def _write(self, api: StorageAPI, share: int, offset: int, data: bytes) -> None:
        step = self.config.max_write
        view = memoryview(data)
        for i in range(0, len(data), step):
            piece = data if len(data) <= step else bytes(view[i : i + step])
            await bounded(api.write(self.si, share, offset + i, piece), self.config.op_timeout)

    def _abort_soon(self, api: StorageAPI, share: int) -> None:
        t = asyncio.create_task(self._abort(api, share))
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def _abort(self, api: StorageAPI | None, share: int) -> None:
        if api is None:
            return
        with contextlib.suppress(Exception):
            await bounded(api.abort(self.si, share), min(5.0, self.config.op_timeout))


def _short(peer: PeerKey | None) -> str:
    return "?" if peer is None else NodeId(peer).b32[:12]


def _drain(w: _Writer) -> None:
    while True:
        try:
            w.queue.get_nowait()
        except asyncio.QueueEmpty:
            return
