"""An in-memory virtual drive (shared + private namespaces) for tests and demos.

It implements the vdrive half of :class:`~p2pstore.app.contract.Application` with the
semantics the real vdrive must keep (docs/http-api.md, "Virtual drive"), so the
routes and CLI commands are tested for real. It is NOT the grid's vdrive: nothing
is signed, published or persisted, and it is lost when the process exits.

Invariants:
- each drive has a sequence number that grows by one on every successful write;
  a write with ``expected_sequence`` that differs changes nothing
  (``409 sequence-mismatch``);
- a failed operation changes nothing (checks happen before any mutation);
- directories never contain themselves (rename into a descendant is refused).

A live directory path (``p2ps:dir:mut...``, docs/mutable.md) is a drive made on first
use, one per public key (its write and read caps open the same one); a read cap is
refused every change (``403 vdrive-refused``), as on the grid.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from p2pstore.app.contract import ChangeOutcome, DirEntry, DirListing, OpId
from p2pstore.app.errors import BadRequest, Conflict, Forbidden, NotFound
from p2pstore.app.vpath import LIVE_PREFIX, Drive, VPath
from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.mutable import WriteCap, parse_mutable_cap


@dataclass
class _File:
    cap: ReadCap | LiteralCap
    mtime: float


@dataclass
class _Dir:
    mtime: float
    children: dict[str, _File | _Dir] = field(default_factory=dict)


@dataclass
class _Drive:
    root: _Dir
    sequence: int = 0
    recent: dict[bytes, int] = field(default_factory=dict)  # op id -> sequence; -1 given up


def _entry(name: str, node: _File | _Dir) -> DirEntry:
    if isinstance(node, _Dir):
        return DirEntry(name, "dir", None, None, None, node.mtime)
    verify = node.cap.verify_cap().to_string() if isinstance(node.cap, ReadCap) else None
    return DirEntry(name, "file", node.cap.size, node.cap.to_string(), verify, node.mtime)


class MemoryVdrive:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        now = clock()
        self._drives: dict[Drive, _Drive] = {
            "shared": _Drive(_Dir(now)),
            "private": _Drive(_Dir(now)),
        }

    # -- helpers ---------------------------------------------------------------
    def _drive(self, drive: Drive, *, write: bool = False) -> _Drive:
        if not drive.startswith(LIVE_PREFIX):
            return self._drives[drive]
        cap = parse_mutable_cap(drive)  # VPath checked it
        if write and not isinstance(cap, WriteCap):
            raise Forbidden(
                "this is the read cap of a live directory: it shows every change but "
                "cannot make one; changes need its write cap (p2ps:dir:mut:...)",
                code="vdrive-refused",
            )
        key = cap.verify_cap().to_string()
        return self._drives.setdefault(key, _Drive(_Dir(self.clock())))

    def _lookup(self, path: VPath) -> _File | _Dir:
        node: _File | _Dir = self._drive(path.drive).root
        for i, name in enumerate(path.parts):
            if not isinstance(node, _Dir):
                where = VPath(path.drive, path.parts[:i])
                raise Conflict(f"{where} is a file, not a directory", code="not-a-directory")
            child = node.children.get(name)
            if child is None:
                missing = VPath(path.drive, path.parts[: i + 1])
                raise NotFound(f"no such file or directory: {missing}")
            node = child
        return node

    def _dir(self, path: VPath) -> _Dir:
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise Conflict(f"{path} is a file, not a directory", code="not-a-directory")
        return node

    def _begin(self, drive: Drive, expected: int | None) -> _Drive:
        d = self._drive(drive, write=True)
        if expected is not None and expected != d.sequence:
            raise Conflict(
                f"the {drive} drive changed (sequence {d.sequence}, expected {expected})",
                code="sequence-mismatch",
                details={"sequence": d.sequence},
            )
        return d

    def _commit(self, d: _Drive, parent: _Dir) -> int:
        parent.mtime = self.clock()
        d.sequence += 1
        return d.sequence

    # -- the vdrive half of Application --------------------------------------
    async def vdrive_list(self, path: VPath) -> DirListing:
        node = self._dir(path)
        entries = tuple(_entry(n, c) for n, c in sorted(node.children.items()))
        return DirListing(path, entries, self._drive(path.drive).sequence)

    async def vdrive_stat(self, path: VPath) -> DirEntry:
        return _entry(path.name, self._lookup(path))

    async def _mkdir(self, path: VPath, parents: bool, expected_sequence: int | None) -> int:
        d = self._begin(path.drive, expected_sequence)
        if path.is_root:
            if parents:
                return d.sequence
            raise Conflict(f"{path} already exists", code="exists")
        node: _Dir = d.root
        missing: list[str] = []
        for i, name in enumerate(path.parts):
            child = node.children.get(name)
            if child is None:
                if not parents and i < len(path.parts) - 1:
                    raise NotFound(f"no such directory: {VPath(path.drive, path.parts[: i + 1])}")
                missing = list(path.parts[i:])
                break
            if not isinstance(child, _Dir):
                where = VPath(path.drive, path.parts[: i + 1])
                raise Conflict(f"{where} is a file, not a directory", code="not-a-directory")
            node = child
        if not missing:
            if parents:
                return d.sequence
            raise Conflict(f"{path} already exists", code="exists")
        now = self.clock()
        top = node
        for name in missing:
            new = _Dir(now)
            node.children[name] = new
            node = new
        return self._commit(d, top)

    async def _link(
        self, path: VPath, cap: ReadCap | LiteralCap, replace: bool, expected_sequence: int | None
    ) -> int:
        d = self._begin(path.drive, expected_sequence)
        if path.is_root:
            raise BadRequest("cannot link a file at the root itself; name it", code="bad-path")
        parent = self._dir(path.parent)
        old = parent.children.get(path.name)
        if isinstance(old, _Dir):
            raise Conflict(f"{path} is a directory", code="is-a-directory")
        if old is not None and not replace:
            raise Conflict(f"{path} already exists (replace it explicitly)", code="exists")
        parent.children[path.name] = _File(cap, self.clock())
        return self._commit(d, parent)

    async def _unlink(self, path: VPath, recursive: bool, expected_sequence: int | None) -> int:
        d = self._begin(path.drive, expected_sequence)
        if path.is_root:
            raise BadRequest("cannot remove the root of a drive", code="bad-path")
        parent = self._dir(path.parent)
        node = parent.children.get(path.name)
        if node is None:
            raise NotFound(f"no such file or directory: {path}")
        if isinstance(node, _Dir) and node.children and not recursive:
            raise Conflict(
                f"directory {path} is not empty (remove it with everything inside: rm -r)",
                code="directory-not-empty",
            )
        del parent.children[path.name]
        return self._commit(d, parent)

    async def _rename(
        self, src: VPath, dst: VPath, replace: bool, expected_sequence: int | None
    ) -> int:
        if src.drive != dst.drive:
            raise BadRequest(
                "cannot move between drives; link the cap there, then remove it here",
                code="cross-drive",
            )
        d = self._begin(src.drive, expected_sequence)
        if src.is_root or dst.is_root:
            raise BadRequest("cannot move the root of a drive", code="bad-path")
        if dst.is_within(src) and dst != src:
            raise BadRequest(f"cannot move {src} into itself", code="bad-path")
        src_parent = self._dir(src.parent)
        node = src_parent.children.get(src.name)
        if node is None:
            raise NotFound(f"no such file or directory: {src}")
        if dst == src:
            return d.sequence
        dst_parent = self._dir(dst.parent)
        old = dst_parent.children.get(dst.name)
        if isinstance(old, _Dir):
            raise Conflict(f"{dst} is a directory", code="is-a-directory")
        if old is not None and (not replace or isinstance(node, _Dir)):
            raise Conflict(f"{dst} already exists", code="exists")
        del src_parent.children[src.name]
        dst_parent.children[dst.name] = node
        src_parent.mtime = self.clock()
        return self._commit(d, dst_parent)

    # -- op ids: a change made once, its outcome asked for (docs/vdrive.md) --
    async def _once(self, drive: Drive, op_id: OpId, run: Callable[[], Awaitable[int]]) -> int:
        d = self._drive(drive, write=True)
        if op_id is not None and op_id in d.recent:
            if d.recent[op_id] < 0:
                raise Conflict("this change was given up before it arrived", code="abandoned")
            return d.recent[op_id]
        seq = await run()
        if op_id is not None:
            d.recent[op_id] = seq
        return seq

    async def vdrive_mkdir(
        self, path: VPath, *, parents: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        return await self._once(
            path.drive, op_id, lambda: self._mkdir(path, parents, expected_sequence)
        )

    async def vdrive_link(
        self,
        path: VPath,
        cap: ReadCap | LiteralCap,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int:
        return await self._once(
            path.drive, op_id, lambda: self._link(path, cap, replace, expected_sequence)
        )

    async def vdrive_unlink(
        self, path: VPath, *, recursive: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        return await self._once(
            path.drive, op_id, lambda: self._unlink(path, recursive, expected_sequence)
        )

    async def vdrive_rename(
        self,
        src: VPath,
        dst: VPath,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int:
        return await self._once(
            src.drive, op_id, lambda: self._rename(src, dst, replace, expected_sequence)
        )

    async def vdrive_outcome(self, drive: str, op_id: bytes) -> ChangeOutcome:
        if drive not in self._drives:
            raise BadRequest(f"no drive {drive!r}", code="bad-path")
        d = self._drives[drive]
        seq = d.recent.setdefault(op_id, -1)
        return ChangeOutcome(seq >= 0, seq if seq >= 0 else d.sequence)
