"""DHT client/server mode and node announcements on the in-memory network (virtual time).

Client-mode nodes use the DHT fully (lookups, gets, puts, announcements) yet never
appear in any server's routing table; switching modes at runtime takes effect at once;
announcements are found near the announcer's ID, withdrawn, re-announced, and forged
ones get the forging peer dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.errors import DhtLocalError
from dht.node import DhtNode
from p2pstore.testing.dht_memnet import Behaviour, MemoryNetwork
from p2pstore.testing.dht_sim import SIM_EPOCH, SimGrid
from p2pstore.testing.vloop import run_virtual
from quic_transport.identity import NodeId, NodeKey

T = TypeVar("T")
CLIENT_KEYS = [NodeKey.from_seed(bytes([200 + i]) * 32) for i in range(5)]
OWNER = NodeKey.from_seed(bytes([99]) * 32)


def sim(fn: Callable[[SimGrid], Awaitable[T]], n: int, *, seed: int = 3, **cfg: object) -> T:
    async def main() -> T:
        grid = SimGrid(seed=seed, config=DhtConfig(**cfg))  # type: ignore[arg-type]
        await grid.grow(n)
        try:
            return await fn(grid)
        finally:
            await grid.close()

    return run_virtual(main())


async def add_clients(g: SimGrid, keys: list[NodeKey] = CLIENT_KEYS) -> list[DhtNode]:
    first = next(iter(g.nodes))
    clients = [g.add_node(seeds_from=[first], key=k, server=False) for k in keys]
    await asyncio.gather(*(c.bootstrap() for c in clients))
    return clients


def holders_of(g: SimGrid, nid: NodeId) -> list[NodeId]:
    """Nodes whose routing table contains ``nid``."""
    return [n.node_id for n in g.nodes.values() if nid in n.table]


def near(nid: NodeId) -> NodeId:
    """An ID next to ``nid`` (as a storage index near a node would be)."""
    return NodeId(nid.raw[:-1] + bytes([nid.raw[-1] ^ 1]))


def test_client_nodes_use_the_dht_but_are_in_no_routing_table() -> None:
    async def body(g: SimGrid) -> None:
        servers = list(g.nodes.values())
        clients = await add_clients(g)
        for c in clients:
            assert not c.server and c.status()["mode"] == "client"
            assert len(c.table) >= 20  # the client itself routes through servers
        rec = await servers[5].publish(OWNER, b"r", b"from a server")
        crec = await clients[0].publish(OWNER, b"c", b"from a client")
        for c in clients:
            assert await c.get(rec.key) == rec
            got = await c.lookup(near(servers[9].node_id))
            assert got[0].node_id == servers[9].node_id
        assert await servers[2].get(crec.key) == crec
        # The client stored nothing on itself: no lookup would ever ask it.
        assert len(clients[0].store) == 0
        # Lookups by servers never return clients, even for a client's own ID.
        found = await servers[3].lookup(clients[1].node_id)
        assert {c.node_id for c in found}.isdisjoint(k.node_id for k in CLIENT_KEYS)
        for c in clients:
            assert holders_of(g, c.node_id) == [x.node_id for x in clients if c.node_id in x.table]
        for s in servers:
            assert not any(k.node_id in s.table for k in CLIENT_KEYS)

    sim(body, 40)


def test_switching_modes_at_runtime() -> None:
    async def body(g: SimGrid) -> None:
        (c,) = await add_clients(g, CLIENT_KEYS[:1])
        servers = [n for n in g.nodes.values() if n is not c]
        assert not any(c.node_id in s.table for s in servers)
        await c.set_server(True)
        assert c.server and c.status()["mode"] == "server"
        # The self-lookup made it known to its neighbourhood...
        neighbours = await servers[0].lookup(c.node_id)
        assert neighbours[0].node_id == c.node_id
        knowing = [s for s in servers if c.node_id in s.table]
        assert len(knowing) >= 15
        # ...and back to client: its flagged self-lookup makes those it asks drop it.
        asked = await c.lookup(c.node_id)
        await c.set_server(False)
        for contact in asked:
            assert c.node_id not in g.nodes[contact.node_id].table
        found = await servers[1].lookup(c.node_id)
        assert c.node_id not in {x.node_id for x in found}
        await c.set_server(False)  # no-op

    sim(body, 40)


def test_announcements_are_found_near_the_announcer_and_withdrawn() -> None:
    async def body(g: SimGrid) -> None:
        servers = list(g.nodes.values())
        clients = await add_clients(g)
        a = clients[0]
        held = await a.announce(b"peer record of a")
        assert held >= 15
        assert a.announcement is not None and a.announcement.value == b"peer record of a"
        for reader in (servers[4], servers[17], clients[1]):
            out = await reader.lookup_detailed(near(a.node_id))
            assert [x.node_id for x in out.announcements][:1] == [a.node_id]
            assert out.announcements[0].value == b"peer record of a"
            out = await reader.get_detailed(near(a.node_id))
            assert out.announcements[0].node_id == a.node_id
        # Never as a routing-table entry.
        assert not any(a.node_id in s.table for s in servers)
        # A newer announcement replaces the old one everywhere it was held.
        await a.announce(b"moved")
        out = await servers[8].lookup_detailed(a.node_id)
        assert out.announcements[0].value == b"moved"
        # Plain lookups do not carry announcements (maintenance traffic stays small).
        plain = await servers[8]._lookup(a.node_id, "dht.find_node")
        assert plain.announcements == ()
        old = a.announcement
        assert await a.withdraw() >= 15
        assert a.announcement is None
        out = await servers[8].lookup_detailed(a.node_id)
        assert a.node_id not in {x.node_id for x in out.announcements}
        # A stale server still holding the old one is outvoted by the withdrawal.
        closest = await servers[9].lookup(a.node_id)
        stale = g.nodes[closest[0].node_id]
        assert old is not None
        stale.anns._anns[a.node_id] = old
        assert stale.anns.closest(a.node_id, 1, g.clock.time()) == [old]
        out = await servers[9].lookup_detailed(a.node_id)
        assert a.node_id not in {x.node_id for x in out.announcements}
        assert await a.withdraw() == 0  # nothing left to withdraw

    sim(body, 40)


def test_announcements_are_bounded_per_response_and_several_found() -> None:
    async def body(g: SimGrid) -> None:
        clients = await add_clients(g)
        for i, c in enumerate(clients):
            await c.announce(b"rec %d" % i)
        reader = next(iter(g.nodes.values()))
        target = clients[2].node_id
        out = await reader.lookup_detailed(target)
        got = [x.node_id for x in out.announcements]
        assert got[0] == target
        # Sorted by distance to the target; a server returns at most ann_max_returned.
        assert got == sorted(got, key=target.distance)
        server = g.nodes[out.contacts[0].node_id]
        assert len(server.handlers._anns_for(target, True)) <= 2

    sim(body, 30, ann_max_returned=2)


def test_announcement_is_kept_alive_by_reannouncing() -> None:
    async def body(g: SimGrid) -> None:
        (c,) = await add_clients(g, CLIENT_KEYS[:1])
        await c.start(bootstrap=False)  # maintenance loop: re-announces
        first = await c.announce(b"alive")
        assert first >= 10
        seq0 = c.announcement.seq if c.announcement else -1
        reader = next(iter(g.nodes.values()))
        await asyncio.sleep(2000)  # > 3 lifetimes of the first signature
        out = await reader.lookup_detailed(c.node_id)
        assert out.announcements and out.announcements[0].value == b"alive"
        assert out.announcements[0].seq > seq0
        assert out.announcements[0].expires > g.clock.time()

    sim(
        body,
        25,
        announce_ttl=600,
        announce_interval=100,
        maintenance_interval=20,
    )


def test_forged_announcements_drop_the_forger_and_the_real_one_wins() -> None:
    async def body(g: SimGrid) -> None:
        (a,) = await add_clients(g, CLIENT_KEYS[:1])
        await a.announce(b"authentic")
        reader = g.nodes[next(iter(g.nodes))]
        forgers = g.set_behaviour_fraction(0.3, Behaviour.FORGE_ANN, spare=[reader.node_id])
        holders = [f for f in forgers if a.node_id in g.nodes[f].anns.node_ids()]
        assert holders  # some forgers hold the announcement and tamper with it
        out = await reader.lookup_detailed(a.node_id)
        assert out.announcements[0].value == b"authentic"
        assert all(x.value == b"authentic" for x in out.announcements if x.node_id == a.node_id)
        for f in holders:
            assert f not in reader.table  # counted as failed and dropped

    sim(body, 40, seed=5)


def test_announce_needs_the_nodes_own_key() -> None:
    async def main() -> None:
        net = MemoryNetwork()
        t = net.add(OWNER.node_id)
        clock = LoopClock(epoch=SIM_EPOCH)
        bare = DhtNode(OWNER.node_id, t, clock=clock)
        with pytest.raises(DhtLocalError):
            await bare.announce(b"x")
        assert await bare.withdraw() == 0
        with pytest.raises(DhtLocalError):
            DhtNode(OWNER.node_id, t, clock=clock, signer=CLIENT_KEYS[0])
        mine = DhtNode(OWNER.node_id, t, clock=clock, signer=OWNER)
        for bad in (b"", b"x" * 1025):
            with pytest.raises(DhtLocalError):
                await mine.announce(bad)

    run_virtual(main())


def test_announcement_is_handed_over_to_a_server_joining_next_to_the_announcer() -> None:
    async def body(g: SimGrid) -> None:
        (c,) = await add_clients(g, CLIENT_KEYS[:1])
        await c.announce(b"hand me over")
        nid = near(c.node_id)  # the new server is the closest of all to the announcer
        first = next(iter(g.nodes))
        newcomer = DhtNode(
            nid, g.net.add(nid), clock=g.clock, seeds=[g.net.nodes[first].contact], config=g.config
        )
        newcomer.register_handlers()
        g.nodes[nid] = newcomer
        await newcomer.bootstrap()
        await asyncio.sleep(5)  # handovers run as node-owned tasks
        got = newcomer.anns.get(c.node_id, g.clock.time())
        assert got is not None and got.value == b"hand me over"
        # handed over once (by the single closest previous holder), not by all k
        assert g.net.by_method.get("dht.announce", 0) <= 20 + 2

    sim(body, 30)
