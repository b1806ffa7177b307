"""The vdrive half of the HTTP API's backend (``p2pstore.app.contract.Application``)
on top of a :class:`~.drive.Vdrive`: path translation, entry shaping and the mapping
of vdrive error codes onto the API's errors (docs/http-api.md).

Use it as a mixin (``class GridApplication(VdriveOperations, ...)`` with a ``vdrive``
attribute) or alone (:class:`VdriveApplication`). With ``vdrive`` None every call is
``503 vdrive-unavailable``, like ``DelegateVdrive`` without a component.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from p2pstore.app.contract import ChangeOutcome, DirEntry, DirListing, NewEntry, OpId
from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    GridError,
    NotFound,
    TooLarge,
    VdriveUnavailable,
)
from p2pstore.app.keeper import Linked
from p2pstore.app.vpath import VPath
from p2pstore.immutable import CapError, LiteralCap, ReadCap, parse_cap
from p2pstore.mutable import MutableCap
from p2pstore.mutable import ReadCap as MutableReadCap
from p2pstore.mutable import VerifyCap as MutableVerifyCap
from p2pstore.vdrive.dirnode import (
    DirCap,
    Directory,
    Entry,
    FileCap,
    normalize_name,
    parse_dircap,
)
from p2pstore.vdrive.drive import Drive, Vdrive
from p2pstore.vdrive.errors import VdriveError
from p2pstore.vdrive.ops import Link, Mkdir, Op, Path, Rename, Unlink, list_dir, resolve

T = TypeVar("T")
log = logging.getLogger(__name__)

_CONFLICTS = {
    "abandoned",
    "exists",
    "is-a-directory",
    "not-a-directory",
    "directory-not-empty",
    "sequence-mismatch",
}
_BAD = {"bad-path", "bad-request", "cross-drive", "bad-cap"}


def to_app_error(e: VdriveError) -> AppError:
    if e.code == "not-found":
        return NotFound(e.message, details=e.details)
    if e.code in _CONFLICTS:
        return Conflict(e.message, code=e.code, details=e.details)
    if e.code in _BAD:
        return BadRequest(e.message, code=e.code)
    if e.code == "refused":
        return Forbidden(e.message, code="vdrive-refused")
    if e.code == "too-large":
        return TooLarge(e.message)
    if e.code == "vdrive-unavailable":
        return VdriveUnavailable(e.message, details=e.details)
    if e.code in ("rollback", "bad-record", "bad-directory"):
        return GridError(e.message, code="integrity-error", details=e.details)
    return GridError(e.message, code="grid-error")


async def _guard(aw: Awaitable[T]) -> T:
    try:
        return await aw
    except VdriveError as e:
        raise to_app_error(e) from None


def _parts(path: VPath) -> Path:
    return _parts_of(path.parts)


def _parts_of(parts: Path) -> Path:
    try:
        return tuple(normalize_name(p) for p in parts)
    except VdriveError as e:
        raise to_app_error(e) from None


def dir_entry(name: str, e: Entry) -> DirEntry:
    cap = e.cap.to_string()
    inner = e.cap.inner if isinstance(e.cap, DirCap) else e.cap
    verify = inner.verify_cap().to_string() if isinstance(inner, ReadCap | MutableReadCap) else None
    return DirEntry(name, e.kind, e.size, cap, verify, e.mtime, e.mode)


def _new_entry(e: NewEntry, now: float) -> tuple[str, Entry]:
    try:
        name = normalize_name(e.name)
    except VdriveError as err:
        raise to_app_error(err) from None
    # ctime = mtime: the same entries always encode the same (convergent objects)
    t = now if e.mtime is None else e.mtime
    try:
        cap: FileCap | DirCap
        if e.kind == "dir":
            cap = parse_dircap(e.cap)
            return name, Entry("dir", cap, None, t, t, e.mode)
        parsed = parse_cap(e.cap)
        if not isinstance(parsed, ReadCap | LiteralCap):
            raise CapError("kind", "a file entry needs a read cap or a literal cap")
        return name, Entry("file", parsed, parsed.size, t, t, e.mode)
    except CapError as err:
        raise BadRequest(f"entry {e.name!r}: {err}", code="bad-cap") from None
    except ValueError as err:
        raise BadRequest(f"entry {e.name!r}: {err}", code="bad-request") from None


def make_directory(entries: Sequence[NewEntry], now: float) -> Directory:
    """The directory object ``entries`` describe; duplicate names, bad caps, times
    or modes are ``400``."""
    out: dict[str, Entry] = {}
    for e in entries:
        name, entry = _new_entry(e, now)
        if name in out:
            raise BadRequest(f"the name {name!r} appears twice", code="bad-request")
        out[name] = entry
    try:
        return Directory(out)
    except VdriveError as err:
        raise to_app_error(err) from None


def linked_item(cap: object) -> Linked | None:
    """What linking ``cap`` (a file, directory or mutable read cap) asks to keep;
    None for a literal one (no shares, no lease)."""
    if isinstance(cap, DirCap):
        inner = cap.inner
        return (inner.verify_cap(), cap.to_string()) if isinstance(inner, ReadCap) else None
    if isinstance(cap, ReadCap | MutableReadCap):
        return cap.verify_cap(), None
    return None


class VdriveOperations:
    vdrive: Vdrive | None
    #: called, after a change on this node linked a cap (every ``Link`` through
    #: ``_change``: ``link``, ``link_dircap``, ``link_mutable``) or a whole directory
    #: was made from entries, with what they were: the node renews at once what
    #: nothing of its own renews (docs/node.md, "Letting go"). Never raises into the
    #: change.
    on_linked: Callable[[Sequence[Linked]], None] | None = None

    def _linked(self, caps: Sequence[object]) -> None:
        items = [item for item in map(linked_item, caps) if item is not None]
        if self.on_linked is None or not items:
            return
        try:
            self.on_linked(items)
        except Exception:
            log.exception("keeping what was just linked failed (the change was made)")

    def _drive(self, label: str) -> Drive:
        if self.vdrive is None:
            raise VdriveUnavailable()
        try:
            return self.vdrive.drive(label)
        except VdriveError as e:
            raise to_app_error(e) from None

    async def vdrive_list(self, path: VPath) -> DirListing:
        drive = self._drive(path.drive)
        d, seq = await _guard(drive.list(_parts(path)))
        return DirListing(path, tuple(dir_entry(n, d[n]) for n in d), seq)

    async def vdrive_stat(self, path: VPath) -> DirEntry:
        drive = self._drive(path.drive)
        entry, _seq = await _guard(drive.stat(_parts(path)))
        if entry is None:
            root = await _guard(drive.root_cap())
            cap = root.to_string() if root is not None else None
            inner = root.inner if root is not None else None
            verify = inner.verify_cap().to_string() if isinstance(inner, ReadCap) else None
            return DirEntry("", "dir", None, cap, verify, None)
        return dir_entry(path.name, entry)

    async def _change(
        self, path: VPath, make: Callable[[Path], Op], expected: int | None, op_id: OpId
    ) -> int:
        drive = self._drive(path.drive)
        op = make(_parts(path))
        res = await _guard(drive.change(op, expected_sequence=expected, op_id=op_id))
        if isinstance(op, Link):
            self._linked([op.cap])
        return res.sequence

    async def vdrive_mkdir(
        self, path: VPath, *, parents: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        return await self._change(path, lambda p: Mkdir(p, parents), expected_sequence, op_id)

    async def vdrive_link(
        self,
        path: VPath,
        cap: ReadCap | LiteralCap,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int:
        return await self._change(path, lambda p: Link(p, cap, replace), expected_sequence, op_id)

    async def vdrive_link_dircap(
        self, path: VPath, dircap: str, *, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        """Link a read-only directory cap at ``path`` (never replaces a name). The
        subtree reads as it was when the cap was taken; changing anything under it
        stores new objects in this drive and leaves the original untouched."""
        try:
            cap = parse_dircap(dircap)
        except CapError as e:
            raise BadRequest(str(e), code="bad-cap") from None
        return await self._change(path, lambda p: Link(p, cap, False), expected_sequence, op_id)

    async def vdrive_link_mutable(
        self,
        path: VPath,
        cap: MutableCap,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int:
        """Link a mutable file or live directory by its **read** cap (a write cap is
        reduced to it: whoever reads the directory reads its entries; docs/mutable.md,
        "Linking"). Reading the path later reads the latest version; a live directory
        linked this way is changed through its own cap, never through this drive."""
        if isinstance(cap, MutableVerifyCap):
            raise BadRequest(
                "a verify cap cannot be linked: link the read cap", code="verify-cap-cannot-read"
            )
        read = cap.read_cap()
        return await self._change(path, lambda p: Link(p, read, replace), expected_sequence, op_id)

    async def vdrive_unlink(
        self, path: VPath, *, recursive: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        return await self._change(path, lambda p: Unlink(p, recursive), expected_sequence, op_id)

    async def vdrive_make_dir(self, entries: Sequence[NewEntry]) -> DirEntry:
        """Store a whole directory object from ``entries`` (Tahoe's mkdir-immutable)
        and return it as an unnamed dir entry: its read-only cap and verify cap. It
        is linked nowhere; link it with :meth:`vdrive_link_dircap`."""
        if self.vdrive is None:
            raise VdriveUnavailable()
        d = make_directory(entries, time.time())
        cap = await _guard(self.vdrive.make_dir(d))
        self._linked([d[name].cap for name in d])
        inner = cap.inner
        verify = inner.verify_cap().to_string() if isinstance(inner, ReadCap) else None
        return DirEntry("", "dir", None, cap.to_string(), verify, None)

    async def vdrive_rename(
        self,
        src: VPath,
        dst: VPath,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int:
        if src.drive != dst.drive:
            raise BadRequest(
                "cannot move between drives; link the cap there, then remove it here",
                code="cross-drive",
            )
        d = _parts(dst)
        return await self._change(src, lambda p: Rename(p, d, replace), expected_sequence, op_id)

    async def vdrive_outcome(self, drive: str, op_id: bytes) -> ChangeOutcome:
        res = await _guard(self._drive(drive).settle(op_id))
        return ChangeOutcome(res.applied, res.sequence)

    def _dircap(self, dircap: str) -> tuple[Vdrive, DirCap]:
        if self.vdrive is None:
            raise VdriveUnavailable()
        try:
            return self.vdrive, parse_dircap(dircap)
        except CapError as e:
            raise BadRequest(str(e), code="bad-cap") from None

    async def vdrive_stat_dircap(self, dircap: str, parts: Path) -> DirEntry:
        """The entry at ``parts`` below a read-only directory cap (the root: a dir
        entry named "")."""
        vdrive, root = self._dircap(dircap)
        entry = await _guard(resolve(vdrive.store, root, _parts_of(parts)))
        if entry is None:
            return DirEntry("", "dir", None, dircap, None, None)
        return dir_entry(parts[-1], entry)

    async def vdrive_list_dircap(self, dircap: str, parts: Path) -> tuple[DirEntry, ...]:
        """The entries of the directory at ``parts`` below a read-only directory cap."""
        vdrive, root = self._dircap(dircap)
        d = await _guard(list_dir(vdrive.store, root, _parts_of(parts)))
        return tuple(dir_entry(n, d[n]) for n in d)


class VdriveApplication(VdriveOperations):
    """Just the vdrive methods (combine with a file backend for a full Application)."""

    def __init__(self, vdrive: Vdrive | None) -> None:
        self.vdrive = vdrive
