"""Endpoint virtual paths (quic_transport/paths.py, Endpoint.attach_path/inject/detach_path).

Two real endpoints are wired to each other *only* through virtual paths (each
path's send callable injects into the other endpoint), so everything that works
here works without the socket: datagram-size probing, handshake, Retry, RPC.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from p2pstore.testing.endpoints import endpoints
from quic_transport import ConnectError, Endpoint, PeerAddress, TransportConfig
from quic_transport.paths import check_key, is_virtual, token_address, virtual_key


def test_virtual_keys_are_address_shaped_and_never_ip_literals() -> None:
    key = virtual_key("s1", "r2", port=4000)
    assert key == ("s1.r2.relay.invalid", 4000)
    assert is_virtual(key) and not is_virtual(("127.0.0.1", 4000))
    with pytest.raises(ValueError):
        ipaddress.ip_address(key[0])
    for bad in (("1.2.3.4", 1), ("x.relay.invalid", 0), ("x.relay.invalid", True), "x"):
        with pytest.raises(ValueError):
            check_key(bad)
    with pytest.raises(ValueError):
        virtual_key("Bad Label", port=1)


def test_token_address_is_a_stable_discard_prefix_ip_per_key() -> None:
    a = token_address(("s1.r1.relay.invalid", 5))
    b = token_address(("s2.r1.relay.invalid", 5))
    assert a == token_address(("s1.r1.relay.invalid", 5)) and a != b
    assert ipaddress.IPv6Address(a[0]) in ipaddress.IPv6Network("100::/64")
    assert token_address(("10.0.0.1", 7)) == ("10.0.0.1", 7)


def wire_paths(x: Endpoint, y: Endpoint, n: int = 1) -> tuple[tuple[str, int], tuple[str, int]]:
    """Connect x and y through a pair of virtual paths; returns (x's key for y, y's for x)."""
    kx = virtual_key(f"to-y{n}", port=1000 + n)
    ky = virtual_key(f"to-x{n}", port=2000 + n)
    x.attach_path(kx, lambda d: y.inject(d, ky))
    y.attach_path(ky, lambda d: x.inject(d, kx))
    return kx, ky


async def test_rpc_over_virtual_paths_only() -> None:
    async with endpoints(2) as (a, b):
        seen = []

        async def who(ctx, body):  # type: ignore[no-untyped-def]
            seen.append((ctx.host, ctx.port))
            return body

        b.register("who", who)
        ka, kb = wire_paths(a, b)
        peer = PeerAddress(b.node_id, *ka)
        assert await a.call(peer, "who", "hi") == "hi"
        assert seen == [kb]  # b sees a at its virtual key (no origin given)
        # datagram-size probing went through the path too
        conn = a._peers[b.node_id]
        assert conn.addr == ka
        assert conn.quic._max_datagram_size > 1200
        before = a.stats["datagrams_out"]
        data = bytes(range(256)) * 3000  # 750 KiB each way
        got = await a.call(peer, "who", data)
        assert got == data and a.stats["datagrams_out"] > before


async def test_retry_works_on_a_virtual_path() -> None:
    # max_connections=2: from one live connection on, token-less Initials get a Retry
    cfg = TransportConfig(max_connections=2)
    async with endpoints(3, cfg) as (a, b, c):
        k1, _ = wire_paths(a, c, 1)
        k2, _ = wire_paths(b, c, 2)
        await a.ping(PeerAddress(c.node_id, *k1))
        await b.ping(PeerAddress(c.node_id, *k2))
        assert c.stats["retries"] >= 1


async def test_detach_drops_traffic_and_closes_connections() -> None:
    async with endpoints(2) as (a, b):
        ka, kb = wire_paths(a, b)
        await a.ping(PeerAddress(b.node_id, *ka))
        b.detach_path(kb)
        await asyncio.sleep(0.05)
        assert all(c.addr != kb or c.closing for c in b._conns)
        before = b.stats.get("inject_dropped", 0)
        b.inject(b"\x40" + bytes(30), kb)
        assert b.stats["inject_dropped"] == before + 1
        a.detach_path(ka)
        with pytest.raises(ConnectError, match="no virtual path"):
            await a.call(PeerAddress(b.node_id, *ka), "x", None, timeout=1)
        # a detached key is never handed to the socket (no DNS lookup of .invalid)
        a._send_raw(b"x", ka)


async def test_attach_refuses_real_addresses() -> None:
    async with endpoints(1) as (a,):
        with pytest.raises(ValueError):
            a.attach_path(("127.0.0.1", 9), lambda d: None)


async def test_origin_is_what_handlers_see() -> None:
    async with endpoints(2) as (a, b):
        seen = []

        async def who(ctx, body):  # type: ignore[no-untyped-def]
            seen.append((ctx.host, ctx.port))

        b.register("who", who)
        ka = virtual_key("to-b", port=7)
        kb = virtual_key("to-a", port=8)
        a.attach_path(ka, lambda d: b.inject(d, kb))
        b.attach_path(kb, lambda d: a.inject(d, ka), origin=("203.0.113.9", 4242))
        await a.call(PeerAddress(b.node_id, *ka), "who", None)
        assert seen == [("203.0.113.9", 4242)]
        assert b.caller_address(kb) == ("203.0.113.9", 4242)
        assert b.caller_address(("127.0.0.1", 5)) == ("127.0.0.1", 5)
        b.detach_path(kb)
        assert b.caller_address(kb) == kb
