"""Repair and verify over the in-process grid read a segment's pieces in one call per
share, those of several shares at once: a handful of round trips per segment, not
one per hash (p2pstore/immutable/reader.py, p2pstore/grid/regenerate.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.grid import Health, Uploader, aiter_bytes, static_peers
from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

OWNER = NodeId(b"R" * 20)
PARAMS = EncodingParams.create(3, 10, 4096)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 12) as g:
        yield g


class Reads:
    """Counts reads (``read`` and ``readv`` calls) and the most under way at once;
    each takes ``delay`` seconds, as over a link."""

    def __init__(self, delay: float = 0.005) -> None:
        self.delay, self.calls, self.now, self.most = delay, 0, 0, 0

    def wrap(self, inner: StorageAPI) -> StorageAPI:
        outer = self

        class Wrapped:
            def __getattr__(self, name: str) -> object:
                attr = getattr(inner, name)
                if name not in ("read", "readv"):
                    return attr

                async def timed(*a: object) -> object:
                    outer.calls += 1
                    outer.now += 1
                    outer.most = max(outer.most, outer.now)
                    try:
                        await asyncio.sleep(outer.delay)
                        return await attr(*a)
                    finally:
                        outer.now -= 1

                return timed

        return Wrapped()  # type: ignore[return-value]


async def upload(grid: StorageGrid) -> tuple[bytes, ReadCap]:
    data = bytes(i % 253 for i in range(60_000))  # 15 segments
    up = Uploader(static_peers(grid.servers), lambda gs: gs.client(OWNER), params=PARAMS)
    res = await up.upload_random(aiter_bytes(data))
    assert isinstance(res.cap, ReadCap)
    return data, res.cap


async def test_repair_reads_each_segment_at_once(grid: StorageGrid) -> None:
    _, cap = await upload(grid)
    si = cap.storage_index
    lost = []
    for index, held in list(grid.shares(si).items())[:2]:
        for share in held:
            grid.servers[index].server.share_path(si, share).unlink()
            lost.append(share)
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
