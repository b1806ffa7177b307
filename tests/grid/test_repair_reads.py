"""Repair and verify over the in-process grid read a segment's pieces in one call per
share, those of several shares at once: a handful of round trips per segment, not
one per hash (p2pstore/immutable/reader.py, p2pstore/grid/regenerate.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

import p2pstore.immutable.reader as reader
from p2pstore.grid import Health, Uploader, aiter_bytes, static_peers
from p2pstore.grid.regenerate import LoopShareSource
from p2pstore.grid.sender import ShareSender
from p2pstore.immutable import EncodedSegment, EncodingParams, ReadCap, RemoteError
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

from ..polling import until

OWNER = NodeId(b"R" * 20)
PARAMS = EncodingParams.create(3, 10, 4096)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 12) as g:
        yield g


class Reads:
    """Counts reads (``read`` and ``readv`` calls) and the most under way at once;
    each takes ``delay`` seconds, as over a link."""

    def __init__(self, delay: float = 0.005, target: int = 0) -> None:
        self.delay, self.calls, self.now, self.most = delay, 0, 0, 0
        self.target, self.reached = target, asyncio.Event()  # set at ``target`` calls

    def wrap(self, inner: StorageAPI) -> StorageAPI:
        outer = self

        class Wrapped:
            def __getattr__(self, name: str) -> object:
                attr = getattr(inner, name)
                if name not in ("read", "readv"):
                    return attr

                async def timed(*a: object) -> object:
                    outer.calls += 1
                    if outer.target and outer.calls >= outer.target:
                        outer.reached.set()
                    outer.now += 1
                    outer.most = max(outer.most, outer.now)
                    try:
                        await asyncio.sleep(outer.delay)
                        return await attr(*a)
                    finally:
                        outer.now -= 1

                return timed

        return Wrapped()  # type: ignore[return-value]


async def upload(grid: StorageGrid, size: int = 60_000) -> tuple[bytes, ReadCap]:
    """A file of ``size`` bytes (the default 15 segments) uploaded to ``grid``."""
    data = bytes(i % 253 for i in range(size))
    up = Uploader(static_peers(grid.servers), lambda gs: gs.client(OWNER), params=PARAMS)
    res = await up.upload_random(aiter_bytes(data))
    assert isinstance(res.cap, ReadCap)
    return data, res.cap


def lose_two_holders(grid: StorageGrid, si: bytes) -> list[int]:
    """Delete the shares of ``si`` held by two of the servers; their numbers."""
    lost = []
    for index, held in list(grid.shares(si).items())[:2]:
        for share in held:
            grid.servers[index].server.share_path(si, share).unlink()
            lost.append(share)
    return lost


async def test_repair_reads_each_segment_at_once(grid: StorageGrid) -> None:
    _, cap = await upload(grid)
    si = cap.storage_index
    lost = lose_two_holders(grid, si)
    reads = Reads()

    def storage_for(gs: GridServer) -> StorageAPI:
        return reads.wrap(gs.client(OWNER))

    result = await Health(static_peers(grid.servers), storage_for).repair(cap.verify_cap())
    assert result.healthy and sorted(result.repaired) == sorted(lost)
    # 8 shares opened (2 calls each), then per segment the proof and k blocks
    assert reads.calls <= 8 * 2 + 15 * (1 + 3)
    assert reads.most >= 4  # a segment's proof and its three blocks together
    assert len(grid.shares(si)) >= 10


async def test_verify_checks_several_shares_at_once(grid: StorageGrid) -> None:
    _, cap = await upload(grid)
    reads = Reads()

    def storage_for(gs: GridServer) -> StorageAPI:
        return reads.wrap(gs.client(OWNER))

    result = await Health(static_peers(grid.servers), storage_for).verify(cap.verify_cap())
    assert len(result.good_shares) == 10
    assert reads.most >= 2


async def test_a_cancelled_verify_stops_reading(
    grid: StorageGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks still running when a verify is cancelled give up at their next
    read instead of reading their shares to the end (runs of 4 blocks here: each
    share is ~25 reads)."""
    monkeypatch.setattr(reader, "_BLOCK_RUN", 4)
    _, cap = await upload(grid, 400_000)  # 98 segments: many reads per share
    reads = Reads(delay=0.02, target=40)  # past the openings: four shares in checking

    def storage_for(gs: GridServer) -> StorageAPI:
        return reads.wrap(gs.client(OWNER))

    task = asyncio.create_task(Health(static_peers(grid.servers), storage_for).verify(cap))
    await asyncio.wait_for(reads.reached.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = reads.calls
    await asyncio.sleep(0.5)
    assert reads.calls - at_cancel <= 8  # the reads already asked for, at most


async def test_a_scrub_keeps_to_its_server_s_range_limit(tmp_path: Path) -> None:
    """A holder whose server takes at most 16 ranges per readv scrubs its share in
    calls of 16 (a refused read would have counted against the share)."""
    from p2pstore.storage import StorageConfig
    from tests.grid.test_maintenance import data_of, maintainer, ranked
    from tests.grid.test_maintenance import upload as upload_here

    with StorageGrid(tmp_path, 12, StorageConfig(max_readv_ranges=16)) as g:
        cap = await upload_here(g.servers, data_of(300_000, 3))
        si = cap.storage_index
        holder = next(gs for gs in ranked(g, si, g.servers) if gs.server.list_shares(si))
        m = maintainer(g, holder, alive=g.servers)
        await m.check(si)  # the first check scrubs the share held here
        assert m.counts["corrupt_removed"] == 0 and holder.server.list_shares(si)
        (share,) = holder.server.list_shares(si)
        holder.corrupt_share(si, share, 72 + 5)
        assert await m.suspect(si)
        await m.check(si)  # due now: the corrupt copy goes
        assert m.counts["corrupt_removed"] == 1 and not holder.server.list_shares(si)


async def test_a_failed_repair_ends_its_read_ahead(
    grid: StorageGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repair whose sending fails part-way ends the threads that read segments
    ahead at once, not when its generator is collected (the exception's traceback
    keeps it alive as long as the exception is kept)."""
    _, cap = await upload(grid, 400_000)  # 98 segments
    lose_two_holders(grid, cap.storage_index)
    sent = 0

    async def failing_send(self: ShareSender[GridServer], seg: EncodedSegment) -> None:
        nonlocal sent
        sent += 1
        if sent == 3:
            raise OSError("the sender failed")

    monkeypatch.setattr(ShareSender, "send", failing_send)

    def read_ahead() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("p2ps-read-ahead")}

    before = read_ahead()
    health = Health(static_peers(grid.servers), lambda gs: gs.client(OWNER))
    with pytest.raises(OSError, match="the sender failed") as failed:
        await health.repair(cap)
    await until(lambda: not read_ahead() - before, within=5, step=0.01)
    assert failed.value.__traceback__ is not None  # kept until here


async def test_a_read_past_the_backstop_is_cancelled_on_the_loop() -> None:
    """A worker thread that gives up on a read the loop has not finished (the loop's
    own bound did not end it) cancels it on the loop, where it runs: its cleanup
    runs there, not on the worker thread."""
    ended: list[tuple[str, bool]] = []

    class Stuck:
        async def read(self, si: bytes, share: int, offset: int, length: int) -> bytes:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                ended.append((threading.current_thread().name, True))
                raise
            finally:
                if not ended:
                    ended.append((threading.current_thread().name, False))
            return b""

    src = LoopShareSource(
        asyncio.get_running_loop(),
        b"s" * 16,
        {0: cast(StorageAPI, Stuck())},
        max_read=1024,
        timeout=600,
    )
    src.backstop_factor, src.backstop_slack = 0, 0.2
    with pytest.raises(RemoteError):
        await asyncio.to_thread(src.read, 0, 0, 100)
    await until(lambda: ended, within=5, step=0.01)
    assert ended == [(threading.current_thread().name, True)]
