"""GridApplication over the in-process storage grid: what the contract suite does not
pin down — repair through the API, corrupt shares found by verify, the convergent
spool (removed afterwards, refused when the disk reserve would be crossed), too few
peers, closing with work in flight."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore.app.errors import InsufficientStorage, NotFound, Unavailable, Unrecoverable
from p2pstore.app.grid import GridApplication
from p2pstore.grid import static_peers
from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

PARAMS = EncodingParams.create(3, 10, 64 * 1024)
OWNER = NodeId(bytes(range(20)))


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path / "servers", 10) as g:
        yield g


def backend_on(
    grid: StorageGrid, tmp_path: Path, servers: list[GridServer] | None = None, **kw: object
) -> GridApplication:
    return GridApplication(
        static_peers(servers if servers is not None else grid.servers),
        lambda gs: gs.client(OWNER),
        convergence_secret=b"s" * 32,
        spool_dir=tmp_path / "spool",
        params=PARAMS,
        happy=7,
        **kw,  # type: ignore[arg-type]
    )


async def chunks(data: bytes, step: int = 65_536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def test_repair_and_verify_through_the_backend(grid: StorageGrid, tmp_path: Path) -> None:
    b = backend_on(grid, tmp_path)
    data = os.urandom(400_000)
    up = await b.upload(chunks(data), size_hint=None, mode="convergent")
    assert isinstance(up.cap, ReadCap)
    assert not list((tmp_path / "spool").iterdir())  # the spool file is gone
    si = up.cap.storage_index
    holders = {s: i for i, held in grid.shares(si).items() for s in held}
    grid[holders[0]].delete_share(si, 0)
    grid[holders[1]].delete_share(si, 1)
    grid[holders[2]].corrupt_share(si, 2)
    checked = await b.check(up.cap, verify=False, repair=False)
    assert checked.shares_good == 8 and not checked.healthy  # a listing misses the corruption
    verified = await b.check(up.cap.verify_cap(), verify=True, repair=False)
    assert verified.shares_good == 7 and verified.recoverable
    assert any("share 2" in p for p in verified.problems)
    assert all("p2ps:" not in p for p in verified.problems)  # never a cap
    fixed = await b.check(up.cap, verify=True, repair=True)
    assert fixed.repair_attempted and fixed.repaired and fixed.healthy, fixed.problems
    again = await b.check(up.cap, verify=True, repair=False)
    assert again.healthy and again.shares_good == 10
    got = b"".join([c async for c in await b.download(up.cap, 0, len(data))])
    assert got == data


async def test_a_mistyped_cap_is_not_reported_as_lost_data(
    grid: StorageGrid, tmp_path: Path
) -> None:
    b = backend_on(grid, tmp_path)
    up = await b.upload(chunks(os.urandom(100_000)), size_hint=None, mode="convergent")
    assert isinstance(up.cap, ReadCap)
    wrong = dataclasses.replace(up.cap, ext_hash=bytes(32))  # same key, other hash
    with pytest.raises(NotFound) as e:
        await b.download(wrong, 0, wrong.size)
    assert e.value.code == "cap-mismatch" and "mistyped" in e.value.message
    assert "cannot be recovered" not in e.value.message


async def test_unrecoverable_and_missing(grid: StorageGrid, tmp_path: Path) -> None:
    b = backend_on(grid, tmp_path)
    data = os.urandom(200_000)
    up = await b.upload(chunks(data), size_hint=len(data), mode="random")
    assert isinstance(up.cap, ReadCap)
    si = up.cap.storage_index
    kept = 0
    for i, held in sorted(grid.shares(si).items()):
        for s in held:
            if kept < 2:
                kept += 1
            else:
                grid[i].delete_share(si, s)
    with pytest.raises(Unrecoverable):
        await b.download(up.cap, 0, 10)
    report = await b.check(up.cap, verify=False, repair=True)
    assert not report.recoverable and not report.repaired
    grid.delete_all(si)
    with pytest.raises(NotFound):
        await b.download(up.cap, 0, 10)
    with pytest.raises(NotFound):
        await b.info(up.cap)


async def test_too_few_peers_and_spool_reserve(grid: StorageGrid, tmp_path: Path) -> None:
    few = backend_on(grid, tmp_path, servers=grid.servers[:5])
    with pytest.raises(Unavailable) as e:
        await few.upload(chunks(os.urandom(100_000)), size_hint=None, mode="random")
    assert e.value.code == "not-enough-peers"
    assert e.value.message == (
        "upload failed: 5 storage peers are live, but shares_happy = 7 needs 7 distinct "
        "peers; lower shares_happy or wait for more peers to join ([client] shares_happy "
        "in the node's p2pstore.toml)"
    )  # one line a person can act on (no per-share list, no contradiction)
    greedy = backend_on(grid, tmp_path, spool_reserve=1 << 62)
    with pytest.raises(InsufficientStorage):
        await greedy.upload(chunks(os.urandom(100_000)), size_hint=None, mode="convergent")
    assert not list((tmp_path / "spool").iterdir())
    st = await few.status()
    assert st["uploads"]["failed"] == 1 and st["encoding"]["shares_happy"] == 7


async def test_close_fails_running_upload(grid: StorageGrid, tmp_path: Path) -> None:
    b = backend_on(grid, tmp_path)
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield os.urandom(300_000)
        started.set()
        await asyncio.sleep(3600)
        yield b""

    task = asyncio.create_task(b.upload(endless(), size_hint=None, mode="random"))
    await started.wait()
    await b.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(Unavailable):
        await b.upload(chunks(b"y" * 100), size_hint=None, mode="random")
    for gs in grid.servers:
        assert gs.server.stat().uploads == 0  # every allocation was aborted


async def test_a_file_packed_onto_few_peers_is_unhealthy_and_repair_spreads_it(
    grid: StorageGrid, tmp_path: Path
) -> None:
    """Health is the configured happiness: ten shares on three peers are not healthy
    at shares_happy = 7, and repair copies shares onto peers that hold none."""
    packer = GridApplication(
        static_peers(grid.servers[:3]),
        lambda gs: gs.client(OWNER),
        convergence_secret=b"s" * 32,
        spool_dir=tmp_path / "spool",
        params=PARAMS,
        happy=3,
    )
    data = os.urandom(150_000)
    up = await packer.upload(chunks(data), size_hint=None, mode="random")
    assert isinstance(up.cap, ReadCap)
    b = backend_on(grid, tmp_path)  # the whole grid, shares_happy = 7
    report = await b.check(up.cap, verify=False, repair=False)
    assert report.shares_good == 10 and not report.healthy
    assert "shares on 3 distinct peers, fewer than shares_happy = 7" in report.problems
    fixed = await b.check(up.cap, verify=False, repair=True)
    assert fixed.repaired and fixed.healthy, fixed.problems
    assert fixed.details["happiness"] >= 7
    again = await b.check(up.cap, verify=True, repair=False)
    assert again.healthy and not again.problems, again.problems
    got = b"".join([c async for c in await b.download(up.cap, 0, len(data))])
    assert got == data


async def test_random_uploads_through_a_helper_spool_or_go_direct(
    grid: StorageGrid, tmp_path: Path
) -> None:
    # a body sent with a random key is spooled for the helper; without room to spool
    # it, it goes directly in one pass instead of failing
    from p2pstore.grid import helper_client
    from p2pstore.grid.helper import HelperConfig, HelperService

    tried: list[str] = []

    class Helper:
        name = "h1"

        def __init__(self) -> None:
            self.service = HelperService(
                tmp_path / "helper",
                backend_on(grid, tmp_path).direct_uploader,
                HelperConfig(enabled=True, reserve=0),
            )

        async def start(self, si: bytes, params: EncodingParams, size: int) -> dict[str, object]:
            tried.append("start")
            return await self.service.start(OWNER, si, params, size)

        async def push(self, si: bytes, offset: int, chunks: AsyncIterator[bytes]) -> int:
            return await self.service.push(OWNER, si, offset, chunks)

        async def finish(self, si: bytes, size: int) -> dict[str, object]:
            return await self.service.finish(OWNER, si)

    helper = Helper()

    async def helpers() -> list[Helper]:
        return [helper]

    # (free-space reserve, size known, through the helper): without room the body goes
    # directly, also when the room runs out mid-body (what was spooled, then the rest)
    cases = ((0, True, True), (0, False, True), (1 << 62, True, False), (1 << 62, False, False))
    for reserve, known, through in cases:
        b = backend_on(grid, tmp_path, spool_reserve=reserve)
        b.uploader = helper_client.HelpedUploader(
            b.direct_uploader, helpers, helper_client.HelperUse(use="always")
        )
        tried.clear()
        data = os.urandom(300_000)
        size = len(data) if known else None
        up = await b.upload(chunks(data, 50_000), size_hint=size, mode="random")
        assert (up.details.get("helper") == "h1") is through and bool(tried) is through
        got = b"".join([c async for c in await b.download(up.cap, 0, len(data))])
        assert got == data
        assert not list((tmp_path / "spool").iterdir())  # the spool is gone


async def test_a_random_body_that_outgrows_the_spool_goes_directly_whole(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the room runs out after two spooled batches: what was spooled, what was held,
    # then the rest of the body are uploaded directly, in order
    from p2pstore.app import grid as app_grid
    from p2pstore.grid import helper_client

    monkeypatch.setattr(app_grid, "SPOOL_CHUNK", 64 * 1024)
    b = backend_on(grid, tmp_path)

    async def no_helpers() -> list[Any]:
        return []

    b.uploader = helper_client.HelpedUploader(
        b.direct_uploader, no_helpers, helper_client.HelperUse(use="always")
    )
    checks = 0
    real = b._check_spool_space

    def running_out(more: int, so_far: int) -> None:
        nonlocal checks
        checks += 1
        if checks > 2:
            raise InsufficientStorage("the disk filled up")
        real(more, so_far)

    monkeypatch.setattr(b, "_check_spool_space", running_out)
    data = os.urandom(500_000)
    up = await b.upload(chunks(data, 30_000), size_hint=None, mode="random")
    assert checks == 3 and up.details.get("helper") is None
    assert b"".join([c async for c in await b.download(up.cap, 0, len(data))]) == data
    assert not list((tmp_path / "spool").iterdir())
