"""Real QUIC on 127.0.0.1 (port 0): two or more endpoints inside one process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import (
    BulkReader,
    CallContext,
    ConnectError,
    MessageTooLarge,
    PeerAddress,
    PeerAuthError,
    RpcError,
    RpcTimeout,
    StreamClosedError,
    TransportConfig,
)
from quic_transport.framing import KIND_MSG, encode_header
from quic_transport.identity import NodeKey
from quic_transport.messages import Request, encode_message

# Short timeouts keep failure tests quick; connect_timeout stays generous because a
# TLS handshake on a loaded 2-core machine (CI beside other work) can take over 1 s.
FAST = TransportConfig(
    connect_timeout=5.0, request_read_timeout=0.5, pmtu_probe_timeout=0.1, close_timeout=0.3
)


async def echo(ctx: CallContext, body: Any) -> Any:
    assert ctx.address == PeerAddress(ctx.peer_id, ctx.host, ctx.port)
    return {"peer": ctx.peer_id.raw, "port": ctx.port, "body": body}


async def test_call_reports_verified_caller_and_reuses_one_connection() -> None:
    async with endpoints(2, FAST) as (a, b):
        b.register("t.echo", echo)
        a.register("t.echo", echo)
        results = await asyncio.gather(*(a.call(address_of(b), "t.echo", i) for i in range(20)))
        assert [r["body"] for r in results] == list(range(20))
        assert {r["peer"] for r in results} == {a.node_id.raw}
        assert results[0]["port"] == a.local_address[1]  # the caller's listen port
        # the reverse direction reuses the same connection
        back = await b.call(address_of(a), "t.echo", "x")
        assert back["peer"] == b.node_id.raw
        assert len(a._conns) == 1 and len(b._conns) == 1
        assert await a.ping(address_of(b)) < 1.0


async def test_typed_errors_cross_the_wire() -> None:
    async def refuse(ctx: CallContext, body: Any) -> Any:
        raise RpcError("storage.full", "no space left for share 3")

    async def crash(ctx: CallContext, body: Any) -> Any:
        raise KeyError("secret internal detail")

    async def slow(ctx: CallContext, body: Any) -> Any:
        await asyncio.sleep(10)

    async def huge(ctx: CallContext, body: Any) -> Any:
        return b"x" * (2 << 20)

    async with endpoints(2, FAST) as (a, b):
        b.register("t.refuse", refuse)
        b.register("t.crash", crash)
        b.register("t.slow", slow)
        b.register("t.huge", huge)
        peer = address_of(b)
        with pytest.raises(RpcError) as e:
            await a.call(peer, "t.refuse", None)
        assert (e.value.code, e.value.message) == ("storage.full", "no space left for share 3")
        with pytest.raises(RpcError) as e:
            await a.call(peer, "t.crash", None)
        assert e.value.code == "internal" and "secret" not in e.value.message
        with pytest.raises(RpcError) as e:
            await a.call(peer, "t.none", None)
        assert e.value.code == "no-such-method"
        conn = a._peers[peer.node_id]
        with pytest.raises(RpcTimeout):
            await a.call(peer, "t.slow", None, timeout=0.2)
        # the peer is slow, not dead: it acknowledged the request, so the connection
        # (and whatever else it carries) is kept (Endpoint._drop_if_silent)
        assert a._peers[peer.node_id] is conn and not conn.closing
        with pytest.raises(RpcError) as e:
            await a.call(peer, "t.huge", None)
        assert e.value.code == "result-too-large"
        with pytest.raises(MessageTooLarge):
            await a.call(peer, "t.refuse", b"x" * (2 << 20))
        assert (await a.call(peer, "transport.ping", None)) is None  # still healthy


async def test_wrong_key_is_refused_then_right_key_works() -> None:
    async with endpoints(2, FAST) as (a, b):
        b.register("t.echo", echo)
        host, port = b.local_address
        impostor = PeerAddress(NodeKey.generate().node_id, host, port)
        with pytest.raises(PeerAuthError, match="not the expected") as e:
            await a.call(impostor, "t.echo", 1)
        assert e.value.actual == b.node_id.b32
        assert (await a.call(address_of(b), "t.echo", 1))["body"] == 1


async def test_bad_client_proof_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from quic_transport import peer_connection as connection

    async with endpoints(2, FAST) as (a, b):
        monkeypatch.setattr(connection.auth, "make_proof", lambda *args: bytes(64))
        with pytest.raises(PeerAuthError, match="refused our proof"):
            await a.call(address_of(b), "transport.ping", None)
        assert b.connected_peers == []


async def test_unreachable_peer_is_a_connect_error() -> None:
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound but never read: nobody answers
    try:
        async with endpoints(1, FAST) as (a,):
            peer = PeerAddress(NodeKey.generate().node_id, *dead.getsockname())
            with pytest.raises(ConnectError):
                await a.call(peer, "t.echo", 1, timeout=1.0)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(ConnectError, match=r"within 0\.2 s"):
                await a.call(peer, "t.echo", 1, timeout=0.2)  # the whole call is bounded
            assert asyncio.get_running_loop().time() - t0 < 0.5
    finally:
        dead.close()


async def test_bulk_upload_with_slow_reader_stays_within_window() -> None:
    cfg = TransportConfig(bulk_window=1 << 20, pmtu_probe_timeout=0.1)
    size = 12 << 20
    seen_buffered: list[int] = []

    async def sink(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
        h = hashlib.sha256()
        n = 0
        async for chunk in reader:
            h.update(chunk)
            n += len(chunk)
            seen_buffered.append(reader._stream.buffered)
            if n < 4 << 20:
                await asyncio.sleep(0.002)  # a slow consumer at first
        return {"n": n, "sha": h.digest(), "name": header["name"]}

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(size // (1 << 20)):
            yield bytes([i]) * (1 << 20)

    expected = hashlib.sha256(b"".join(bytes([i]) * (1 << 20) for i in range(12))).digest()
    async with endpoints(2, cfg) as (a, b):
        b.register_stream("t.sink", sink)
        result = await a.call_stream(address_of(b), "t.sink", {"name": "s"}, chunks())
        assert result == {"n": size, "sha": expected, "name": "s"}
        assert max(seen_buffered) <= 1 << 20


async def test_bulk_download_and_error_midway() -> None:
    async def source(ctx: CallContext, header: Any) -> AsyncIterator[bytes]:
        for i in range(header["n"]):
            if i == header.get("fail_at"):
                raise RpcError("share.corrupt", "block 3 failed its hash")
            yield bytes([i % 256]) * 300_000

    async with endpoints(2, FAST) as (a, b):
        b.register_fetch("t.src", source)
        async with await a.fetch(address_of(b), "t.src", {"n": 20}) as reader:
            data = await reader.read_all(10 << 20)
        assert data == b"".join(bytes([i]) * 300_000 for i in range(20))
        reader = await a.fetch(address_of(b), "t.src", {"n": 8, "fail_at": 3})
        with pytest.raises(RpcError) as e:
            async for _ in reader:
                pass
        assert e.value.code == "share.corrupt"
        with pytest.raises(RpcError, match="no-such-method"):
            await (await a.fetch(address_of(b), "t.nothing", None)).read()
        # early close by the reader: the server's sender stops, nothing leaks
        reader = await a.fetch(address_of(b), "t.src", {"n": 500})
        assert await reader.read()
        await reader.aclose()
        await asyncio.sleep(0.1)
        assert await a.ping(address_of(b)) < 1.0
        assert not any(c.streams for c in b._conns)


async def test_upload_refused_early_gets_the_error() -> None:
    async def picky(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
        raise RpcError("quota", "too big")

    async with endpoints(2, FAST) as (a, b):
        b.register_stream("t.picky", picky)
        with pytest.raises(RpcError, match="quota"):
            await a.call_stream(address_of(b), "t.picky", None, [b"x" * (4 << 20)] * 4)


async def test_garbage_and_half_open_streams_do_not_hurt_good_clients() -> None:
    cfg = TransportConfig(
        request_read_timeout=0.3, max_concurrent_streams=8, pmtu_probe_timeout=0.1
    )
    async with endpoints(3, cfg) as (server, evil, good):
        server.register("t.echo", echo)
        stop = asyncio.Event()
        good_calls = 0

        async def well_behaved() -> None:
            nonlocal good_calls
            while not stop.is_set():
                r = await good.call(address_of(server), "t.echo", good_calls, timeout=2)
                assert r["body"] == good_calls
                good_calls += 1
                await asyncio.sleep(0.005)

        runner = asyncio.ensure_future(well_behaved())
        conn = await evil._connection(address_of(server), 5.0)

        async def misbehave(payload: bytes) -> BaseException | None:
            st = conn.open_stream()
            conn.send_stream_data(st.stream_id, payload)
            try:
                await st.next_item(3.0)
            except (StreamClosedError, RpcTimeout) as e:
                return e
            finally:
                st.release()
            return None

        garbage = await misbehave(b"\x09not a frame at all")
        oversized = await misbehave(encode_header(KIND_MSG, 1 << 31))
        bad_cbor = await misbehave(encode_header(KIND_MSG, 3) + b"\xff\xff\xff")
        half_open = await misbehave(encode_message(Request("t.echo", 1), limit=4096)[:7])
        for e in (garbage, oversized, bad_cbor, half_open):
            assert isinstance(e, StreamClosedError), e
        # raw UDP garbage at the listening socket
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for n in (0, 1, 5, 1200, 1500, 9000):
            raw.sendto(bytes([0xC3]) + b"\xee" * n, server.local_address)
            raw.sendto(b"\x40" + b"\x00" * n, server.local_address)
        # well-formed Initial headers (QUIC v1, 8-byte CIDs) around random payloads
        for _ in range(50):
            junk = b"\xc3\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
            junk += b"\x00\x44\xb0" + os.urandom(1200)
            raw.sendto(junk, server.local_address)
        raw.close()
        await asyncio.sleep(0.05)
        assert len(server._conns) == 2  # the good and the evil client; no junk state
        # too many streams at once: extras are answered "busy", the rest served
        many = await asyncio.gather(
            *(evil.call(address_of(server), "t.echo", i) for i in range(40)),
            return_exceptions=True,
        )
        busy = [r for r in many if isinstance(r, RpcError) and r.code == "busy"]
        ok = [r for r in many if isinstance(r, dict)]
        assert len(busy) + len(ok) == 40 and ok
        await asyncio.sleep(0.2)
        stop.set()
        await runner
        assert good_calls >= 10
        assert all(not c.streams for c in server._conns)


async def test_datagram_size_is_discovered() -> None:
    async with endpoints(2, FAST) as (a, b):
        await a.ping(address_of(b))
        (ca,) = a._conns
        (cb,) = b._conns
        # 65,507: the largest IPv4 UDP payload; loopback carries it (MTU 65,536)
        assert ca.quic.datagram_size == 65507
        assert cb.quic.datagram_size == 65507  # the listener used the confirmed size
    capped = TransportConfig(max_datagram_size=1452, pmtu_probe_timeout=0.1)
    async with endpoints(2, capped) as (a, b):
        await a.ping(address_of(b))
        assert next(iter(a._conns)).quic._max_datagram_size == 1452
    async with endpoints(2, TransportConfig(pmtu_probe=False)) as (a, b):
        await a.ping(address_of(b))
        assert next(iter(a._conns)).quic._max_datagram_size == 1200


async def _eventually(cond: Callable[[], bool], what: str, within: float = 5.0) -> float:
    """Poll ``cond`` until true; returns the seconds it took. Polling (not a fixed
    sleep) keeps these tests honest on a loaded 2-core machine: a condition that never
    becomes true still fails, one that is merely slow does not."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        if loop.time() - t0 > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - t0


async def test_idle_timeout_and_graceful_close() -> None:
    cfg = TransportConfig(idle_timeout=0.5, pmtu_probe_timeout=0.1, close_timeout=0.3)
    async with endpoints(3, cfg) as (a, b, c):
        await a.ping(address_of(b))
        await c.ping(address_of(b))
        assert len(b.connected_peers) == 2
        await c.aclose()  # graceful: b hears CONNECTION_CLOSE at once
        await _eventually(lambda: b.connected_peers == [a.node_id], "b drops c on close")
        # The idle timeout (nothing else) ends the other one.
        await _eventually(
            lambda: b.connected_peers == [] and a.connected_peers == [], "idle timeout"
        )
        assert await a.ping(address_of(b)) < 5.0  # and a new one is dialled on demand


async def test_connection_limit() -> None:
    cfg = TransportConfig(max_connections=1, connect_timeout=0.5, pmtu_probe_timeout=0.1)

    async def hold(ctx: CallContext, body: Any) -> Any:
        await asyncio.sleep(1.0)

    async with endpoints(3, cfg) as (a, b, c):
        b.register("t.hold", hold)
        busy = asyncio.ensure_future(a.call(address_of(b), "t.hold", None))
        await _eventually(lambda: b.connected_peers == [a.node_id], "a connected to b")
        with pytest.raises(ConnectError):  # b is full and its one connection is busy
            await c.ping(address_of(b))
        await busy
        # a's connection is idle now: b closes it to make room for c
        assert await c.ping(address_of(b)) < 5.0
        await _eventually(lambda: b.connected_peers == [c.node_id], "b evicted a for c")
        # c is at its limit too (one connection, to b): dialling out evicts it when idle
        assert await c.ping(address_of(a)) < 1.0
        await asyncio.sleep(0.1)
        assert c.connected_peers == [a.node_id]


async def test_silent_client_is_dropped_after_the_auth_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quic_transport import peer_connection as connection

    original = connection.PeerConnection._on_handshake

    def no_proof(self: connection.PeerConnection) -> None:
        if self.is_client:
            self.state = connection.AUTH  # complete TLS, then say nothing
        else:
            original(self)

    cfg = TransportConfig(connect_timeout=0.4, pmtu_probe=False)
    async with endpoints(2, cfg) as (a, b):
        monkeypatch.setattr(connection.PeerConnection, "_on_handshake", no_proof)
        with pytest.raises((PeerAuthError, ConnectError)):
            await a.call(address_of(b), "transport.ping", None)
        await asyncio.sleep(0.2)
        assert not b._conns


async def test_streams_arriving_out_of_order_are_all_accepted() -> None:
    from quic_transport.peer_connection import PeerConnection

    conn = PeerConnection(None, None, ("127.0.0.1", 1), expected=None)  # type: ignore[arg-type]
    assert conn._first_sight(8) and conn._first_sight(4) and conn._first_sight(0)
    assert not conn._first_sight(4) and not conn._first_sight(8)
    assert conn._seen_floor == 3 and not conn._seen_above


async def test_ipv6_loopback() -> None:
    from quic_transport import open_endpoint
    from quic_transport.identity import NodeKey

    try:
        a = await open_endpoint(NodeKey.generate(), "::1", 0, FAST)
    except Exception:
        pytest.skip("no IPv6 loopback")
    b = await open_endpoint(NodeKey.generate(), "::1", 0, FAST)
    try:
        b.register("t.echo", echo)
        r = await a.call(PeerAddress(b.node_id, "::1", b.local_address[1]), "t.echo", 6)
        assert r["body"] == 6 and r["port"] == a.local_address[1]
        # 65,507-byte probes cannot leave (IPv6 headers are 20 bytes longer): the
        # search settles on the 65,488 plateau (MTU 65,536) without waiting out rounds
        (conn,) = a._conns
        assert conn.quic.datagram_size == 65488
    finally:
        await a.aclose()
        await b.aclose()


async def test_close_while_dialing_and_calls_after_close() -> None:
    from quic_transport import EndpointClosed

    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    try:
        async with endpoints(1, FAST) as (a,):
            peer = PeerAddress(NodeKey.generate().node_id, *dead.getsockname())
            pending = asyncio.ensure_future(a.call(peer, "t.echo", 1))
            await asyncio.sleep(0.05)
            await a.aclose()
            with pytest.raises(EndpointClosed):
                await pending
            with pytest.raises(EndpointClosed):
                await a.call(peer, "t.echo", 1)
    finally:
        dead.close()


@pytest.mark.parametrize("attack", ["garbage-proof", "stream-before-auth", "oversized-auth"])
async def test_misbehaving_caller_during_authentication(
    monkeypatch: pytest.MonkeyPatch, attack: str
) -> None:
    from quic_transport import peer_connection as connection

    original = connection.PeerConnection._on_handshake

    def evil(self: connection.PeerConnection) -> None:
        if not self.is_client:
            original(self)
            return
        self.state = connection.AUTH
        if attack == "garbage-proof":
            self.quic.send_stream_data(0, b"\x01\x00\x00\x00\x03\xff\xfe\xfd", True)
        elif attack == "stream-before-auth":
            self.quic.send_stream_data(4, encode_message(Request("t.echo", 1), limit=4096), True)
        else:
            self.quic.send_stream_data(0, encode_header(KIND_MSG, 1 << 20), False)

    async with endpoints(2, FAST) as (a, b):
        b.register("t.echo", echo)
        monkeypatch.setattr(connection.PeerConnection, "_on_handshake", evil)
        with pytest.raises((PeerAuthError, ConnectError)) as e:
            await a.call(address_of(b), "t.echo", 1)
        assert "refused" in str(e.value) or "closed" in str(e.value)
        await asyncio.sleep(0.1)
        assert b.connected_peers == []
        monkeypatch.setattr(connection.PeerConnection, "_on_handshake", original)
        assert (await a.call(address_of(b), "t.echo", 2))["body"] == 2


async def test_restarted_peer_is_redialled_after_one_timeout() -> None:
    from quic_transport import open_endpoint

    key = NodeKey.generate()
    async with endpoints(1, FAST) as (a,):
        b = await open_endpoint(key, "127.0.0.1", 0, FAST)
        host, port = b.local_address
        peer = PeerAddress(key.node_id, host, port)
        b.register("t.echo", echo)
        assert (await a.call(peer, "t.echo", 1))["body"] == 1
        # the peer dies without a word and comes back on the same port, new state
        b._loop.remove_reader(b._sock.fileno())
        b._sock.close()
        b2 = await open_endpoint(key, host, port, FAST)
        try:
            b2.register("t.echo", echo)
            with pytest.raises(RpcTimeout):
                await a.call(peer, "t.echo", 2, timeout=0.3)
            assert (await a.call(peer, "t.echo", 3))["body"] == 3
        finally:
            await b2.aclose()
            for conn in list(b._conns):
                conn.terminated(0, "test")


async def test_stalled_upload_gets_a_timeout_reply() -> None:
    async def sink(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
        return len(await reader.read_all(1 << 20))

    async def stalling() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        await asyncio.sleep(0.8)  # longer than the listener's request_read_timeout
        yield b"b" * 100_000

    async with endpoints(2, FAST) as (a, b):
        b.register_stream("t.sink", sink)
        with pytest.raises(RpcError) as e:
            await a.call_stream(address_of(b), "t.sink", None, stalling())
        assert e.value.code == "timeout"
        assert await a.call_stream(address_of(b), "t.sink", None, [b"c" * 10]) == 10


async def test_connection_budget_slows_many_uploads_without_failing_them() -> None:
    from quic_transport.streams import INITIAL_CREDIT

    budget = 2 << 20
    cfg = TransportConfig(
        bulk_window=1 << 20, connection_buffer_bytes=budget, pmtu_probe_timeout=0.1
    )
    peak = 0

    async with endpoints(2, cfg) as (a, b):

        async def slow_sink(ctx: CallContext, header: Any, reader: BulkReader) -> Any:
            nonlocal peak
            n = 0
            async for chunk in reader:
                n += len(chunk)
                conn = next(iter(b._conns))
                peak = max(peak, conn.buffered)
                await asyncio.sleep(0.001)
            return n

        b.register_stream("t.slow", slow_sink)
        size = 3 << 20
        results = await asyncio.gather(
            *(
                a.call_stream(address_of(b), "t.slow", i, [bytes(size)], timeout=10)
                for i in range(6)
            )
        )
        assert results == [size] * 6
        assert 0 < peak <= budget + 6 * INITIAL_CREDIT
        assert next(iter(b._conns)).buffered == 0  # everything accounted back


async def test_listener_call_overtaking_auth_ok_is_held_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from quic_transport import peer_connection as connection

    original = connection.PeerConnection._on_handshake
    seen: list[Any] = []

    def overtaken(self: connection.PeerConnection) -> None:
        original(self)
        if self.is_client:  # as if the listener's first call arrived before auth-ok
            early = encode_message(Request("t.record", "early"), limit=4096)
            self._on_stream_data(1, early, True)

    async def record(ctx: CallContext, body: Any) -> Any:
        seen.append((ctx.peer_id, body))
        return None

    async with endpoints(2, FAST) as (a, b):
        a.register("t.record", record)
        b.register("t.echo", echo)
        monkeypatch.setattr(connection.PeerConnection, "_on_handshake", overtaken)
        assert (await a.call(address_of(b), "t.echo", 1))["body"] == 1
        await asyncio.sleep(0.05)
        assert seen == [(b.node_id, "early")]  # dispatched once READY, as the verified b


async def test_address_validation_under_pressure() -> None:
    cfg = TransportConfig(max_connections=4, pmtu_probe_timeout=0.1)
    async with endpoints(4, cfg) as (server, a, b, c):
        await a.ping(address_of(server))
        assert server.stats.get("retries", 0) == 0  # no Retry while there is room
        await b.ping(address_of(server))
        await c.ping(address_of(server))  # half the slots taken: this one via Retry
        assert server.stats["retries"] >= 1
        assert sorted(n.raw for n in server.connected_peers) == sorted(
            e.node_id.raw for e in (a, b, c)
        )


async def test_valid_initials_from_nowhere_hold_no_state_under_pressure() -> None:
    import ssl

    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    cfg = TransportConfig(max_connections=2, pmtu_probe_timeout=0.1)
    async with endpoints(2, cfg) as (server, a):
        await a.ping(address_of(server))
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never reads: "spoofed"
        try:
            for _ in range(20):
                q = QuicConnection(
                    configuration=QuicConfiguration(
                        is_client=True, alpn_protocols=["p2pstore/1"], verify_mode=ssl.CERT_NONE
                    )
                )
                q.connect(server.local_address, now=0.0)
                for data, _ in q.datagrams_to_send(0.0):
                    raw.sendto(data, server.local_address)
            await asyncio.sleep(0.1)
            assert len(server._conns) == 1 and server.stats["retries"] >= 20
        finally:
            raw.close()
