"""Opening shares in one read (p2pstore/grid/opening.py): the ranges asked for, the
reads a download makes on the in-process grid, and listed sizes that lie."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.grid import DownloadConfig, Downloader, Uploader, bytes_source, download, static_peers
from p2pstore.grid.opening import WHOLE_READ_MAX, Fetched, opening_ranges
from p2pstore.immutable import EncodingParams, ReadCap, SegmentGeometry, ShareLayout, VerifyCap
from p2pstore.storage import StorageAPI, StorageConfig
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

OWNER = NodeId(b"O" * 20)
SECRET = bytes(range(32))
DEFAULT = EncodingParams.create(3, 10)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 10) as g:
        yield g


@pytest.fixture(autouse=True)
def no_overdue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads are counted: none may be read around as overdue on a loaded machine."""
    monkeypatch.setattr(download, "OVERDUE_MIN", 1e9)


def storage_for(gs: GridServer) -> StorageAPI:
    return gs.client(OWNER)


async def upload(grid: StorageGrid, size: int, params: EncodingParams) -> tuple[bytes, ReadCap]:
    data = bytes((i * 7 + size) % 251 for i in range(size))
    up = Uploader(static_peers(grid.servers), storage_for, params=params)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(res.cap, ReadCap) and res.happiness == 10
    return data, res.cap


def layout_of(cap: ReadCap, params: EncodingParams, share: int) -> ShareLayout:
    return ShareLayout.for_share(SegmentGeometry(params, cap.size), share)


def readvs(grid: StorageGrid) -> dict[GridServer, int]:
    return {gs: gs.calls["readv"] for gs in grid.servers}


# -- the ranges of the first read -----------------------------------------------------
@pytest.mark.parametrize("size", [3_000, 150_000, 5_000_000, 300_000_000])
def test_the_first_read_covers_what_opening_needs(size: int) -> None:
    """Default segments: the header, block root, share chain and extension block of
    every share are in its first read (computed here without uploading)."""
    cap = VerifyCap(3, 10, size, b"s" * 20, b"e" * 32)
    for share in range(10):
        lay = ShareLayout.for_share(SegmentGeometry(DEFAULT, size), share)
        ranges = opening_ranges(cap, share, lay.share_length, 1 << 20)
        assert len(ranges) <= 3 and sum(n for _, n in ranges) <= max(WHOLE_READ_MAX, 1024)
        fetched = Fetched.of(ranges, [b"x" * n for _, n in ranges])
        for r in [(0, 72), lay.ext_range(), lay.block_root_range(), lay.share_chain_range()]:
            assert fetched.get(r) is not None, (share, r)
        whole = share < 3 and lay.share_length <= WHOLE_READ_MAX
        assert (ranges == [(0, lay.share_length)]) == whole


@pytest.mark.parametrize("listed", [-5, 0, 10, 71, 72, 73, 1 << 40, 1 << 70])
def test_any_listed_size_gives_sane_ranges(listed: int) -> None:
    cap = VerifyCap(3, 10, 100_000, b"s" * 20, b"e" * 32)
    for share in (0, 9):
        ranges = opening_ranges(cap, share, listed, 1 << 20)
        assert ranges[0][0] == 0 and len(ranges) <= 3
        assert all(off >= 0 and 0 < n <= max(listed, 72) for off, n in ranges)
        assert all(off + n <= max(listed, 72) for off, n in ranges)


def test_fetched_pieces_may_be_short() -> None:
    f = Fetched.of([(0, 100), (500, 50)], [b"a" * 60, b"b" * 50])
    assert f.get((10, 20)) == b"a" * 20 and f.get((50, 20)) is None
    assert f.get((520, 30)) == b"b" * 30 and f.get((540, 20)) is None
    assert f.whole(60) == b"a" * 60 and f.whole(61) is None


# -- reads a download makes ------------------------------------------------------------
async def test_a_small_file_is_one_read_per_share(grid: StorageGrid) -> None:
    """Every share is opened in one read; the k primary shares are read whole, so
    the blocks need no read at all."""
    data, cap = await upload(grid, 3_000, DEFAULT)
    assert layout_of(cap, DEFAULT, 0).share_length <= WHOLE_READ_MAX
    down = Downloader(static_peers(grid.servers), storage_for, DownloadConfig(locate_grace=1.0))
    before = readvs(grid)
    assert await down.read_all(cap) == data
    assert {gs: n - before[gs] for gs, n in readvs(grid).items()} == {
        gs: len(grid.shares(cap.storage_index).get(i, ())) for i, gs in enumerate(grid.servers)
    }


async def test_a_multi_segment_small_share_is_read_from_its_copy(grid: StorageGrid) -> None:
    params = EncodingParams.create(3, 10, 4096)
    data, cap = await upload(grid, 60_000, params)  # 15 segments, shares of ~20 KB
    down = Downloader(static_peers(grid.servers), storage_for, DownloadConfig(locate_grace=1.0))
    before = readvs(grid)
    assert await down.read_all(cap) == data
    # secondaries: header + chain + extension, then the block root (non-default segments)
    assert sum(n - before[gs] for gs, n in readvs(grid).items()) <= 3 + 2 * 7
    assert await down.read_all(cap, offset=30_001, length=7) == data[30_001:30_008]


async def test_a_larger_share_opens_in_one_read(grid: StorageGrid) -> None:
    data, cap = await upload(grid, 300_000, DEFAULT)  # one segment, shares of ~100 KB
    assert layout_of(cap, DEFAULT, 0).share_length > WHOLE_READ_MAX
    down = Downloader(static_peers(grid.servers), storage_for, DownloadConfig(locate_grace=1.0))
    before = readvs(grid)
    assert await down.read_all(cap) == data
    used = sorted(n - before[gs] for gs, n in readvs(grid).items())
    assert used == [1] * 7 + [2] * 3  # opening everywhere, then k blocks


# -- listed sizes that lie --------------------------------------------------------------
class ListsWrong:
    """A peer whose listing misstates every share's size by ``change`` (or gives
    ``fixed``); its shares themselves are sound."""

    def __init__(self, inner: StorageAPI, change: int = 0, fixed: int | None = None) -> None:
        self.inner, self.change, self.fixed = inner, change, fixed

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def list_shares(self, si: bytes) -> dict[int, int]:
        held = await self.inner.list_shares(si)
        return {
            s: self.fixed if self.fixed is not None else n + self.change for s, n in held.items()
        }


@pytest.mark.parametrize(
    "change,fixed", [(1000, None), (-1000, None), (-40, None), (0, 0), (0, 100), (0, 1 << 62)]
)
@pytest.mark.parametrize("size", [3_000, 300_000])
async def test_a_wrong_listed_size_costs_a_read_not_the_share(
    grid: StorageGrid, size: int, change: int, fixed: int | None
) -> None:
    """Peers list wrong sizes: each share is still opened and verified (the pieces
    the header names are read again where the first read missed them). Only three
    peers are asked, holding a primary share and two others: the file needs all."""
    data, cap = await upload(grid, size, DEFAULT)
    holder = {
        s: grid.servers[i] for i, held in grid.shares(cap.storage_index).items() for s in held
    }

    def lying(gs: GridServer) -> StorageAPI:
        return ListsWrong(gs.client(OWNER), change, fixed)  # type: ignore[return-value]

    peers = static_peers([holder[0], holder[5], holder[9]])
    before = readvs(grid)
    assert await Downloader(peers, lying).read_all(cap) == data
    # at most two reads to open a share, and one block read (one segment)
    assert all(n - before[gs] <= 3 for gs, n in readvs(grid).items())


def holders(grid: StorageGrid, cap: ReadCap) -> dict[int, GridServer]:
    where = grid.shares(cap.storage_index)
    return {s: grid.servers[i] for i, held in where.items() for s in held}


class SlowReads:
    """A peer whose reads take ``delay`` seconds more."""

    def __init__(self, inner: StorageAPI, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def readv(self, si: bytes, share: int, ranges: list[tuple[int, int]]) -> list[bytes]:
        await asyncio.sleep(self.delay)
        return await self.inner.readv(si, share, ranges)


async def test_shares_read_whole_are_used_before_faster_peers(grid: StorageGrid) -> None:
    """The primary shares' peers are slower than the rest, but their shares are
    already here: no block is read from anyone."""
    data, cap = await upload(grid, 3_000, DEFAULT)
    slow = {holders(grid, cap)[s] for s in range(3)}

    def some_slow(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)
        return SlowReads(c, 0.05) if gs in slow else c  # type: ignore[return-value]

    down = Downloader(static_peers(grid.servers), some_slow, DownloadConfig(locate_grace=1.0))
    before = readvs(grid)
    assert await down.read_all(cap) == data
    assert all(n - before[gs] == 1 for gs, n in readvs(grid).items())


async def test_a_peer_refusing_a_whole_read_is_asked_for_the_header(tmp_path: Path) -> None:
    """Peers whose reads are limited below WHOLE_READ_MAX: the whole read is refused
    (too-large), and the share is opened as before; the file needs the three primary
    shares, the only ones offered."""
    params = EncodingParams.create(3, 10, 4096)
    with StorageGrid(tmp_path, 10, StorageConfig(max_read=32 << 10)) as small_reads:
        data, cap = await upload(small_reads, 150_000, params)  # shares of ~58 KB
        assert 32 << 10 < layout_of(cap, params, 0).share_length <= WHOLE_READ_MAX
        primaries = [holders(small_reads, cap)[s] for s in range(3)]
        down = Downloader(static_peers(primaries), storage_for)
        assert await down.read_all(cap) == data
