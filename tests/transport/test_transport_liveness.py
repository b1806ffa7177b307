"""Silent peers (quic_transport/liveness.py): the pure rule, and real QUIC on
127.0.0.1 where a peer vanishes without a word in the middle of a call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.testing.endpoints import endpoints
from quic_transport import (
    CallContext,
    PeerAddress,
    StreamClosedError,
    TransportConfig,
    open_endpoint,
)
from quic_transport.identity import NodeKey
from quic_transport.liveness import LivenessRule, Verdict

RULE = LivenessRule(probe_after=1.0, silent_after=4.0)


def test_rule_probes_then_declares_dead() -> None:
    assert RULE.verdict(10.5, 10.0, None) is Verdict.OK
    assert RULE.verdict(11.0, 10.0, None) is Verdict.PROBE
    assert RULE.verdict(12.0, 10.0, 11.0) is Verdict.WAIT
    assert RULE.verdict(14.9, 10.0, 11.0) is Verdict.WAIT
    assert RULE.verdict(15.0, 10.0, 11.0) is Verdict.DEAD
    # the peer answered after the probe: back to normal, probe again when quiet
    assert RULE.verdict(12.3, 11.2, 11.0) is Verdict.PROBE
    assert RULE.verdict(11.5, 11.2, 11.0) is Verdict.OK


@given(
    last=st.floats(0, 1e6),
    probe=st.one_of(st.none(), st.floats(0, 1e6)),
    dt=st.floats(0, 100),
)
def test_rule_never_declares_dead_without_an_unanswered_probe(
    last: float, probe: float | None, dt: float
) -> None:
    v = RULE.verdict(max(last, probe or 0) + dt, last, probe)
    if v is Verdict.DEAD:
        assert probe is not None and probe >= last and dt >= 0
        assert max(last, probe) + dt - probe >= RULE.silent_after


def test_rule_validates() -> None:
    with pytest.raises(ValueError):
        LivenessRule(probe_after=0)
    with pytest.raises(ValueError):
        TransportConfig(peer_silent_timeout=-1)


LIVE = TransportConfig(
    connect_timeout=5.0,
    request_read_timeout=30.0,
    pmtu_probe_timeout=0.1,
    close_timeout=0.3,
    peer_probe_after=0.3,
    peer_silent_timeout=1.0,
)


async def test_peer_vanishing_mid_upload_fails_the_stream_in_seconds() -> None:
    """The peer's process is gone (socket closed, no CONNECTION_CLOSE): the caller's
    upload stream fails after about probe_after + silent_after, not at its own 30 s
    timeout nor the 60 s idle timeout."""
    got = asyncio.Event()

    async def sink(ctx: CallContext, header: Any, reader: Any) -> Any:
        async for _ in reader:
            got.set()
        return None

    key = NodeKey.generate()
    async with endpoints(1, LIVE) as (a,):
        b = await open_endpoint(key, "127.0.0.1", 0, LIVE)
        b.register_stream("t.sink", sink)
        host, port = b.local_address
        peer = PeerAddress(key.node_id, host, port)

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0.01)

        call = asyncio.create_task(a.call_stream(peer, "t.sink", {}, chunks(), timeout=30.0))
        await asyncio.wait_for(got.wait(), 5)
        b._loop.remove_reader(b._sock.fileno())  # the peer dies without a word
        b._sock.close()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(StreamClosedError, match="silent"):
            await asyncio.wait_for(call, 10)
        took = loop.time() - t0
        assert took < 1.3 + 1.0 + 1.0, f"took {took:.1f} s to notice"
        assert a.stats["silent_closed"] == 1
        for conn in list(b._conns):
            conn.terminated(0, "test")


async def test_slow_handler_on_a_live_peer_is_not_declared_dead() -> None:
    """A peer that takes its time to answer (but is there) acknowledges the PINGs."""

    async def slow(ctx: CallContext, body: Any) -> Any:
        await asyncio.sleep(3.0)
        return "done"

    async with endpoints(2, LIVE) as (a, b):
        b.register("t.slow", slow)
        host, port = b.local_address
        assert await a.call(PeerAddress(b.node_id, host, port), "t.slow", None, timeout=10) == (
            "done"
        )
        assert a.stats.get("silent_closed", 0) == 0


async def test_idle_connection_is_never_probed() -> None:
    """No streams open: the watchdog is not running and nothing is sent."""

    async def echo(ctx: CallContext, body: Any) -> Any:
        return body

    async with endpoints(2, LIVE) as (a, b):
        b.register("t.echo", echo)
        host, port = b.local_address
        assert await a.call(PeerAddress(b.node_id, host, port), "t.echo", 1) == 1
        await asyncio.sleep(0.2)  # the call's stream is released
        out = a.stats["datagrams_out"]
        await asyncio.sleep(2.0)
        assert a.stats["datagrams_out"] - out <= 2  # an ACK at most, no probes
        assert a._watchdog is None
