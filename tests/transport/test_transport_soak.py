"""Long transfers (make test-slow): hundreds of MiB each way, memory stays flat."""

from __future__ import annotations

import hashlib
import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import BulkReader, CallContext

MIB = 1 << 20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def pattern(n_mib: int) -> AsyncIterator[bytes]:
    for i in range(n_mib):
        yield bytes([i % 251]) * MIB


@pytest.mark.slow
async def test_300_mib_each_way_without_buffering() -> None:
    expected = hashlib.sha256()
    for i in range(300):
        expected.update(bytes([i % 251]) * MIB)

    async def sink(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
        h = hashlib.sha256()
        async for chunk in reader:
            h.update(chunk)
        return h.digest()

    async def source(ctx: CallContext, header: Any) -> AsyncIterator[bytes]:
        async for chunk in pattern(header):
            yield chunk

    async with endpoints(2) as (a, b):
        b.register_stream("soak.sink", sink)
        b.register_fetch("soak.source", source)
        await a.ping(address_of(b))
        before = peak_rss_mib()
        digest = await a.call_stream(address_of(b), "soak.sink", None, pattern(300), timeout=60)
        assert digest == expected.digest()
        h = hashlib.sha256()
        async with await a.fetch(address_of(b), "soak.source", 300, timeout=60) as reader:
            async for chunk in reader:
                h.update(chunk)
        assert h.digest() == expected.digest()
        # both directions together held at most a few windows, never the payload
        grown = peak_rss_mib() - before
        print(f"peak RSS grew {grown:.1f} MiB")
        assert grown < 120
