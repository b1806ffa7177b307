"""Placement preference (reachable peers with good observed uptime first): the sans-I/O
ranking, the placer, and real uploads/downloads/repairs on the in-process grid."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    Health,
    HealthConfig,
    PeerQuality,
    SendConfig,
    UploadConfig,
    Uploader,
    bytes_source,
    quality_tier,
    rank_peers,
    static_peers,
)
from p2pstore.grid.placement import SharePlacer
from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

SI = hashlib.blake2b(b"si", digest_size=20).digest()
OWNER = NodeId(b"Q" * 20)
PARAMS = EncodingParams.create(3, 10, 4096)
FAST = SendConfig(op_timeout=2.0)

GOOD = PeerQuality(reachable=True, uptime=0.99)
NATTED = PeerQuality(reachable=False, uptime=0.99)
FLAKY = PeerQuality(reachable=True, uptime=0.2)
WORST = PeerQuality(reachable=False, uptime=0.1)


def pid(i: int) -> bytes:
    return hashlib.blake2b(f"peer-{i}".encode(), digest_size=20).digest()


def by_distance(peers: list[bytes]) -> list[bytes]:
    return rank_peers(SI, peers)


# ---- sans-I/O ----------------------------------------------------------------------
def test_tiers() -> None:
    assert quality_tier(None) == 0
    assert quality_tier(PeerQuality()) == 0  # nothing known: no penalty
    assert quality_tier(GOOD) == 0
    assert quality_tier(NATTED) == 1
    assert quality_tier(FLAKY) == 2
    assert quality_tier(WORST) == 3
    assert quality_tier(PeerQuality(uptime=0.5), min_uptime=0.4) == 0
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError):
            PeerQuality(uptime=bad)


def test_rank_by_quality_then_distance() -> None:
    peers = by_distance([pid(i) for i in range(12)])
    q = {peers[0]: WORST, peers[1]: FLAKY, peers[2]: NATTED, peers[5]: NATTED}
    ranked = rank_peers(SI, peers, quality=lambda n: q.get(n.raw))
    good = [p for p in peers if p not in q]
    assert ranked == [*good, peers[2], peers[5], peers[1], peers[0]]
    # without a source: plain distance; a broken source: no preference either
    assert rank_peers(SI, peers) == peers

    def broken(n: NodeId) -> PeerQuality:
        raise RuntimeError("boom")

    assert rank_peers(SI, peers, quality=broken) == peers


@given(st.lists(st.sampled_from([None, GOOD, NATTED, FLAKY, WORST]), min_size=1, max_size=30))
def test_ranking_is_a_permutation_sorted_by_tier(qs: list[PeerQuality | None]) -> None:
    peers = [pid(i) for i in range(len(qs))]
    q = dict(zip(peers, qs, strict=True))
    ranked = rank_peers(SI, peers, quality=lambda n: q[n.raw])
    assert sorted(ranked) == sorted(peers)
    tiers = [quality_tier(q[p]) for p in ranked]
    assert tiers == sorted(tiers)
    for t in set(tiers):  # within a tier, distance order
        same = [p for p in ranked if quality_tier(q[p]) == t]
        assert same == by_distance(same)


def test_placer_gives_bad_peers_shares_only_after_every_good_one_has_as_many() -> None:
    peers = by_distance([pid(i) for i in range(12)])
    bad = set(peers[:4])  # the four nearest are known-bad
    q = {p: (FLAKY if p in bad else GOOD) for p in peers}
    ranked = rank_peers(SI, peers, quality=lambda n: q[n.raw])
    plan = SharePlacer(10, ranked).initial()
    on = list(plan.values())
    assert len(set(on)) == 10  # still ten distinct peers
    assert set(peers[4:]) <= set(on)  # every good peer got one
    assert len(bad & set(on)) == 2  # only then the (nearest) bad ones
    # Without the preference the nearest (bad) peers would be used first.
    plain = SharePlacer(10, rank_peers(SI, peers)).initial()
    assert bad <= set(plain.values())


# ---- on the in-process grid ------------------------------------------------------------
@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 14) as g:
        yield g


def storage_for(gs: GridServer) -> StorageAPI:
    return gs.client(OWNER)


def holders(grid: StorageGrid, si: bytes) -> set[NodeId]:
    out = set()
    for gs in grid.servers:
        if gs.server.list_shares(si):
            out.add(gs.node_id)
    return out


async def test_upload_prefers_good_peers_and_downloads_still_find_everything(
    grid: StorageGrid,
) -> None:
    data = bytes(range(256)) * 200
    find = static_peers(grid.servers)
    # First learn where this file's shares would go without any preference.
    probe = Uploader(find, storage_for, UploadConfig(send=FAST), params=PARAMS)
    first = await probe.upload_convergent(bytes_source(data), b"s" * 32)
    cap = first.cap
    assert isinstance(cap, ReadCap)
    si = cap.storage_index
    nearest = holders(grid, si)
    for gs in grid.servers:
        for sh in gs.server.list_shares(si):
            gs.delete_share(si, sh)
    bad = sorted(nearest, key=lambda n: int(n) ^ int.from_bytes(si, "big"))[:3]
    q = {bad[0]: NATTED, bad[1]: FLAKY, bad[2]: WORST}
    up = Uploader(
        find,
        storage_for,
        UploadConfig(send=FAST),
        params=PARAMS,
        quality=lambda n: q.get(n, GOOD),
    )
    res = await up.upload_convergent(bytes_source(data), b"s" * 32)
    assert res.cap == cap and res.happiness == 10
    now = holders(grid, si)
    assert now.isdisjoint(bad)  # 11 good candidates: the known-bad ones got nothing
    # Every holder is within the window a downloader searches (find_peers(si, 2N)),
    # and a downloader with no quality knowledge reads the file back.
    window = {p.node_id for p in await find(si, 2 * PARAMS.n)}
    assert now <= window
    down = Downloader(find, storage_for, DownloadConfig(op_timeout=2.0, locate_timeout=5))
    assert await down.read_all(cap) == data


async def test_repair_prefers_good_peers(grid: StorageGrid) -> None:
    data = bytes(range(200)) * 100
    find = static_peers(grid.servers)
    up = Uploader(find, storage_for, UploadConfig(send=FAST), params=PARAMS)
    res = await up.upload_convergent(bytes_source(data), b"r" * 32)
    cap = res.cap
    assert isinstance(cap, ReadCap)
    si = cap.storage_index
    used = holders(grid, si)
    spare = [gs.node_id for gs in grid.servers if gs.node_id not in used]
    assert len(spare) == 4
    victim = next(gs for gs in grid.servers if gs.node_id in used)
    (lost,) = victim.server.list_shares(si)
    victim.delete_share(si, lost)
    order = sorted(spare, key=lambda n: int(n) ^ int.from_bytes(si, "big"))
    # all but the farthest spare are flaky, and so is the peer that lost its share
    q = {n: FLAKY for n in [*order[:3], victim.node_id]}
    health = Health(find, storage_for, HealthConfig(send=FAST), quality=lambda n: q.get(n, GOOD))
    r = await health.repair(cap.verify_cap())
    assert r.healthy
    assert [NodeId.from_b32(b) for b in r.repaired.values()] == [order[3]]
