"""Routing table (sans-I/O): buckets, LRS eviction with ping, replacements, persistence."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.contact import Contact
from dht.errors import MessageError
from dht.routing import RoutingTable, contacts_from_state, load_contacts, save_contacts
from quic_transport.identity import NodeId

SELF = NodeId(bytes(20))


def nid_at(bucket: int, low: int) -> NodeId:
    """An ID whose distance from SELF (all zeros) lies in ``bucket``."""
    return NodeId(((1 << bucket) | low).to_bytes(20, "big"))


def c(node_id: NodeId, port: int = 1) -> Contact:
    return Contact(node_id, "10.0.0.1", port)


def test_bucket_index_edges() -> None:
    t = RoutingTable(SELF)
    assert t.bucket_index(nid_at(0, 0)) == 0
    assert t.bucket_index(nid_at(159, 0)) == 159
    assert t.bucket_index(NodeId(b"\xff" * 20)) == 159
    assert t.bucket_index(nid_at(7, 127)) == 7  # top of the range
    assert t.bucket_index(nid_at(8, 0)) == 8  # bottom of the next
    with pytest.raises(ValueError):
        t.bucket_index(SELF)


def test_known_contact_moves_to_tail_and_address_updates() -> None:
    t = RoutingTable(SELF, k=3)
    ids = [nid_at(10, i) for i in range(3)]
    for i in ids:
        assert t.observe(c(i), 0.0) is None
    t.observe(c(ids[0], port=99), 1.0)
    assert [x.node_id for x in t.entries_in(10)] == [ids[1], ids[2], ids[0]]
    assert t.get(ids[0]) == c(ids[0], port=99)


def test_full_bucket_pings_oldest_then_keeps_it_if_alive() -> None:
    t = RoutingTable(SELF, k=2)
    a, b, new, newer = (nid_at(20, i) for i in range(4))
    t.observe(c(a), 0)
    t.observe(c(b), 1)
    assert t.observe(c(new), 2) == c(a)  # ping the least recently seen
    assert t.observe(c(newer), 2) is None  # one ping per bucket at a time
    assert t.replacements_in(20) == [c(new), c(newer)]
    t.ping_result(a, True, 3)
    assert [x.node_id for x in t.entries_in(20)] == [b, a]
    assert new not in t and newer not in t


def test_full_bucket_replaces_oldest_when_ping_fails() -> None:
    t = RoutingTable(SELF, k=2)
    a, b, new, newer = (nid_at(20, i) for i in range(4))
    t.observe(c(a), 0)
    t.observe(c(b), 1)
    t.observe(c(new), 2)
    t.observe(c(newer), 2)
    t.ping_result(a, False, 3)
    assert a not in t and newer in t  # most recent replacement promoted
    assert t.replacements_in(20) == [c(new)]
    assert len(t) == 2


def test_single_failure_never_evicts() -> None:
    t = RoutingTable(SELF, k=2, stale_failures=2, max_failures=4)
    a, b, r = (nid_at(30, i) for i in range(3))
    t.observe(c(a), 0)
    assert t.failed(a, 1) is False and a in t
    assert t.failed(a, 2) is False and a in t  # no replacement waiting
    t.observe(c(b), 3)
    t.observe(c(r), 3)  # bucket full -> r cached
    assert t.failed(a, 4) is True  # third failure, replacement waiting
    assert r in t and a not in t
    # success resets the failure count
    t.failed(b, 5)
    t.observe(c(b), 6)
    assert t.failed(b, 7) is False


@given(
    st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=200),
    st.binary(min_size=20, max_size=20),
)
def test_closest_matches_brute_force(raws: list[bytes], target_raw: bytes) -> None:
    t = RoutingTable(SELF, k=20)
    for r in raws:
        if r != SELF.raw:
            t.observe(c(NodeId(r)), 0)
    target = NodeId(target_raw)
    known = t.contacts()
    expected = sorted(known, key=lambda x: x.node_id.distance(target))[:7]
    assert t.closest(target, 7) == expected
    assert all(t.bucket_index(x.node_id) < 160 for x in known)
    # bucket invariants
    assert all(n <= 20 for n in t.bucket_sizes().values())
    assert len(t) == len(known) == len({x.node_id for x in known})


def test_refresh_targets_land_in_their_buckets() -> None:
    t = RoutingTable(SELF, k=20)
    rng = random.Random(1)
    for _ in range(400):
        t.observe(c(NodeId(rng.randbytes(20))), 0)
    t.mark_refreshed(0)
    assert t.refresh_targets(10, 3600, rng) == []
    targets = t.refresh_targets(4000, 3600, rng)
    lowest = min(t.bucket_sizes())
    assert [t.bucket_index(x) for x in targets] == list(range(lowest, 160))
    t.lookup_done(targets[-1], 4000)
    assert len(t.refresh_targets(4001, 3600, rng)) == len(targets) - 1


def test_state_round_trip_and_validation(tmp_path: Path) -> None:
    t = RoutingTable(SELF)
    rng = random.Random(2)
    cs = [Contact(NodeId(rng.randbytes(20)), f"10.0.0.{i}", 4000 + i) for i in range(1, 30)]
    for i, x in enumerate(cs):
        t.observe(x, float(i))
    p = tmp_path / "contacts.json"
    save_contacts(p, t)
    loaded = load_contacts(p)
    assert set(loaded) == set(t.contacts())
    assert loaded[0] == cs[-1]  # freshest first
    assert load_contacts(tmp_path / "missing.json") == []
    for bad in (
        {"version": 2, "contacts": []},
        {"version": 1, "contacts": [{"id": "zz", "host": "h", "port": 1}]},
        {"version": 1, "contacts": [{"id": SELF.b32, "host": "h", "port": 0}]},
        {"version": 1, "contacts": "x"},
    ):
        with pytest.raises(MessageError):
            contacts_from_state(bad)
    p.write_text("{not json")
    with pytest.raises(MessageError):
        load_contacts(p)


def test_kademlia_package_defects_that_ruled_out_reuse() -> None:
    """Evidence for docs/dht.md: kademlia 2.2.3's table puts an ID at a bucket's upper
    bound in the wrong bucket, and its bucket never pings before replacing."""
    from kademlia.node import Node
    from kademlia.routing import RoutingTable as KTable

    kt = KTable(protocol=None, ksize=20, node=Node(bytes(20)))
    kt.split_bucket(0)
    low, _high = kt.buckets
    edge = Node(low.range[1].to_bytes(20, "big"))
    assert low.has_in_range(edge)
    assert kt.get_bucket_for(edge) == 1  # off by one: belongs in bucket 0


_ops = st.lists(
    st.tuples(
        st.sampled_from(["observe", "failed", "ping_ok", "ping_fail", "remove"]),
        st.integers(0, 39),
    ),
    max_size=300,
)


@given(_ops)
def test_invariants_hold_under_any_sequence_of_events(ops: list[tuple[str, int]]) -> None:
    # 40 IDs crowded into three buckets so that buckets fill and evict
    ids = [nid_at(150 + i % 3, i) for i in range(40)]
    t = RoutingTable(SELF, k=4, replacement_size=3)
    to_ping: set[NodeId] = set()
    for now, (op, i) in enumerate(ops):
        nid = ids[i]
        if op == "observe":
            p = t.observe(c(nid), now)
            if p is not None:
                to_ping.add(p.node_id)
        elif op == "failed":
            t.failed(nid, now)
        elif op in ("ping_ok", "ping_fail") and nid in to_ping:
            to_ping.discard(nid)
            t.ping_result(nid, op == "ping_ok", now)
        elif op == "remove":
            t.remove(nid)
        entries = t.contacts()
        assert len(entries) == len(t) == len({x.node_id for x in entries})
        for idx, size in t.bucket_sizes().items():
            assert size <= 4
            in_bucket = {x.node_id for x in t.entries_in(idx)}
            repl = [x.node_id for x in t.replacements_in(idx)]
            assert len(repl) <= 3 and not in_bucket & set(repl)
            assert all(t.bucket_index(x) == idx for x in in_bucket | set(repl))


def test_recently_seen_oldest_is_not_pinged() -> None:
    t = RoutingTable(SELF, k=1, ping_after=900)
    a, b, d = (nid_at(40, i) for i in range(3))
    t.observe(c(a), 0)
    assert t.observe(c(b), 100) is None  # a was seen 100 s ago: known good
    assert t.replacements_in(40) == [c(b)]
    assert t.observe(c(d), 1000) == c(a)  # 1000 s: questionable, ping it
