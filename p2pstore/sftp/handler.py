"""The asyncssh ``SFTPServer`` of one session: SFTP requests to :class:`.fs.DriveView`
calls, and errors to SFTP status codes (docs/sftp.md).

Invariants:
- Every path goes through :func:`.paths.client_path` first (no escape from the
  mapping's root); nothing here touches the node's own file system except the
  spool files in ``spool_dir``, created mode 0600 and removed on close or at the
  end of the session, whatever happened.
- A file opened for writing is spooled; it reaches the drive only on close (upload,
  then link in place of the old file). A session that ends without closing it
  stores nothing.
- An ``AppError`` becomes the matching SFTP status with its message (never a cap);
  anything unexpected is logged and answered "failure: internal error".
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncssh
from asyncssh import (
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPAttrs,
    SFTPError,
    SFTPName,
)

from p2pstore.app.contract import Application, DirEntry
from p2pstore.app.errors import (
    AppError,
    Conflict,
    Forbidden,
    InsufficientStorage,
    NotFound,
)

from .errors import SftpRemoteError
from .fs import DriveView, Reader
from .mtimes import MtimeBook
from .paths import Parts, client_path, show
from .users import Mapping

log = logging.getLogger(__name__)
UNSUPPORTED = "not supported by the p2pstore drive (no links, no file system sizes)"
P = ParamSpec("P")
T = TypeVar("T")
_CONFLICTS: dict[str, Callable[[str], SFTPError]] = {
    "exists": asyncssh.SFTPFileAlreadyExists,
    "directory-not-empty": asyncssh.SFTPDirNotEmpty,
    "is-a-directory": asyncssh.SFTPFileIsADirectory,
    "not-a-directory": asyncssh.SFTPNotADirectory,
}


def to_sftp(e: AppError) -> SFTPError:
    """The SFTP status for an application error (docs/sftp.md, "Errors")."""
    if isinstance(e, NotFound):
        return asyncssh.SFTPNoSuchFile(e.message)
    if isinstance(e, Forbidden):
        return asyncssh.SFTPPermissionDenied(e.message)
    if isinstance(e, Conflict) and e.code in _CONFLICTS:
        return _CONFLICTS[e.code](e.message)
    if e.code == "bad-path":
        return asyncssh.SFTPInvalidFilename(e.message)
    if e.code == "unsupported":
        return asyncssh.SFTPOpUnsupported(e.message)
    if isinstance(e, InsufficientStorage):
        return asyncssh.SFTPNoSpaceOnFilesystem(e.message)
    return asyncssh.SFTPFailure(e.message)


def _mapped(
    fn: Callable[Concatenate[SftpHandler, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SftpHandler, P], Coroutine[Any, Any, T]]:
    """Answer an ``AppError`` (and anything unexpected) with an SFTP status."""

    @functools.wraps(fn)
    async def run(handler: SftpHandler, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(handler, *args, **kwargs)
        except (SFTPError, OSError):
            raise  # asyncssh answers both with their status
        except AppError as e:
            raise to_sftp(e) from None
        except SftpRemoteError as e:
            raise asyncssh.SFTPInvalidFilename(str(e)) from None
        except Exception:
            log.exception("sftp: %s failed", fn.__name__)
            raise asyncssh.SFTPFailure("internal error (see the node's log)") from None

    return run


def attrs_of(e: DirEntry, read_only: bool) -> SFTPAttrs:
    mtime = int(e.mtime) if e.mtime is not None else 0
    if e.kind == "dir":
        kind = asyncssh.FILEXFER_TYPE_DIRECTORY
        mode = stat.S_IFDIR | (0o555 if read_only else 0o755)
    else:
        kind = asyncssh.FILEXFER_TYPE_REGULAR
        mode = stat.S_IFREG | (0o444 if read_only else 0o644)
    return SFTPAttrs(
        type=kind, size=e.size or 0, permissions=mode, atime=mtime, mtime=mtime, nlink=1
    )


@dataclass
class ReadHandle:
    parts: Parts
    entry: DirEntry
    reader: Reader


@dataclass(eq=False)
class WriteHandle:
    """A file being written: its bytes go to ``spool`` (reads come from there too)."""

    parts: Parts
    spool: Path
    fd: int
    append: bool
    mtime: float | None = None
    closed: bool = field(default=False)

    def discard(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
        self.spool.unlink(missing_ok=True)


@dataclass(frozen=True)
class SessionContext:
    """What every session of one server shares."""

    app: Application
    book: MtimeBook
    spool_dir: Path
    mapping_of: Callable[[str], Mapping | None]


class SftpHandler(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], context: SessionContext) -> None:
        super().__init__(chan)
        username = str(chan.get_extra_info("username"))
        mapping = context.mapping_of(username)
        if mapping is None:  # removed from the users file since it logged in
            raise asyncssh.SFTPPermissionDenied("this user no longer exists")
        self.context = context
        self.view = DriveView(context.app, mapping, context.book)
        self._open: set[WriteHandle] = set()
        self._readers: set[Reader] = set()

    # -- names ----------------------------------------------------------------------
    @_mapped
    async def realpath(self, path: bytes) -> bytes:
        return show(client_path(path)).encode()

    @_mapped
    async def stat(self, path: bytes) -> SFTPAttrs:
        return attrs_of(await self.view.stat(client_path(path)), self.view.read_only)

    lstat = stat

    @_mapped
    async def fstat(self, file_obj: object) -> SFTPAttrs:
        if isinstance(file_obj, WriteHandle):
            size = os.fstat(file_obj.fd).st_size
            mtime = file_obj.mtime
            entry = DirEntry(file_obj.parts[-1], "file", size, None, None, mtime)
            return attrs_of(entry, False)
        assert isinstance(file_obj, ReadHandle)
        return attrs_of(file_obj.entry, self.view.read_only)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        entries = await self._list(path)
        here = await self._stat_dir(path)
        for name in (b".", b".."):
            yield SFTPName(name, attrs=attrs_of(here, self.view.read_only))
        for e in entries:
            yield SFTPName(e.name.encode(), attrs=attrs_of(e, self.view.read_only))

    @_mapped
    async def _list(self, path: bytes) -> tuple[DirEntry, ...]:
        return await self.view.list(client_path(path))

    @_mapped
    async def _stat_dir(self, path: bytes) -> DirEntry:
        return await self.view.stat(client_path(path))

    # -- files ----------------------------------------------------------------------
    @_mapped
    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        parts = client_path(path)
        if not pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC):
            entry = await self.view.stat(parts)
            reader = self.view.reader(entry)
            self._readers.add(reader)
            return ReadHandle(parts, entry, reader)
        old = await self.view.check_target(parts)
        if old is not None and pflags & FXF_EXCL:
            raise asyncssh.SFTPFileAlreadyExists(f"{show(parts)} exists")
        if old is None and not pflags & FXF_CREAT:
            raise asyncssh.SFTPNoSuchFile(f"no such file: {show(parts)}")
        fd, name = tempfile.mkstemp(prefix="up-", dir=self.context.spool_dir)  # mode 0600
        handle = WriteHandle(parts, Path(name), fd, bool(pflags & FXF_APPEND))
        self._open.add(handle)
        if old is not None and not pflags & FXF_TRUNC:
            await self._prefill(handle, old)  # a change inside an existing file
        return handle

    async def _prefill(self, handle: WriteHandle, old: DirEntry) -> None:
        reader = self.view.reader(old)
        try:
            offset = 0
            while chunk := await reader.read(offset, 1 << 20):
                os.pwrite(handle.fd, chunk, offset)
                offset += len(chunk)
        finally:
            reader.close()

    @_mapped
    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, WriteHandle):
            data = os.pread(file_obj.fd, size, offset)
        else:
            assert isinstance(file_obj, ReadHandle)
            data = await file_obj.reader.read(offset, size)
        if not data:
            raise asyncssh.SFTPEOFError()
        return data

    @_mapped
    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, WriteHandle):
            raise asyncssh.SFTPPermissionDenied("the file was opened for reading")
        if file_obj.append:
            offset = os.fstat(file_obj.fd).st_size
        return os.pwrite(file_obj.fd, data, offset)

    @_mapped
    async def close(self, file_obj: object) -> None:
        if isinstance(file_obj, ReadHandle):
            file_obj.reader.close()
            self._readers.discard(file_obj.reader)
            return
        assert isinstance(file_obj, WriteHandle)
        self._open.discard(file_obj)
        if self._session_ending():
            file_obj.discard()  # the client went away mid-write: store nothing
            return
        try:
            size = os.fstat(file_obj.fd).st_size
            await self.view.store(file_obj.parts, file_obj.spool, size, file_obj.mtime)
        finally:
            file_obj.discard()

    def _session_ending(self) -> bool:
        """True when asyncssh closes the open files because the session ended (its
        cleanup calls ``close`` too), not because the client asked. asyncssh has no
        public flag for it: its channel stops receiving first. (Tested: a write the
        client never closed stores nothing.)"""
        return getattr(self.channel, "_recv_state", "open") != "open"

    @_mapped
    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        if isinstance(file_obj, WriteHandle):
            if attrs.size is not None:
                os.ftruncate(file_obj.fd, attrs.size)
            if attrs.mtime is not None:
                file_obj.mtime = float(attrs.mtime)
            return
        assert isinstance(file_obj, ReadHandle)
        await self._setstat(file_obj.parts, attrs)

    async def fsync(self, file_obj: object) -> None:
        return None  # the spool is stored on close; nothing to force before that

    # -- changes --------------------------------------------------------------------
    @_mapped
    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._setstat(client_path(path), attrs)

    lsetstat = setstat

    async def _setstat(self, parts: Parts, attrs: SFTPAttrs) -> None:
        """Times are kept (see :mod:`.mtimes`); modes, owners and access times are
        accepted and ignored; a size change is refused unless it changes nothing."""
        if self.view.read_only:
            raise asyncssh.SFTPPermissionDenied("this login is read-only")
        if attrs.size is not None:
            entry = await self.view.stat(parts)
            if entry.kind != "file" or entry.size != attrs.size:
                raise asyncssh.SFTPOpUnsupported("truncate a file by writing it again")
        if attrs.mtime is not None:
            await self.view.set_mtime(parts, float(attrs.mtime))

    @_mapped
    async def remove(self, path: bytes) -> None:
        await self.view.remove(client_path(path))

    @_mapped
    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self.view.mkdir(client_path(path))

    @_mapped
    async def rmdir(self, path: bytes) -> None:
        await self.view.rmdir(client_path(path))

    @_mapped
    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.view.rename(client_path(oldpath), client_path(newpath), replace=False)

    @_mapped
    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.view.rename(client_path(oldpath), client_path(newpath), replace=True)

    # -- unsupported (the defaults would touch the node's own file system) -----------
    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPOpUnsupported(UNSUPPORTED)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported(UNSUPPORTED)

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported(UNSUPPORTED)

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported(UNSUPPORTED)

    def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported(UNSUPPORTED)

    def exit(self) -> None:
        """The session ended: drop unfinished writes and read-ahead."""
        for handle in self._open:
            handle.discard()
        self._open.clear()
        for reader in self._readers:
            reader.close()
        self._readers.clear()
