"""The lease crawler: bounded work per tick, expiry with a fake clock, idle sweeps,
and the async runner's lifecycle."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.storage import LeaseCrawler, StorageConfig, StorageServer
from p2pstore.testing.storage_grid import FakeClock
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
DAY = 86400.0


def si(i: int) -> bytes:
    return hashlib.blake2b(f"si-{i}".encode(), digest_size=20).digest()


def put(server: StorageServer, s: bytes, data: bytes = b"data") -> None:
    server.allocate(s, 0, ALICE, len(data))
    server.write(s, 0, ALICE, 0, data)
    server.close_share(s, 0, ALICE)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[StorageServer]:
    s = StorageServer.open(
        tmp_path / "s", StorageConfig(lease_duration=10 * DAY, upload_idle_timeout=60), clock=clock
    )
    yield s
    s.close()


def test_tick_work_is_bounded(server: StorageServer, clock: FakeClock) -> None:
    n = 45
    for i in range(n):
        put(server, si(i))
    listings = 0
    real = server.storage_indexes_in

    def counting(prefix: str) -> list[bytes]:
        nonlocal listings
        listings += 1
        return real(prefix)

    server.storage_indexes_in = counting  # type: ignore[method-assign]
    crawler = LeaseCrawler(server, per_tick=7)
    seen = 0
    ticks = 0
    while True:
        before = listings
        report = crawler.tick()
        ticks += 1
        assert report.examined <= 7
        assert listings - before <= 1  # at most one directory listing per tick
        seen += report.examined
        if report.cycle_done:
            break
        assert ticks < 200
    assert seen == n  # every storage index visited exactly once per cycle
    assert crawler.cycles == 1
    assert server.stat().shares == n  # nothing expired yet


def test_expired_removed_live_kept(server: StorageServer, clock: FakeClock) -> None:
    for i in range(20):
        put(server, si(i))
    clock.advance(5 * DAY)
    keep = [si(i) for i in range(0, 20, 3)]
    for s in keep:
        server.add_lease(s, NodeId(b"K" * 20))  # lives to day 15
    clock.advance(6 * DAY)  # day 11: only the re-leased ones are live
    crawler = LeaseCrawler(server, per_tick=4)
    removed = 0
    for _ in range(100):
        report = crawler.tick()
        removed += report.shares_removed
        if report.cycle_done:
            break
    assert removed == 20 - len(keep)
    assert server.stat().shares == len(keep)
    for i in range(20):
        assert bool(server.list_shares(si(i))) == (si(i) in keep)
    # The next cycle starts over and finds only live storage indexes.
    clock.advance(5 * DAY)
    while not crawler.tick().cycle_done:
        pass
    assert server.stat().shares == 0
    assert server.list_prefixes() == []  # empty directories tidied away


def test_empty_store_cycles(server: StorageServer) -> None:
    crawler = LeaseCrawler(server, per_tick=5)
    report = crawler.tick()
    assert report.cycle_done and report.examined == 0


def test_tick_sweeps_idle_uploads(server: StorageServer, clock: FakeClock) -> None:
    server.allocate(si(1), 0, ALICE, 10)
    crawler = LeaseCrawler(server)
    assert crawler.tick().uploads_aborted == 0
    clock.advance(61)
    assert crawler.tick().uploads_aborted == 1
    assert server.stat().uploads == 0


async def test_runner_ticks_until_closed(server: StorageServer, clock: FakeClock) -> None:
    for i in range(3):
        put(server, si(i))
    clock.advance(11 * DAY)
    sleeps: list[float] = []
    slept = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        slept.set()
        await asyncio.sleep(0)

    crawler = LeaseCrawler(server, per_tick=100, interval=2.5, sleep=fake_sleep)
    crawler.start()
    await asyncio.wait_for(slept.wait(), 10)
    for _ in range(100):
        if crawler.total_removed == 3:
            break
        await asyncio.sleep(0.01)
    await crawler.close()
    await crawler.close()  # idempotent
    assert crawler.total_removed == 3
    assert sleeps and all(s == 2.5 for s in sleeps)
    n = len(sleeps)
    await asyncio.sleep(0.02)
    assert len(sleeps) == n  # really stopped


def test_bad_parameters(server: StorageServer) -> None:
    with pytest.raises(ValueError):
        LeaseCrawler(server, per_tick=0)
    with pytest.raises(ValueError):
        LeaseCrawler(server, interval=0)
