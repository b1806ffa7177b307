"""Streams encoded shares to the peers a :class:`SharePlacer` chooses (upload, repair).

One writer task per share: it allocates the share on its peer (moving to the next
peer on refusal, timeout or disconnect, which costs nothing since no data has been
sent yet), then writes that share's block of every segment as the producer hands
them over, then the trailer, then the header, then closes the share.

Invariants:
- Memory is bounded: each writer has a queue of at most ``window`` blocks; the
  producer (:meth:`ShareSender.send`) waits when the slowest live writer's queue is
  full, so at most ``window`` segments' blocks are buffered whatever the file size.
- A writer that fails after data was sent cannot move its share (the earlier blocks
  are gone): the share is marked unplaced in the placer (its peer excluded), the
  upload is aborted on that peer, and the writer's queue is drained so it never
  holds the producer back. The caller re-places such shares by regeneration.
- Every call to a peer is bounded by ``op_timeout``; all tasks belong to the sender
  and :meth:`aclose` cancels them and aborts unfinished uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic

from p2pstore.immutable import HEADER_SIZE, EncodedSegment, ShareTrailer
from p2pstore.storage import ShareExists, StorageAPI

from .peers import BulkShareWriter, P, StorageFor, describe, share_specific
from .placement import PeerKey, SharePlacer
from .tasks import bounded, cancel_and_wait

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class SendConfig:
    window: int = 4  # blocks buffered per share (segments in flight)
    op_timeout: float = 30.0  # every storage call
    max_write: int = MiB  # largest single write call (the server's default max_write)
    use_bulk: bool = True  # use BulkShareWriter.stream_write when the client has it


@dataclass
class _Writer:
    share: int
    queue: asyncio.Queue[tuple[int, bytes] | ShareTrailer]
    alive: bool = True
    blocks_written: int = 0
    peer: PeerKey | None = None  # where it is allocated (for abort)
    api: StorageAPI | None = None
    done: bool = False
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
    ) -> None:
        self.si = storage_index
        self.placer = placer
        self.peers = peers
        self.storage_for = storage_for
        self.alloc_size = alloc_size
        self.config = config
        self._on_progress = on_progress
        self._writers: dict[int, _Writer] = {}
        self._progress = 0
        self.sent: set[int] = set()  # shares written and closed now
        self.present: set[int] = set()  # shares found already stored on allocate
        self._background: set[asyncio.Task[None]] = set()  # aborts after timeouts

    # -- producer side ---------------------------------------------------------------
    def start(self, shares: Sequence[int]) -> None:
        """Start writers for ``shares``, each already pending in the placer."""
        for s in shares:
            if s in self._writers:
                raise ValueError(f"share {s} already has a writer")
            w = _Writer(s, asyncio.Queue(maxsize=max(1, self.config.window)))
            self._writers[s] = w
            w.task = asyncio.create_task(self._run(w), name=f"share-writer-{s}")

    @property
    def live_shares(self) -> list[int]:
        return [s for s, w in self._writers.items() if w.alive]

    async def send(self, seg: EncodedSegment) -> None:
        """Hand every live writer its block of ``seg`` (waits for queue space)."""
        for w in list(self._writers.values()):
            if not w.alive:
                continue
            await w.queue.put((seg.share_offset, seg.blocks[w.share]))
            _drain_if_dead(w)
        if self._on_progress is not None and not self.live_shares:
            self._on_progress(seg.index + 1)  # nothing to send (all present): encoded

    async def finish(self, trailers: Sequence[ShareTrailer]) -> None:
        """Hand over the trailers and wait for every writer to end."""
        by_share = {t.share_number: t for t in trailers}
        for w in list(self._writers.values()):
            if w.alive:
                await w.queue.put(by_share[w.share])
                _drain_if_dead(w)
        tasks = [w.task for w in self._writers.values() if w.task is not None]
        await asyncio.gather(*tasks)

    async def aclose(self) -> None:
        """Cancel writers still running and abort their unfinished uploads."""
        await cancel_and_wait(w.task for w in self._writers.values() if w.task is not None)
        aborts = [
            self._abort(w.api, w.share)
            for w in self._writers.values()
            if w.api is not None and not w.done
        ]
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

    async def _run(self, w: _Writer) -> None:
        share = w.share
        peer = self.placer.pending[share]
        while True:
            api = self.storage_for(self.peers[peer])
            w.peer, w.api = peer, api  # if cancelled mid-allocate, aclose aborts here
            try:
                await bounded(api.allocate(self.si, share, self.alloc_size), self.config.op_timeout)
                break
            except ShareExists:
                self.placer.found_present(share, peer)
                self.present.add(share)
                w.done = True
                self._retire(w)
                return
            except Exception as e:
                if isinstance(e, TimeoutError):  # it may still succeed there: undo it,
                    self._abort_soon(api, share)  # without holding up the fallback
                nxt = self.placer.failed(
                    share, peer, describe(e), exclude_peer=not share_specific(e)
                )
                if nxt is None:  # no allocation stands anywhere (timeouts: aborted above)
                    w.done = True
                    self._retire(w)
                    return
                peer = nxt
        try:
            await self._stream(w, api)
        except Exception as e:
            self._retire(w)
            self.placer.failed(share, peer, describe(e), reassign=False)
            await self._abort(api, share)
            w.done = True
            return
        w.done = True
        self.placer.stored(share, peer)
        self.sent.add(share)
        w.alive = False
        self._report()

    async def _stream(self, w: _Writer, api: StorageAPI) -> None:
        t = self.config.op_timeout
        trailer: ShareTrailer | None = None
        if self.config.use_bulk and isinstance(api, BulkShareWriter):
            box: list[ShareTrailer] = []
            await api.stream_write(self.si, w.share, HEADER_SIZE, self._blocks(w, box))
            trailer = box[0] if box else None
        else:
            while True:
                item = await w.queue.get()
                if isinstance(item, ShareTrailer):
                    trailer = item
                    break
                offset, data = item
                await self._write(api, w.share, offset, data)
                w.blocks_written += 1
                self._report()
        if trailer is None:
            raise RuntimeError("share stream ended without a trailer")
        await self._write(api, w.share, trailer.trailer_offset, trailer.trailer)
        await self._write(api, w.share, 0, trailer.header)
        await bounded(api.close_share(self.si, w.share), t)

    async def _blocks(self, w: _Writer, box: list[ShareTrailer]) -> AsyncIterator[bytes]:
        expect = HEADER_SIZE
        while True:
            item = await w.queue.get()
            if isinstance(item, ShareTrailer):
                box.append(item)
                return
            offset, data = item
            if offset != expect:
                raise RuntimeError(f"block at {offset}, expected {expect}")
            yield data
            expect += len(data)
            w.blocks_written += 1
            self._report()

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


def _drain_if_dead(w: _Writer) -> None:
    """A writer can die while the producer waits on its queue: drop what was put."""
    if not w.alive:
        _drain(w)


def _drain(w: _Writer) -> None:
    while True:
        try:
            w.queue.get_nowait()
        except asyncio.QueueEmpty:
            return
