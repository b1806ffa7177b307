"""Clocks injected into the DHT node (docs/architecture.md, "Conventions").

A clock gives monotonic seconds (timeouts, refresh schedules), wall-clock Unix seconds
(record expiry, which crosses machines) and an awaitable sleep. Invariant: a clock's
``monotonic`` and ``sleep`` agree with the running event loop's own time, because the
node also relies on asyncio timeouts; :class:`LoopClock` is correct for both the real
loop and the virtual-time loop of ``p2pstore.testing.vloop``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """Time from the running event loop; wall time = ``epoch`` + loop time.

    With a real loop and ``epoch=None`` the wall clock is ``time.time()``. With the
    virtual-time loop pass a fixed ``epoch`` so wall time advances with virtual time.
    """

    def __init__(self, epoch: float | None = None) -> None:
        self._epoch = epoch

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def time(self) -> float:
        if self._epoch is None:
            return time.time()
        return self._epoch + asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
