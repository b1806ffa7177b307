"""state/known_peers.json and choosing whom to join through."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.node.bootstrap import BootstrapList, Seed
from p2pstore.node.join import contact_any, join_candidates
from p2pstore.node.known_peers import FORMAT, KnownPeer, KnownPeers
from quic_transport.identity import NodeId


def nid(i: int) -> NodeId:
    return NodeId(i.to_bytes(20, "big"))


def peer(i: int, seen: float, host: str = "10.0.0.1") -> KnownPeer:
    return KnownPeer(nid(i), host, 1000 + i, seen)


def test_save_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "known_peers.json"
    store = KnownPeers(path, max_peers=10)
    store.merge([peer(1, 10.0), peer(2, 20.0, "::1")])
    store.save()
    assert (path.stat().st_mode & 0o777) == 0o600
    loaded = KnownPeers.load(path, max_peers=10)
    assert loaded.peers() == [peer(2, 20.0, "::1"), peer(1, 10.0)]
    assert not loaded.dirty
    assert not list(path.parent.glob("*.tmp"))


@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 1e9)), max_size=80), st.integers(1, 20))
def test_bounded_and_newest_wins(entries: list[tuple[int, float]], cap: int) -> None:
    store = KnownPeers(Path("/nonexistent/kp.json"), max_peers=cap)
    for i, seen in entries:
        store.merge([peer(i, seen)])
        assert len(store) <= cap
    newest: dict[int, float] = {}
    for i, seen in entries:
        newest[i] = max(seen, newest.get(i, seen))
    for p in store.peers():
        assert p.last_seen == newest[int(p.node_id)]


def test_least_recently_seen_dropped_first() -> None:
    store = KnownPeers(Path("x"), max_peers=2)
    store.merge([peer(1, 1.0), peer(2, 2.0), peer(3, 3.0)])
    assert [int(p.node_id) for p in store.peers()] == [3, 2]


def test_saw_ignores_invalid_network_input() -> None:
    store = KnownPeers(Path("x"), clock=lambda: 42.0)
    assert store.saw(nid(1), "10.0.0.1", 5)
    assert store.get(nid(1)) == KnownPeer(nid(1), "10.0.0.1", 5, 42.0)
    assert not store.saw(nid(2), "not a host!", 5)
    assert not store.saw(nid(2), "10.0.0.1", 0)
    assert not store.saw(nid(2), "10.0.0.1", 70000)
    assert store.forget(nid(1)) and not store.forget(nid(1))


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", json.dumps({"format": "other", "peers": []}).encode(), b"\xff\xfe"],
)
def test_corrupt_file_set_aside(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "known_peers.json"
    path.write_bytes(content)
    store = KnownPeers.load(path)
    assert len(store) == 0
    assert not path.exists()
    assert (tmp_path / "known_peers.json.corrupt").read_bytes() == content


def test_invalid_entries_skipped(tmp_path: Path) -> None:
    path = tmp_path / "known_peers.json"
    good = peer(1, 5.0).to_json()
    bad = [
        {"node_id": "zz", "host": "1.2.3.4", "port": 1, "last_seen": 1},
        {"node_id": nid(2).b32, "host": "1.2.3.4", "port": True, "last_seen": 1},
        {"node_id": nid(3).b32, "host": "1.2.3.4", "port": 1, "last_seen": "x"},
        "nope",
    ]
    path.write_text(json.dumps({"format": FORMAT, "peers": [good, *bad]}))
    store = KnownPeers.load(path)
    assert store.peers() == [peer(1, 5.0)]
    assert store.dirty  # rewritten clean at the next save


def test_join_candidates_order() -> None:
    own = nid(99)
    boot = BootstrapList((Seed(nid(5), "10.0.0.5", 5), Seed(own, "10.0.0.9", 9)))
    store = KnownPeers(Path("x"))
    store.merge([peer(1, 1.0), peer(5, 9.0), peer(2, 2.0)])
    got = [int(s.node_id) for s in join_candidates(boot, store, own)]
    assert got == [5, 2, 1]


async def test_contact_any_skips_down_seeds() -> None:
    seeds = [Seed(nid(i), "10.0.0.1", 100 + i) for i in range(6)]
    tried: list[int] = []

    async def probe(seed: Seed) -> None:
        i = int(seed.node_id)
        tried.append(i)
        if i == 0:
            raise ConnectionRefusedError("refused")
        if i == 1:
            await asyncio.sleep(10)  # hangs: must be cut by the timeout
        if i == 2:
            return
        await asyncio.sleep(0.01)

    report = await contact_any(seeds, probe, enough=2, parallel=1, probe_timeout=0.05)
    assert report.joined
    assert len(report.reached) == 2
    reasons = dict((int(s.node_id), r) for s, r in report.failed)
    assert "refused" in reasons[0]
    assert "no answer" in reasons[1]
    assert [int(s.node_id) for s in report.reached] == [2, 3]
    assert [int(s.node_id) for s in report.untried] == [4, 5]
    assert tried == [0, 1, 2, 3]


async def test_contact_any_all_down() -> None:
    async def probe(seed: Seed) -> None:
        raise OSError("down")

    seeds = [Seed(nid(i), "10.0.0.1", 1) for i in range(3)]
    report = await contact_any(seeds, probe)
    assert not report.joined and len(report.failed) == 3 and not report.untried


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_loader_never_crashes(tmp_path_factory: pytest.TempPathFactory, doc: object) -> None:
    path = tmp_path_factory.mktemp("kp") / "known_peers.json"
    wrapped = {"format": FORMAT, "peers": doc}
    for content in (json.dumps(doc), json.dumps(wrapped)):
        path.write_text(content)
        store = KnownPeers.load(path, max_peers=5)
        assert len(store) <= 5


async def test_rejoin_through_remembered_peer_when_every_seed_is_down(tmp_path: Path) -> None:
    path = tmp_path / "known_peers.json"
    earlier = KnownPeers(path)
    earlier.saw(nid(7), "10.0.0.7", 7007, when=50.0)
    earlier.save()  # the node met peer 7 in an earlier run

    boot = BootstrapList((Seed(nid(1), "10.0.0.1", 1), Seed(nid(2), "10.0.0.2", 2)))
    up = {nid(7)}

    async def probe(seed: Seed) -> None:
        if seed.node_id not in up:
            raise ConnectionRefusedError("seed is gone")

    candidates = join_candidates(boot, KnownPeers.load(path), nid(99))
    report = await contact_any(candidates, probe)
    assert [s.node_id for s in report.reached] == [nid(7)]
    assert {s.node_id for s, _ in report.failed} == {nid(1), nid(2)}
