"""The lease crawler: walks every stored storage index, removing those whose leases
have all expired, and aborts idle uploads.

The walk is split into ticks so its cost is bounded: one :meth:`LeaseCrawler.tick`
examines at most ``per_tick`` storage indexes (plus at most one directory listing
of a prefix directory to refill its queue), and the runner sleeps ``interval``
seconds between ticks, so the crawler does at most ``per_tick / interval`` index
checks per second however large the store is. A full cycle visits the prefixes in
name order, then starts over.

``tick`` is synchronous and takes ``now`` (tests drive it with a fake clock and
no event loop); :meth:`LeaseCrawler.start` runs it in a worker thread every
``interval`` seconds (sleep injected) until :meth:`LeaseCrawler.close`, resting
``cycle_pause`` seconds after each full pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pstore.base.tasks import TaskOwner

from .errors import StorageError
from .server import Clock, StorageServer

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TickReport:
    examined: int  # storage indexes checked this tick
    shares_removed: int
    uploads_aborted: int
    cycle_done: bool  # this tick finished a full pass over the store


class LeaseCrawler:
    """Bounded background expiry of leases; one per :class:`StorageServer`."""

    def __init__(
        self,
        server: StorageServer,
        *,
        per_tick: int = 100,
        interval: float = 1.0,
        cycle_pause: float = 0.0,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``cycle_pause``: seconds to rest after a full pass before the next one (an
        idle node with a small store then wakes rarely instead of every ``interval``)."""
        if per_tick < 1 or not interval > 0:
            raise ValueError("per_tick must be >= 1 and interval > 0")
        self._server = server
        self._per_tick = per_tick
        self._interval = interval
        self._cycle_pause = cycle_pause
        self._clock: Clock = clock or server.clock
        self._sleep = sleep
        self._prefixes: deque[str] = deque()
        self._queue: deque[bytes] = deque()
        self._tasks = TaskOwner()
        self._inflight: asyncio.Future[TickReport] | None = None
        self.cycles = 0
        self.total_removed = 0

    def tick(self, now: float | None = None) -> TickReport:
        """Examine at most ``per_tick`` storage indexes and sweep idle uploads."""
        now = self._clock() if now is None else now
        aborted = self._server.sweep_idle_uploads(now)
        examined = removed = 0
        cycle_done = refilled = False
        while examined < self._per_tick:
            if self._queue:
                si = self._queue.popleft()
                examined += 1
                try:
                    removed += self._server.expire(si, now)
                except StorageError as e:  # keep crawling; the next cycle retries
                    log.warning("lease crawler: %s", e)
                if not self._queue and not self._prefixes:
                    cycle_done = True
                    break
                continue
            if refilled:
                break  # at most one prefix listing per tick
            if not self._prefixes:  # start a new cycle
                self._prefixes.extend(self._server.list_prefixes())
                if not self._prefixes:
                    cycle_done = True
                    break
            self._queue.extend(self._server.storage_indexes_in(self._prefixes.popleft()))
            refilled = True
            if not self._queue and not self._prefixes:
                cycle_done = True
                break
        if cycle_done:
            self.cycles += 1
        self.total_removed += removed
        return TickReport(examined, removed, aborted, cycle_done)

    def start(self) -> None:
        """Run ticks in the background until :meth:`close` (call from the event loop)."""
        if not self._tasks:
            self._tasks.start(self._run(), name="lease-crawler")

    async def _run(self) -> None:
        while True:
            # The tick runs in a thread; shield it so cancelling the runner never
            # abandons a tick half-way: close() waits for it instead.
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self.tick))
            pause = self._interval
            try:
                report = await asyncio.shield(self._inflight)
                if report.cycle_done:
                    pause = max(pause, self._cycle_pause)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad tick must not stop expiry forever
                log.exception("lease crawler tick failed")
            await self._sleep(pause)

    async def close(self) -> None:
        """Stop the runner and wait for a tick in progress to finish. Idempotent."""
        await self._tasks.close()
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            with contextlib.suppress(Exception):
                await inflight
