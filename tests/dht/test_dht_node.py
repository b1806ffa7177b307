"""DhtNode on the in-memory network, in virtual time: joins, lookups, records, faults."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.errors import DhtLocalError, PeerRejected, RecordError
from dht.messages import FIND_NODE, GET, PUT
from dht.node import DhtNode
from dht.records import MAX_VALUE, record_key, sign_record
from dht.routing import load_contacts, save_contacts
from p2pstore.testing.dht_memnet import Behaviour
from p2pstore.testing.dht_sim import SIM_EPOCH, SimGrid
from p2pstore.testing.vloop import run_virtual
from quic_transport.identity import NodeKey

T = TypeVar("T")
OWNER = NodeKey.from_seed(bytes(range(32)))


def sim(fn: Callable[[SimGrid], Awaitable[T]], n: int, *, seed: int = 1, **cfg: object) -> T:
    async def main() -> T:
        grid = SimGrid(seed=seed, config=DhtConfig(**cfg))  # type: ignore[arg-type]
        await grid.grow(n)
        try:
            return await fn(grid)
        finally:
            await grid.close()

    return run_virtual(main())


def test_lookups_find_the_true_closest() -> None:
    async def body(g: SimGrid) -> None:
        rep = await g.measure(25)
        assert rep.success == 1.0 and rep.found >= 0.95
        g.kill_fraction(0.3)
        rep = await g.measure(25, gone=0.3)
        assert rep.success == 1.0

    sim(body, 80)


def test_publish_then_get_from_anywhere() -> None:
    async def body(g: SimGrid) -> None:
        nodes = list(g.nodes.values())
        rec = await nodes[3].publish(OWNER, b"root", b"hello")
        assert rec.seq == 0
        holders = [n for n in nodes if n.store.get(rec.key, g.clock.time())]
        assert len(holders) >= 15
        for reader in nodes[10:15]:
            got = await reader.get(rec.key)
            assert got == rec
        rec2 = await nodes[7].publish(OWNER, b"root", b"v2")  # another node, same key
        assert rec2.seq == 1
        assert await nodes[20].get(rec.key) == rec2
        assert await nodes[20].get(record_key(OWNER.public_key, b"other")) is None

    sim(body, 50)


def test_highest_seq_wins_over_majority_and_stale_copies_are_repaired() -> None:
    async def body(g: SimGrid) -> None:
        nodes = list(g.nodes.values())
        now = int(g.clock.time())
        old = sign_record(OWNER, b"d", 4, b"old", expires=now + 3600)
        new = sign_record(OWNER, b"d", 5, b"new", expires=now + 3600)
        assert await nodes[0].put(old) >= 15
        closest = await nodes[1].lookup(old.key)
        for c in closest[:3]:  # only 3 of the 20 holders see the update
            g.nodes[c.node_id].store.put(new, g.clock.time())
        got = await nodes[2].get(old.key)
        assert got == new  # not the most common value
        held = [g.nodes[c.node_id].store.get(old.key, g.clock.time()) for c in closest]
        assert all(r == new for r in held)  # written back over the stale copies
        # stores refuse to go backwards
        assert await nodes[3].put(old) == 0

    sim(body, 50)


def test_bad_records_and_requests_are_refused_and_never_served() -> None:
    async def body(g: SimGrid) -> None:
        nodes = list(g.nodes.values())
        a, b = nodes[0], nodes[1]
        now = int(g.clock.time())
        good = sign_record(OWNER, b"x", 1, b"v", expires=now + 3600)
        forged = sign_record(OWNER, b"x", 2, b"evil", expires=now + 3600)
        forged = type(forged)(
            forged.public_key, forged.name, 3, forged.expires, forged.value, forged.signature
        )
        expired = sign_record(OWNER, b"y", 1, b"v", expires=now - 1)
        peer = g.net.nodes[b.node_id].contact
        call = g.net.nodes[a.node_id].call
        for rec, code in ((forged, "bad-signature"), (expired, "expired")):
            with pytest.raises(PeerRejected) as ei:
                await call(peer, PUT, {"record": rec.to_wire()}, timeout=5)
            assert ei.value.code == code
        for method, bad in (
            (PUT, {"record": {**good.to_wire(), "value": b"x" * (MAX_VALUE + 1)}}),
            (PUT, {"record": {**good.to_wire(), "extra": 1}}),
            (FIND_NODE, {"target": b"short"}),
            (GET, {"key": "not bytes"}),
            (GET, []),
        ):
            with pytest.raises(PeerRejected) as ei:
                await call(peer, method, bad, timeout=5)
            assert ei.value.code == "bad-request"
        assert len(b.store) == 0
        with pytest.raises(RecordError):
            await a.put(expired)
        with pytest.raises(RecordError, match="too-large"):
            sign_record(OWNER, b"x", 1, b"v" * (MAX_VALUE + 1), expires=now + 10)
        # a record stored and then expired is not served
        short = sign_record(OWNER, b"z", 1, b"v", expires=now + 30)
        await a.put(short)
        assert await nodes[5].get(short.key) == short
        await asyncio.sleep(31)
        assert await nodes[6].get(short.key) is None
        reply = await call(peer, GET, {"key": short.key.raw}, timeout=5)
        assert "record" not in reply

    sim(body, 40)


@pytest.mark.parametrize(
    "behaviour", [Behaviour.GARBAGE, Behaviour.FAR, Behaviour.FAKE_CLOSE, Behaviour.FORGE]
)
def test_malicious_peers_cannot_break_lookups_or_records(behaviour: Behaviour) -> None:
    async def body(g: SimGrid) -> None:
        honest = list(g.nodes.values())[:1]
        rec = await honest[0].publish(OWNER, b"root", b"genuine")
        bad = set(g.set_behaviour_fraction(0.3, behaviour, spare=[honest[0].node_id]))
        assert honest[0].node_id not in bad
        rep = await g.measure(15)
        assert rep.success == 1.0
        for nid in g.honest_live()[:5]:
            assert await g.nodes[nid].get(rec.key) == rec

    sim(body, 60, seed=5)


def test_node_that_loses_all_contacts_rebootstraps() -> None:
    async def body(g: SimGrid) -> None:
        seed_id = next(iter(g.nodes))
        x = g.add_node(seeds_from=[seed_id])
        await x.start()
        assert len(x.table) > 0
        for c in x.table.contacts():  # e.g. the network moved on while we slept
            x.table.remove(c.node_id)
        assert len(x.table) == 0
        await asyncio.sleep(3 * x.config.maintenance_interval)
        assert len(x.table) > 5
        # with every seed gone it keeps trying, backing off, and never crashes
        for c in x.table.contacts():
            x.table.remove(c.node_id)
        for nid in g.nodes:
            if nid != x.node_id:
                g.net.kill(nid)
        await asyncio.sleep(1800)
        assert len(x.table) == 0
        for nid in g.nodes:
            g.net.revive(nid)
        await asyncio.sleep(x.config.rebootstrap_backoff_max * 2)
        assert len(x.table) > 5
        await x.close()
        assert x._maintenance is None and not x._tasks

    sim(body, 30, maintenance_interval=30.0, rebootstrap_backoff_max=300.0)


def test_republish_keeps_records_alive_and_refresh_is_spread_out() -> None:
    async def body(g: SimGrid) -> None:
        nodes = list(g.nodes.values())
        for n in nodes:
            await n.start(bootstrap=False)
        lookups: list[float] = []
        pub = nodes[0]
        orig = pub._lookup

        async def counting(*a: object, **kw: object) -> object:
            lookups.append(asyncio.get_running_loop().time())
            return await orig(*a, **kw)  # type: ignore[arg-type]

        pub._lookup = counting  # type: ignore[assignment,method-assign]
        rec = await pub.publish(OWNER, b"root", b"v")
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(3 * 1800)  # three record lifetimes
        got = await nodes[9].get(rec.key)
        assert got is not None and got.seq > rec.seq and got.value == b"v"
        assert got.expires > g.clock.time()
        # refresh/republish happen throughout, never as one burst
        times = [t - start for t in lookups if t > start]
        per_period = [sum(1 for t in times if h * 1800 <= t < (h + 1) * 1800) for h in range(3)]
        assert all(c > 0 for c in per_period)
        per_minute: dict[int, int] = {}
        for t in times:
            per_minute[int(t // 60)] = per_minute.get(int(t // 60), 0) + 1
        # a tick does at most max_refresh_per_tick bucket refreshes, one self-lookup and
        # one republish; jittered ticks can fall twice in one minute
        assert max(per_minute.values()) <= 2 * (pub.config.max_refresh_per_tick + 2)
        assert len(per_minute) >= 10
        pub.unpublish(rec.key)
        await asyncio.sleep(2 * 1800)
        assert await nodes[9].get(rec.key) is None  # expired everywhere

    sim(
        body,
        15,
        record_ttl=1800,
        republish_interval=450.0,
        refresh_interval=1200.0,
        maintenance_interval=60.0,
    )


def test_saved_contacts_let_a_node_rejoin_without_seeds(tmp_path: Path) -> None:
    async def body(g: SimGrid) -> None:
        nodes = list(g.nodes.values())
        path = tmp_path / "contacts.json"
        save_contacts(path, nodes[5].table)
        saved = load_contacts(path)
        assert saved
        t = g.net.add(nodes[5].node_id.__class__(random.Random(9).randbytes(20)))
        fresh = DhtNode(t.node_id, t, clock=g.clock, saved_contacts=saved)
        fresh.register_handlers()
        assert await fresh.bootstrap() > 5
        with pytest.raises(DhtLocalError):
            await DhtNode(t.node_id, t, clock=g.clock).bootstrap()

    sim(body, 30)


def test_full_bucket_pings_oldest_and_replaces_it_only_if_dead() -> None:
    async def body(g: SimGrid) -> None:
        x = next(iter(g.nodes.values()))
        # the far half of the ID space (bucket 159) is full in a 60-node network
        idx = 159
        entries = x.table.entries_in(idx)
        assert len(entries) == x.config.k
        oldest = entries[0]
        newcomer = g.add_node()
        c = g.net.nodes[newcomer.node_id].contact
        while x.table.bucket_index(c.node_id) != idx:
            newcomer = g.add_node()
            c = g.net.nodes[newcomer.node_id].contact
        await newcomer.ping(g.net.nodes[x.node_id].contact)  # x hears from newcomer
        await asyncio.sleep(1)
        assert oldest.node_id in x.table and c.node_id not in x.table  # oldest alive
        assert x.table.entries_in(idx)[-1] == oldest  # and moved to the tail
        g.net.kill(x.table.entries_in(idx)[0].node_id)
        dead = x.table.entries_in(idx)[0]
        await newcomer.ping(g.net.nodes[x.node_id].contact)
        await asyncio.sleep(3 * x.config.request_timeout)
        assert dead.node_id not in x.table and c.node_id in x.table

    sim(body, 60, seed=3, ping_after=0.0)


def test_contacts_round_trip_to_peer_address_fields() -> None:
    c = Contact(OWNER.node_id, "127.0.0.1", 4433)
    assert (c.node_id, c.host, c.port) == (OWNER.node_id, "127.0.0.1", 4433)
    assert Contact.from_json(c.to_json()) == c
    assert SIM_EPOCH > 0


def test_virtual_loop_jumps_time_and_detects_deadlock() -> None:
    from p2pstore.testing.vloop import VirtualDeadlock

    async def sleeper() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(86_400)
        return loop.time()

    assert run_virtual(sleeper()) == 86_400

    async def stuck() -> None:
        await asyncio.Event().wait()

    with pytest.raises(VirtualDeadlock):
        run_virtual(stuck())


def test_lossy_network_still_finds_records() -> None:
    async def body(g: SimGrid) -> None:
        nodes = list(g.nodes.values())
        rec = await nodes[0].publish(OWNER, b"lossy", b"v")
        g.net.drop_rate = 0.1  # one request or reply in ten is lost
        for reader in nodes[1:6]:
            assert await reader.get(rec.key) == rec
        rep = await g.measure(10)
        assert rep.success == 1.0

    sim(body, 40, seed=11)


_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=30) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["target", "key", "record", "nodes", "x", "client", "want_anns", "ann", "anns"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=60)
@given(_bodies, st.sampled_from(["ping", "find_node", "get", "put", "announce"]))
def test_handlers_answer_any_body_with_a_reply_or_a_typed_rejection(
    body: object, which: str
) -> None:
    from dht.errors import RequestRejected
    from p2pstore.testing.dht_memnet import MemCallContext, MemoryNetwork

    async def main() -> None:
        net = MemoryNetwork()
        t = net.add(OWNER.node_id)
        node = DhtNode(OWNER.node_id, t, clock=LoopClock(epoch=SIM_EPOCH))
        caller = MemCallContext(NodeKey.from_seed(bytes(32)).node_id, "10.9.9.9", 4000)
        handler = getattr(node.handlers, f"on_{which}")
        try:
            reply = await handler(caller, body)
        except RequestRejected as e:
            assert e.code in {"bad-request"} or e.code.startswith(("bad-", "malformed"))
        else:
            assert isinstance(reply, dict)
        assert node.status()["contacts"] in (0, 1)

    run_virtual(main())


def test_a_transport_bug_for_one_peer_does_not_abort_lookups() -> None:
    async def body(g: SimGrid) -> None:
        x = next(iter(g.nodes.values()))
        real = x.transport
        broken = {c.node_id for c in x.table.contacts()[::3]}

        class Flaky:
            async def call(self, peer: Contact, method: str, body: object, **kw: float) -> object:
                if peer.node_id in broken:
                    raise RuntimeError("transport bug")
                return await real.call(peer, method, body, **kw)

            def register(self, method: str, handler: object) -> None:
                raise AssertionError("not used")

        x.transport = Flaky()  # type: ignore[assignment]
        rep_targets = [
            c.node_id
            for c in list(g.nodes.values())[5].table.contacts()
            if c.node_id != x.node_id and c.node_id not in broken
        ][:5]
        assert broken and rep_targets
        for t in rep_targets:
            found = await x.lookup(t)
            assert found and found[0].node_id == t  # an existing node finds itself first

    sim(body, 40, seed=8)


def test_records_are_handed_to_a_node_that_joins_closest_to_their_key() -> None:
    async def body(g: SimGrid) -> None:
        from quic_transport.identity import NodeId

        nodes = list(g.nodes.values())
        rec = await nodes[0].publish(OWNER, b"handover", b"v")
        close_id = NodeId((int(rec.key) ^ 1).to_bytes(20, "big"))  # nearest possible
        t = g.net.add(close_id)
        newcomer = DhtNode(
            close_id, t, clock=g.clock, seeds=[g.net.nodes[nodes[1].node_id].contact]
        )
        newcomer.register_handlers()
        await newcomer.bootstrap()
        await asyncio.sleep(5)
        assert newcomer.store.get(rec.key, g.clock.time()) == rec
        await newcomer.close()

    sim(body, 40, seed=4)
