"""The lease book, the reference keeper and a real (in-memory) vdrive wired as a node
wires them (p2pstore/node/upkeep.py): what a change links is kept at once, and
changes racing a walk never leave a linked file let go and unrenewed
(docs/node.md, "Letting go")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from p2pstore.app.contract import DirListing, NewEntry
from p2pstore.app.drive import VdriveApplication
from p2pstore.app.keeper import KeeperConfig, PinBook, ReferenceKeeper
from p2pstore.app.keeper import VerifyCap as KeptCap
from p2pstore.app.vpath import VPath
from p2pstore.grid.lease_renewal import LeaseBook
from p2pstore.immutable import ReadCap
from p2pstore.node.upkeep import BookView
from p2pstore.testing.vdrive import local_vdrive
from p2pstore.vdrive.objects import CachingStore, FileCap, MemoryObjectStore


class Node:
    """A book tracking every upload (directory objects too, as the node's upload
    hook does), a keeper walking ``roots`` that sees the book through the node's
    ``BookView``, and the vdrive's ``on_linked`` hook on the keeper."""

    def __init__(self, tmp: Path, roots: list[str]) -> None:
        self.book = LeaseBook.load(tmp / "leases.log")
        self.renewed: list[KeptCap] = []
        inner, book = MemoryObjectStore(), self.book

        class Tracking:
            async def put(self, data: bytes) -> FileCap:
                cap = await inner.put(data)
                book.track(cap, 1.0)
                return cap

            async def get(self, cap: FileCap) -> bytes:
                return await inner.get(cap)

        self.store = CachingStore(Tracking())
        self.app = VdriveApplication(local_vdrive(store=self.store))
        self.keeper = ReferenceKeeper(
            self.app,
            [VPath(r, ()) for r in roots],
            PinBook(None),
            self.renew,
            KeeperConfig(interval=1e9, pace=0),
            on_walked=self.follow,
            book=BookView(lambda: self.book, lambda: 2.0),
            list_dircap=lambda d: self.app.vdrive_list_dircap(d, ()),
        )
        self.app.on_linked = self.keeper.keep_linked

    async def renew(self, vc: KeptCap) -> dict[str, str | None]:
        self.renewed.append(vc)
        return {"peer": None}

    def follow(self, own: set[KeptCap], reached: set[KeptCap]) -> dict[str, int]:
        linked, gone = self.book.follow_links(own, reached)
        return {"uploads_linked": linked, "uploads_let_go": gone}

    async def upload(self, data: bytes) -> ReadCap:
        cap = await self.store.put(data)
        assert isinstance(cap, ReadCap)
        return cap

    def kept(self, cap: ReadCap) -> bool:
        """Renewed by the book, or just now by the keeper."""
        return cap.verify_cap() in self.book or cap.verify_cap() in self.renewed

    async def settle(self) -> None:
        await asyncio.sleep(0.1)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path, ["private", "shared"])
    n.keeper.start(first_delay=1e9)  # rounds run by the tests; links kept in the background
    try:
        yield n
    finally:
        await n.keeper.close()


def link(n: Node, path: VPath, cap: ReadCap) -> Awaitable[int]:
    return n.app.vdrive_link(path, cap, replace=False, expected_sequence=None)


def unlink(n: Node, path: VPath) -> Awaitable[int]:
    return n.app.vdrive_unlink(path, recursive=True, expected_sequence=None)


async def test_a_held_directory_linked_later_brings_back_its_let_go_content(node: Node) -> None:
    """A directory object made whole (a backup run that stopped before it linked its
    snapshot) is held by the book, never marked; its file, linked elsewhere, is let
    go once unlinked. Linking the directory weeks later renews the file at once."""
    f = await node.upload(b"F" * 200)
    await link(node, VPath("private", ("f",)), f)
    d = await node.app.vdrive_make_dir([NewEntry("f", "file", f.to_string())])
    await node.keeper.run_round()
    assert node.book.is_linked(f.verify_cap())
    await unlink(node, VPath("private", ("f",)))
    assert (await node.keeper.run_round())["uploads_let_go"] >= 1
    assert f.verify_cap() not in node.book
    node.renewed.clear()
    assert d.cap is not None
    await node.app.vdrive_link_dircap(VPath("private", ("b",)), d.cap, expected_sequence=None)
    await node.settle()
    assert f.verify_cap() in node.renewed and f.verify_cap() in node.book  # taken back


async def test_a_let_go_file_in_a_new_directory_object_is_kept(node: Node) -> None:
    f = await node.upload(b"G" * 200)
    await link(node, VPath("private", ("f",)), f)
    await node.keeper.run_round()
    await unlink(node, VPath("private", ("f",)))
    await node.keeper.run_round()
    assert f.verify_cap() not in node.book
    await node.app.vdrive_make_dir([NewEntry("f", "file", f.to_string())])  # a backup
    await node.settle()
    assert node.kept(f)


async def during_the_walk(n: Node, change: Callable[[VPath], Awaitable[None]]) -> None:
    """Run a keeper round whose every listing is followed by ``change(path)``."""
    listing = n.app.vdrive_list

    async def list_then_change(path: VPath) -> DirListing:
        got = await listing(path)
        await change(path)
        return got

    n.app.vdrive_list = list_then_change  # type: ignore[method-assign]
    n.renewed.clear()  # what this round, or a link during it, renews
    try:
        await n.keeper.run_round()
    finally:
        n.app.vdrive_list = listing  # type: ignore[method-assign]
    await n.settle()


async def test_a_move_between_drives_during_the_walk_lets_nothing_go(node: Node) -> None:
    """The vdrive node walks both drives: a file moved from private to shared after
    shared was listed is in neither listing, and stays kept."""
    f = await node.upload(b"H" * 200)
    here, there = VPath("private", ("f",)), VPath("shared", ("f",))
    await link(node, here, f)
    await node.keeper.run_round()
    assert node.book.is_linked(f.verify_cap())
    moved = False

    async def move(path: VPath) -> None:
        nonlocal moved
        if path.drive == "shared" and not moved:
            moved = True
            await link(node, there, f)
            await unlink(node, here)

    await during_the_walk(node, move)
    assert moved and node.kept(f)
    assert not node.keeper.last["complete_walk"]


async def test_a_file_linked_again_during_the_walk_stays_kept(node: Node) -> None:
    """Unlinked before the walk and linked again just after the walk listed its
    directory: the walk did not see it, yet it is linked, and stays kept."""
    f = await node.upload(b"I" * 200)
    p = VPath("private", ("f",))
    await link(node, p, f)
    await node.keeper.run_round()
    await unlink(node, p)
    again = False

    async def relink(path: VPath) -> None:
        nonlocal again
        if path.drive == "private" and not again:  # after the drive's last listing
            again = True
            await link(node, p, f)

    await during_the_walk(node, relink)
    assert again and node.kept(f)
