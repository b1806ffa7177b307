"""Bandwidth caps on real QUIC over 127.0.0.1: the caps hold within 10 % over 10 s.

The two 10-second tests check the promise of docs/limits.md ("bandwidth caps
hold within 10% over a 10-second transfer"); they measure payload bytes delivered
to the receiver between two instants after a 1-second warm-up, so connection
set-up and the initial burst do not count. At 2 MB/s neither core is busy (the
transport moves ~200 MB/s on loopback), so a loaded machine does not keep the
transfer from reaching the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import BulkReader, CallContext, Endpoint, TransportConfig
from quic_transport.ratelimit import MIN_RECV_BUFFER

CAP = 2_000_000  # bytes per second
WARMUP = 1.0
WINDOW = 10.0
CHUNK = b"\x5a" * (256 * 1024)


class Sink:
    """A bulk handler counting the payload bytes delivered so far."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, ctx: CallContext, header: Any, reader: BulkReader) -> int:
        async for chunk in reader:
            self.received += len(chunk)
        return self.received


async def _endless() -> AsyncIterator[bytes]:
    while True:
        yield CHUNK


async def measure_rate(sender: Endpoint, receiver: Endpoint) -> float:
    """Payload bytes per second delivered over WINDOW seconds after WARMUP seconds
    of an endless bulk transfer from ``sender`` to ``receiver``."""
    sink = Sink()
    receiver.register_stream("t.sink", sink)
    transfer = asyncio.create_task(
        sender.call_stream(address_of(receiver), "t.sink", None, _endless(), timeout=120)
    )
    try:
        await asyncio.sleep(WARMUP)
        assert not transfer.done(), transfer
        t0, b0 = time.monotonic(), sink.received
        await asyncio.sleep(WINDOW)
        t1, b1 = time.monotonic(), sink.received
        assert not transfer.done(), transfer
    finally:
        transfer.cancel()
        with contextlib.suppress(BaseException):
            await transfer
    return (b1 - b0) / (t1 - t0)


@pytest.mark.timeout(90)
async def test_upload_cap_holds_within_10_percent_over_10_seconds() -> None:
    capped = TransportConfig(upload_rate=CAP)
    async with endpoints(1, capped) as (a,), endpoints(1) as (b,):
        rate = await measure_rate(a, b)
        assert a.limits["upload_deferred"] > 0  # the gate, not the machine, held it back
    print(f"upload cap 2 MB/s: delivered {rate / 1e6:.3f} MB/s over {WINDOW} s")
    assert abs(rate - CAP) <= 0.10 * CAP, f"{rate / 1e6:.3f} MB/s against a 2 MB/s cap"


@pytest.mark.timeout(90)
async def test_download_cap_holds_within_10_percent_over_10_seconds() -> None:
    capped = TransportConfig(download_rate=CAP)
    async with endpoints(1) as (a,), endpoints(1, capped) as (b,):
        rate = await measure_rate(a, b)
        assert b.limits["read_pauses"] > 0
    print(f"download cap 2 MB/s: delivered {rate / 1e6:.3f} MB/s over {WINDOW} s")
    assert abs(rate - CAP) <= 0.10 * CAP, f"{rate / 1e6:.3f} MB/s against a 2 MB/s cap"


async def test_capped_endpoints_still_connect_call_and_answer_pings_promptly() -> None:
    """Both caps on both sides: handshakes, calls and pings get through, a transfer
    several times the burst takes about as long as the cap says, and the short
    receive queue keeps round trips well under a second while a transfer runs."""
    rate = 1_000_000
    cfg = TransportConfig(upload_rate=rate, download_rate=rate, connect_timeout=5.0)
    size = 8 * len(CHUNK)  # 2 MiB: ~2 s at the cap

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield CHUNK

    async with endpoints(2, cfg) as (a, b):
        sink = Sink()
        b.register_stream("t.sink", sink)
        t0 = time.monotonic()
        transfer = asyncio.create_task(
            a.call_stream(address_of(b), "t.sink", None, chunks(), timeout=30)
        )
        await asyncio.sleep(0.5)
        rtts = [await b.ping(address_of(a), timeout=5.0) for _ in range(3)]
        assert await transfer == size
        took = time.monotonic() - t0
        assert took >= (size - 2 * 64 * 1024) / rate * 0.9, took
        assert max(rtts) < 1.0, rtts
        assert b.limits["download_rate"] == rate and a.limits["upload_rate"] == rate


async def test_download_cap_shortens_the_receive_queue() -> None:
    async with (
        endpoints(1, TransportConfig(download_rate=500_000)) as (capped,),
        endpoints(1) as (plain,),
    ):
        small = capped._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        big = plain._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert small < big
        assert small <= 2 * MIN_RECV_BUFFER  # the kernel reports twice the size set
