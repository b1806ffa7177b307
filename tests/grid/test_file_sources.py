"""Local files as upload sources (``FileChunks``: ``fd_source``, ``file_source``): the
same bytes read asynchronously or in the caller's thread, and, in an upload, read in
the encoder's own thread (docs/grid.md, "Upload", step 5)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path

import pytest

from p2pstore.grid import (
    FileShrank,
    GridLocalError,
    UploadConfig,
    Uploader,
    aiter_bytes,
    fd_source,
    file_source,
    static_peers,
)
from p2pstore.grid.sources import FileChunks
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from tests.grid.test_grid_inprocess import OWNER, PARAMS, SECRET, Delayed, data_of, tools
from tests.loop_gaps import record_gaps


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path / "grid", 12) as g:
        yield g


@pytest.fixture
def pread_threads(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[str]]:
    """For each file descriptor, the name of the thread of every ``os.pread`` of it
    from now on."""
    names: dict[int, list[str]] = {}
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        names.setdefault(fd, []).append(threading.current_thread().name)
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    return names


def _open_fds_to(path: Path) -> int:
    fds = Path("/proc/self/fd")
    n = 0
    for fd in fds.iterdir():
        try:
            n += os.readlink(fd) == str(path)
        except OSError:
            continue
    return n


async def _collect(chunks: FileChunks) -> list[bytes]:
    return [c async for c in chunks]


async def test_a_file_reads_the_same_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = data_of(70_001)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for source in (file_source(str(path), 8192), fd_source(fd, len(data), 8192)):
            first, second = source(), source()
            assert isinstance(first, FileChunks)
            blocking = list(first.blocking())
            assert b"".join(blocking) == data and {len(c) for c in blocking[:-1]} == {8192}
            assert await _collect(second) == blocking  # a new pass from the start
    finally:
        os.close(fd)
    assert _open_fds_to(path) == 0  # each pass closed what it opened


async def test_a_file_shorter_than_its_size_is_refused_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data_of(10_000))
    fd = os.open(path, os.O_RDONLY)
    try:
        source = fd_source(fd, 12_000, 4096)
        with pytest.raises(FileShrank, match="at 10000 of 12000 bytes"):
            list(source().blocking())
        with pytest.raises(FileShrank, match="at 10000 of 12000 bytes"):
            await _collect(source())
    finally:
        os.close(fd)


@pytest.mark.parametrize("convergent", [True, False])
async def test_an_upload_reads_a_local_file_in_the_encoders_thread(
    grid: StorageGrid, tmp_path: Path, pread_threads: dict[int, list[str]], convergent: bool
) -> None:
    """The encoding pass's every read is in the encoder's thread (a read in a thread
    of its own would wait for the event loop after it, up to a whole turn)."""
    path = tmp_path / "f.bin"
    data = data_of(4096 * 20 + 5)
    path.write_bytes(data)
    up, down = tools(grid)
    fd = os.open(path, os.O_RDONLY)
    try:
        source = fd_source(fd, len(data), 4096)
        if convergent:
            res = await up.upload_convergent(source, SECRET)
        else:
            res = await up.upload_random(source(), size=len(data))
        threads = pread_threads.pop(fd)
    finally:
        os.close(fd)
    assert await down.read_all(res.cap) == data
    # the encoding pass reads a segment at a time; convergent mode's key pass, first,
    # reads the source's chunks
    reads = -(-len(data) // PARAMS.segment_size)
    key_pass = -(-len(data) // 4096) if convergent else 0
    assert PARAMS.segment_size != 4096 and len(threads) == key_pass + reads
    assert all(name.startswith("p2ps-encode") for name in threads[key_pass:]), threads


async def test_a_file_that_shrinks_during_the_upload_fails_it(
    grid: StorageGrid, tmp_path: Path
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data_of(4096 * 30))
    up, _ = tools(grid)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(FileShrank, match="shrank"):
            await up.upload_random(fd_source(fd, 4096 * 40, 4096)(), size=4096 * 40)
    finally:
        os.close(fd)


def _stalled_uploader(grid: StorageGrid) -> Uploader[GridServer]:
    """An uploader to ten peers, one of which never finishes a write."""
    stalled = grid.servers[0]

    def storage_for(gs: GridServer) -> StorageAPI:
        c = gs.client(OWNER)
        return Delayed(c, "write", None) if gs is stalled else c  # type: ignore[return-value]

    cfg = UploadConfig(happy=7, list_timeout=0.5)
    return Uploader(static_peers(grid.servers[:10]), storage_for, cfg, params=PARAMS)


async def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


async def test_a_cancelled_upload_closes_its_file(grid: StorageGrid, tmp_path: Path) -> None:
    """Cancelled while a peer holds its writes: the pass's file is closed."""
    path = tmp_path / "f.bin"
    path.write_bytes(data_of(4096 * 200))
    task = asyncio.create_task(
        _stalled_uploader(grid).upload_random(file_source(str(path), 4096)())
    )
    assert await _eventually(lambda: _open_fds_to(path) == 1)  # reading
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _eventually(lambda: _open_fds_to(path) == 0)


async def test_a_cancel_does_not_wait_for_a_slow_read(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file on a disk that takes two seconds per read (a network share, a failing
    disk): cancelling its upload returns at once, the event loop never waits for the
    read in progress, and nothing more is read after it."""
    path = tmp_path / "f.bin"
    path.write_bytes(data_of(4096 * 50))
    reads: list[int] = []
    real = os.pread

    def slow_pread(fd: int, n: int, offset: int) -> bytes:
        if threading.current_thread().name.startswith("p2ps-encode"):
            reads.append(offset)
            time.sleep(2.0)
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", slow_pread)
    gaps: list[float] = []
    ticking = asyncio.create_task(record_gaps(gaps, 0.01))
    task = asyncio.create_task(
        _stalled_uploader(grid).upload_random(file_source(str(path), 4096)())
    )
    assert await _eventually(lambda: bool(reads))
    await asyncio.sleep(0.2)  # the first read is under way
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0  # waiting for the read: 1.8 s
    await asyncio.sleep(2.5)  # the read in progress ends; no other starts
    ticking.cancel()
    assert max(gaps) < 1.0, max(gaps)
    assert reads == [0]


@pytest.mark.parametrize("from_file", [True, False])
async def test_a_file_rewritten_between_the_passes_is_refused(
    grid: StorageGrid, tmp_path: Path, from_file: bool
) -> None:
    """Same size, other bytes in the second pass (a file written during its upload):
    a clear error and nothing kept, never a cap whose key the bytes do not give."""
    size = PARAMS.segment_size * 6 + 100
    path = tmp_path / "f.bin"
    path.write_bytes(data_of(size, 1))
    up, _ = tools(grid)
    passes = 0
    fd = os.open(path, os.O_RDONLY)

    def source() -> AsyncIterable[bytes]:
        nonlocal passes
        passes += 1
        if passes == 2:  # rewritten in place between the passes
            path.write_bytes(data_of(size, 2))
        return fd_source(fd, size, 4096)() if from_file else aiter_bytes(path.read_bytes())

    try:
        with pytest.raises(GridLocalError, match="changed while it was uploaded"):
            await up.upload_convergent(source, SECRET)
    finally:
        os.close(fd)
    assert passes == 2
    for gs in grid.servers:  # nothing left half-uploaded or placed anywhere
        assert gs.server.stat().uploads == 0 and gs.server.stat().shares == 0
    res = await up.upload_convergent(file_source(str(path)), SECRET)  # unchanged: fine
    assert res.happiness == 10
