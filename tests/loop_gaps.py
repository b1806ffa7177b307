"""How long an event loop was held: for tests that a slow call does not block it."""

from __future__ import annotations

import asyncio
import time


async def record_gaps(gaps: list[float], every: float) -> None:
    """Forever: sleep ``every`` seconds and append to ``gaps`` how long each sleep
    took (much longer than ``every`` means something held the loop)."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
