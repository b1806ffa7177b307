"""Small asyncio helpers shared by the grid's components.

Why not ``asyncio.wait_for``: in Python 3.11 it can swallow a cancellation when the
awaited operation finishes at the moment it is cancelled (bpo-42130, fixed in
3.12), which let a cancelled share writer run on and wait forever. ``bounded``
uses ``asyncio.timeout`` (cancel/uncancel based, no such race), and
``cancel_and_wait`` re-cancels until every task has really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import TypeVar

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
