"""The file operations of one SFTP session over the application layer, no SSH
(docs/sftp.md, "What each operation does").

:class:`DriveView` is a user's mapping seen as a file system: ``stat``, ``list``,
ranged reads, storing a spooled file (upload, then link in place of the old one),
``mkdir``, ``rmdir``, ``remove``, ``rename`` and modification times. It works on
path components already normalised by :mod:`.paths`, so it only ever names
entries at or below the mapping's root.

Invariants:
- Every change goes through the drive's own operations (mkdir/link/unlink/rename)
  with a fresh ``op_id``; a change whose answer was lost (a grid error) is settled
  by asking the drive whether that ``op_id`` was made (``vdrive_outcome``).
- A read-only mapping (``ro:`` or a directory cap) raises :class:`ReadOnly` before
  anything is asked of the drive; so does any change of the root itself.
- Failures are ``AppError``\\s; the handler maps them to SFTP statuses.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, Protocol

from p2pstore.app.contract import Application, DirEntry, vdrive_extra
from p2pstore.app.errors import Conflict, Forbidden, GridError, NotFound, Unavailable
from p2pstore.app.vpath import VPath
from p2pstore.immutable import CapError, LiteralCap, ReadCap, parse_cap

from .mtimes import MtimeBook, tag_of
from .paths import Parts, under
from .users import Mapping

READ_BLOCK: Final = 1 << 20  # bytes fetched from the grid per read-ahead block
READ_BLOCKS_KEPT: Final = 8  # per open file


class ReadOnly(Forbidden):
    default_code = "read-only"


class DircapReader(Protocol):
    """Reading below a directory cap (``app.drive.VdriveOperations`` has it)."""

    async def vdrive_stat_dircap(self, dircap: str, parts: Parts) -> DirEntry: ...
    async def vdrive_list_dircap(self, dircap: str, parts: Parts) -> tuple[DirEntry, ...]: ...


def _dircap_reader(app: Application) -> DircapReader:
    reader: DircapReader | None = vdrive_extra(app, "vdrive_stat_dircap", "vdrive_list_dircap")
    if reader is None:
        raise Unavailable("this node cannot read directory caps", code="unsupported")
    return reader


def file_cap(entry: DirEntry) -> ReadCap | LiteralCap:
    if entry.kind != "file" or entry.cap is None:
        raise Conflict(f"{entry.name or '/'} is a directory", code="is-a-directory")
    try:
        cap = parse_cap(entry.cap)
    except CapError:
        raise GridError("the drive holds an unreadable cap", code="integrity-error") from None
    if not isinstance(cap, ReadCap | LiteralCap):
        raise GridError("the drive holds a cap that cannot be read", code="integrity-error")
    return cap


class DriveView:
    def __init__(self, app: Application, mapping: Mapping, book: MtimeBook) -> None:
        self.app = app
        self.mapping = mapping
        self.book = book

    def __repr__(self) -> str:
        return f"DriveView({self.mapping!r})"

    @property
    def read_only(self) -> bool:
        return self.mapping.read_only

    def _vpath(self, parts: Parts) -> VPath:
        assert self.mapping.root is not None
        return under(self.mapping.root, parts)

    def _writable(self, parts: Parts, what: str) -> VPath:
        if self.mapping.read_only:
            raise ReadOnly(f"{what}: this login is read-only")
        if not parts:
            raise ReadOnly(f"{what}: not allowed on the root of this login")
        return self._vpath(parts)

    def _with_time(self, path: VPath, e: DirEntry) -> DirEntry:
        mtime = self.book.get(str(path), tag_of(e.cap if e.kind == "file" else None))
        if mtime is None:
            return e
        return DirEntry(e.name, e.kind, e.size, e.cap, e.verify_cap, mtime)

    # -- reading ------------------------------------------------------------------
    async def stat(self, parts: Parts) -> DirEntry:
        if self.mapping.dircap is not None:
            return await _dircap_reader(self.app).vdrive_stat_dircap(self.mapping.dircap, parts)
        path = self._vpath(parts)
        return self._with_time(path, await self.app.vdrive_stat(path))

    async def list(self, parts: Parts) -> tuple[DirEntry, ...]:
        if self.mapping.dircap is not None:
            return await _dircap_reader(self.app).vdrive_list_dircap(self.mapping.dircap, parts)
        path = self._vpath(parts)
        listing = await self.app.vdrive_list(path)
        return tuple(self._with_time(path.child(e.name), e) for e in listing.entries)

    def reader(self, entry: DirEntry) -> Reader:
        return Reader(self.app, file_cap(entry))

    # -- changing -----------------------------------------------------------------
    async def _change(self, drive: str, run: Callable[[bytes], Awaitable[int]]) -> None:
        """Run one drive change with a fresh op_id; settle a lost answer."""
        op_id = os.urandom(16)
        try:
            await run(op_id)
        except GridError:
            outcome = await self.app.vdrive_outcome(drive, op_id)
            if not outcome.applied:
                raise

    async def check_target(self, parts: Parts) -> DirEntry | None:
        """Before a file is written: the parent must be a directory and the name, if
        taken, a file (which the upload will replace). Returns the existing file."""
        path = self._writable(parts, "write")
        parent = await self.app.vdrive_stat(path.parent)
        if parent.kind != "dir":
            raise Conflict(f"{path.parent} is a file", code="not-a-directory")
        try:
            old = await self.app.vdrive_stat(path)
        except NotFound:
            return None
        if old.kind == "dir":
            raise Conflict(f"{path} is a directory", code="is-a-directory")
        return old

    async def store(self, parts: Parts, spool: Path, size: int, mtime: float | None) -> None:
        """Upload the spooled file and link it at ``parts``, replacing a file there."""
        path = self._writable(parts, "write")
        # read in place: the grid backend would otherwise spool the spool again
        fd = await asyncio.to_thread(os.open, spool, os.O_RDONLY | os.O_CLOEXEC)
        try:
            result = await self.app.upload_file(fd, size, mode="convergent")
        finally:
            os.close(fd)
        await self._change(
            path.drive,
            lambda op: self.app.vdrive_link(
                path, result.cap, replace=True, expected_sequence=None, op_id=op
            ),
        )
        if mtime is None:
            self.book.forget(str(path))
        else:
            self.book.set(str(path), tag_of(result.cap.to_string()), mtime)

    async def mkdir(self, parts: Parts) -> None:
        path = self._writable(parts, "mkdir")
        await self._change(
            path.drive,
            lambda op: self.app.vdrive_mkdir(path, parents=False, expected_sequence=None, op_id=op),
        )

    async def _unlink(self, parts: Parts, kind: str, what: str) -> None:
        path = self._writable(parts, what)
        entry = await self.app.vdrive_stat(path)
        if entry.kind != kind:
            code = "is-a-directory" if entry.kind == "dir" else "not-a-directory"
            raise Conflict(f"{what}: {path} is a {entry.kind}", code=code)
        await self._change(
            path.drive,
            lambda op: self.app.vdrive_unlink(
                path, recursive=False, expected_sequence=None, op_id=op
            ),
        )
        self.book.forget(str(path))

    async def remove(self, parts: Parts) -> None:
        await self._unlink(parts, "file", "remove")

    async def rmdir(self, parts: Parts) -> None:
        await self._unlink(parts, "dir", "rmdir")

    async def rename(self, src: Parts, dst: Parts, *, replace: bool) -> None:
        a, b = self._writable(src, "rename"), self._writable(dst, "rename")
        if a == b:
            return
        await self._change(
            a.drive,
            lambda op: self.app.vdrive_rename(
                a, b, replace=replace, expected_sequence=None, op_id=op
            ),
        )
        self.book.move(str(a), str(b))

    async def set_mtime(self, parts: Parts, mtime: float) -> None:
        """Keep a client's time for the entry at ``parts`` (see :mod:`.mtimes`)."""
        if self.mapping.read_only:
            raise ReadOnly("setstat: this login is read-only")
        path = self._vpath(parts)
        entry = await self.app.vdrive_stat(path)
        self.book.set(str(path), tag_of(entry.cap if entry.kind == "file" else None), mtime)


class Reader:
    """Ranged reads of one file: whole blocks of :data:`READ_BLOCK` bytes are fetched
    from the grid (clients ask for 32-256 KiB at a time, many at once), each once,
    and the last few are kept."""

    def __init__(self, app: Application, cap: ReadCap | LiteralCap) -> None:
        self.app = app
        self.cap = cap
        self.size = cap.size
        self._blocks: OrderedDict[int, asyncio.Future[bytes]] = OrderedDict()

    async def _fetch(self, index: int) -> bytes:
        start = index * READ_BLOCK
        length = min(READ_BLOCK, self.size - start)
        out = bytearray()
        async for chunk in await self.app.download(self.cap, start, length):
            out += chunk
        return bytes(out)

    async def _block(self, index: int) -> bytes:
        fut = self._blocks.get(index)
        if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            fut = asyncio.ensure_future(self._fetch(index))
            self._blocks[index] = fut
            while len(self._blocks) > READ_BLOCKS_KEPT:
                old_index = next(iter(self._blocks))
                old = self._blocks.pop(old_index)
                if not old.done():  # still wanted by a waiting read: keep it
                    self._blocks[old_index] = old
                    break
        self._blocks.move_to_end(index)
        return await asyncio.shield(fut)

    async def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (b"" at or past the end)."""
        end = min(self.size, offset + size)
        out = bytearray()
        pos = offset
        while pos < end:
            index = pos // READ_BLOCK
            block = await self._block(index)
            lo = pos - index * READ_BLOCK
            piece = block[lo : lo + (end - pos)]
            if not piece:
                break
            out += piece
            pos += len(piece)
        return bytes(out)

    def close(self) -> None:
        for fut in self._blocks.values():
            fut.cancel()
        self._blocks.clear()
