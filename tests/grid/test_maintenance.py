"""Maintenance: the policy (pure) and the maintainer on an in-process storage grid
(real storage servers on disk, no network): repair by the custodian, moves of far
shares, lease carry-over, corrupt copies (docs/maintenance.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    UploadConfig,
    Uploader,
    bytes_source,
    static_peers,
)
from p2pstore.grid.custodian import Maintainer, derive_verify_cap
from p2pstore.grid.health import Health, HealthConfig
from p2pstore.grid.maintenance import Action, MaintenanceConfig, Role, plan
from p2pstore.grid.placement import rank_peers
from p2pstore.grid.sender import SendConfig
from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

OWNER = NodeId(b"U" * 20)
SECRET = bytes(range(32))
PARAMS = EncodingParams.create(3, 10, 4096)
FAST = SendConfig(op_timeout=5.0)
CFG = MaintenanceConfig(check_interval=60.0, pace=0.0, happy=7, settle=0.0)


def key(i: int) -> bytes:
    return bytes([i]) * 20


# -- the policy ----------------------------------------------------------------------


def test_the_nearest_answering_holder_is_the_custodian() -> None:
    window = [key(i) for i in range(1, 13)]
    holdings = {key(i): {i - 1} for i in range(1, 11)} | {key(11): set(), key(12): set()}
    p1 = plan(key(1), window, holdings, {0}, k=3, n=10, config=CFG)
    assert (p1.role, p1.action, p1.reason) == (Role.CUSTODIAN, Action.NONE, "healthy")
    p2 = plan(key(2), window, holdings, {1}, k=3, n=10, config=CFG)
    assert (p2.role, p2.action) == (Role.HOLDER, Action.NONE)
    # key(1) did not answer: key(2) takes over
    gone = {p: s for p, s in holdings.items() if p != key(1)}
    p3 = plan(key(2), window, gone, {1}, k=3, n=10, config=CFG)
    assert p3.role is Role.CUSTODIAN
    assert p3.action is Action.NONE  # 9 of 10 shares: at the N-1 threshold
    gone2 = {p: s for p, s in gone.items() if p != key(3)}
    p4 = plan(key(2), window, gone2, {1}, k=3, n=10, config=CFG)
    assert p4.action is Action.REPAIR and "8 of 10 shares" in p4.reason
    assert p4.target_happy == 7


def test_repair_when_shares_crowd_on_too_few_peers_but_not_past_the_peers_alive() -> None:
    window = [key(i) for i in range(1, 21)]
    crowded = {key(1): set(range(0, 4)), key(2): set(range(4, 7)), key(3): set(range(7, 10))}
    crowded |= {key(i): set() for i in range(4, 21)}
    p = plan(key(1), window, crowded, set(range(4)), k=3, n=10, config=CFG)
    assert p.action is Action.REPAIR and "3 distinct peers" in p.reason
    alone = {key(1): set(range(0, 5)), key(2): set(range(5, 10))}
    p = plan(key(1), window, alone, set(range(5)), k=3, n=10, config=CFG)
    assert (p.action, p.target_happy) == (Action.NONE, 2)  # only 2 peers answered


def test_too_few_shares_is_reported_not_repaired() -> None:
    window = [key(i) for i in range(1, 5)]
    holdings = {key(1): {0}, key(2): {1}, key(3): set(), key(4): set()}
    p = plan(key(1), window, holdings, {0}, k=3, n=10, config=CFG)
    assert p.action is Action.UNRECOVERABLE and "only 2 of the 3" in p.reason


def test_a_far_holder_moves_only_shares_the_window_lacks() -> None:
    window = [key(i) for i in range(1, 11)]
    holdings = {key(i): ({i - 1} if i <= 8 else set()) for i in range(1, 11)}
    p = plan(key(99), window, holdings, {7, 8, 9}, k=3, n=10, config=CFG)
    assert p.role is Role.FAR and p.action is Action.MOVE
    assert p.moves == {8: key(9), 9: key(10)}  # share 7 is held nearer: left alone
    everything = {key(i): {i - 1} for i in range(1, 11)}
    p = plan(key(99), window, everything, {3}, k=3, n=10, config=CFG)
    assert (p.role, p.action) == (Role.FAR, Action.NONE)


def test_a_peer_claiming_every_share_cannot_make_anyone_delete() -> None:
    """Plans never delete another peer's copy; a far holder keeps its copy when a
    liar claims the share (it expires with its lease, nothing is removed)."""
    window = [key(i) for i in range(1, 11)]
    liar = {key(1): set(range(10))} | {key(i): set() for i in range(2, 11)}
    p = plan(key(99), window, liar, {4}, k=3, n=10, config=CFG)
    assert p.action is Action.NONE and not p.moves


# -- the maintainer on an in-process grid -----------------------------------------------


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 20) as g:
        yield g


def data_of(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def as_node(gs: GridServer) -> Callable[[GridServer], StorageAPI]:
    return lambda peer: peer.client(gs.node_id)


def maintainer(
    grid: StorageGrid,
    gs: GridServer,
    *,
    lookup: int | None = None,
    alive: list[GridServer] | None = None,
) -> Maintainer[GridServer]:
    find = static_peers(alive if alive is not None else grid.servers)
    hc = HealthConfig(op_timeout=5.0, send=FAST, happy=7, lookup_count=lookup)
    return Maintainer(gs.server, gs.node_id, Health(find, as_node(gs), hc), CFG)


async def upload(servers: list[GridServer], data: bytes) -> ReadCap:
    up = Uploader(
        static_peers(servers),
        lambda gs: gs.client(OWNER),
        UploadConfig(happy=7, send=FAST, list_timeout=2.0),
        params=PARAMS,
    )
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(res.cap, ReadCap)
    return res.cap


async def download(servers: list[GridServer], cap: ReadCap, lookup: int | None = None) -> bytes:
    find = static_peers(servers)

    async def window(si: bytes, count: int) -> list[GridServer]:
        return list(await find(si, lookup or count))

    down = Downloader(window, lambda gs: gs.client(OWNER), DownloadConfig(op_timeout=5.0))
    return await down.read_all(cap)


def ranked(
    grid: StorageGrid, si: bytes, servers: list[GridServer] | None = None
) -> list[GridServer]:
    by_id = {gs.node_id.raw: gs for gs in (servers or grid.servers)}
    return [by_id[p] for p in rank_peers(si, by_id)]


async def test_the_custodian_repairs_lost_holders_and_carries_the_lease_over(
    grid: StorageGrid,
) -> None:
    data = data_of(50_000, 1)
    cap = await upload(grid.servers[:12], data)
    si = cap.storage_index
    holders = [gs for gs in ranked(grid, si, grid.servers[:12]) if gs.server.list_shares(si)]
    assert len(holders) == 10
    assert (
        derive_verify_cap(holders[0].server, si, sorted(holders[0].server.list_shares(si)))
        == cap.verify_cap()
    )
    # three holders leave for good (never the nearest one)
    for gs in holders[1:4]:
        gs.broken()
    alive = [gs for gs in grid.servers if gs.mode.name == "OK"]
    grid.clock.advance(10 * 86400)  # the uploader's lease has 21 days left
    follower = await maintainer(grid, holders[5], alive=alive).check(si)
    assert follower is not None and follower.role is Role.HOLDER  # only the custodian acts
    custodian = maintainer(grid, holders[0], alive=alive)
    done = await custodian.check(si)
    assert done is not None and (done.role, done.action) == (Role.CUSTODIAN, Action.REPAIR)
    status = custodian.status()
    assert status["repairs"] == 1 and status["shares_repaired"] == 3, status
    assert status["bytes_sent"] > 0 and status["checked_last_day"] == 1
    new = [gs for gs in alive if gs not in holders and gs.server.list_shares(si)]
    assert len(new) == 3
    expiry = max(le.expires for le in holders[0].server.leases(si))
    for gs in new:  # carried over: no fresh 31-day lease
        (lease,) = gs.server.leases(si)
        assert lease.owner == holders[0].node_id.raw
        assert abs(lease.expires - expiry) <= 2, (lease.expires, expiry)
    assert await download(alive, cap) == data
    again = await custodian.check(si)
    assert again is not None and again.action is Action.NONE


async def test_an_unreferenced_file_is_not_repaired(grid: StorageGrid) -> None:
    cap = await upload(grid.servers[:12], data_of(20_000, 2))
    si = cap.storage_index
    holders = [gs for gs in ranked(grid, si) if gs.server.list_shares(si)]
    for gs in holders[1:4]:
        gs.broken()
    grid.clock.advance(32 * 86400)  # past every lease
    m = maintainer(grid, holders[0], alive=[gs for gs in grid.servers if gs.mode.name == "OK"])
    await m.check(si)
    assert m.counts["repairs"] == 0
    assert sum(1 for gs in grid.servers if gs.mode.name == "OK" and gs.server.list_shares(si)) == 7


async def test_far_holders_move_their_shares_into_the_download_window(grid: StorageGrid) -> None:
    """Uploaded when only the 10 servers farthest from the file existed; the grid
    grew to 20 and downloads search the 10 nearest: every holder is far and moves its
    share nearer, and deletes its own copy only after the move."""
    data = data_of(30_000, 3)
    probe = await upload(grid.servers[:12], data)  # to learn the storage index
    si = probe.storage_index
    for gs in grid.servers:
        gs.delete_all(si)
    far = ranked(grid, si)[10:]
    cap = await upload(far, data)
    with pytest.raises(Exception):  # noqa: B017 (any download failure)
        await download(grid.servers, cap, lookup=10)
    for gs in far:
        report = await maintainer(grid, gs, lookup=10).check(si)
        assert report is not None and report.role is Role.FAR
    near = ranked(grid, si)[:10]
    assert all(not gs.server.list_shares(si) for gs in far)
    assert sorted(s for gs in near for s in gs.server.list_shares(si)) == list(range(10))
    assert await download(grid.servers, cap, lookup=10) == data


async def test_a_corrupt_copy_is_never_a_repair_source_and_its_holder_deletes_it(
    grid: StorageGrid,
) -> None:
    data = data_of(60_000, 4)
    cap = await upload(grid.servers[:12], data)
    si = cap.storage_index
    holders = [gs for gs in ranked(grid, si, grid.servers[:12]) if gs.server.list_shares(si)]
    # a bad block on the custodian's own share and on one other holder's share
    (own,) = holders[0].server.list_shares(si)
    holders[0].corrupt_share(si, own, 72 + 5)
    (other,) = holders[1].server.list_shares(si)
    holders[1].corrupt_share(si, other, 72 + 5)
    for gs in holders[6:9]:
        gs.broken()
    alive = [gs for gs in grid.servers if gs.mode.name == "OK"]
    m = maintainer(grid, holders[0], alive=alive)
    assert await m.check(si) is None  # its only share was corrupt: deleted, nothing held
    assert m.counts["corrupt_removed"] == 1 and not holders[0].server.list_shares(si)
    assert "corrupt" in m.recent_failures[-1]["reason"]
    # the next holder is now the custodian; its repair never uses holder 1's bad
    # copy as a source (every block is checked), and holder 1's own check deletes it
    m1 = maintainer(grid, holders[1], alive=alive)
    assert await m1.check(si) is None and m1.counts["corrupt_removed"] == 1
    m2 = maintainer(grid, holders[2], alive=alive)
    done = await m2.check(si)
    assert done is not None and done.role is Role.CUSTODIAN and done.action is Action.REPAIR
    assert m2.counts["shares_repaired"] == 5, m2.status()  # 3 gone + 2 corrupt
    assert sorted(s for gs in alive for s in gs.server.list_shares(si)) == list(range(10))
    assert await download(alive, cap) == data


async def test_a_corrupt_copy_found_by_a_verify_is_scrubbed_by_its_holder_at_once(
    grid: StorageGrid,
) -> None:
    """docs/maintenance.md, "Scrub": a verify elsewhere (a user's `check --verify`)
    that finds a copy failing its hash check tells the holder, which checks its own
    bytes now (not in 30 days) and deletes the copy; a claim about a good copy or a
    storage index not held deletes nothing, and reports are rate-limited."""
    data = data_of(60_000, 7)
    servers = grid.servers[:12]
    cap = await upload(servers, data)
    si = cap.storage_index
    holder = next(gs for gs in ranked(grid, si, servers) if gs.server.list_shares(si))
    m = maintainer(grid, holder, alive=servers)
    await m.check(si)  # the first check scrubs (all good); the next one is a month away
    (share,) = holder.server.list_shares(si)
    assert not await m.suspect(bytes(20))  # not held here
    told: list[tuple[int, str]] = []

    async def tell(peer: GridServer, s: bytes, sh: int, why: str) -> None:
        told.append((sh, why))
        if peer is holder:
            await m.suspect(s)

    health = Health(static_peers(servers), as_node(servers[-1]), HealthConfig(op_timeout=5.0))
    health.on_corrupt = tell
    clean = await health.verify(cap)
    assert not any(clean.copies.values())  # all good: nobody is told
    assert told == []
    holder.corrupt_share(si, share, 72 + 5)
    result = await health.verify(cap)
    assert [s for s, _ in told] == [share] and any(result.copies.values())
    await m.check(si)  # due now: it scrubs, and the bad copy goes
    assert m.counts["corrupt_removed"] == 1 and not holder.server.list_shares(si)
    assert not await m.suspect(si)  # once per SUSPECT_GAP per storage index


async def test_a_share_is_kept_for_a_month_only_once_the_whole_upload_succeeded(
    grid: StorageGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/grid.md, "Upload errors": shares get a provisional lease while the upload
    runs; the full term only when it succeeded. An uploader killed before that point
    (here: the step skipped) leaves shares that expire within the provisional term."""
    from p2pstore.grid import upload as upload_mod

    term = grid.config.lease_duration
    cap = await upload(grid.servers[:12], data_of(50_000, 8))
    left = [
        lz.expires - grid.clock()
        for gs in grid.servers
        for lz in gs.server.leases(cap.storage_index)
    ]
    assert left and min(left) > term - 60
    provisional = upload_mod.UploadConfig().provisional_lease
    assert provisional is not None and provisional < term

    async def killed_before(self: Any) -> None:
        return None

    monkeypatch.setattr(upload_mod._Job, "keep_sent", killed_before)
    cap2 = await upload(grid.servers[:12], data_of(50_000, 9))
    left = [
        lz.expires - grid.clock()
        for gs in grid.servers
        for lz in gs.server.leases(cap2.storage_index)
    ]
    assert left and max(left) <= provisional + 5


async def test_a_mutable_root_held_here_is_kept_on_the_nearest_peers(
    grid: StorageGrid,
) -> None:
    """A slot (a mutable file's signed root) is scheduled like a share: its
    maintenance copies the latest root to the nearest peers that lack it, with no
    more lease than is left here, takes a newer root found elsewhere, and never
    repairs, moves or reports anything else."""
    from p2pstore.immutable import LiteralCap
    from p2pstore.mutable import WriteCap, make_root

    w = WriteCap(bytes(32))
    v1 = make_root(w, 1, LiteralCap(b"one"), 1.0)
    v2 = make_root(w, 2, LiteralCap(b"two"), 2.0)
    slot_si = v1.storage_index
    near = ranked(grid, slot_si)
    holder, newer = near[0], near[1]
    assert (await holder.client(OWNER).slot_write(slot_si, v1.encode()))[0]
    assert (await newer.client(OWNER).slot_write(slot_si, v2.encode()))[0]
    m = maintainer(grid, holder)
    await m.rescan()
    assert slot_si in m._due
    grid.clock.advance(3600)
    assert await m.check(slot_si) is None
    assert m.counts["failures"] == m.counts["repairs"] == m.counts["unrecoverable"] == 0
    assert holder.server.slot_read(slot_si) == v2.encode()  # took the newer root
    holding = [gs for gs in near[:10] if gs.server.slot_read(slot_si) == v2.encode()]
    # 8 peers had none, and this node's own copy (stale when surveyed) is counted too
    assert len(holding) == 10 and m.counts["roots_spread"] == 9
    # no copy got a longer lease than the holder had left
    left = max(le.expires for le in holder.server.leases(slot_si))
    for gs in near[2:10]:
        assert max(le.expires for le in gs.server.leases(slot_si)) <= left + 1
    # a root nobody renews is left to expire, not spread
    grid.clock.advance(10 * 365 * 86400)
    near[5].delete_slot(slot_si)
    await m.check(slot_si)
    assert near[5].server.slot_read(slot_si) is None
