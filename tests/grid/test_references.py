"""Leases that follow references (docs/maintenance.md, "Leases"), on an in-process
storage grid with a fake clock: a file linked in a drive or pinned outlives its
uploader's lease; an unreferenced file expires; unlinking lets it expire."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from p2pstore.app.contract import DirEntry, DirListing, VdriveOps
from p2pstore.app.errors import Unavailable
from p2pstore.app.keeper import KeeperConfig, PinBook, ReferenceKeeper, Renew, pin_cap
from p2pstore.app.keeper import VerifyCap as KeptCap
from p2pstore.app.vpath import VPath
from p2pstore.grid import UploadConfig, Uploader, bytes_source, static_peers
from p2pstore.grid.health import Health, HealthConfig
from p2pstore.grid.lease_renewal import LeaseBook
from p2pstore.grid.sender import SendConfig
from p2pstore.immutable import EncodingParams, LiteralCap, ReadCap
from p2pstore.mutable import VerifyCap as MutableVerifyCap
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

from ..polling import until

UPLOADER = NodeId(b"U" * 20)
KEEPER = NodeId(b"K" * 20)
DAY = 86400.0
FAST = SendConfig(op_timeout=5.0)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path, 12) as g:
        yield g


async def upload(grid: StorageGrid, data: bytes) -> ReadCap:
    up = Uploader(
        static_peers(grid.servers),
        lambda gs: gs.client(UPLOADER),
        UploadConfig(happy=7, send=FAST, list_timeout=2.0),
        params=EncodingParams.create(3, 10, 4096),
    )
    res = await up.upload_convergent(bytes_source(data), bytes(32))
    assert isinstance(res.cap, ReadCap)
    return res.cap


def expire_all(grid: StorageGrid) -> None:
    """What every server's lease crawler does, now."""
    for gs in grid.servers:
        for prefix in gs.server.list_prefixes():
            for si in gs.server.storage_indexes_in(prefix):
                gs.server.expire(si)


def shares(grid: StorageGrid, cap: ReadCap) -> int:
    return sum(len(v) for v in grid.shares(cap.storage_index).values())


def keeper(grid: StorageGrid, drives: MemoryVdrive, pins: PinBook) -> ReferenceKeeper:
    def as_keeper(gs: GridServer) -> object:
        return gs.client(KEEPER)

    health: Health[GridServer] = Health(
        static_peers(grid.servers),
        as_keeper,
        HealthConfig(op_timeout=5.0),  # type: ignore[arg-type]
    )
    roots = [VPath("private", ())]
    return ReferenceKeeper(drives, roots, pins, health.renew, KeeperConfig(interval=DAY, pace=0))


async def test_linked_and_pinned_files_outlive_their_uploader(grid: StorageGrid) -> None:
    drives = MemoryVdrive(clock=grid.clock)
    pins = PinBook(None)
    linked = await upload(grid, b"linked" * 5000)
    pinned = await upload(grid, b"pinned" * 5000)
    orphan = await upload(grid, b"orphan" * 5000)
    await drives.vdrive_mkdir(VPath("private", ("docs",)), parents=False, expected_sequence=None)
    await drives.vdrive_link(
        VPath("private", ("docs", "a.bin")), linked, replace=False, expected_sequence=None
    )
    pins.pin(pin_cap(pinned.to_string()), "kept", grid.clock())
    k = keeper(grid, drives, pins)
    # the uploader's laptop is off for good; the keeper renews every 10 days
    for _ in range(5):
        grid.clock.advance(10 * DAY)
        report = await k.run_round()
        assert report["renewed"] == 2 and report["failed"] == 0, report
        assert report["files_in_drives"] == 1 and report["pins"] == 1
        expire_all(grid)
    # 50 days on: past the uploader's 31-day lease
    assert shares(grid, linked) == 10 and shares(grid, pinned) == 10
    assert shares(grid, orphan) == 0
    # unlinked and unpinned: no longer renewed, gone one lease duration later
    await drives.vdrive_unlink(
        VPath("private", ("docs", "a.bin")), recursive=False, expected_sequence=None
    )
    pins.unpin(pin_cap(pinned.to_string()))
    report = await k.run_round()
    assert report["renewed"] == 0
    grid.clock.advance(30 * DAY)
    expire_all(grid)
    assert shares(grid, linked) == 10  # 30 days after the last renewal: still leased
    grid.clock.advance(2 * DAY)
    expire_all(grid)
    assert shares(grid, linked) == 0 and shares(grid, pinned) == 0


async def test_pin_book_keeps_verify_caps_only(tmp_path: Path) -> None:
    book = PinBook.load(tmp_path / "pins.json")
    read = ReadCap(3, 10, 30000, bytes(range(32)), bytes(32))
    vc = pin_cap(read.to_string())
    assert book.pin(vc, "label", 1.0) is True and book.pin(vc, "new label", 2.0) is False
    text = (tmp_path / "pins.json").read_text()
    key_text = read.to_string().split(":")[-2]
    assert "p2ps:chk-verify:" in text and key_text not in text  # never the read key
    assert (tmp_path / "pins.json").stat().st_mode & 0o777 == 0o600
    again = PinBook.load(tmp_path / "pins.json")
    assert [(p.label, p.pinned_at) for p in again.entries()] == [("new label", 1.0)]
    with pytest.raises(Exception, match="literal"):
        pin_cap(LiteralCap(b"tiny").to_string())


async def test_the_lease_book_lets_go_of_an_upload_once_a_complete_walk_misses_it(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uploader's book keeps a bare upload; it lets go of a linked one after it is
    unlinked, but only on a walk that listed every directory: a walk that could not
    list one changes nothing."""
    drives = MemoryVdrive(clock=grid.clock)
    book = LeaseBook.load(tmp_path / "leases.log")
    linked = await upload(grid, b"linked" * 5000)
    bare = await upload(grid, b"bare" * 5000)
    book.track(linked, grid.clock())
    book.track(bare, grid.clock())
    docs = VPath("private", ("docs",))
    await drives.vdrive_mkdir(docs, parents=False, expected_sequence=None)
    await drives.vdrive_mkdir(VPath("private", ("other",)), parents=False, expected_sequence=None)
    await drives.vdrive_link(docs.child("a.bin"), linked, replace=False, expected_sequence=None)

    def follow(own: set[KeptCap], reached: set[KeptCap]) -> dict[str, int]:
        linked_now, let_go = book.follow_links(own, reached)
        return {"uploads_linked": linked_now, "uploads_let_go": let_go}

    k = keeper(grid, drives, PinBook(None))
    k.on_walked = follow
    report = await k.run_round()
    assert report["complete_walk"] and report["uploads_linked"] == 1, report
    assert book.is_linked(linked.verify_cap()) and not book.is_linked(bare.verify_cap())

    await drives.vdrive_unlink(docs.child("a.bin"), recursive=False, expected_sequence=None)
    listing = drives.vdrive_list

    async def flaky(path: VPath) -> object:
        if path == VPath("private", ("other",)):
            raise Unavailable("the directory's shares are out of reach")
        return await listing(path)

    monkeypatch.setattr(drives, "vdrive_list", flaky)
    report = await k.run_round()
    assert not report["complete_walk"] and "uploads_let_go" not in report, report
    assert linked.verify_cap() in book  # not found, but the walk missed a directory

    monkeypatch.setattr(drives, "vdrive_list", listing)
    report = await k.run_round()
    assert report["complete_walk"] and report["uploads_let_go"] == 1, report
    assert linked.verify_cap() not in book and bare.verify_cap() in book
    book.close()
    assert LeaseBook.load(tmp_path / "leases.log").last_renewed(linked.verify_cap()) is None


def _vc(i: int) -> str:
    key = hashlib.sha256(f"key-{i}".encode()).digest()
    ext = hashlib.sha256(f"ext-{i}".encode()).digest()
    return ReadCap(3, 10, 10_000, key, ext).verify_cap().to_string()


LIVE = MutableVerifyCap(bytes(32), directory=True).to_string()


class SnapshotDrive:
    """A private drive of immutable directory objects (by verify cap): the root
    (cap 0) links two snapshots (1, 2) that share one directory (3) holding file 4;
    snapshot 2 also holds file 5."""

    def __init__(self, live: bool = False) -> None:
        self.listed: list[VPath] = []
        self.tree: dict[tuple[str, ...], list[DirEntry]] = {
            (): [
                DirEntry("s1", "dir", None, None, _vc(1), None),
                DirEntry("s2", "dir", None, None, _vc(2), None),
            ],
            ("s1",): [DirEntry("common", "dir", None, None, _vc(3), None)],
            ("s2",): [
                DirEntry("common", "dir", None, None, _vc(3), None),
                DirEntry("new.txt", "file", 1, None, _vc(5), None),
            ],
            ("s1", "common"): [DirEntry("old.txt", "file", 1, None, _vc(4), None)],
            ("s2", "common"): [DirEntry("old.txt", "file", 1, None, _vc(4), None)],
        }
        if live:  # a live directory (shared with its other writers) holding file 6
            self.tree[()].append(DirEntry("team", "dir", None, None, LIVE, None))
            self.tree[("team",)] = [DirEntry("plan.txt", "file", 1, None, _vc(6), None)]

    async def vdrive_stat(self, path: VPath) -> DirEntry:
        return DirEntry("", "dir", None, None, _vc(0), None)

    async def vdrive_list(self, path: VPath) -> DirListing:
        self.listed.append(path)
        return DirListing(path, tuple(self.tree[path.parts]), 1)


async def test_the_walk_reaches_directory_objects_and_enters_each_once() -> None:
    drive = SnapshotDrive()
    k = drive_keeper(drive, _no_renew)
    walk = await k.walk()
    assert walk.problems == []
    assert {c.to_string() for c in walk.found} == {_vc(i) for i in range(6)}
    assert walk.own == set(walk.found)
    # the shared directory listed once, at one path; the root again at the end (the
    # drive's sequence then, against a change after its listing)
    assert len(drive.listed) == 5 and drive.listed[0] == drive.listed[-1]
    assert (
        drive.listed.count(VPath("private", ("s1", "common")))
        + drive.listed.count(VPath("private", ("s2", "common")))
        == 1
    )


async def test_what_a_live_directory_holds_is_reached_but_not_the_drive_s_own() -> None:
    """The lease book may let go only of what the drives' own tree held: a live
    directory and what it holds are shared with its other writers."""
    drive = SnapshotDrive(live=True)
    k = drive_keeper(drive, _no_renew)
    walk = await k.walk()
    assert walk.problems == []
    reached = {c.to_string() for c in walk.found}
    assert reached == {_vc(i) for i in range(7)} | {LIVE}
    assert {c.to_string() for c in walk.own} == {_vc(i) for i in range(6)}


def drive_keeper(drive: object, renew: Renew, **kw: Any) -> ReferenceKeeper:
    """A keeper of ``drive``'s private drive, no pins, rounds a day apart."""
    roots = [VPath("private", ())]
    config = KeeperConfig(interval=DAY, pace=0)
    return ReferenceKeeper(cast(VdriveOps, drive), roots, PinBook(None), renew, config, **kw)


async def _renew_all(vc: KeptCap) -> dict[str, str | None]:
    return {"peer": None}


async def _no_renew(vc: KeptCap) -> dict[str, str | None]:
    return {}


class ChangingDrive(SnapshotDrive):
    """Its listings are read at a new sequence after the first: the drive changed
    while the walk went on."""

    async def vdrive_list(self, path: VPath) -> DirListing:
        got = await super().vdrive_list(path)
        return DirListing(got.path, got.entries, len(self.listed))


async def test_a_drive_changed_during_the_walk_lets_nothing_go() -> None:
    """Directories are listed by path: a file moved from a directory not yet listed
    into one already listed is not reached, so such a walk is not complete."""
    called: list[int] = []

    def follow(own: set[KeptCap], reached: set[KeptCap]) -> dict[str, int]:
        called.append(len(reached))
        return {}

    k = drive_keeper(ChangingDrive(), _renew_all, on_walked=follow)
    report = await k.run_round()
    assert not report["complete_walk"] and called == []
    assert any("changed during the walk" in p for p in report["problems"]), report
    k.drives = cast(VdriveOps, SnapshotDrive())
    assert (await k.run_round())["complete_walk"] and called == [6]


async def test_a_failure_to_follow_the_links_does_not_stop_the_renewals() -> None:
    """The lease log cannot be written (a full disk): the round still renews every
    referenced file, and says what failed."""
    renewed: list[KeptCap] = []

    async def renew(vc: KeptCap) -> dict[str, str | None]:
        renewed.append(vc)
        return {"peer": None}

    def follow(own: set[KeptCap], reached: set[KeptCap]) -> dict[str, int]:
        raise OSError(28, "No space left on device")

    k = drive_keeper(SnapshotDrive(), renew, on_walked=follow)
    report = await k.run_round()
    assert report["renewed"] == 6 and len(renewed) == 6, report
    assert any("No space left" in p for p in report["problems"]), report


class FakeBook:
    """An ``UploadBook``: what it holds, what a walk saw linked, what it adopted."""

    def __init__(self, held: set[KeptCap], linked: set[KeptCap]) -> None:
        self.held, self.linked, self.adopted = held, linked, []  # type: list[KeptCap]

    def holds(self, vc: KeptCap) -> bool:
        return vc in self.held

    def seen_linked(self, vc: KeptCap) -> bool:
        return vc in self.linked

    def adopt(self, vc: KeptCap) -> None:
        self.held.add(vc)
        self.adopted.append(vc)


async def test_what_is_linked_and_not_held_is_renewed_at_once_with_its_content() -> None:
    """A file or directory linked on this node that the lease book does not hold
    (let go after an earlier unlink, or someone else's) is renewed now and taken
    into the book, a directory's content too; a directory the book holds but no
    walk reached is gone through (its content may have been let go); what the book
    holds otherwise is left to it."""
    renewed: list[str] = []

    async def renew(vc: KeptCap) -> dict[str, str | None]:
        renewed.append(vc.to_string())
        return {"peer": None}

    listed: list[str] = []
    contents = {
        "p2ps:dir:chk:gone": [
            DirEntry("old.txt", "file", 1, None, _vc(4), None),
            DirEntry("kept.txt", "file", 1, None, _vc(5), None),
            DirEntry("tiny", "file", 1, None, None, None),  # literal: no lease
        ],
        "p2ps:dir:chk:new": [DirEntry("also-old.txt", "file", 1, None, _vc(8), None)],
    }

    async def list_dircap(cap: str) -> list[DirEntry]:
        listed.append(cap)
        return contents[cap]

    book = FakeBook(held={pin_cap(_vc(i)) for i in (5, 6, 7, 9)}, linked={pin_cap(_vc(9))})
    k = drive_keeper(SnapshotDrive(), renew, book=book, list_dircap=list_dircap)
    k.start(first_delay=DAY)  # no round: only what is linked
    try:
        k.keep_linked(
            [
                (pin_cap(_vc(3)), "p2ps:dir:chk:gone"),  # let go: renewed, entered
                (pin_cap(_vc(6)), None),  # held: the book renews it
                (pin_cap(_vc(7)), "p2ps:dir:chk:new"),  # held, no walk reached it
                (pin_cap(_vc(9)), "p2ps:dir:chk:walked"),  # held, reached by a walk
            ]
        )
        await until(lambda: len(renewed) == 3, within=5, step=0.01)
        await asyncio.sleep(0.05)
        assert sorted(renewed) == sorted([_vc(3), _vc(4), _vc(8)])
        assert sorted(listed) == ["p2ps:dir:chk:gone", "p2ps:dir:chk:new"]
        assert {vc.to_string() for vc in book.adopted} == {_vc(3), _vc(4), _vc(8)}
        assert k.status()["kept_when_linked"] == 3
        k.keep_linked([(pin_cap(_vc(3)), "p2ps:dir:chk:gone")])  # adopted, walk not yet
        await until(lambda: len(listed) == 3, within=5, step=0.01)
        assert len(renewed) == 3  # its content is held now too: nothing renewed twice
    finally:
        await k.close()


class LateChange(SnapshotDrive):
    """The drive changes after the walk listed its last directory."""

    async def vdrive_list(self, path: VPath) -> DirListing:
        got = await super().vdrive_list(path)
        return DirListing(got.path, got.entries, 1 if len(self.listed) <= 4 else 2)


async def test_a_drive_changed_after_its_last_listing_lets_nothing_go() -> None:
    k = drive_keeper(LateChange(), _renew_all, on_walked=lambda own, reached: {})
    report = await k.run_round()
    assert not report["complete_walk"], report
