"""Relay end to end on 127.0.0.1: RelayService (R), RelayClient (B), a dialer (A).

A dials ``PeerAddress(B, R_host, relayed_port)``; QUIC and the mutual
authentication run between A and B through R's relayed port.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from p2pstore.nat.relay.client import RelayClient, Reservation
from p2pstore.nat.relay.errors import RelayRefused
from p2pstore.nat.relay.limits import RelayLimits
from p2pstore.nat.relay.service import RelayService
from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import (
    BulkReader,
    CallContext,
    ConnectError,
    Endpoint,
    NodeKey,
    PeerAddress,
    PeerAuthError,
    TransportConfig,
    TransportError,
    open_endpoint,
)

from ..nat_helpers import reserve_body

CFG = TransportConfig(connect_timeout=3.0)


def serve_b(b: Endpoint) -> None:
    async def echo(ctx: CallContext, body: Any) -> Any:
        return {"peer": ctx.peer_id.b32, "addr": [ctx.host, ctx.port], "body": body}

    async def sink(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
        h = hashlib.sha256()
        n = 0
        async for chunk in reader:
            h.update(chunk)
            n += len(chunk)
        return {"n": n, "sha": h.hexdigest()}

    async def source(ctx: CallContext, header: Any) -> AsyncIterator[bytes]:
        for i in range(header["n"]):
            yield bytes([i % 256]) * (1 << 20)

    b.register("echo", echo)
    b.register_stream("sink", sink)
    b.register_fetch("source", source)


class Lost:
    def __init__(self) -> None:
        self.events: list[tuple[Reservation, str]] = []
        self.happened = asyncio.Event()

    def __call__(self, res: Reservation, reason: str) -> None:
        self.events.append((res, reason))
        self.happened.set()


def relayed(b: Endpoint, res: Reservation) -> PeerAddress:
    return PeerAddress(b.node_id, res.host, res.port)


async def test_rpc_and_bulk_through_the_relay() -> None:
    async with endpoints(3, CFG) as (r, b, a):
        svc = RelayService(r, RelayLimits(max_rate=0))
        svc.start()
        serve_b(b)
        client = RelayClient(b)
        try:
            res = await client.reserve(address_of(r))
            assert (res.relay_id, res.host) == (r.node_id, "127.0.0.1")
            assert res.port != r.local_address[1]
            peer = relayed(b, res)
            reply = await a.call(peer, "echo", [1, 2])
            assert reply["peer"] == a.node_id.b32 and reply["body"] == [1, 2]
            # B's handler sees A's address as R observed it; the connection itself
            # runs on a virtual path
            assert reply["addr"] == list(a.local_address)
            assert any(c.addr[0].endswith(".relay.invalid") for c in b._conns)
            # 6 MiB up, 6 MiB down, verified
            data = os.urandom(1 << 20)
            up = await a.call_stream(peer, "sink", None, [data] * 6)
            assert up == {"n": 6 << 20, "sha": hashlib.sha256(data * 6).hexdigest()}
            async with await a.fetch(peer, "source", {"n": 6}) as reader:
                got = await reader.read_all(7 << 20)
            assert got == b"".join(bytes([i]) * (1 << 20) for i in range(6))
            # the call went through R, not around it: R counted the bytes
            st = svc.status()
            (entry,) = st["reservations"]
            assert entry["bytes_in"] > 6 << 20 and entry["bytes_out"] > 6 << 20
            assert entry["circuits"] == 1 and entry["attached"]
            # A's endpoint answered R's path challenge: the circuit is validated
            assert st["counters"]["circuit-validated"] == 1
            assert st["counters"].get("unvalidated", 0) == 0
            assert a.stats["echo_replies"] >= 1
            (mine,) = client.status()
            assert mine["state"] == "active" and len(mine["sources"]) == 1
            assert b.node_id in a.connected_peers
            assert a._peers[b.node_id].addr == ("127.0.0.1", res.port)
        finally:
            await client.close()
            await svc.close()
        assert svc.relayed_ports() == []


async def test_a_relay_cannot_impersonate_b() -> None:
    async with endpoints(4, CFG) as (r, b, m, a):
        svc = RelayService(r)
        svc.start()
        serve_b(b)
        serve_b(m)
        client_m = RelayClient(m)
        try:
            res_m = await client_m.reserve(address_of(r))
            # A expects B but the relayed port leads to M (or R answers itself): refused
            with pytest.raises(PeerAuthError):
                await a.call(PeerAddress(b.node_id, res_m.host, res_m.port), "echo", 1)
            with pytest.raises(PeerAuthError):
                await a.call(PeerAddress(b.node_id, *r.local_address), "echo", 1)
            assert b.node_id not in a.connected_peers
        finally:
            await client_m.close()
            await svc.close()


async def test_over_limit_reservations_are_refused_with_clear_errors() -> None:
    async with endpoints(4, CFG) as (r, b, c, d):
        svc = RelayService(r, RelayLimits(max_reservations=2, max_reservations_per_peer=1))
        svc.start()
        cb, cc, cd = RelayClient(b), RelayClient(c), RelayClient(d)
        try:
            await cb.reserve(address_of(r))
            with pytest.raises(RelayRefused) as e:
                await cb.reserve(address_of(r))
            assert e.value.code == "relay-peer-limit"
            await cc.reserve(address_of(r))
            with pytest.raises(RelayRefused) as e:
                await cd.reserve(address_of(r))
            assert e.value.code == "relay-full"
            assert "maximum of 2 reservations" in str(e.value)
            # someone else's reservation id is unknown to you
            with pytest.raises(TransportError) as err:
                await d.call(address_of(r), "relay.renew", {"id": 1})
            assert getattr(err.value, "code", None) == "relay-unknown"
            with pytest.raises(TransportError) as err:
                await d.call(address_of(r), "relay.renew", {"id": "x"})
            assert getattr(err.value, "code", None) == "bad-request"
        finally:
            for cl in (cb, cc, cd):
                await cl.close()
            await svc.close()


async def test_byte_cap_stops_traffic_and_ends_the_reservation() -> None:
    async with endpoints(3, CFG) as (r, b, a):
        svc = RelayService(r, RelayLimits(max_bytes=300_000, max_rate=0))
        svc.start()
        serve_b(b)
        lost = Lost()
        client = RelayClient(b, on_lost=lost)
        try:
            res = await client.reserve(address_of(r))
            peer = relayed(b, res)
            assert (await a.call(peer, "echo", 1))["body"] == 1
            with pytest.raises(TransportError):
                await a.call_stream(peer, "sink", None, [bytes(1 << 20)], timeout=1.5)
            async with asyncio.timeout(5):
                await lost.happened.wait()
            assert "relay-byte-limit" in lost.events[0][1]
            assert client.reservations() == []
            assert svc.relayed_ports() == []
            assert svc.status()["counters"]["ended:byte-limit"] == 1
            assert client.status()[0]["state"] == "lost"
        finally:
            await client.close()
            await svc.close()


async def test_lifetime_is_renewed_then_max_duration_ends_it() -> None:
    async with endpoints(3, CFG) as (r, b, a):
        svc = RelayService(r, RelayLimits(lifetime=1.0, max_duration=3.0))
        svc.start()
        serve_b(b)
        lost = Lost()
        client = RelayClient(b, on_lost=lost)
        try:
            res = await client.reserve(address_of(r))
            await asyncio.sleep(1.6)  # past the first lifetime: renewed meanwhile
            assert client.reservations()[0].expires > res.expires
            assert (await a.call(relayed(b, res), "echo", 2))["body"] == 2
            async with asyncio.timeout(5):
                await lost.happened.wait()
            reason = lost.events[0][1]
            assert "relay-max-duration" in reason or "relay-expired" in reason
            assert svc.relayed_ports() == []
            with pytest.raises(TransportError):
                await a.call(relayed(b, res), "echo", 3, timeout=2.0)
        finally:
            await client.close()
            await svc.close()


async def test_circuit_limit_refuses_extra_sources() -> None:
    async with endpoints(4, CFG) as (r, b, a1, a2):
        svc = RelayService(r, RelayLimits(max_circuits=1))
        svc.start()
        serve_b(b)
        client = RelayClient(b)
        try:
            res = await client.reserve(address_of(r))
            assert (await a1.call(relayed(b, res), "echo", 1))["body"] == 1
            with pytest.raises(ConnectError):
                await a2.call(relayed(b, res), "echo", 1, timeout=1.0)
            assert svc.status()["counters"]["circuits"] > 0
        finally:
            await client.close()
            await svc.close()


async def test_b_vanishing_mid_transfer_gives_a_clean_error() -> None:
    async with endpoints(2, CFG) as (r, a):
        b = await open_one()
        svc = RelayService(r, RelayLimits(max_rate=0))
        svc.start()
        serve_b(b)
        client = RelayClient(b)
        res = await client.reserve(address_of(r))
        peer = relayed(b, res)

        async def slow_chunks() -> AsyncIterator[bytes]:
            for i in range(200):
                if i == 3:
                    await b.aclose()  # B vanishes (closes everything) mid-upload
                yield bytes(1 << 20)

        try:
            with pytest.raises(TransportError):
                async with asyncio.timeout(20):
                    await a.call_stream(peer, "sink", None, slow_chunks(), timeout=2.0)
            # R notices: the reservation ends and its port closes
            for _ in range(50):
                if not svc.relayed_ports():
                    break
                await asyncio.sleep(0.1)
            assert svc.relayed_ports() == []
        finally:
            await client.close()
            await svc.close()
            await b.aclose()


async def open_one() -> Endpoint:
    return await open_endpoint(NodeKey.generate(), "127.0.0.1", 0, CFG)


async def test_relay_close_cleans_up_and_the_client_learns() -> None:
    async with endpoints(3, CFG) as (r, b, a):
        svc = RelayService(r)
        svc.start()
        serve_b(b)
        lost = Lost()
        client = RelayClient(b, on_lost=lost)
        try:
            res = await client.reserve(address_of(r))
            assert (await a.call(relayed(b, res), "echo", 1))["body"] == 1
            socks = [p.sock for p in svc._ports.values()]
            await svc.close()
            assert all(s.fileno() == -1 for s in socks)
            async with asyncio.timeout(5):
                await lost.happened.wait()
            assert "relay-shutdown" in lost.events[0][1]
            assert b.virtual_paths == []
            with pytest.raises(RelayRefused) as e:
                await client.reserve(address_of(r))
            assert e.value.code == "no-such-method"
        finally:
            await client.close()
            await svc.close()


async def test_release_frees_the_slot() -> None:
    async with endpoints(2, CFG) as (r, b):
        svc = RelayService(r, RelayLimits(max_reservations_per_peer=1))
        svc.start()
        client = RelayClient(b)
        try:
            res = await client.reserve(address_of(r))
            await client.release(res)
            assert client.reservations() == [] and client.status() == []
            for _ in range(20):
                if not svc.relayed_ports():
                    break
                await asyncio.sleep(0.05)
            assert svc.relayed_ports() == []
            res2 = await client.reserve(address_of(r))
            assert res2.rid != res.rid
        finally:
            await client.close()
            await svc.close()


async def test_unrenewed_reservation_expires_and_ends_its_stream() -> None:
    async with endpoints(2, CFG) as (r, b):
        svc = RelayService(r, RelayLimits(lifetime=1.0))
        svc.start()
        try:
            reply = await b.call(address_of(r), "relay.reserve", await reserve_body(r, b))
            assert reply["ttl"] == 1.0 and reply["limits"]["max_bytes"] == 1 << 30
            t0 = asyncio.get_running_loop().time()
            async with await b.fetch(address_of(r), "relay.recv", {"id": reply["id"]}) as rd:
                with pytest.raises(TransportError) as e:
                    await rd.read_all(1 << 20)
            assert getattr(e.value, "code", None) == "relay-expired"
            assert 0.9 < asyncio.get_running_loop().time() - t0 < 3.0
            assert svc.relayed_ports() == []
        finally:
            await svc.close()


async def test_malformed_records_end_the_reservation() -> None:
    async with endpoints(2, CFG) as (r, b):
        svc = RelayService(r)
        svc.start()
        try:
            reply = await b.call(address_of(r), "relay.reserve", await reserve_body(r, b))
            rid = {"id": reply["id"]}
            reader = await b.fetch(address_of(r), "relay.recv", rid)
            with pytest.raises(TransportError) as e:
                await b.call_stream(address_of(r), "relay.send", rid, [b"\x03\x03\x09junk"])
            assert getattr(e.value, "code", None) == "bad-request"
            assert svc.relayed_ports() == []
            assert svc.status()["counters"]["ended:protocol-error"] == 1
            with pytest.raises(TransportError):
                await reader.read_all(1 << 20)
        finally:
            await svc.close()


async def test_unattached_reservation_is_dropped() -> None:
    async with endpoints(2, CFG) as (r, b):
        svc = RelayService(r, RelayLimits(attach_timeout=0.3))
        svc.start()
        try:
            await b.call(address_of(r), "relay.reserve", await reserve_body(r, b))
            assert len(svc.relayed_ports()) == 1
            await asyncio.sleep(0.8)
            assert svc.relayed_ports() == []
            assert svc.status()["counters"]["ended:not-attached"] == 1
        finally:
            await svc.close()


async def test_a_relay_sending_junk_costs_b_only_that_reservation() -> None:
    """A hostile relay: valid reserve reply, then malformed records. B's client
    loses the reservation (no crash, paths detached) and its endpoint keeps working."""
    async with endpoints(3, CFG) as (evil, b, a):

        async def reserve(ctx: CallContext, body: Any) -> Any:
            return {"id": 7, "port": 9, "ttl": 600.0, "limits": {}}

        async def recv(ctx: CallContext, header: Any) -> AsyncIterator[bytes]:
            # one valid datagram from a source, then a record with a bad family
            yield b"\x01\x04\x7f\x00\x00\x01\x00\x09\x00\x04abcd" + b"\x01\x09"

        async def send(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
            async for _ in reader:
                pass
            return None

        evil.register("relay.reserve", reserve)
        evil.register_fetch("relay.recv", recv)
        evil.register_stream("relay.send", send)
        serve_b(b)
        lost = Lost()
        client = RelayClient(b, on_lost=lost)
        try:
            await client.reserve(address_of(evil))
            async with asyncio.timeout(5):
                await lost.happened.wait()
            assert "address family" in lost.events[0][1]
            assert b.virtual_paths == [] and client.reservations() == []
            assert (await a.call(address_of(b), "echo", 5))["body"] == 5
        finally:
            await client.close()


async def test_b_bounds_the_sources_a_relay_can_make_it_track() -> None:
    async with endpoints(2, CFG) as (evil, b):

        async def reserve(ctx: CallContext, body: Any) -> Any:
            return {"id": 1, "port": 9, "ttl": 600.0, "limits": {}}

        async def recv(ctx: CallContext, header: Any) -> AsyncIterator[bytes]:
            for i in range(1, 50):
                yield b"\x01\x04\x0a\x00\x00\x01" + i.to_bytes(2, "big") + b"\x00\x01x"
            await asyncio.sleep(30)

        async def send(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
            async for _ in reader:
                pass

        evil.register("relay.reserve", reserve)
        evil.register_fetch("relay.recv", recv)
        evil.register_stream("relay.send", send)
        client = RelayClient(b, max_sources=5)
        try:
            await client.reserve(address_of(evil))
            for _ in range(100):
                (st,) = client.status()
                if st["dropped"].get("sources", 0) >= 44:
                    break
                await asyncio.sleep(0.02)
            assert len(st["sources"]) == 5 and st["dropped"]["sources"] == 44
            assert len(b.virtual_paths) == 5
        finally:
            await client.close()
        assert b.virtual_paths == []


async def test_relay_over_ipv6_loopback() -> None:
    try:
        eps = [await open_endpoint(NodeKey.generate(), "::1", 0, CFG) for _ in range(3)]
    except TransportError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    r, b, a = eps
    svc = RelayService(r)
    svc.start()
    serve_b(b)
    client = RelayClient(b)
    try:
        res = await client.reserve(PeerAddress(r.node_id, *r.local_address))
        assert res.host == "::1"
        reply = await a.call(relayed(b, res), "echo", 6)
        assert reply["body"] == 6 and reply["addr"] == list(a.local_address)
    finally:
        await client.close()
        await svc.close()
        for ep in eps:
            await ep.aclose()
