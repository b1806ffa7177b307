"""Live directories over the in-process storage grid: a live directory is a drive
of its own (``Vdrive.drive(cap)``); concurrent changes by two writers both land;
``expected_sequence`` turns a concurrent change into a conflict; a read cap reads
and is refused; a version that is not a directory object is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.grid import aiter_bytes
from p2pstore.grid.mutable import MutableFiles
from p2pstore.immutable import LiteralCap
from p2pstore.mutable import parse_mutable_cap
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from p2pstore.vdrive import VdriveError
from p2pstore.vdrive.dirnode import Directory
from p2pstore.vdrive.drive import Vdrive
from p2pstore.vdrive.live import parse_live_cap
from p2pstore.vdrive.objects import GridObjectStore
from p2pstore.vdrive.ops import Link, Mkdir, Rename, Unlink

from ..grid.test_grid_mutable import files


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 10) as g:
        yield g


def node(grid: StorageGrid, secret: bytes) -> tuple[Vdrive, MutableFiles[GridServer]]:
    """What one node holds: its mutable files (as the grid tests build them) and a
    Vdrive with no shared/private drive, storing directories under ``secret``."""
    mf, down = files(grid)
    store = GridObjectStore(mf.uploader, down, secret)
    return Vdrive(shared=None, private=None, store=store, live=mf), mf


async def new_live(mf: MutableFiles[GridServer]) -> str:
    cap, _ = await mf.create(aiter_bytes(Directory().encode()), directory=True)
    return cap.to_string()


FILE = LiteralCap(b"content")


async def test_a_live_directory_is_a_drive_of_its_own(grid: StorageGrid) -> None:
    vd, mf = node(grid, b"A" * 32)
    w = await new_live(mf)
    d = vd.drive(w)
    await d.change(Mkdir(("docs",), False), expected_sequence=None)
    res = await d.change(Link(("docs", "a"), FILE, False), expected_sequence=None)
    assert res.sequence == 3 and res.changed
    listing, seq = await d.list(("docs",))
    assert list(listing) == ["a"] and seq == 3
    # a no-op publishes nothing
    assert not (await d.change(Mkdir(("docs",), True), expected_sequence=None)).changed
    # another node with the read cap sees it and cannot change it
    vd_c, _ = node(grid, b"C" * 32)
    read = parse_mutable_cap(w).read_cap().to_string()  # type: ignore[union-attr]
    dc = vd_c.drive(read)
    entry, _ = await dc.stat(("docs", "a"))
    assert entry is not None and entry.cap == FILE
    with pytest.raises(VdriveError) as e:
        await dc.change(Unlink(("docs",), True), expected_sequence=None)
    assert e.value.code == "refused" and "write cap" in e.value.message


async def test_two_writers_changing_at_once_both_land(grid: StorageGrid) -> None:
    vd_a, mf = node(grid, b"A" * 32)
    vd_b, _ = node(grid, b"B" * 32)
    w = await new_live(mf)
    da, db = vd_a.drive(w), vd_b.drive(w)
    names = [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
    await asyncio.gather(
        *(da.change(Link((n,), FILE, False), expected_sequence=None) for n in names[:4]),
        *(db.change(Link((n,), FILE, False), expected_sequence=None) for n in names[4:]),
    )
    listing, seq = await da.list(())
    assert sorted(listing) == sorted(names)
    # every change a version of its own, none lost; a writer whose version tied with
    # the other's on a sequence (and won the readers' tie rule) publishes it once
    # more on the next one so the peers converge (docs/mutable.md, "Concurrent
    # writers"), one extra version each time
    assert 1 + len(names) <= seq <= 1 + 2 * len(names)


async def test_expected_sequence_makes_a_concurrent_change_a_conflict(grid: StorageGrid) -> None:
    vd, mf = node(grid, b"A" * 32)
    w = await new_live(mf)
    d = vd.drive(w)
    await d.change(Mkdir(("x",), False), expected_sequence=1)
    with pytest.raises(VdriveError) as e:
        await d.change(Rename(("x",), ("y",), False), expected_sequence=1)
    assert e.value.code == "sequence-mismatch" and e.value.details == {"sequence": 2}
    assert (await d.change(Rename(("x",), ("y",), False), expected_sequence=2)).sequence == 3


async def test_caps_that_are_not_live_directories_are_refused(grid: StorageGrid) -> None:
    vd, mf = node(grid, b"A" * 32)
    w = await new_live(mf)
    verify = parse_mutable_cap(w).verify_cap().to_string()
    with pytest.raises(VdriveError, match="verify cap"):
        vd.drive(verify)
    file_cap, _ = await mf.create(aiter_bytes(b"x" * 100))
    with pytest.raises(VdriveError, match="not a live directory"):
        parse_live_cap(file_cap.to_string())
    # the same key as a directory cap names the same slot, whose version is no directory
    with pytest.raises(VdriveError) as e:
        await vd.drive("p2ps:dir:" + file_cap.to_string()[len("p2ps:") :]).list(())
    assert e.value.code == "bad-directory"
    # a live directory whose version is not a directory object
    bad, _ = await mf.create(aiter_bytes(b"not a directory" * 10), directory=True)
    with pytest.raises(VdriveError) as e:
        await vd.drive(bad.to_string()).list(())
    assert e.value.code == "bad-directory"
