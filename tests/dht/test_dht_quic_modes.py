"""DHT client mode and node announcements over real QUIC sockets on 127.0.0.1.

Five servers and three client-mode nodes: the clients' lookups, gets, puts and
announcements all work, yet no server ever has a client in its routing table, and
every server finds each client's announcement by a lookup near the client's ID."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.node import DhtNode
from dht.quic_wiring import dht_transport
from quic_transport import open_endpoint
from quic_transport.identity import NodeId, NodeKey

CONFIG = DhtConfig(k=8, request_timeout=3.0)


async def test_client_mode_nodes_are_absent_from_every_server_table() -> None:
    clock = LoopClock()
    closers: list[Callable[[], Awaitable[None]]] = []
    nodes: list[DhtNode] = []
    try:
        keys = [NodeKey.generate() for _ in range(8)]
        seed: Contact | None = None
        for i, key in enumerate(keys):
            ep = await open_endpoint(key, "127.0.0.1", 0)
            closers.append(ep.aclose)
            host, port = ep.local_address
            node = DhtNode(
                key.node_id,
                dht_transport(ep),
                clock=clock,
                seeds=[] if seed is None else [seed],
                config=CONFIG,
                server=i < 5,
                signer=key,
            )
            nodes.append(node)
            if seed is None:
                seed = Contact(key.node_id, host, port)
                await node.start(bootstrap=False)
            else:
                await node.start()
        servers, clients = nodes[:5], nodes[5:]
        for s in servers[1:]:  # let early servers learn the later ones
            await s.lookup(s.node_id)
        for c in clients:
            assert await c.announce(b"record of " + c.node_id.raw) >= 3
        owner = NodeKey.generate()
        rec = await clients[0].publish(owner, b"n", b"written by a client")
        assert await servers[3].get(rec.key) == rec
        srec = await servers[1].publish(owner, b"s", b"written by a server")
        for c in clients:
            assert await c.get(srec.key) == srec
            found = await c.lookup(servers[2].node_id)
            assert found[0].node_id == servers[2].node_id
        client_ids = {c.node_id for c in clients}
        for s in servers:
            assert client_ids.isdisjoint(x.node_id for x in s.table.contacts())
            assert len(s.table) == 4  # exactly the other servers
            for c in clients:
                target = NodeId(c.node_id.raw[:-1] + bytes([c.node_id.raw[-1] ^ 1]))
                out = await s.lookup_detailed(target)
                assert client_ids.isdisjoint(x.node_id for x in out.contacts)
                assert out.announcements[0].node_id == c.node_id
                assert out.announcements[0].value == b"record of " + c.node_id.raw
    finally:
        await asyncio.gather(*(n.close() for n in nodes))
        for close in closers:
            await close()
