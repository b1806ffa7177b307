"""Background tasks and timeouts, the same way in every component.

:class:`TaskOwner` owns a component's background tasks: ``start`` creates and
keeps them, ``close`` cancels every one still running and waits until each has
really ended. A component with background work holds one and calls its ``close``
from its own ``async close()``; the node's service closes components in its
shutdown order (docs/architecture.md, "Where new things go").

Why not ``asyncio.wait_for``: in Python 3.11 it can swallow a cancellation when the
awaited operation finishes at the moment it is cancelled (bpo-42130, fixed in
3.12), which let a cancelled share writer run on and wait forever. ``bounded``
uses ``asyncio.timeout`` (cancel/uncancel based, no such race), and
``cancel_and_wait`` re-cancels until every task has really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def bounded(aw: Awaitable[T], seconds: float) -> T:
    """Await ``aw``; raise TimeoutError if it takes longer than ``seconds``."""
    async with asyncio.timeout(seconds):
        return await aw


async def cancel_and_wait(tasks: Iterable[asyncio.Future[T]]) -> None:
    """Cancel ``tasks`` and wait until all have ended, whatever they raise."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for t in tasks:
        if t.done() and not t.cancelled():
            with contextlib.suppress(BaseException):
                t.exception()  # retrieved, so asyncio does not log it


class TaskOwner:
    """The background tasks of one component (no fire-and-forget tasks).

    Tasks that end on their own leave the set; their exceptions are retrieved
    (the component's own loop logs what it wants to). ``close`` is idempotent.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()  # never started: no "was never awaited" warning
            raise
        task = loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def tasks(self) -> tuple[asyncio.Task[Any], ...]:
        """The tasks still running (for status and tests)."""
        return tuple(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait for all of them."""
        tasks, self._tasks = list(self._tasks), set()
        await cancel_and_wait(tasks)
