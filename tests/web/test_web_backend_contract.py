"""Contract tests for :class:`p2pstore.app.contract.Application` implementations.

Every backend the API may be given runs these: the in-memory backend (with and
without its vdrive) and the node's grid backend over an in-process storage grid;
the vdrive work adds its vdrive to ``VDRIVE_BACKENDS``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from p2pstore.app.contract import Application
from p2pstore.app.drive import VdriveApplication
from p2pstore.app.errors import AppError, BadRequest, Conflict, NotFound, VdriveUnavailable
from p2pstore.app.grid import GridApplication
from p2pstore.app.vpath import parse_vpath as P
from p2pstore.grid import static_peers
from p2pstore.immutable import EncodingParams, LiteralCap, ReadCap
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.testing.storage_grid import StorageGrid
from p2pstore.testing.vdrive import local_vdrive
from p2pstore.web.errors import http_status
from quic_transport.identity import NodeId

PARAMS = EncodingParams.create(3, 10, 64 * 1024)


def _grid_backend() -> GridApplication:
    """The node's grid backend over an in-process grid of 10 real storage servers."""
    root = Path(tempfile.mkdtemp(prefix="p2pstore-contract-"))
    grid = StorageGrid(root / "servers", 10)
    owner = NodeId(bytes(range(20)))
    backend = GridApplication(
        static_peers(grid.servers),
        lambda gs: gs.client(owner),
        convergence_secret=os.urandom(32),
        spool_dir=root / "spool",
        params=PARAMS,
        happy=7,
    )
    weakref.finalize(backend, _cleanup, grid, root)
    return backend


def _cleanup(grid: StorageGrid, root: Path) -> None:
    grid.close()
    shutil.rmtree(root, ignore_errors=True)


FILE_BACKENDS: dict[str, Callable[[], Any]] = {
    "memory": lambda: MemoryApplication(params=PARAMS),
    "grid": _grid_backend,
}
VDRIVE_BACKENDS: dict[str, Callable[[], Any]] = {
    "memory-vdrive": MemoryVdrive,
    "memory-backend+vdrive": lambda: MemoryApplication(params=PARAMS, vdrive=MemoryVdrive()),
    "p2pstore-vdrive": lambda: VdriveApplication(local_vdrive()),
}


@pytest.fixture(params=sorted(FILE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> Application:
    made: Application = FILE_BACKENDS[request.param]()
    return made


@pytest.fixture(params=sorted(VDRIVE_BACKENDS))
def vd(request: pytest.FixtureRequest) -> Any:
    return VDRIVE_BACKENDS[request.param]()


async def chunks(data: bytes, step: int = 50_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


# -- files ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["convergent", "random"])
async def test_upload_download_ranges(backend: Application, mode: Any) -> None:
    data = os.urandom(300_001)
    seen: list[int] = []
    result = await backend.upload(chunks(data), size_hint=None, mode=mode, progress=seen.append)
    assert isinstance(result.cap, ReadCap) and result.size == len(data) and result.mode == mode
    assert seen and seen[-1] == len(data)
    assert await read_all(await backend.download(result.cap, 0, len(data))) == data
    for off, n in [(0, 1), (65_535, 2), (299_000, 1001), (123_456, 100_000)]:
        assert await read_all(await backend.download(result.cap, off, n)) == data[off : off + n]
    again = await backend.upload(chunks(data), size_hint=len(data), mode=mode)
    assert (again.cap == result.cap) == (mode == "convergent")


@pytest.mark.parametrize("mode", ["convergent", "random"])
async def test_upload_file_reads_in_place(backend: Application, mode: Any, tmp_path: Any) -> None:
    data = os.urandom(300_001)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        result = await backend.upload_file(fd, len(data), mode=mode)
    finally:
        os.close(fd)
    assert result.size == len(data)
    assert await read_all(await backend.download(result.cap, 0, len(data))) == data  # type: ignore[arg-type]
    if mode == "convergent":  # the same cap as the same bytes sent as a body
        body = await backend.upload(chunks(data), size_hint=None, mode=mode)
        assert body.cap == result.cap
    path.write_bytes(data[:1000])  # shorter than the size given: refused
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(Conflict, match="shrank"):
            await backend.upload_file(fd, len(data), mode=mode)
    finally:
        os.close(fd)


async def test_literal(backend: Application) -> None:
    result = await backend.upload(chunks(b"short"), size_hint=5, mode="convergent")
    assert result.cap == LiteralCap(b"short")
    assert await read_all(await backend.download(result.cap, 1, 3)) == b"hor"


async def test_unknown_file_fails_before_streaming(backend: Application) -> None:
    cap = ReadCap(3, 10, 1000, bytes(32), bytes(32))
    with pytest.raises(AppError) as e:
        await backend.download(cap, 0, 1000)
    assert http_status(e.value) in (404, 503)
    report = await backend.check(cap, verify=False, repair=False)
    assert not report.recoverable and report.shares_good == 0


async def test_check_info_status_peers(backend: Application) -> None:
    data = os.urandom(100_000)
    cap = (await backend.upload(chunks(data), size_hint=None, mode="random")).cap
    assert isinstance(cap, ReadCap)
    for verify in (False, True):
        for c in (cap, cap.verify_cap()):
            r = await backend.check(c, verify=verify, repair=False)
            assert r.healthy and r.recoverable and r.verified == verify
            assert r.shares_good == r.shares_total == 10 and r.shares_needed == 3
    assert isinstance(dict(await backend.info(cap)), dict)
    assert isinstance(dict(await backend.status()), dict)
    assert isinstance(await backend.peers(), list)


async def test_failed_upload_raises(backend: Application) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(200_000)
        raise BadRequest("client went away", code="upload-aborted")

    with pytest.raises(BadRequest):
        await backend.upload(broken(), size_hint=None, mode="random")


async def test_no_vdrive_is_unavailable() -> None:
    b = MemoryApplication(params=PARAMS)
    with pytest.raises(VdriveUnavailable) as e:
        await b.vdrive_list(P("/"))
    assert http_status(e.value) == 503 and e.value.code == "vdrive-unavailable"


# -- virtual drive ----------------------------------------------------------------
CAP = LiteralCap(b"hello")


async def snapshot(vd: Any) -> dict[str, Any]:
    """Every path -> (kind, cap) on both drives, plus the sequence numbers."""
    out: dict[str, Any] = {}

    async def walk(path: Any) -> None:
        listing = await vd.vdrive_list(path)
        out[f"seq:{path.drive}"] = listing.sequence
        for e in listing.entries:
            child = path.child(e.name)
            out[str(child)] = (e.kind, e.cap)
            if e.kind == "dir":
                await walk(child)

    await walk(P("shared:/"))
    await walk(P("private:/"))
    return out


async def test_vdrive_sequence_and_semantics(vd: Any) -> None:
    assert (await vd.vdrive_list(P("/"))).sequence == 0
    assert await vd.vdrive_mkdir(P("/a"), parents=False, expected_sequence=0) == 1
    assert await vd.vdrive_mkdir(P("/a/b/c"), parents=True, expected_sequence=None) == 2
    assert await vd.vdrive_mkdir(P("/a/b"), parents=True, expected_sequence=None) == 2  # no-op
    assert await vd.vdrive_link(P("/a/f"), CAP, replace=False, expected_sequence=2) == 3
    entry = await vd.vdrive_stat(P("/a/f"))
    assert entry.kind == "file" and entry.size == 5 and entry.cap == CAP.to_string()
    assert entry.verify_cap is None  # a literal cap has none
    assert (await vd.vdrive_stat(P("/a"))).kind == "dir"
    assert await vd.vdrive_link(P("private:/f"), CAP, replace=False, expected_sequence=0) == 1
    assert [e.name for e in (await vd.vdrive_list(P("/a"))).entries] == ["b", "f"]
    assert await vd.vdrive_rename(P("/a/f"), P("/a/b/g"), replace=False, expected_sequence=3) == 4
    assert await vd.vdrive_unlink(P("/a"), recursive=True, expected_sequence=4) == 5
    assert (await vd.vdrive_list(P("/"))).entries == ()


_W = {"expected_sequence": None}
FAILURES = [  # (operation, path args, keyword args, error, code) on the tree made below
    ("mkdir", ["/d"], {"parents": False, **_W}, Conflict, "exists"),
    ("mkdir", ["/x/y"], {"parents": False, **_W}, NotFound, "not-found"),
    ("mkdir", ["/d/f/z"], {"parents": True, **_W}, Conflict, "not-a-directory"),
    ("mkdir", ["/new"], {"parents": False, "expected_sequence": 7}, Conflict, "sequence-mismatch"),
    ("link", ["/d/f", CAP], {"replace": False, **_W}, Conflict, "exists"),
    ("link", ["/d", CAP], {"replace": True, **_W}, Conflict, "is-a-directory"),
    ("link", ["/nope/f", CAP], {"replace": True, **_W}, NotFound, "not-found"),
    ("unlink", ["/d"], {"recursive": False, **_W}, Conflict, "directory-not-empty"),
    ("unlink", ["/"], {"recursive": True, **_W}, BadRequest, "bad-path"),
    ("unlink", ["/zz"], {"recursive": True, **_W}, NotFound, "not-found"),
    ("rename", ["/d", "/d/e/d"], {"replace": True, **_W}, BadRequest, "bad-path"),
    ("rename", ["/d", "private:/d"], {"replace": True, **_W}, BadRequest, "cross-drive"),
    ("rename", ["/g", "/d/f"], {"replace": False, **_W}, Conflict, "exists"),
    ("rename", ["/g", "/d"], {"replace": True, **_W}, Conflict, "is-a-directory"),
    ("rename", ["/d/e", "/d/f"], {"replace": True, **_W}, Conflict, "exists"),
    ("list", ["/d/f"], {}, Conflict, "not-a-directory"),
    ("stat", ["/d/q"], {}, NotFound, "not-found"),
]


@pytest.mark.parametrize(("op", "args", "kwargs", "error", "code"), FAILURES)
async def test_vdrive_failures_change_nothing(
    vd: Any,
    op: str,
    args: list[Any],
    kwargs: dict[str, Any],
    error: type[AppError],
    code: str,
) -> None:
    await vd.vdrive_mkdir(P("/d/e"), parents=True, expected_sequence=None)
    await vd.vdrive_link(P("/d/f"), CAP, replace=False, expected_sequence=None)
    await vd.vdrive_link(P("/g"), CAP, replace=False, expected_sequence=None)
    before = await snapshot(vd)
    call = getattr(vd, f"vdrive_{op}")
    with pytest.raises(error) as e:
        await call(*(P(a) if isinstance(a, str) else a for a in args), **kwargs)
    assert e.value.code == code
    assert await snapshot(vd) == before


async def test_vdrive_replace(vd: Any) -> None:
    other = LiteralCap(b"other")
    await vd.vdrive_link(P("/f"), CAP, replace=False, expected_sequence=None)
    await vd.vdrive_link(P("/f"), other, replace=True, expected_sequence=None)
    assert (await vd.vdrive_stat(P("/f"))).cap == other.to_string()
    await vd.vdrive_link(P("/g"), CAP, replace=False, expected_sequence=None)
    await vd.vdrive_rename(P("/g"), P("/f"), replace=True, expected_sequence=None)
    assert (await vd.vdrive_stat(P("/f"))).cap == CAP.to_string()
    assert [e.name for e in (await vd.vdrive_list(P("/"))).entries] == ["f"]
