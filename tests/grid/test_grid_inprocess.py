"""Upload, download and health on the in-process storage grid (no sockets).

Real storage servers on disk in a temp dir, faults injected with the grid's
break/hang/corrupt/delete helpers; small segments so files have many segments."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    DownloadError,
    GridLocalError,
    Health,
    HealthConfig,
    SendConfig,
    UploadConfig,
    Uploader,
    UploadError,
    WholeShareWriter,
    aiter_bytes,
    bytes_source,
    download,
    rank_peers,
    static_peers,
)
from p2pstore.grid.feeding import ENCODE_AHEAD
from p2pstore.grid.whole import whole_share
from p2pstore.immutable import EncodingParams, LiteralCap, ReadCap, ShareTrailer
from p2pstore.storage import (
    ClosedShare,
    DiskFull,
    QuotaExceeded,
    StorageAPI,
    StorageConfig,
    Unavailable,
    put_in_steps,
)
from p2pstore.testing.storage_grid import FaultyStorage, GridServer, StorageGrid
from quic_transport.identity import NodeId

OWNER = NodeId(b"U" * 20)
SECRET = bytes(range(32))
PARAMS = EncodingParams.create(3, 10, 4096)
FAST = SendConfig(op_timeout=2.0)  # generous: close() fsyncs on a shared disk


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 12) as g:
        yield g


@pytest.fixture
def no_overdue(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that count reads: no read is ever overdue (on a loaded machine a
    read held up for a second would be read around, one read more than counted)."""
    monkeypatch.setattr(download, "OVERDUE_MIN", 1e9)


def storage_for(gs: GridServer) -> StorageAPI:
    return gs.client(OWNER)


def tools(
    grid: StorageGrid, *, servers: list[GridServer] | None = None, happy: int = 7
) -> tuple[Uploader[GridServer], Downloader[GridServer]]:
    find = static_peers(servers if servers is not None else grid.servers)
    cfg = UploadConfig(happy=happy, send=FAST, list_timeout=0.5)
    up = Uploader(find, storage_for, cfg, params=PARAMS)
    down = Downloader(find, storage_for, DownloadConfig(op_timeout=2.0, locate_timeout=5))
    return up, down


def data_of(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def ranked_servers(grid: StorageGrid, si: bytes) -> list[GridServer]:
    by_id = {gs.node_id.raw: gs for gs in grid.servers}
    return [by_id[p] for p in rank_peers(si, by_id)]


@pytest.mark.parametrize("size", [0, 1, 55, 56, 4095, 4096 * 3 + 7, 100_000])
@pytest.mark.parametrize("convergent", [True, False])
async def test_roundtrip_sizes(grid: StorageGrid, size: int, convergent: bool) -> None:
    up, down = tools(grid)
    data = data_of(size, size)
    if convergent:
        res = await up.upload_convergent(bytes_source(data, 3000), SECRET)
    else:
        res = await up.upload_random(aiter_bytes(data, 3000))
    assert res.size == size
    if size <= 55:
        assert isinstance(res.cap, LiteralCap) and res.placements == {}
        assert all(sum(gs.calls.values()) == 0 for gs in grid.servers)
    else:
        assert isinstance(res.cap, ReadCap)
        ranked = ranked_servers(grid, res.cap.storage_index)
        assert res.placements == {i: ranked[i] for i in range(10)}  # share i -> i-th closest
        assert res.happiness == 10 and res.shares_sent == 10
    assert await down.read_all(res.cap) == data


async def test_ranges_fetch_only_needed_segments(grid: StorageGrid, no_overdue: None) -> None:
    up, down = tools(grid)
    data = data_of(50_000)
    res = await up.upload_random(aiter_bytes(data))
    assert isinstance(res.cap, ReadCap)
    seg = PARAMS.segment_size
    for off, ln in [(0, 1), (seg - 1, 2), (seg * 3 + 5, seg * 2), (49_990, 100), (60_000, 5)]:
        before = sum(gs.calls["readv"] for gs in grid.servers)
        got = await down.read_all(res.cap, offset=off, length=ln)
        assert got == data[off : off + ln]
        opened = 3 * 2 * 10  # header and root reads of every share found (<= 2 each)
        segs = len(range(off // seg, min(len(data), off + ln - 1) // seg + 1))
        used = sum(gs.calls["readv"] for gs in grid.servers) - before
        assert used <= opened + 3 * segs  # k reads per needed segment
    with pytest.raises(GridLocalError):
        await down.read_all(res.cap, offset=-1)


async def test_reupload_sends_nothing(grid: StorageGrid) -> None:
    up, down = tools(grid)
    data = data_of(30_000, 7)
    first = await up.upload_convergent(bytes_source(data), SECRET)
    writes = sum(gs.calls["write"] + gs.calls["put_share"] for gs in grid.servers)
    # the first upload extended its provisional lease once per holder (docs/grid.md)
    leases = sum(gs.calls["add_lease"] for gs in grid.servers)
    assert leases == len(
        {gs for gs in grid.servers if gs.server.list_shares(first.cap.storage_index)}
    )
    second = await up.upload_convergent(bytes_source(data), SECRET)
    assert second.cap == first.cap
    assert second.shares_sent == 0 and second.shares_present == 10
    assert sum(gs.calls["write"] + gs.calls["put_share"] for gs in grid.servers) == writes
    assert sum(gs.calls["add_lease"] for gs in grid.servers) == leases + 10
    assert await down.read_all(second.cap) == data


async def test_partial_previous_upload_sends_only_missing(grid: StorageGrid) -> None:
    up, _ = tools(grid)
    data = data_of(20_000, 8)
    first = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(first.cap, ReadCap)
    si = first.cap.storage_index
    for s in (1, 4):
        first.placements[s].delete_share(si, s)
    again = await up.upload_convergent(bytes_source(data), SECRET)
    assert again.shares_sent == 2 and again.shares_present == 8 and again.happiness == 10


async def test_refusing_and_broken_peers_fall_back(grid: StorageGrid) -> None:
    up, down = tools(grid)
    data = data_of(30_000, 3)
    key_probe = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(key_probe.cap, ReadCap)
    si = key_probe.cap.storage_index
    grid.delete_all(si)
    ranked = ranked_servers(grid, si)
    ranked[1].broken()
    ranked[4].broken(lambda: ConnectionError("gone"))
    res = await up.upload_convergent(bytes_source(data), SECRET)
    holders = set(res.placements.values())
    assert ranked[1] not in holders and ranked[4] not in holders
    assert res.happiness == 10
    assert {ranked[10], ranked[11]} <= holders
    assert await down.read_all(res.cap) == data


async def test_hung_peers_are_skipped_after_the_listing_times_out(grid: StorageGrid) -> None:
    up, down = tools(grid)
    data = data_of(10_000, 4)
    probe = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(probe.cap, ReadCap)
    si = probe.cap.storage_index
    grid.delete_all(si)
    ranked = ranked_servers(grid, si)
    for gs in ranked[:2]:
        gs.hang()  # the two closest peers never answer
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert set(res.placements.values()) == set(ranked[2:12])
    assert res.placements[0] == ranked[2]  # share i to the i-th closest live peer
    for gs in ranked[:2]:
        gs.heal()
    assert await down.read_all(res.cap) == data


async def test_full_server_places_share_elsewhere(tmp_path: Path) -> None:
    with StorageGrid(tmp_path, 11, StorageConfig(max_bytes=200_000)) as grid:
        up, down = tools(grid)
        data = data_of(30_000, 5)
        probe = await up.upload_convergent(bytes_source(data), SECRET)
        assert isinstance(probe.cap, ReadCap)
        si = probe.cap.storage_index
        grid.delete_all(si)
        ranked = ranked_servers(grid, si)
        # fill the closest server with another file's share
        filler = ranked[0].client(OWNER)
        other = hashlib.blake2b(b"x", digest_size=20).digest()
        await filler.allocate(other, 0, 185_000)
        res = await up.upload_convergent(bytes_source(data), SECRET)
        assert ranked[0] not in res.placements.values()
        assert res.placements[0] == ranked[10]
        assert await down.read_all(res.cap) == data


class RefusesAllocate:
    """A StorageAPI whose server is full: lists and reads fine, refuses new shares."""

    def __init__(self, inner: FaultyStorage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "allocate":

            async def allocate(*a: object) -> None:
                raise QuotaExceeded("storage full (test)", remote=True)

            return allocate
        return getattr(self.inner, name)


async def test_too_few_peers_reports_exactly(grid: StorageGrid) -> None:
    # fewer live peers than happy: refused before any share is offered
    up, _ = tools(grid, servers=grid.servers[:5])
    with pytest.raises(UploadError) as info:
        await up.upload_random(aiter_bytes(data_of(10_000)))
    e = info.value
    assert e.happiness == 0 and e.happy == 7 and e.placed == {} and e.peers_found == 5
    assert set(e.reasons) == set(range(10))
    assert sum(gs.calls["allocate"] for gs in grid.servers) == 0

    # shares placed, but on too few distinct peers: the error says where and why
    full = set(grid.servers[:4])
    find = static_peers(grid.servers[:8])

    def some_full(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)
        return RefusesAllocate(c) if gs in full else c  # type: ignore[return-value]

    up2 = Uploader(find, some_full, UploadConfig(send=FAST), params=PARAMS)
    with pytest.raises(UploadError) as info:
        await up2.upload_random(aiter_bytes(data_of(10_000)))
    e = info.value
    assert e.happiness == 4 and len(e.placed) == 10 and e.reasons == {}
    assert set(e.placed.values()) == {gs.node_id.b32 for gs in grid.servers[4:8]}
    assert "placed on only 4 distinct peers, need 7 (shares_happy; 10 of 10 shares" in str(e)
    # and nothing it stored is kept alive: with no other lease, the shares are gone
    left = [
        si
        for gs in grid.servers
        for prefix in gs.server.list_prefixes()
        for si in gs.server.storage_indexes_in(prefix)
        if gs.server.list_shares(si)
    ]
    assert left == []

    # unreachable peers are named with the reason
    for gs in grid.servers[:5]:
        gs.broken()
    for gs in grid.servers[5:8]:
        gs.broken(lambda: TimeoutError())
    up3, _ = tools(grid, servers=grid.servers[:9], happy=3)
    with pytest.raises(UploadError) as info:
        await up3.upload_random(aiter_bytes(data_of(10_000)))
    e = info.value
    assert e.happiness == 0 and len(e.peer_failures) == 8
    assert sum(1 for r in e.peer_failures.values() if "timed out" in r) == 3
    assert sum(1 for r in e.peer_failures.values() if "unavailable" in r) == 5


async def test_bad_happy_is_a_local_error(grid: StorageGrid) -> None:
    up, _ = tools(grid)
    for happy in (0, 2, 11):
        with pytest.raises(GridLocalError):
            await up.upload_random(aiter_bytes(b"x" * 100), happy=happy)


class DiesAfter:
    """A StorageAPI that fails every call after ``n`` writes (a peer vanishing
    mid-upload)."""

    def __init__(self, inner: FaultyStorage, n: int) -> None:
        self.inner, self.n = inner, n

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name == "write":

            async def write(*a: object) -> None:
                if self.n <= 0:
                    raise Unavailable("vanished", remote=True)
                self.n -= 1
                await attr(*a)

            return write
        return attr


async def test_peer_vanishing_mid_stream_share_is_regenerated_elsewhere(
    grid: StorageGrid, stepwise: None
) -> None:
    data = data_of(60_000, 9)
    find = static_peers(grid.servers)
    up0 = Uploader(find, storage_for, UploadConfig(send=FAST), params=PARAMS)
    probe = await up0.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(probe.cap, ReadCap)
    si = probe.cap.storage_index
    grid.delete_all(si)
    ranked = ranked_servers(grid, si)
    victims = {ranked[2], ranked[6]}
    clients: dict[GridServer, StorageAPI] = {}

    def flaky(gs: GridServer) -> StorageAPI:
        if gs not in clients:
            c = gs.client(OWNER)
            clients[gs] = DiesAfter(c, 3) if gs in victims else c  # type: ignore[assignment]
        return clients[gs]

    up = Uploader(find, flaky, UploadConfig(send=FAST), params=PARAMS)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.happiness == 10 and not victims & set(res.placements.values())
    # the next peers take them (which one takes which depends on which died first)
    assert {res.placements[2], res.placements[6]} == {ranked[10], ranked[11]}
    _, down = tools(grid)
    assert await down.read_all(res.cap) == data
    for v in victims:  # the dead uploads were aborted, nothing left behind
        assert v.server.list_shares(si) == {}


async def test_progress_is_monotonic_and_complete(grid: StorageGrid) -> None:
    up, down = tools(grid)
    data = data_of(40_000, 11)
    seen: list[tuple[int, int | None]] = []
    res = await up.upload_convergent(
        bytes_source(data), SECRET, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (40_000, 40_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    got: list[tuple[int, int | None]] = []
    out = b"".join([c async for c in down.read(res.cap, progress=lambda d, t: got.append((d, t)))])
    assert out == data and got[-1] == (40_000, 40_000)


# -- download faults -------------------------------------------------------------------


async def upload(grid: StorageGrid, size: int = 50_000) -> tuple[bytes, ReadCap]:
    up, _ = tools(grid)
    data = data_of(size, size)
    res = await up.upload_random(aiter_bytes(data))
    assert isinstance(res.cap, ReadCap)
    return data, res.cap


async def test_download_with_seven_of_ten_servers_gone(grid: StorageGrid) -> None:
    data, cap = await upload(grid)
    ranked = ranked_servers(grid, cap.storage_index)
    for gs in ranked[:7]:
        gs.broken()
    _, down = tools(grid)
    assert await down.read_all(cap) == data
    ranked[7].broken()
    with pytest.raises(DownloadError) as info:
        await down.read_all(cap)
    e = info.value
    assert e.found == 2 and e.need == 3 and e.segment is None
    assert set(e.where) == {ranked[8].node_id.b32, ranked[9].node_id.b32}
    assert "found 2 good shares, need 3" in str(e)


async def test_download_survives_corrupt_and_deleted_shares(grid: StorageGrid) -> None:
    data, cap = await upload(grid)
    si = cap.storage_index
    ranked = ranked_servers(grid, si)
    bs = PARAMS.block_size
    ranked[0].corrupt_share(si, 0, 72 + 7 * bs + 1)  # block of segment 7
    ranked[1].corrupt_share(si, 1, 5)  # the header
    ranked[2].corrupt_share(si, 2, 72 + 7 * bs + 9)  # the same segment
    ranked[3].delete_share(si, 3)
    ranked[4].corrupt_share(si, 4, ranked[4].server.share_path(si, 4).stat().st_size - 3)
    _, down = tools(grid)
    assert await down.read_all(cap) == data
    for i in range(5, 8):
        ranked[i].delete_share(si, i)
    got = b""
    with pytest.raises(DownloadError) as info:
        async for chunk in down.read(cap):
            got += chunk
    e = info.value
    assert got == data[: 7 * PARAMS.segment_size]  # everything before segment 7, verified
    assert e.segment == 7 and e.found == 2 and e.need == 3
    assert any("hash check" in why for why in e.bad.values())


async def hang_after_first_chunk(
    grid: StorageGrid, size: int, *, op_timeout: float
) -> tuple[bytes, list[GridServer], bytes, AsyncIterator[bytes]]:
    """Upload ``size`` bytes, start reading them back, and once the first chunk is
    in, hang the three fastest peers (those of the primary shares); the data, the
    peers ranked, the first chunk and the reader."""
    data, cap = await upload(grid, size)
    ranked = ranked_servers(grid, cap.storage_index)
    find = static_peers(grid.servers)
    down = Downloader(find, storage_for, DownloadConfig(op_timeout=op_timeout, locate_timeout=5))
    it = down.read(cap)
    first = await it.__anext__()
    for gs in ranked[:3]:
        gs.hang()
    return data, ranked, first, it


async def test_download_switches_share_when_peer_hangs_mid_file(grid: StorageGrid) -> None:
    """The reads time out (op_timeout 0.5 s, before they could be overdue at 1 s):
    the hung peers are dropped and the segments completed from other shares."""
    data, ranked, first, it = await hang_after_first_chunk(grid, 50_000, op_timeout=0.5)
    rest = b"".join([c async for c in it])
    for gs in ranked[:3]:
        gs.heal()
    assert first + rest == data


async def test_download_reads_around_peers_that_stop_answering(grid: StorageGrid) -> None:
    """The peers of the three primary shares stop answering mid-file without failing
    (no error, and op_timeout is 60 s): each segment's overdue reads go to other
    peers' shares after about a second, and the later segments are read from those
    peers only (the hung peers' abandoned reads count against them)."""
    data, ranked, first, it = await hang_after_first_chunk(grid, 200_000, op_timeout=60.0)
    before = sum(gs.calls["readv"] for gs in ranked[:3])

    async def rest() -> bytes:
        return b"".join([c async for c in it])

    try:
        got = await asyncio.wait_for(rest(), 20.0)
    finally:
        for gs in ranked[:3]:
            gs.heal()
    assert first + got == data
    # only the reads in flight when they hung, and a few more before the estimates
    # caught up: not one per segment
    assert sum(gs.calls["readv"] for gs in ranked[:3]) - before <= 3 * 6


class ThinLink:
    """A peer behind a thin link: one read at a time, each taking its size over
    ``rate`` bytes per second (a share's opening reads are quick, a block read is
    not); counts the reads asked of it."""

    def __init__(self, inner: StorageAPI, rate: float) -> None:
        self.inner, self.rate, self.lock = inner, rate, asyncio.Lock()
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def readv(self, si: bytes, shnum: int, ranges: list[tuple[int, int]]) -> list[bytes]:
        self.reads += 1
        async with self.lock:
            await asyncio.sleep(sum(n for _, n in ranges) / self.rate)
        return await self.inner.readv(si, shnum, ranges)


async def test_download_over_thin_links_reads_no_extra_blocks(
    grid: StorageGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every peer slow alike (a block read takes ~0.7 s, and longer queued behind the
    window's others, many times a share's quick opening reads): no read is overdue,
    and the download asks for as many reads as one that never reads around a peer."""
    data, cap = await upload(grid, 24_000)  # 6 segments

    async def reads() -> int:
        peers: dict[GridServer, ThinLink] = {}

        def storage(gs: GridServer) -> StorageAPI:
            if gs not in peers:
                peers[gs] = ThinLink(gs.client(OWNER), 2000.0)
            return peers[gs]  # type: ignore[return-value]

        config = DownloadConfig(op_timeout=60.0, locate_timeout=30.0)
        down = Downloader(static_peers(grid.servers), storage, config)
        assert await down.read_all(cap) == data
        return sum(p.reads for p in peers.values())

    normal = await reads()
    monkeypatch.setattr(download, "OVERDUE_MIN", 1e9)  # nothing is ever overdue
    assert normal == await reads()


async def test_download_never_yields_unverified_bytes(grid: StorageGrid) -> None:
    data, cap = await upload(grid, 20_000)
    si = cap.storage_index
    # corrupt the same block position in every share: no segment 2 can be verified
    for i, gs in enumerate(ranked_servers(grid, si)[:10]):
        gs.corrupt_share(si, i, 72 + 2 * (4096 // 3) + 10)
    _, down = tools(grid)
    got = b""
    with pytest.raises(DownloadError) as info:
        async for chunk in down.read(cap):
            got += chunk
    assert got == data[: len(got)] and len(got) <= 2 * PARAMS.segment_size
    assert info.value.segment == 2


async def test_wrong_cap_is_reported(grid: StorageGrid) -> None:
    _, cap = await upload(grid, 5000)
    _, down = tools(grid)
    with pytest.raises(DownloadError) as info:
        await down.read_all(replace(cap, ext_hash=bytes(32)))
    assert info.value.found == 0
    with pytest.raises(GridLocalError):
        await down.read_all(cap.verify_cap())


# -- health ------------------------------------------------------------------------------


async def test_check_verify_repair(grid: StorageGrid) -> None:
    data, cap = await upload(grid, 30_000)
    si = cap.storage_index
    vc = cap.verify_cap()
    health = Health(static_peers(grid.servers), storage_for, HealthConfig(send=FAST))
    ranked = ranked_servers(grid, si)

    c = await health.check(vc)
    assert c.healthy(7) and c.missing == [] and c.happiness == 10 and c.recoverable

    ranked[0].delete_share(si, 0)
    ranked[5].delete_share(si, 5)
    ranked[7].corrupt_share(si, 7)
    c = await health.check(vc)
    assert c.missing == [0, 5] and c.happiness == 8 and not c.healthy(7)

    v = await health.verify(vc)
    bad = {k: w for k, w in v.copies.items() if w is not None}
    assert list(bad) == [(7, ranked[7].node_id.b32)]
    assert len(v.good_shares) == 7 and v.recoverable

    r = await health.repair(vc, verify=True)
    assert set(r.repaired) == {0, 5, 7} and r.failed == {} and r.healthy
    assert r.happiness == 10  # 0 and 5 went to peers with no share; 7's peer holds the bad copy
    # repaired shares are byte-identical to the originals: verify finds them all good
    v2 = await health.verify(vc)
    assert set(v2.good_shares) == set(range(10))
    _, down = tools(grid)
    assert await down.read_all(cap) == data
    by_b32 = {gs.node_id.b32: gs for gs in grid.servers}
    placed_on = {by_b32[p] for p in r.repaired.values()}
    assert placed_on.isdisjoint({ranked[i] for i in (1, 2, 3, 4, 6, 8, 9)})


async def test_repair_with_too_few_shares_fails_clearly(grid: StorageGrid) -> None:
    _, cap = await upload(grid, 10_000)
    si = cap.storage_index
    for i, gs in enumerate(ranked_servers(grid, si)[:8]):
        gs.delete_share(si, i)
    health = Health(static_peers(grid.servers), storage_for, HealthConfig(send=FAST))
    from p2pstore.grid import RepairError

    with pytest.raises(RepairError, match="only 2 good shares found, need 3"):
        await health.repair(cap)


async def test_upload_from_file_source(grid: StorageGrid, tmp_path: Path) -> None:
    from p2pstore.grid import file_source

    path = tmp_path / "f.bin"
    data = os.urandom(33_333)
    path.write_bytes(data)
    up, down = tools(grid)
    res = await up.upload_convergent(file_source(str(path), 5000), SECRET)
    assert await down.read_all(res.cap) == data


class Delayed:
    """A StorageAPI whose ``method`` calls (one name or several) wait ``delay`` seconds
    first (forever if ``delay`` is None): a slow or hung peer that still answers the
    listing, unless the listing is one of the methods."""

    def __init__(
        self, inner: FaultyStorage, method: str | tuple[str, ...], delay: float | None
    ) -> None:
        self.inner, self.delay = inner, delay
        self.methods = (method,) if isinstance(method, str) else method

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name not in self.methods:
            return attr

        async def slow(*a: object) -> object:
            if self.delay is None:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay or 0)
            return await attr(*a)

        return slow

    async def put_share(
        self, si: bytes, shnum: int, data: bytes, lease: int | None = None
    ) -> ClosedShare:
        """In steps, through the delayed calls (as on a peer without ``storage.put``),
        and seen as such by the sender on every Python (protocol checks ignore
        ``__getattr__`` from 3.12 on)."""
        return await put_in_steps(self, si, shnum, data, lease)  # type: ignore[arg-type]


class WritesInFlight:
    """A StorageAPI that counts each share's writes under way at once (each write takes
    10 ms), and the most seen."""

    def __init__(self, inner: StorageAPI, most: dict[int, int]) -> None:
        self.inner, self.most = inner, most
        self.now: dict[int, int] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def write(self, si: bytes, share: int, offset: int, data: bytes) -> None:
        self.now[share] = self.now.get(share, 0) + 1
        self.most[share] = max(self.most.get(share, 0), self.now[share])
        try:
            await asyncio.sleep(0.01)
            await self.inner.write(si, share, offset, data)
        finally:
            self.now[share] -= 1


async def test_a_share_s_trailer_and_header_are_written_at_once(
    grid: StorageGrid, stepwise: None
) -> None:
    """Neither waits for the other (one round trip fewer per share: it counts for small
    files over a home link); the file still reads back."""
    most: dict[int, int] = {}
    wrapped = {gs: WritesInFlight(gs.client(OWNER), most) for gs in grid.servers}
    cfg = UploadConfig(happy=7, send=FAST, list_timeout=0.5)
    up = Uploader(static_peers(grid.servers), wrapped.__getitem__, cfg, params=PARAMS)
    data = data_of(3000, 41)  # one segment: the block, then the trailer and header
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert sorted(most) == list(range(PARAMS.n))
    assert set(most.values()) == {2}  # each share's last two writes overlapped
    _, down = tools(grid)
    assert isinstance(res.cap, ReadCap) and await down.read_all(res.cap) == data


class Counted:
    """A StorageAPI counting the calls made, by method name; ``put_share`` (defined
    here, not forwarded: a protocol check does not see ``__getattr__`` from Python
    3.12 on) fails with ``refuse``, or waits for ever with ``hang``."""

    def __init__(
        self,
        inner: StorageAPI,
        calls: Counter[str],
        refuse: Exception | None = None,
        *,
        hang: bool = False,
    ) -> None:
        self.inner, self.calls, self.refuse, self.hang = inner, calls, refuse, hang

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def counted(*a: object) -> object:
            self.calls[name] += 1
            return await attr(*a)

        return counted

    async def put_share(
        self, si: bytes, shnum: int, data: bytes, lease: int | None = None
    ) -> ClosedShare:
        self.calls["put_share"] += 1
        if self.refuse is not None:
            raise self.refuse
        if self.hang:
            await asyncio.Event().wait()
        assert isinstance(self.inner, WholeShareWriter)
        return await self.inner.put_share(si, shnum, data, lease)


@pytest.mark.parametrize("size", [3000, 120_000])  # one segment; 30 of them
async def test_a_small_file_s_shares_are_each_stored_in_one_call(
    grid: StorageGrid, size: int
) -> None:
    """Listing, one ``storage.put`` per share, the lease: nothing else goes to a peer."""
    calls: Counter[str] = Counter()
    clients = {gs: Counted(gs.api(OWNER, True), calls, None) for gs in grid.servers}
    cfg = UploadConfig(happy=7, send=FAST, list_timeout=0.5)
    up = Uploader(static_peers(grid.servers), clients.__getitem__, cfg, params=PARAMS)
    data = data_of(size, 43)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.happiness == PARAMS.n and res.shares_sent == PARAMS.n
    assert calls["put_share"] == PARAMS.n
    assert set(calls) <= {"list_shares", "put_share", "add_lease"}
    _, down = tools(grid)
    assert isinstance(res.cap, ReadCap) and await down.read_all(res.cap) == data


async def test_a_peer_refusing_a_whole_share_is_passed_over(grid: StorageGrid) -> None:
    calls: Counter[str] = Counter()
    full = grid.servers[:2]
    clients = {
        gs: Counted(gs.api(OWNER, True), calls, DiskFull("full") if gs in full else None)
        for gs in grid.servers
    }
    cfg = UploadConfig(happy=7, send=FAST, list_timeout=0.5)
    up = Uploader(static_peers(grid.servers), clients.__getitem__, cfg, params=PARAMS)
    data = data_of(3000, 44)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.happiness == PARAMS.n  # twelve servers: ten take a share
    assert not {gs.index for gs in full} & set(grid.shares(res.cap.storage_index))
    assert calls["put_share"] >= PARAMS.n + 1  # at least one refused, then placed elsewhere
    _, down = tools(grid)
    assert isinstance(res.cap, ReadCap) and await down.read_all(res.cap) == data


async def test_peers_without_storage_put_get_small_shares_the_old_way(
    grid: StorageGrid,
) -> None:
    for gs in grid.servers:
        del gs.registry.handlers["storage.put"]  # an older version's node
    calls: Counter[str] = Counter()
    clients = {gs: Counted(gs.api(OWNER, True), calls, None) for gs in grid.servers}
    cfg = UploadConfig(happy=7, send=FAST, list_timeout=0.5)
    up = Uploader(static_peers(grid.servers), clients.__getitem__, cfg, params=PARAMS)
    data = data_of(3000, 45)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.happiness == PARAMS.n and calls["put_share"] == PARAMS.n
    _, down = tools(grid)
    assert isinstance(res.cap, ReadCap) and await down.read_all(res.cap) == data


async def test_a_peer_hanging_on_a_whole_share_is_passed_over(grid: StorageGrid) -> None:
    """Its call times out (``op_timeout``): the share goes to the next peer."""
    calls: Counter[str] = Counter()
    hung = grid.servers[0]
    clients = {gs: Counted(gs.api(OWNER, True), calls, hang=gs is hung) for gs in grid.servers}
    cfg = UploadConfig(happy=7, send=SendConfig(op_timeout=0.5), list_timeout=0.5)
    up = Uploader(static_peers(grid.servers), clients.__getitem__, cfg, params=PARAMS)
    data = data_of(3000, 46)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.happiness == PARAMS.n and hung.index not in grid.shares(res.cap.storage_index)
    assert calls["put_share"] == PARAMS.n + 1
    _, down = tools(grid)
    assert isinstance(res.cap, ReadCap) and await down.read_all(res.cap) == data


async def test_a_client_without_put_share_gets_the_whole_share_in_steps(
    grid: StorageGrid,
) -> None:
    """Peers whose clients cannot store a share in one call, after one that can: each
    gets allocate, write and close (the first one refuses, so a share moves on)."""
    calls: Counter[str] = Counter()
    first = grid.servers[0]

    def client(gs: GridServer) -> StorageAPI:
        if gs is first:
            return Counted(gs.api(OWNER, True), calls, DiskFull("full"))  # type: ignore[return-value]
        return NoWholeShares(gs.client(OWNER, via_rpc=True))  # type: ignore[return-value]

    peers = [first, *grid.servers[1:]]
    cfg = UploadConfig(happy=7, send=FAST, list_timeout=0.5)
    up = Uploader(static_peers(peers), client, cfg, params=PARAMS)
    data = data_of(3000, 47)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.happiness == PARAMS.n
    assert first.index not in grid.shares(res.cap.storage_index)
    _, down = tools(grid)
    assert isinstance(res.cap, ReadCap) and await down.read_all(res.cap) == data


class NoWholeShares:
    """A StorageAPI without ``put_share`` (another implementation's client)."""

    def __init__(self, inner: StorageAPI) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        if name == "put_share":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_a_whole_share_must_tile_exactly() -> None:
    trailer = ShareTrailer(0, trailer_offset=8, trailer=b"TT", header=b"HHHH", share_length=10)
    assert whole_share([(0, 4, b"bbbb")], trailer) == b"HHHHbbbbTT"
    with pytest.raises(RuntimeError, match="block at 5"):
        whole_share([(0, 5, b"bbbb")], trailer)
    with pytest.raises(RuntimeError, match="trailer at 8"):
        whole_share([(0, 4, b"bbb")], trailer)
    with pytest.raises(RuntimeError, match="share of 10 bytes, expected 11"):
        whole_share([(0, 4, b"bbbb")], replace(trailer, share_length=11))


async def test_peer_hanging_on_allocate_share_moves_on(grid: StorageGrid, stepwise: None) -> None:
    data = data_of(20_000, 12)
    find = static_peers(grid.servers)
    probe = await Uploader(find, storage_for, params=PARAMS).upload_convergent(
        bytes_source(data), SECRET
    )
    assert isinstance(probe.cap, ReadCap)
    si = probe.cap.storage_index
    grid.delete_all(si)
    ranked = ranked_servers(grid, si)

    def hangs(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)
        return Delayed(c, "allocate", None) if gs is ranked[3] else c  # type: ignore[return-value]

    up = Uploader(find, hangs, UploadConfig(send=SendConfig(op_timeout=1.0)), params=PARAMS)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert res.placements[3] == ranked[10] and ranked[3] not in res.placements.values()
    assert res.happiness == 10


async def test_download_prefers_fast_peers(grid: StorageGrid, no_overdue: None) -> None:
    # shares over WHOLE_READ_MAX: their blocks are read one segment at a time
    data, cap = await upload(grid, 250_000)
    ranked = ranked_servers(grid, cap.storage_index)
    slow = set(ranked[:5])

    def some_slow(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)  # slow by far more than a loaded machine's scheduling delays
        return Delayed(c, "readv", 0.1) if gs in slow else c  # type: ignore[return-value]

    # every share located before reading starts: a slow peer takes 0.2 s to open its
    # share (two reads), as long as the default grace after the first k
    config = DownloadConfig(window=2, locate_grace=1.0)
    down = Downloader(static_peers(grid.servers), some_slow, config)
    before = {gs: gs.calls["readv"] for gs in grid.servers}
    assert await down.read_all(cap) == data
    used = {gs: gs.calls["readv"] - before[gs] for gs in grid.servers}
    segments = -(-len(data) // PARAMS.segment_size)
    fast_reads = sum(used[gs] for gs in ranked[5:10])
    slow_reads = sum(used[gs] for gs in slow)
    assert fast_reads >= 3 * segments  # every segment came from fast peers
    assert slow_reads <= 2 * 5 + 3  # the opening reads, and at most one first guess


async def test_download_prefers_primary_shares_among_peers_as_fast(
    grid: StorageGrid, no_overdue: None
) -> None:
    """Peers equally fast: the blocks come from shares 0..k-1, which decode without
    zfec work; the holders of the others are read only to open their shares (shares
    over WHOLE_READ_MAX, read one segment at a time)."""
    data, cap = await upload(grid, 250_000)
    holder = {
        share: grid.servers[index]
        for index, held in grid.shares(cap.storage_index).items()
        for share in held
    }
    assert sorted(holder) == list(range(PARAMS.n))

    def all_delayed(gs: GridServer) -> StorageAPI:
        # every call as slow, so each peer's latency is alike; long enough that a loaded
        # machine's scheduling delays stay well under SECONDARY_COST's margin
        c = gs.client(OWNER)
        return Delayed(c, ("list_shares", "readv"), 0.05)  # type: ignore[return-value]

    config = DownloadConfig(window=2, locate_grace=1.0)  # every share located first
    down = Downloader(static_peers(grid.servers), all_delayed, config)
    before = {gs: gs.calls["readv"] for gs in grid.servers}
    assert await down.read_all(cap) == data
    used = {gs: gs.calls["readv"] - before[gs] for gs in grid.servers}
    segments = -(-len(data) // PARAMS.segment_size)
    assert all(used[holder[share]] >= segments for share in range(PARAMS.k))
    assert all(used[holder[share]] <= 2 for share in range(PARAMS.k, PARAMS.n))


async def test_slow_peer_holds_the_encoder_back_memory_stays_bounded(grid: StorageGrid) -> None:
    """Backpressure: with one peer's writes stalled, the source is not read more
    than about ``window`` segments ahead (so memory does not grow with the file)."""
    gate = asyncio.Event()
    stalled = grid.servers[0]

    class Gated:
        def __init__(self, inner: FaultyStorage) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            attr = getattr(self.inner, name)
            if name != "write":
                return attr

            async def write(*a: object) -> object:
                await gate.wait()
                return await attr(*a)

            return write

    def gated(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)
        return Gated(c) if gs is stalled else c  # type: ignore[return-value]

    seg = PARAMS.segment_size
    yielded = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal yielded
        for i in range(100):
            yielded += 1
            yield data_of(seg, i)

    window = 3
    # lag_timeout: keep the stalled writer (the subject here is backpressure, not
    # replacing a stalled peer, which the tests above cover)
    send = SendConfig(op_timeout=60.0, window=window, lag_timeout=60.0)
    cfg = UploadConfig(send=send, list_timeout=5.0)
    # exactly 10 peers, so the stalled one certainly holds a share
    up = Uploader(static_peers(grid.servers[:10]), gated, cfg, params=PARAMS)
    task = asyncio.create_task(up.upload_random(source()))
    for _ in range(200):
        await asyncio.sleep(0.005)
    assert not task.done()
    # one being written, `window` queued, one encoding and ENCODE_AHEAD waiting for it
    assert yielded <= window + 3 + ENCODE_AHEAD
    gate.set()
    res = await task
    assert yielded == 100 and res.happiness == 10 and res.size == 100 * seg


async def test_source_that_lies_about_its_size_is_a_local_error(grid: StorageGrid) -> None:
    up, _ = tools(grid)
    with pytest.raises(GridLocalError, match="not the 20000 declared"):
        await up.upload_random(aiter_bytes(data_of(10_000)), size=20_000)
    with pytest.raises(GridLocalError, match="more than its 5000 bytes"):
        await up.upload_random(aiter_bytes(data_of(10_000)), size=5_000)
    calls = iter([data_of(10_000), data_of(12_000)])  # a file that changes between passes
    with pytest.raises(GridLocalError, match="more than its 10000 bytes"):
        await up.upload_convergent(lambda: aiter_bytes(next(calls)), SECRET)
    for gs in grid.servers:  # nothing left half-uploaded anywhere
        assert gs.server.stat().uploads == 0


async def test_renew_adds_leases_where_shares_are(grid: StorageGrid) -> None:
    _, cap = await upload(grid, 5000)
    si = cap.storage_index
    health = Health(static_peers(grid.servers), storage_for, HealthConfig(send=FAST))
    ranked = ranked_servers(grid, si)
    ranked[0].delete_share(si, 0)
    ranked[1].broken()
    before = sum(gs.calls["add_lease"] for gs in grid.servers)
    result = await health.renew(cap)
    assert set(result) == {gs.node_id.b32 for gs in ranked[2:10]}
    assert all(why is None for why in result.values())
    assert sum(gs.calls["add_lease"] for gs in grid.servers) - before == 8


async def test_reupload_progress_still_reported(grid: StorageGrid) -> None:
    up, _ = tools(grid)
    data = data_of(40_000, 21)
    await up.upload_convergent(bytes_source(data), SECRET)
    seen: list[int] = []
    res = await up.upload_convergent(
        bytes_source(data), SECRET, progress=lambda d, t: seen.append(d)
    )
    assert res.shares_sent == 0 and len(seen) > 5 and seen[-1] == 40_000


async def test_grid_client_picks_the_mode_and_wraps_everything(grid: StorageGrid) -> None:
    from p2pstore.testing.grid_client import GridClient

    gc = GridClient(
        static_peers(grid.servers),
        storage_for,
        convergence_secret=SECRET,
        params=PARAMS,
        upload=UploadConfig(send=FAST),
    )
    data = data_of(9_000, 31)
    a = await gc.put(bytes_source(data))  # re-openable + secret: convergent
    b = await gc.put(bytes_source(data))
    assert a.cap == b.cap and b.shares_sent == 0
    c = await gc.put(aiter_bytes(data))  # one pass: random key
    assert c.cap != a.cap
    for res in (a, c):
        assert b"".join([x async for x in gc.get(res.cap, offset=10, length=100)]) == data[10:110]
        assert (await gc.check(res.cap)).healthy(7)
        assert set(v for v in (await gc.verify(res.cap)).copies.values()) == {None}
        assert (await gc.repair(res.cap)).repaired == {}
        assert all(w is None for w in (await gc.renew(res.cap)).values())
    plain = GridClient(static_peers(grid.servers), storage_for, params=PARAMS)
    d = await plain.put(bytes_source(data))  # no secret: random key even if re-openable
    assert d.cap not in (a.cap, c.cap)


class HangsAfter:
    """A StorageAPI whose ``write`` hangs forever after ``n`` writes: a peer that goes
    silent mid-share (its connection not yet known to be dead)."""

    def __init__(self, inner: FaultyStorage, n: int) -> None:
        self.inner, self.n = inner, n

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name == "write":

            async def write(*a: object) -> None:
                if self.n <= 0:
                    await asyncio.Event().wait()
                self.n -= 1
                await attr(*a)

            return write
        return attr


def _hanging(
    grid: StorageGrid, victims: set[GridServer], n: int
) -> Callable[[GridServer], StorageAPI]:
    clients: dict[GridServer, StorageAPI] = {}

    def storage(gs: GridServer) -> StorageAPI:
        if gs not in clients:
            c = gs.client(OWNER)
            clients[gs] = HangsAfter(c, n) if gs in victims else c  # type: ignore[assignment]
        return clients[gs]

    return storage


async def test_silent_peer_mid_share_never_holds_the_upload(grid: StorageGrid) -> None:
    """Convergent upload (the source can be read again): the stalled share moves to
    the next peer after lag_timeout, its early blocks re-encoded from the source; the
    other shares never wait for the op timeout (60 s here)."""
    data = data_of(200_000, 21)
    find = static_peers(grid.servers)
    probe = await Uploader(find, storage_for, params=PARAMS).upload_convergent(
        bytes_source(data), SECRET
    )
    assert isinstance(probe.cap, ReadCap)
    si = probe.cap.storage_index
    grid.delete_all(si)
    ranked = ranked_servers(grid, si)
    victim = ranked[4]
    send = SendConfig(op_timeout=60.0, lag_timeout=0.3)
    up = Uploader(find, _hanging(grid, {victim}, 12), UploadConfig(send=send), params=PARAMS)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res = await up.upload_convergent(bytes_source(data), SECRET)
    took = loop.time() - t0
    assert took < 10.0, f"the upload waited {took:.1f} s on the silent peer"
    assert res.happiness == 10 and victim not in res.placements.values()
    assert res.placements[4] == ranked[10]
    _, down = tools(grid)
    assert await down.read_all(res.cap) == data
    report = await Health(find, storage_for, HealthConfig(op_timeout=5.0)).verify(res.cap)
    bad = {k: why for k, why in report.copies.items() if why is not None}
    assert bad == {} and len(report.good_shares) == 10  # the moved share verifies too


class ShareHangs:
    """Storage clients on which the *first* peer to receive shares ``shares`` goes
    silent after ``n`` writes (whatever the random storage index puts there); their
    replacements, on other peers, are healthy."""

    def __init__(self, shares: set[int], n: int) -> None:
        self.shares, self.n = shares, n
        self.victims: dict[int, GridServer] = {}
        self.writes: dict[int, int] = {}

    def __call__(self, gs: GridServer) -> StorageAPI:
        inner = gs.client(OWNER)
        outer = self

        class Client:
            def __getattr__(self, name: str) -> object:
                attr = getattr(inner, name)
                if name != "write":
                    return attr

                async def write(si: bytes, shnum: int, offset: int, data: bytes) -> None:
                    if shnum in outer.shares and outer.victims.setdefault(shnum, gs) is gs:
                        outer.writes[shnum] = outer.writes.get(shnum, 0) + 1
                        if outer.writes[shnum] > outer.n:
                            await asyncio.Event().wait()
                    await attr(si, shnum, offset, data)

                return write

        return Client()  # type: ignore[return-value]


async def test_silent_peer_mid_share_random_mode_regenerates_after(grid: StorageGrid) -> None:
    """One-pass mode cannot re-read its input: a stalled share is given up after
    lag_timeout (the others go on), and after the pass it is re-encoded from the file
    read back from the placed shares. Never waits for the op timeout (60 s)."""
    data = data_of(60_000, 22)
    find = static_peers(grid.servers)
    send = SendConfig(op_timeout=60.0, lag_timeout=0.3)
    hangs = ShareHangs({0, 1}, 2)
    up = Uploader(find, hangs, UploadConfig(send=send), params=PARAMS)
    res = await asyncio.wait_for(up.upload_random(aiter_bytes(data)), 15)
    assert set(hangs.victims) == {0, 1}
    assert len(res.placements) == 10 and res.happiness == 10
    assert not set(hangs.victims.values()) & set(res.placements.values())
    _, down = tools(grid)
    assert await down.read_all(res.cap) == data


async def test_source_changed_before_regeneration_never_yields_a_bad_share(
    grid: StorageGrid, stepwise: None
) -> None:
    """The re-encoded blocks must match the original encoding's block hashes: a source
    that changed since the encoding pass makes that share fall back to regeneration
    from the placed shares, never a share that fails verification."""
    data = data_of(120_000, 23)
    find = static_peers(grid.servers)
    probe = await Uploader(find, storage_for, params=PARAMS).upload_convergent(
        bytes_source(data), SECRET
    )
    assert isinstance(probe.cap, ReadCap)
    si = probe.cap.storage_index
    grid.delete_all(si)
    victim = ranked_servers(grid, si)[1]
    opened = 0
    changed = bytearray(data)
    changed[5] ^= 1

    def source() -> AsyncIterator[bytes]:
        nonlocal opened
        opened += 1
        return aiter_bytes(data if opened <= 2 else bytes(changed), 4096)

    send = SendConfig(op_timeout=60.0, lag_timeout=0.3)
    up = Uploader(find, _hanging(grid, {victim}, 10), UploadConfig(send=send), params=PARAMS)
    res = await up.upload_convergent(source, SECRET)
    assert opened >= 3  # the replacement did read the (changed) source again
    assert res.happiness == 10 and victim not in res.placements.values()
    report = await Health(find, storage_for, HealthConfig(op_timeout=5.0)).verify(res.cap)
    bad = {k: why for k, why in report.copies.items() if why is not None}
    assert bad == {} and len(report.good_shares) == 10
    _, down = tools(grid)
    assert await down.read_all(res.cap) == data


class FailsOn:
    """A StorageAPI whose ``method`` always fails: e.g. a peer that dies while the
    share is being closed, after it took every block and the trailer."""

    def __init__(self, inner: FaultyStorage, method: str) -> None:
        self.inner, self.method = inner, method

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        async def fail(*a: object) -> object:
            raise Unavailable("vanished", remote=True)

        return fail


async def test_peer_dying_at_close_moves_the_whole_share(grid: StorageGrid, stepwise: None) -> None:
    """The writer had taken the trailer already: its successor regenerates every
    block (this once hung the upload: nothing was left in the queue for it)."""
    data = data_of(90_000, 24)
    find = static_peers(grid.servers)
    probe = await Uploader(find, storage_for, params=PARAMS).upload_convergent(
        bytes_source(data), SECRET
    )
    assert isinstance(probe.cap, ReadCap)
    si = probe.cap.storage_index
    grid.delete_all(si)
    victim = ranked_servers(grid, si)[3]

    def storage(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)
        return FailsOn(c, "close_share") if gs is victim else c  # type: ignore[return-value]

    send = SendConfig(op_timeout=5.0, lag_timeout=0.3)
    up = Uploader(find, storage, UploadConfig(send=send), params=PARAMS)
    res = await asyncio.wait_for(up.upload_convergent(bytes_source(data), SECRET), 30)
    assert res.happiness == 10 and victim not in res.placements.values()
    report = await Health(find, storage_for, HealthConfig(op_timeout=5.0)).verify(res.cap)
    assert all(why is None for why in report.copies.values()) and len(report.good_shares) == 10


async def test_repair_target_vanishing_mid_stream_moves_to_the_next_peer(
    grid: StorageGrid,
) -> None:
    """Repair has no source to re-read: a share whose new peer dies mid-stream is
    regenerated again for the next peer (another pass of replace_shares)."""
    up, down = tools(grid, servers=grid.servers[:10])
    data = data_of(80_000, 25)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(res.cap, ReadCap)
    si = res.cap.storage_index
    holder = res.placements[2]
    holder.delete_share(si, 2)
    # the peers the repair may try first (they hold nothing now): all die mid-stream
    victims = {holder, grid.servers[10]}
    clients: dict[GridServer, DiesAfter] = {}

    def flaky(gs: GridServer) -> StorageAPI:
        if gs in victims:
            clients.setdefault(gs, DiesAfter(gs.client(OWNER), 3))
            return clients[gs]  # type: ignore[return-value]
        return gs.client(OWNER)

    find = static_peers(grid.servers)
    health = Health(find, flaky, HealthConfig(op_timeout=2.0, send=FAST, happy=7))
    result = await health.repair(res.cap)
    assert result.failed == {} and 2 in result.repaired, result
    assert result.repaired[2] == grid.servers[11].node_id.b32
    assert sum(1 for c in clients.values() if c.n == 0) == 2  # both were tried and died
    assert await down.read_all(res.cap) == data


async def test_uniformly_slow_peers_are_not_replaced(grid: StorageGrid, stepwise: None) -> None:
    """A slow uplink slows every share alike: no writer sits idle while another
    holds the upload, so none is replaced even though blocks take longer than
    lag_timeout."""
    data = data_of(5 * PARAMS.segment_size, 26)

    def slow(gs: GridServer) -> StorageAPI:
        return Delayed(gs.client(OWNER), "write", 0.4)  # type: ignore[arg-type, return-value]

    find = static_peers(grid.servers)
    send = SendConfig(op_timeout=10.0, lag_timeout=0.3)
    up = Uploader(find, slow, UploadConfig(send=send), params=PARAMS)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(res.cap, ReadCap)
    ranked = ranked_servers(grid, res.cap.storage_index)
    assert res.placements == {i: ranked[i] for i in range(10)}  # nobody moved


async def test_large_segments_are_verified_and_decoded_off_the_loop(
    grid: StorageGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small segments (the usual 1 MiB) are checked on the event loop; a file with
    segments above INLINE_SEGMENT (an uploader may choose up to 64 MiB) is checked
    in a worker thread, so the loop never waits for a large segment's hashing."""
    import threading

    import p2pstore.grid.download as download_mod
    from p2pstore.immutable import Decoder, FileVerifier

    data, cap = await upload(grid, 20_000)
    seen: list[tuple[str, int]] = []
    real_verify, real_add = FileVerifier.verify_block, Decoder.add_segment

    def verify(self: FileVerifier, *args: object) -> object:
        seen.append(("verify", threading.get_ident()))
        return real_verify(self, *args)  # type: ignore[arg-type]

    def add(self: Decoder, *args: object) -> object:
        seen.append(("decode", threading.get_ident()))
        return real_add(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FileVerifier, "verify_block", verify)
    monkeypatch.setattr(Decoder, "add_segment", add)
    _, down = tools(grid)
    loop_thread = threading.get_ident()
    assert await down.read_all(cap) == data
    assert {kind for kind, _ in seen} == {"verify", "decode"}
    assert all(t == loop_thread for _, t in seen)
    seen.clear()
    monkeypatch.setattr(download_mod, "INLINE_SEGMENT", PARAMS.segment_size - 1)
    assert await down.read_all(cap) == data
    assert {kind for kind, _ in seen} == {"verify", "decode"}
    assert all(t != loop_thread for _, t in seen)
