"""Finding a file's shares on its peers and regenerating the missing ones.

:func:`list_existing` asks peers which shares of a storage index they hold;
:func:`replace_shares` rebuilds a placer's unplaced shares from its placed ones
(through :class:`LoopShareSource`, the worker-thread view of remote shares) and
sends each to the peer the placer picks. Upload (for shares lost mid-upload) and
repair (for shares lost later) both use it (docs/grid.md, "Peers that vanish",
"Repair").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from p2pstore.base.tasks import bounded
from p2pstore.immutable import (
    EncodedSegment,
    RemoteError,
    ShareTrailer,
    VerifyCap,
    regenerate_shares,
)
from p2pstore.immutable.errors import ImmutableError
from p2pstore.immutable.reader import READ_AHEAD
from p2pstore.storage import StorageAPI

from .download import DownloadConfig, read_ranges
from .peers import READ_CHUNK, P, StorageFor, describe
from .placement import PeerKey, SharePlacer
from .sender import SendConfig, ShareSender

T = TypeVar("T")
#: ranges per readv call unless told (the servers' default ``max_readv_ranges``)
MAX_RANGES = DownloadConfig().max_readv_ranges


async def list_existing(
    si: bytes,
    peers: dict[PeerKey, P],
    storage_for: StorageFor[P],
    timeout: float,  # noqa: ASYNC109 (a bound per peer, the calls run concurrently)
) -> tuple[dict[int, list[PeerKey]], dict[PeerKey, str]]:
    """Ask every peer which shares of ``si`` it holds, concurrently.

    Returns ``({share: [peers holding it, nearest-answering order]}, {peer: why it
    failed to answer})``."""

    async def ask(key: PeerKey) -> dict[int, int]:
        return await bounded(storage_for(peers[key]).list_shares(si), timeout)

    keys = list(peers)
    answers = await asyncio.gather(*(ask(k) for k in keys), return_exceptions=True)
    existing: dict[int, list[PeerKey]] = {}
    dead: dict[PeerKey, str] = {}
    for key, ans in zip(keys, answers, strict=True):
        if isinstance(ans, BaseException):
            if not isinstance(ans, Exception):
                raise ans
            dead[key] = describe(ans)
            continue
        for share in ans:
            existing.setdefault(share, []).append(key)
    return existing, dead


class LoopShareSource:
    """A synchronous ``RangesSource`` for worker threads, reading through StorageAPIs
    on the event loop (reads split at ``max_read``, each bounded by ``timeout``;
    ``readv``'s ranges go in calls of at most ``max_ranges``, at once). Once
    :meth:`stop` is called (the task using it ended), every read fails at once, so
    threads still working for it give up at their next read."""

    #: a read not answered within ``backstop_factor x timeout + backstop_slack``
    #: seconds is given up (the loop's own bound should have ended it long before)
    backstop_factor, backstop_slack = 4, 10.0

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        si: bytes,
        apis: Mapping[int, StorageAPI],
        *,
        max_read: int,
        timeout: float,
        max_ranges: int = MAX_RANGES,
    ) -> None:
        self.loop, self.si, self.apis = loop, si, dict(apis)
        self.max_read, self.timeout, self.max_ranges = max_read, timeout, max_ranges
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def _read(self, api: StorageAPI, share: int, offset: int, length: int) -> bytes:
        parts = []
        pos, end = offset, offset + length
        while pos < end:
            want = min(self.max_read, end - pos)
            data = await bounded(api.read(self.si, share, pos, want), self.timeout)
            parts.append(data)
            if len(data) < want:
                break
            pos += want
        return b"".join(parts)

    def read(self, share_number: int, offset: int, length: int) -> bytes:
        api = self._api(share_number)
        return self._wait(self._read(api, share_number, offset, length))

    def readv(self, share_number: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        api = self._api(share_number)
        return self._wait(
            read_ranges(
                api,
                self.si,
                share_number,
                ranges,
                max_read=self.max_read,
                max_ranges=self.max_ranges,
                timeout=self.timeout,
            )
        )

    def _api(self, share_number: int) -> StorageAPI:
        api = self.apis.get(share_number)
        if api is None:
            raise RemoteError(f"share {share_number} is not available")
        return api

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        """``coro`` run on the loop, from a worker thread; a failure that is not the
        share's own (ImmutableError) is a RemoteError."""
        if self._stopped.is_set():
            coro.close()
            raise RemoteError("stopped")
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as e:  # the loop is closed: nothing will run it
            coro.close()
            raise RemoteError(describe(e)) from None
        try:
            # each read is bounded by the timeout on the loop; this one is a backstop
            # for a loop that is stuck, or closed with the call still queued
            return fut.result(timeout=self.backstop_factor * self.timeout + self.backstop_slack)
        except ImmutableError:
            raise
        except Exception as e:
            # cancelled on the loop, where it runs (closing it here, while the loop
            # may be running it, would run its cleanup on this thread)
            fut.cancel()
            if self.loop.is_closed():
                coro.close()
            raise RemoteError(describe(e)) from None


_END = object()


async def replace_shares(
    cap: VerifyCap,
    placer: SharePlacer,
    peers: Mapping[PeerKey, P],
    storage_for: StorageFor[P],
    config: SendConfig,
    *,
    rounds: int = 3,
    lease: int | None = None,
) -> None:
    """Regenerate the placer's unplaced shares from its placed ones and send each to
    the peer the placer picks (with fallback). Updates ``placer`` in place; shares
    that could not be placed stay unplaced with a reason. A share whose new peer
    vanished mid-stream is regenerated again for the next peer, in up to ``rounds``
    passes, as long as a pass places something (docs/grid.md, "Peers that vanish").
    ``lease``: the lease term (seconds) the new shares get; None for the default."""
    for _ in range(max(1, rounds)):
        if not placer.unplaced():
            return
        if not await _replace_once(cap, placer, peers, storage_for, config, lease):
            return  # no peer left to try, or the sources cannot be read


async def _replace_once(
    cap: VerifyCap,
    placer: SharePlacer,
    peers: Mapping[PeerKey, P],
    storage_for: StorageFor[P],
    config: SendConfig,
    lease: int | None = None,
) -> bool:
    """One regeneration pass; False when there was nothing to try or the sources
    failed (another pass would not do better)."""
    loop = asyncio.get_running_loop()
    targets = [s for s in placer.unplaced() if placer.assign(s) is not None]
    if not targets:
        return False
    apis = {s: storage_for(peers[p]) for s, p in placer.placed.items()}
    src = LoopShareSource(
        loop,
        cap.storage_index,
        apis,
        max_read=min(config.max_write, READ_CHUNK),
        timeout=config.op_timeout,
    )
    # each segment's k shares and its proof read at once, and the next READ_AHEAD
    # segments' too (the reads run on the loop; the threads only wait for them)
    threads = min((cap.k + 1) * READ_AHEAD, 32)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="p2ps-regenerate")
    gen: Generator[EncodedSegment | tuple[ShareTrailer, ...], None, None] = regenerate_shares(
        cap, src, sorted(apis), executor=pool
    )
    sender: ShareSender[P] = ShareSender(
        cap.storage_index, placer, peers, storage_for, alloc_size=None, config=config, lease=lease
    )
    sender.start(targets)
    try:
        while True:
            try:
                item = await asyncio.to_thread(next, gen, _END)
            except ImmutableError as e:
                await sender.aclose()
                for s in targets:
                    if s in placer.pending:
                        placer.failed(
                            s,
                            placer.pending[s],
                            f"cannot regenerate: {e}",
                            exclude_peer=False,
                            reassign=False,
                        )
                return False
            if item is _END:
                return True
            if isinstance(item, EncodedSegment):
                await sender.send(item)
            else:
                assert isinstance(item, tuple)
                await sender.finish(item)
    finally:
        src.stop()  # a regeneration still running gives up at its next read
        # ends its read-ahead threads now, not when the generator is collected;
        # ValueError: it is still running in to_thread, and stops at its next read
        with contextlib.suppress(ValueError):
            gen.close()
        pool.shutdown(wait=False, cancel_futures=True)
        await sender.aclose()
