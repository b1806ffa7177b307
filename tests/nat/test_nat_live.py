"""Real sockets on 127.0.0.1: dial-back reachability, the punch RPC flow and the
Connector's fallback, with a user-space NAT (tests/nat_helpers.py) where needed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from p2pstore.nat.connector import ConnectingEndpoint, Connector
from p2pstore.nat.errors import NatLocalError
from p2pstore.nat.peer_record import PeerRecord, RelayAddress
from p2pstore.nat.punch import PunchLimits, PunchService, request_connect
from p2pstore.nat.reachability import (
    DIALBACK,
    DialbackLimits,
    DialbackServer,
    ProbeResponder,
    ReachabilityChecker,
    ask_dialback,
)
from p2pstore.nat.tracker import ReachabilityTracker, TrackerConfig
from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import (
    CallContext,
    ConnectError,
    Endpoint,
    PeerAddress,
    RpcError,
    TransportConfig,
)
from quic_transport.identity import NodeKey

from ..nat_helpers import UdpNat

FAST = TransportConfig(connect_timeout=2.0, close_timeout=0.2, pmtu_probe_timeout=0.1)
LIMITS = DialbackLimits(dial_timeout=1.5)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def nat(inside: Endpoint, filtering: str) -> AsyncIterator[UdpNat]:
    n = UdpNat(inside.local_address, filtering)
    try:
        yield n
    finally:
        n.close()


def serve_dialback(*eps: Endpoint) -> list[DialbackServer]:
    servers = [DialbackServer(ep, LIMITS) for ep in eps]
    for s in servers:
        s.register()
    return servers


async def check(a: Endpoint, peers: list[PeerAddress], extra: Any = ()) -> ReachabilityTracker:
    responder = ProbeResponder(a)
    responder.register()
    tracker = ReachabilityTracker(TrackerConfig(), local_addresses=frozenset({a.local_address}))
    checker = ReachabilityChecker(a, responder, tracker, lambda: peers, lambda: extra)
    await checker.check_once()
    assert not checker.last_errors
    return tracker


async def test_dialback_on_loopback_says_public() -> None:
    async with endpoints(3, FAST) as (a, b, c):
        serve_dialback(b, c)
        t = await check(a, [address_of(b), address_of(c)])
        assert t.verdict == "public"
        assert t.observed == a.local_address
        assert t.nat_type(0) == "none"
        assert t.reachable_addresses(0) == [a.local_address]


async def test_behind_restricted_nat_says_private() -> None:
    async with endpoints(3, FAST) as (a, b, c), nat(a, "restricted") as n:
        serve_dialback(b, c)
        via = [PeerAddress(p.node_id, *n.portal(p.local_address)) for p in (b, c)]
        t = await check(a, via)
        assert t.verdict == "private"
        assert t.observed == n.outside  # both saw the NAT's mapping
        assert t.nat_type(0) == "cone"
        assert n.dropped > 0  # the fresh-socket dial-backs were filtered


async def test_behind_full_cone_nat_says_public() -> None:
    async with endpoints(3, FAST) as (a, b, c), nat(a, "full") as n:
        serve_dialback(b, c)
        via = [PeerAddress(p.node_id, *n.portal(p.local_address)) for p in (b, c)]
        t = await check(a, via)
        assert t.verdict == "public" and t.observed == n.outside


async def test_unanswered_extra_address_is_not_reached_and_limits_hold() -> None:
    async with endpoints(2, FAST) as (a, b):
        (server,) = serve_dialback(b)
        responder = ProbeResponder(a)
        responder.register()
        dead = ("127.0.0.1", free_udp_port())
        other_ip = ("127.0.0.2", 9)  # not the observed IP: never dialed (no reflection)
        answer = await ask_dialback(a, responder, address_of(b), [dead, other_ip])
        assert answer.tried == (a.local_address, dead)
        assert answer.reached == (a.local_address,)
        with pytest.raises(RpcError) as e:
            await ask_dialback(a, responder, address_of(b))
        assert e.value.code == "busy" and server.refused == 1
        with pytest.raises(RpcError) as e:
            await a.call(address_of(b), DIALBACK, {"nonce": b"short"})
        assert e.value.code == "bad_request"


async def test_a_lying_dialback_server_is_not_believed() -> None:
    async with endpoints(2, FAST) as (a, b):

        async def liar(ctx: CallContext, body: Any) -> Any:
            obs = [ctx.host, ctx.port]
            return {"observed": obs, "tried": [obs], "reached": [obs]}

        b.register(DIALBACK, liar)
        responder = ProbeResponder(a)
        responder.register()
        answer = await ask_dialback(a, responder, address_of(b))
        assert answer.reached == () and not answer.success


def record_for(
    key_ep: Endpoint, rendezvous: Endpoint, relayed_port: int = 0, direct: Any = ()
) -> PeerRecord:
    host, port = rendezvous.local_address
    # the record is signed by B's key; tests hold B's endpoint, whose key signs
    return PeerRecord.create(
        key_ep.key,
        seq=1,
        reach="private",
        storage=True,
        direct=tuple(direct),
        relays=(RelayAddress(rendezvous.node_id, host, port, relayed_port),),
    )


async def test_punch_flow_between_three_endpoints() -> None:
    async with endpoints(3, FAST) as (a, r, b), nat(b, "full") as n:
        services = [PunchService(ep, PunchLimits(connect_interval=0.0)) for ep in (a, r, b)]
        for s in services:
            s.register()
        try:
            await b.ping(PeerAddress(r.node_id, *n.portal(r.local_address)))  # B -> R open
            before = a.stats["datagrams_in"]
            observed, you = await request_connect(a, address_of(r), b.node_id)
            assert observed == n.outside and you == a.local_address
            await asyncio.sleep(0.3)
            assert services[2].stats["datagrams"] >= 2  # B punched toward A ...
            assert a.stats["datagrams_in"] > before  # ... and A's endpoint dropped them
            connector = Connector(a)
            peer = await connector.connect(record_for(b, r))
            assert (peer.host, peer.port) == n.outside
            route = connector.route(b.node_id)
            assert route is not None and route.how == "punched" and route.via == r.node_id
            # connections are keyed by node ID: any address now reuses it
            assert await a.ping(PeerAddress(b.node_id, "127.0.0.1", 1), timeout=2) < 2
            await connector.close()
        finally:
            for s in services:
                await s.close()


async def test_connect_refusals() -> None:
    async with endpoints(3, FAST) as (a, r, b):
        rs = PunchService(r)
        rs.register()
        bs = PunchService(b, enabled=False)
        bs.register()
        with pytest.raises(RpcError) as e:
            await request_connect(a, address_of(r), b.node_id)
        assert e.value.code == "not_connected"
        await b.ping(address_of(r))
        with pytest.raises(RpcError) as e:
            await request_connect(a, address_of(r), b.node_id)
        assert e.value.code == "punch_refused"
        with pytest.raises(RpcError) as e:
            await request_connect(a, address_of(r), b.node_id)
        assert e.value.code == "busy"  # one nat.connect per second per caller
        with pytest.raises(RpcError) as e:
            await request_connect(b, address_of(r), b.node_id)
        assert e.value.code == "bad_request"


async def test_connector_falls_back_to_relay_when_punched_dial_fails() -> None:
    async with endpoints(3, FAST) as (a, r, b), nat(b, "restricted") as n, nat(b, "full") as relay:
        for ep in (r, b):
            PunchService(ep).register()
        await b.ping(PeerAddress(r.node_id, *n.portal(r.local_address)))
        # the rendezvous reports B's restricted mapping: A's dial there is filtered
        connector = Connector(a)
        record = record_for(b, r, relayed_port=relay.outside[1])
        peer = await connector.connect(record)
        assert (peer.host, peer.port) == relay.outside
        route = connector.route(b.node_id)
        assert route is not None and route.how == "relayed"
        assert n.dropped > 0 and connector.stats == {
            "direct": 0,
            "punched": 0,
            "relayed": 1,
            "failed": 0,
        }
        # a storage-style client through the connector reuses the connection
        proxy = ConnectingEndpoint(a, connector, record)
        b.register("t.echo", _echo)
        assert await proxy.call(PeerAddress(b.node_id, "0.0.0.0", 1), "t.echo", 7) == 7
        await connector.close()


async def _echo(ctx: CallContext, body: Any) -> Any:
    return body


async def test_connector_direct_and_failure() -> None:
    async with endpoints(2, FAST) as (a, b):
        connector = Connector(a, hole_punching=False, use_relays=False)
        rec = PeerRecord.create(
            b.key, seq=1, reach="public", storage=True, direct=(b.local_address,)
        )
        peer = await connector.connect(rec)
        assert peer == address_of(b)
        route = connector.route(b.node_id)
        assert route is not None and route.how == "direct"
        lost = PeerRecord.create(
            NodeKey.generate(), seq=1, reach="private", storage=True, direct=()
        )
        with pytest.raises(NatLocalError, match="no usable address"):
            await connector.connect(lost)
        await connector.close()


async def test_dialback_reply_carries_the_servers_own_verdict() -> None:
    async with endpoints(2, FAST) as (a, b):
        DialbackServer(b, LIMITS, verdict=lambda: "public").register()
        responder = ProbeResponder(a)
        responder.register()
        answer = await ask_dialback(a, responder, address_of(b))
        assert answer.peer_reach == "public"


async def test_connector_falls_back_to_a_real_relay_reservation() -> None:
    from p2pstore.nat.relay.client import RelayClient
    from p2pstore.nat.relay.service import RelayService

    async with endpoints(3, FAST) as (a, r, b), nat(b, "restricted") as n:
        relay = RelayService(r)
        relay.start()
        PunchService(r).register()
        PunchService(b).register()
        client = RelayClient(b)
        try:
            via = PeerAddress(r.node_id, *n.portal(r.local_address))  # B -> R through its NAT
            res = await client.reserve(via)
            record = PeerRecord.create(
                b.key,
                seq=1,
                reach="private",
                storage=True,
                relays=(RelayAddress(r.node_id, "127.0.0.1", r.local_address[1], res.port),),
            )
            connector = Connector(a)
            peer = await connector.connect(record)  # punch is filtered, relay works
            assert (peer.host, peer.port) == ("127.0.0.1", res.port)
            route = connector.route(b.node_id)
            assert route is not None and route.how == "relayed"
            b.register("t.echo", _echo)
            assert await a.call(peer, "t.echo", b"through the relay") == b"through the relay"
            seen = b.peer_address(a.node_id)
            assert seen is not None and seen[0].endswith(".relay.invalid")  # B's view
            await connector.close()
        finally:
            await client.close()
            await relay.close()


async def test_connector_skips_punching_when_a_symmetric_nat_is_involved() -> None:
    async with endpoints(3, FAST) as (a, r, b), nat(b, "full") as relay:
        services = [PunchService(ep) for ep in (r, b)]
        for sv in services:
            sv.register()
        await b.ping(address_of(r))
        host, port = r.local_address
        record = PeerRecord.create(
            b.key,
            seq=1,
            reach="private",
            storage=True,
            nat="symmetric",
            relays=(RelayAddress(r.node_id, host, port, relay.outside[1]),),
        )
        connector = Connector(a)
        await connector.connect(record)
        route = connector.route(b.node_id)
        assert route is not None and route.how == "relayed"
        assert services[0].stats["connects"] == 0  # no rendezvous was asked
        await connector.close()


async def test_fresh_dial_does_not_join_a_stale_dial_in_flight() -> None:
    async with endpoints(2, FAST) as (a, b):
        stale = PeerAddress(b.node_id, "127.0.0.1", free_udp_port())  # nobody answers
        pending = asyncio.ensure_future(a.ping(stale, timeout=5.0))
        await asyncio.sleep(0.3)  # the stale dial is in flight
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await a.dial(address_of(b), timeout=3.0)
        assert loop.time() - t0 < 1.9  # did not wait for the stale dial's 2 s timeout
        b.register("t.echo", _echo)
        assert await a.call(PeerAddress(b.node_id, "127.0.0.1", 1), "t.echo", 1) == 1
        with contextlib.suppress(Exception):
            await pending
        with pytest.raises(ConnectError):
            await a.dial(stale, timeout=0.5)  # abandoned at the timeout
