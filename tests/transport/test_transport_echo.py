"""Path challenges (quic_transport/echo.py): the format, the reply bound, and a real
endpoint on 127.0.0.1 answering them without amplification."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import given
from hypothesis import strategies as st

from p2pstore.testing.endpoints import endpoints
from quic_transport import echo


@given(st.binary(min_size=16, max_size=16))
def test_reply_carries_the_token_and_is_the_same_size(token: bytes) -> None:
    req = echo.request(token)
    rep = echo.reply_to(req)
    assert rep is not None and len(rep) == len(req) == echo.SIZE
    assert echo.reply_token(rep) == token
    assert echo.reply_to(rep) is None and echo.reply_token(req) is None
    assert req[0] & 0x40 == 0 and rep[0] & 0x40 == 0  # never taken for QUIC


@given(st.binary(max_size=64))
def test_junk_is_neither(data: bytes) -> None:
    if echo.is_request(data):
        assert data.startswith(echo.REQUEST_MAGIC)
    else:
        assert echo.reply_to(data) is None


def test_limiter_bounds_replies_per_source_and_in_total() -> None:
    lim = echo.ReplyLimiter(per_source_rate=2, per_source_burst=8, total_rate=10, total_burst=20)
    assert sum(lim.allow("192.0.2.1", 0.0) for _ in range(100)) == 8
    assert sum(lim.allow("192.0.2.1", 1.0) for _ in range(100)) == 2  # refilled 2/s
    # an IPv6 /64 is one source
    assert sum(lim.allow(f"2001:db8::{i:x}", 0.0) for i in range(100)) == 8
    # many sources: the total bucket holds
    assert sum(lim.allow(f"198.51.100.{i}", 0.0) for i in range(200)) <= 20


async def test_endpoint_answers_spoofed_challenges_at_most_the_burst() -> None:
    """100 requests 'from' one address (a spoofed victim): at most 8 replies of 27
    bytes reach it, i.e. at most 216 bytes, never more than was sent."""
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.setblocking(False)
    async with endpoints(1) as (a,):
        for i in range(100):
            victim.sendto(echo.request(i.to_bytes(16, "big")), a.local_address)
        await asyncio.sleep(0.3)
        got = []
        while True:
            try:
                got.append(victim.recv(100))
            except BlockingIOError:
                break
        assert 1 <= len(got) <= 8 and all(len(d) == echo.SIZE for d in got)
        assert a.stats["echo_refused"] >= 92
    victim.close()


async def test_spoofed_size_probes_get_bounded_replies_no_larger() -> None:
    """Size probes are answered before authentication, so their source may be a
    victim: the ACKs toward one address stop at the per-source budget (512 KiB at
    once) and none is larger than its probe."""
    from quic_transport import pmtu

    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.setblocking(False)
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    got = 0
    async with endpoints(1) as (a,):
        for i in range(40):  # 40 x 32 KiB = 1.25 MiB of probes
            victim.sendto(
                pmtu.encode(pmtu.TYPE_PROBE, i.to_bytes(8, "big"), 32768), a.local_address
            )
            await asyncio.sleep(0.002)
            while True:
                try:
                    d = victim.recv(65536)
                except BlockingIOError:
                    break
                assert len(d) <= 32768
                got += len(d)
        await asyncio.sleep(0.2)
        while True:
            try:
                got += len(victim.recv(65536))
            except BlockingIOError:
                break
        assert 0 < got <= 512 * 1024 + 32768
        assert a._sizer.replies_refused >= 20
    victim.close()
