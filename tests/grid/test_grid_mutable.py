"""Mutable files on the in-process storage grid: publish, read the latest, conflicts
between writers (every interleaving), rollback, bad roots, spreading the root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    SendConfig,
    UploadConfig,
    Uploader,
    aiter_bytes,
    static_peers,
)
from p2pstore.grid.mutable import (
    MutableBad,
    MutableConfig,
    MutableConflict,
    MutableFiles,
    MutableNotFound,
    MutableUnavailable,
    Survey,
)
from p2pstore.immutable import EncodingParams, LiteralCap
from p2pstore.mutable import WriteCap, make_root
from p2pstore.storage import StorageAPI
from p2pstore.storage.slots import SlotRecord, slot_index
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from p2pstore.vdrive import SeenStore
from quic_transport.identity import NodeId

OWNER = NodeId(b"M" * 20)
PARAMS = EncodingParams.create(3, 10, 4096)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 10) as g:
        yield g


def files(
    grid: StorageGrid, *, seen: SeenStore | None = None, storage: Any = None
) -> tuple[MutableFiles[GridServer], Downloader[GridServer]]:
    find = static_peers(grid.servers)

    def storage_for(gs: GridServer) -> StorageAPI:
        return gs.client(OWNER)

    sf = storage or storage_for
    cfg = UploadConfig(happy=7, send=SendConfig(op_timeout=2.0), list_timeout=0.5)
    up = Uploader(find, sf, cfg, params=PARAMS)
    mf = MutableFiles(find, sf, up, MutableConfig(replicas=10, op_timeout=2.0), seen=seen)
    return mf, Downloader(find, sf, DownloadConfig(op_timeout=2.0, locate_timeout=5))


async def read_latest(
    mf: MutableFiles[GridServer], down: Downloader[GridServer], cap: Any
) -> bytes:
    v, _ = await mf.latest(cap)
    if isinstance(v.cap, LiteralCap):
        return v.cap.data
    return b"".join([c async for c in down.read(v.cap)])


def body(n: int, tag: int) -> bytes:
    return bytes([tag]) * n


async def test_create_publish_and_read_the_latest(grid: StorageGrid) -> None:
    mf, down = files(grid)
    cap, pub = await mf.create(aiter_bytes(body(20_000, 1)), size=20_000)
    assert pub.version.sequence == 1 and pub.stored == 10
    rc = cap.read_cap()
    assert await read_latest(mf, down, rc) == body(20_000, 1)
    pub2 = await mf.publish(cap, aiter_bytes(body(30_000, 2)))
    assert pub2.version.sequence == 2
    assert await read_latest(mf, down, rc) == body(30_000, 2)
    # a verify cap sees the root (sequence, version verify cap), not the content
    s = await mf.latest_root(cap.verify_cap())
    assert s.latest is not None and s.latest.sequence == 2 and s.holding_latest == 10
    assert s.latest.verify == pub2.version.cap.verify_cap().to_string()  # type: ignore[union-attr]


async def test_a_literal_version_needs_no_shares(grid: StorageGrid) -> None:
    mf, down = files(grid)
    cap, pub = await mf.create(aiter_bytes(b"hello"))
    assert isinstance(pub.version.cap, LiteralCap)
    assert await read_latest(mf, down, cap.read_cap()) == b"hello"


async def test_publishing_to_a_write_cap_with_no_file_is_refused(grid: StorageGrid) -> None:
    mf, _ = files(grid)
    with pytest.raises(MutableNotFound):
        await mf.publish(WriteCap.generate(), aiter_bytes(b"x" * 100))
    with pytest.raises(MutableNotFound):
        await mf.latest(WriteCap.generate().read_cap())


async def test_expected_sequence_is_a_conflict_before_any_upload(grid: StorageGrid) -> None:
    mf, _ = files(grid)
    cap, _ = await mf.create(aiter_bytes(body(1000, 1)))
    with pytest.raises(MutableConflict) as e:
        await mf.publish(cap, aiter_bytes(body(1000, 2)), expected_sequence=5)
    assert e.value.sequence == 1
    assert (
        await mf.publish(cap, aiter_bytes(body(1000, 2)), expected_sequence=1)
    ).version.sequence == 2


async def test_two_writers_from_one_base_one_wins_the_other_is_told(grid: StorageGrid) -> None:
    mf, down = files(grid)
    cap, _ = await mf.create(aiter_bytes(body(1000, 1)))
    sa, sb = await mf.survey(cap), await mf.survey(cap)
    up_a = await mf.uploader.upload_random(aiter_bytes(body(1000, 2)))
    up_b = await mf.uploader.upload_random(aiter_bytes(body(1000, 3)))
    await mf.publish_version(cap, up_a.cap, sa)
    with pytest.raises(MutableConflict) as e:
        await mf.publish_version(cap, up_b.cap, sb)
    assert e.value.sequence == 2
    assert await read_latest(mf, down, cap) == body(1000, 2)


class Gated:
    """A storage client whose slot writes wait for their turn (one event per
    writer and server), so a test chooses the exact interleaving."""

    def __init__(self, inner: StorageAPI, turn: asyncio.Event, done: asyncio.Event) -> None:
        self.inner, self.turn, self.done = inner, turn, done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def slot_write(self, si: bytes, record: bytes, lease: int | None = None) -> Any:
        await self.turn.wait()
        try:
            return await self.inner.slot_write(si, record)
        finally:
            self.done.set()


class Schedule:
    """Two writers' slot writes, made in exactly ``order`` ((writer, server index)
    pairs) on a grid whose servers all hold version 1 of ``cap``."""

    def __init__(self, grid: StorageGrid, order: list[tuple[int, int]]) -> None:
        self.grid, self.order = grid, order
        self.turns = {k: asyncio.Event() for k in order}
        self.dones = {k: asyncio.Event() for k in order}
        self.index = {gs.node_id: i for i, gs in enumerate(grid.servers)}

    async def seed(self, cap: WriteCap) -> None:
        first = make_root(cap, 1, LiteralCap(b"base"), 1.0)
        for gs in self.grid.servers:
            assert (await gs.client(OWNER).slot_write(first.storage_index, first.encode()))[0]

    def writer(self, w: int) -> MutableFiles[GridServer]:
        def sf(gs: GridServer) -> Any:
            key = (w, self.index[gs.node_id])
            return Gated(gs.client(OWNER), self.turns[key], self.dones[key])

        return files(self.grid, storage=sf)[0]

    async def run(self) -> None:
        for key in self.order:
            self.turns[key].set()
            await self.dones[key].wait()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations([(w, i) for w in range(2) for i in range(10)]))
def test_any_interleaving_of_two_writers_loses_nothing_silently(
    tmp_path_factory: pytest.TempPathFactory, order: list[tuple[int, int]]
) -> None:
    asyncio.run(_interleave(tmp_path_factory.mktemp("g"), order))


async def _interleave(tmp: Path, order: list[tuple[int, int]]) -> None:
    with StorageGrid(tmp, 10) as grid:
        mf, _ = files(grid)
        cap = WriteCap(bytes(32))
        sched = Schedule(grid, order)
        await sched.seed(cap)

        async def publish(w: int, s: Survey) -> SlotRecord | BaseException:
            try:
                pub = await sched.writer(w).publish_version(cap, LiteralCap(bytes([w]) * 3), s)
                return pub.version.root.record
            except MutableConflict as e:
                return e

        surveys = [await mf.survey(cap), await mf.survey(cap)]
        tasks = [asyncio.create_task(publish(w, surveys[w])) for w in range(2)]
        await sched.run()
        results = await asyncio.gather(*tasks)
        final = await mf.survey(cap)
        assert final.latest is not None
        wins = [r for r in results if isinstance(r, SlotRecord)]
        assert len(wins) <= 1  # two writers from one base never both succeed
        for r in wins:
            assert final.latest.record == r  # a reported success is what readers see
            assert final.holding_latest >= 6


async def test_a_writer_that_read_the_other_s_version_builds_on_it(grid: StorageGrid) -> None:
    mf, _down = files(grid)
    cap, _ = await mf.create(aiter_bytes(body(500, 1)))
    await mf.publish(cap, aiter_bytes(body(500, 2)))
    await mf.publish(cap, aiter_bytes(body(500, 3)))
    v, s = await mf.latest(cap)
    assert v.sequence == 3 and s.holding_latest == 10


async def test_a_rolled_back_grid_is_refused_by_a_reader_that_saw_more(
    grid: StorageGrid, tmp_path: Path
) -> None:
    seen = SeenStore(tmp_path / "seen.json")
    mf, _down = files(grid, seen=seen)
    cap, pub1 = await mf.create(aiter_bytes(body(500, 1)))
    await mf.publish(cap, aiter_bytes(body(500, 2)))
    assert (await mf.latest(cap.read_cap()))[0].sequence == 2
    old = pub1.version.root.record
    si = slot_index(cap.public_key)
    for gs in grid.servers:  # every server "loses" version 2 and serves version 1
        gs.serve_slot(si, old.encode())
    with pytest.raises(MutableBad, match=r"stale|replay|seen"):
        await mf.latest(cap.read_cap())
    # the guard is on disk: a restarted reader refuses too
    again, _ = files(grid, seen=SeenStore(tmp_path / "seen.json"))
    with pytest.raises(MutableBad):
        await again.latest(cap.read_cap())
    # a reader that never saw version 2 accepts version 1 (trust on first use)
    fresh, _ = files(grid)
    assert (await fresh.latest(cap.read_cap()))[0].sequence == 1


class Lying:
    """A storage client that answers slot reads with given bytes."""

    def __init__(self, inner: StorageAPI, answer: bytes | None) -> None:
        self.inner, self.answer = inner, answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def slot_read(self, si: bytes) -> bytes | None:
        return self.answer


async def test_forged_and_foreign_roots_are_ignored_and_reported(grid: StorageGrid) -> None:
    mf, _ = files(grid)
    cap, _ = await mf.create(aiter_bytes(body(2000, 1)))
    other = WriteCap.generate()
    foreign = make_root(other, 99, LiteralCap(b"evil"), 1.0).encode()
    forged = bytearray(make_root(cap, 99, LiteralCap(b"evil"), 1.0).encode())
    forged[-1] ^= 1  # the signature no longer verifies
    liars = {grid.servers[0].node_id: foreign, grid.servers[1].node_id: bytes(forged)}

    def sf(gs: GridServer) -> Any:
        c = gs.client(OWNER)
        return Lying(c, liars[gs.node_id]) if gs.node_id in liars else c

    liar_mf, liar_down = files(grid, storage=sf)
    v, s = await liar_mf.latest(cap.read_cap())
    assert v.sequence == 1
    assert set(s.bad) == {grid.servers[0].node_id.b32, grid.servers[1].node_id.b32}
    assert await read_latest(liar_mf, liar_down, cap) == body(2000, 1)


async def test_too_few_peers_is_unavailable_and_spread_mends_a_missed_peer(
    grid: StorageGrid,
) -> None:
    mf, _ = files(grid)
    cap, _ = await mf.create(aiter_bytes(body(300, 1)))
    grid.servers[4].broken()
    pub = await mf.publish(cap, aiter_bytes(body(300, 2)))
    assert pub.stored == 9
    grid.servers[4].heal()
    s = await mf.latest_root(cap)
    assert s.stale == [grid.servers[4].node_id.b32]
    assert await mf.spread(s) == 1
    assert (await mf.latest_root(cap)).holding_latest == 10
    s = await mf.survey(cap)
    for gs in grid.servers[:6]:  # gone between the survey and the write
        gs.broken()
    with pytest.raises(MutableUnavailable, match="stored on 4 of 10"):
        await mf.publish_version(cap, LiteralCap(b"third"), s)


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_leases_follow_the_mutable_file_not_its_old_versions(
    grid: StorageGrid, tmp_path: Path
) -> None:
    """The publisher's lease book gets the mutable verify cap (not each version);
    renewing it extends the root's lease where the root is held and the latest
    version's shares' leases; superseded versions are left to expire."""
    from p2pstore.grid.health import Health, HealthConfig
    from p2pstore.grid.lease_renewal import LeaseBook, LeaseRenewer, RenewerConfig
    from p2pstore.grid.mutable import renew_any

    mf, _ = files(grid)
    uploaded: list[Any] = []
    mf.uploader.on_uploaded = uploaded.append  # type: ignore[union-attr]
    book = LeaseBook.load(tmp_path / "leases.log")
    mf.on_published = lambda vc: book.track(vc, grid.clock())
    cap, pub1 = await mf.create(aiter_bytes(body(20_000, 1)))
    pub2 = await mf.publish(cap, aiter_bytes(body(20_000, 2)))
    assert uploaded == []  # versions are not tracked as files of their own
    assert list(book.due(grid.clock() + 1)) == [cap.verify_cap()]
    assert LeaseBook.load(tmp_path / "leases.log").due(grid.clock() + 1) == [cap.verify_cap()]

    si = slot_index(cap.public_key)
    old_si = pub1.version.cap.storage_index  # type: ignore[union-attr]
    new_si = pub2.version.cap.storage_index  # type: ignore[union-attr]

    def expiry(index: bytes) -> float:
        return max(le.expires for gs in grid.servers for le in gs.server.leases(index))

    before = {i: expiry(i) for i in (si, old_si, new_si)}
    grid.clock.advance(10 * 86400)
    health = Health(mf.find_peers, mf.storage_for, HealthConfig(op_timeout=2.0))
    renewer = LeaseRenewer(
        book, renew_any(health.renew, mf), RenewerConfig(renew_after=86400), clock=grid.clock
    )
    report = await renewer.run_round()
    assert (report.renewed, report.failed) == (1, 0)
    assert expiry(si) > before[si] + 9 * 86400
    assert expiry(new_si) > before[new_si] + 9 * 86400
    assert expiry(old_si) == before[old_si]  # the superseded version is not renewed


async def test_a_reported_success_is_never_undone_by_a_stale_writer(grid: StorageGrid) -> None:
    """A's root reaches 6 of 10 peers (4 fail) and A is told success; B, from the
    same survey, then reaches only the 4: B is told conflict and readers keep A's
    version, whichever root has the larger hash (several files, so both orders)."""
    mf, _ = files(grid)
    for n in range(6):
        cap, _ = await mf.create(aiter_bytes(b"first version, long enough %d" % n * 3))
        stale = await mf.survey(cap)
        for gs in grid.servers[:4]:
            gs.broken()
        a = await mf.publish_version(cap, LiteralCap(b"A%d" % n), await mf.survey(cap))
        assert a.stored == 6
        for gs in grid.servers[:4]:
            gs.heal()
        with pytest.raises(MutableConflict):
            await mf.publish_version(cap, LiteralCap(b"B%d" % n), stale)
        v, s = await mf.latest(cap)
        assert v.cap == LiteralCap(b"A%d" % n) and s.holding_latest == 6


async def test_a_racing_writer_whose_root_most_peers_hold_converges(grid: StorageGrid) -> None:
    """A reaches peers 0-6 first, B peers 7-9: A's root is on a majority, so A
    publishes it once more as the next version (all peers converge) and is told
    success; B is told conflict."""
    mf, _ = files(grid)
    cap = WriteCap(bytes(32))
    order = [(0, i) for i in range(7)] + [(1, i) for i in range(7, 10)]
    order += [(1, i) for i in range(7)] + [(0, i) for i in range(7, 10)]
    sched = Schedule(grid, order)
    await sched.seed(cap)
    surveys = [await mf.survey(cap), await mf.survey(cap)]
    a = asyncio.create_task(sched.writer(0).publish_version(cap, LiteralCap(b"AAA"), surveys[0]))
    b = asyncio.create_task(sched.writer(1).publish_version(cap, LiteralCap(b"BBB"), surveys[1]))
    await sched.run()
    pub = await a
    assert pub.version.sequence == 3 and pub.stored == 10
    with pytest.raises(MutableConflict) as e:
        await b
    assert e.value.ours is not None and e.value.ours.seq == 2
    v, s = await mf.latest(cap)
    assert v.cap == LiteralCap(b"AAA") and v.sequence == 3 and s.holding_latest == 10
