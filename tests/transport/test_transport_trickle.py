"""Cheap identities trying to exhaust a node (issue: trickled requests): real QUIC on
127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import CallContext, StreamClosedError, TransportConfig
from quic_transport.framing import KIND_MSG, encode_header


async def echo(ctx: CallContext, body: Any) -> Any:
    return body


async def test_trickled_requests_time_out_and_cannot_lock_out_an_honest_peer() -> None:
    """Four peers each trickle one byte every 0.25 s of a 4 KiB request that never
    completes, holding all max_connections = 4 slots. Before: the per-piece timeout
    restarted on every byte and no connection counted as idle, so an honest call
    failed with ConnectError. Now a request must arrive whole within
    request_read_timeout, and a connection with no complete request is evicted."""
    cfg = TransportConfig(
        max_connections=4, request_read_timeout=1.0, connect_timeout=3.0, pmtu_probe_timeout=0.1
    )
    async with endpoints(6, cfg) as (server, e1, e2, e3, e4, honest):
        server.register("t.echo", echo)
        stop = asyncio.Event()
        aborted = 0

        async def trickle(evil: Any) -> None:
            nonlocal aborted
            conn = await evil._connection(address_of(server), 5.0)
            while not stop.is_set() and not conn.closing:
                st = conn.open_stream()
                conn.send_stream_data(st.stream_id, encode_header(KIND_MSG, 4096))
                try:
                    for _ in range(100):
                        await asyncio.sleep(0.25)
                        if stop.is_set():
                            return
                        conn.send_stream_data(st.stream_id, b"\x00")
                except StreamClosedError:
                    aborted += 1
                finally:
                    st.release()

        tasks = [asyncio.ensure_future(trickle(e)) for e in (e1, e2, e3, e4)]
        await asyncio.sleep(2.5)  # the four hold every slot, trickling
        deadline = asyncio.get_running_loop().time() + 10
        while len(server.connected_peers) < 4:  # on a loaded machine they come later
            assert asyncio.get_running_loop().time() < deadline, "the four never connected"
            await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await honest.call(address_of(server), "t.echo", "hi", timeout=5.0) == "hi"
        took = loop.time() - t0
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # a slot was freed for it: a trickler evicted as useless or (on a loaded
        # machine, where a trickle misses its deadline) its request cut off
        assert server.stats.get("evicted_useless", 0) + aborted >= 1
        assert took < 3.0


async def test_a_request_must_arrive_whole_within_the_deadline() -> None:
    cfg = TransportConfig(request_read_timeout=0.8, pmtu_probe_timeout=0.1)
    async with endpoints(2, cfg) as (server, evil):
        conn = await evil._connection(address_of(server), 5.0)
        st = conn.open_stream()
        conn.send_stream_data(st.stream_id, encode_header(KIND_MSG, 4096))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        closed = None
        try:
            for _ in range(40):  # one byte every 0.1 s: the old per-piece timer never fired
                await asyncio.sleep(0.1)
                conn.send_stream_data(st.stream_id, b"\x00")
                item = st._error
                if item is not None:
                    closed = loop.time() - t0
                    break
            if closed is None:
                await st.next_item(2.0)
        except StreamClosedError:
            closed = loop.time() - t0
        finally:
            st.release()
        assert closed is not None and closed < 2.0, closed


async def test_connections_per_host_are_capped_but_loopback_is_exempt() -> None:
    class Fake:
        def __init__(self, host: str, port: int) -> None:
            self.addr, self.closing = (host, port), False

    cfg = TransportConfig(max_connections_per_host=3)
    async with endpoints(1, cfg) as (server,):
        real = set(server._conns)
        fakes = {Fake("198.51.100.7", 1000 + i) for i in range(3)}
        server._conns |= fakes  # type: ignore[arg-type]
        try:
            assert server._host_full(("198.51.100.7", 5555))
            assert not server._host_full(("198.51.100.8", 5555))
            v6 = {Fake(f"2001:db8::{i}", 1) for i in range(3)}
            server._conns |= v6  # type: ignore[arg-type]
            assert server._host_full(("2001:db8::ffff", 1))  # the same /64
            lo = {Fake("127.0.0.1", 2000 + i) for i in range(9)}
            server._conns |= lo  # type: ignore[arg-type]
            assert not server._host_full(("127.0.0.1", 3000))  # a local grid
        finally:
            server._conns = real
