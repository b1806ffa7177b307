"""Waiting in async tests for a condition, not for a fixed time: robust on a loaded
machine, quick on an idle one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(cond: Callable[[], object], within: float = 20.0, step: float = 0.05) -> None:
    """Poll ``cond`` every ``step`` seconds until it is true; AssertionError after
    ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(step)
