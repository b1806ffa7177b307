"""The contract between the HTTP API and whatever does the work behind it.

The API layer (``api.py``) parses and checks requests (caps, ranges, paths,
tokens) and turns results into JSON; an :class:`Application` does the work. Two
implementations: :class:`~p2pstore.testing.memory_app.MemoryApplication` (real
encoding and verification, shares held in memory — tests, and the stand-in node
service) and, in production, the grid backend that node assembly provides
(upload/download/check through ``p2pstore.grid``, vdrive through the vdrive
package).

Contract every backend keeps:
- Failures are :class:`~p2pstore.app.errors.AppError` subclasses (the code and
  HTTP status the client sees); any other exception becomes ``500 internal-error``.
- ``upload`` consumes ``chunks`` as it goes (never reads the whole body first)
  and stores nothing if the iterator raises (the client went away) or the call is
  cancelled.
- ``download`` raises before returning if the file cannot be read at all (no
  shares, too few shares), so the API can still answer with an error status; the
  iterator yields exactly ``length`` bytes of verified plaintext from ``offset``
  (an error while iterating aborts the response, and the client sees a short body).
- Caps passed in are already parsed and valid; ranges are already within the
  file (``0 <= offset``, ``offset + length <= cap.size``).
- vdrive calls raise :class:`~p2pstore.app.errors.VdriveUnavailable` while the
  node has no virtual drive. ``expected_sequence`` (when not None) makes a write
  conditional: if the drive's current sequence number differs, raise
  :class:`~p2pstore.app.errors.Conflict` with code ``sequence-mismatch`` and
  change nothing. Every successful write returns the drive's new sequence number.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from p2pstore.immutable import LiteralCap, ReadCap, VerifyCap
from p2pstore.mutable import MutableCap

from .errors import VdriveUnavailable
from .vpath import VPath

UploadMode = Literal["convergent", "random"]
UPLOAD_MODES: tuple[UploadMode, ...] = ("convergent", "random")
EntryKind = Literal["file", "dir"]
ProgressFn = Callable[[int], None]
"""Called with the number of plaintext bytes processed so far."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    """``cap`` is a read cap or (files of at most 55 bytes) a literal cap;
    ``details`` is backend-specific and JSON-able (e.g. where shares went)."""

    cap: ReadCap | LiteralCap
    size: int
    mode: UploadMode
    details: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"UploadResult({self.cap!r}, size={self.size}, mode={self.mode})"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Health of one file. ``healthy``: all N shares present (and, with ``verified``,
    every byte checked); ``recoverable``: at least k good shares. ``problems`` are
    human-readable lines (never caps); ``repaired`` says a repair ran and succeeded."""

    healthy: bool
    recoverable: bool
    shares_needed: int
    shares_total: int
    shares_good: int
    verified: bool
    problems: tuple[str, ...] = ()
    repair_attempted: bool = False
    repaired: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def unrepaired(
        cls,
        *,
        k: int,
        n: int,
        good: int,
        verified: bool,
        recoverable: bool,
        problems: tuple[str, ...],
        details: Mapping[str, Any] | None = None,
    ) -> CheckReport:
        """A repair was asked for and did not happen (too few good shares, or it
        failed): unhealthy, with the reasons in ``problems``."""
        return cls(False, recoverable, k, n, good, verified, problems, True, False, details or {})


@dataclass(frozen=True, slots=True)
class PeerInfo:
    node_id: str  # base32
    address: str  # host:port as last known
    connected: bool
    last_seen: float | None = None  # unix time
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One name in a vdrive directory. ``cap``/``verify_cap`` are cap strings (None
    for a directory the backend does not expose as a cap); ``mtime`` is unix time."""

    name: str
    kind: EntryKind
    size: int | None
    cap: str | None
    verify_cap: str | None
    mtime: float | None
    mode: int | None = None  # permission bits, where recorded (backup snapshots)

    def __repr__(self) -> str:  # keep caps out of logs
        return f"DirEntry({self.name!r}, {self.kind}, size={self.size})"


@dataclass(frozen=True, slots=True)
class DirListing:
    path: VPath
    entries: tuple[DirEntry, ...]
    sequence: int  # the drive's sequence number the listing was read at


@dataclass(frozen=True, slots=True)
class NewEntry:
    """One entry of a directory object made whole (``vdrive_make_dir``): a name, a
    file or directory cap string, and what a backup records (mtime, mode)."""

    name: str
    kind: EntryKind
    cap: str
    mtime: float | None = None
    mode: int | None = None

    def __repr__(self) -> str:  # keep caps out of logs
        return f"NewEntry({self.name!r}, {self.kind})"


OpId = bytes | None


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    applied: bool
    sequence: int  # what the change produced; the drive's current sequence if not made


class VdriveOps(Protocol):
    """The ``vdrive_*`` half of :class:`Application`: what a vdrive component provides
    (``p2pstore.vdrive``'s backend, or the in-memory ``MemoryVdrive``)."""

    async def vdrive_list(self, path: VPath) -> DirListing: ...
    async def vdrive_stat(self, path: VPath) -> DirEntry:
        """The entry at ``path`` (the root: a dir entry named "")."""
        ...

    # Each change takes an optional ``op_id`` (8-32 random bytes from the requester):
    # a change whose id was already made is answered again, not redone, and
    # ``vdrive_outcome`` tells a requester that lost its answer what became of it.
    async def vdrive_mkdir(
        self, path: VPath, *, parents: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int: ...
    async def vdrive_link(
        self,
        path: VPath,
        cap: ReadCap | LiteralCap,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int: ...
    async def vdrive_unlink(
        self, path: VPath, *, recursive: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int: ...
    async def vdrive_rename(
        self,
        src: VPath,
        dst: VPath,
        *,
        replace: bool,
        expected_sequence: int | None,
        op_id: OpId = None,
    ) -> int:
        """Within one drive only (a cross-drive move is ``link`` then ``unlink``)."""
        ...

    async def vdrive_outcome(self, drive: str, op_id: bytes) -> ChangeOutcome:
        """Was the change with ``op_id`` made on ``drive``? If not, it never will be."""
        ...


class Application(VdriveOps, Protocol):
    """What the HTTP API needs from the node. See the module docstring."""

    async def upload(
        self,
        chunks: AsyncIterator[bytes],
        *,
        size_hint: int | None,
        mode: UploadMode,
        progress: ProgressFn | None = None,
    ) -> UploadResult: ...

    async def upload_file(
        self,
        fd: int,
        size: int,
        *,
        mode: UploadMode,
        progress: ProgressFn | None = None,
    ) -> UploadResult:
        """Upload exactly ``size`` bytes of the open regular file ``fd`` (read with
        ``pread`` from offset 0, as many times as the mode needs: no spool). A file
        that ends early raises ``Conflict`` ``file-changed``; the caller checks for
        other changes (``fstat`` before and after)."""
        ...

    async def download(
        self, cap: ReadCap | LiteralCap, offset: int, length: int
    ) -> AsyncIterator[bytes]: ...

    async def info(self, cap: ReadCap | VerifyCap) -> Mapping[str, Any]:
        """Backend facts about a stored file (JSON-able), e.g. shares found where."""
        ...

    async def check(
        self, cap: ReadCap | VerifyCap, *, verify: bool, repair: bool
    ) -> CheckReport: ...

    async def status(self) -> Mapping[str, Any]:
        """JSON-able node status. Suggested keys: node_id, nickname, backend,
        listen_host, listen_port, peers_known, peers_connected, storage_used."""
        ...

    async def peers(self) -> list[PeerInfo]: ...

    async def pin(self, cap: ReadCap | VerifyCap | MutableCap, label: str) -> Mapping[str, Any]:
        """Keep the file alive from this node (docs/maintenance.md, "Pins"): renew
        its lease now and in every later round (a mutable file: its root and latest
        version). Unrecoverable if no share exists."""
        ...

    async def unpin(self, cap: ReadCap | VerifyCap | MutableCap) -> None: ...
    async def pin_list(self) -> list[Mapping[str, Any]]: ...


def vdrive_extra(app: Any, *names: str) -> Any | None:
    """The object that has every one of the optional vdrive methods ``names``
    (directory caps, whole directory objects: the in-memory vdrive has none): the
    backend itself or its ``vdrive`` component; None if neither has them all."""
    for obj in (app, getattr(app, "vdrive", None)):
        if obj is not None and all(hasattr(obj, n) for n in names):
            return obj
    return None


class DelegateVdrive:
    """Mixin for file backends that hand every vdrive call to an optional component in
    ``self.vdrive``; without one each call raises ``vdrive-unavailable`` (503)."""

    vdrive: VdriveOps | None = None

    def _vd(self) -> VdriveOps:
        if self.vdrive is None:
            raise VdriveUnavailable()
        return self.vdrive

    async def vdrive_list(self, path: VPath) -> DirListing:
        return await self._vd().vdrive_list(path)

    async def vdrive_stat(self, path: VPath) -> DirEntry:
        return await self._vd().vdrive_stat(path)

    async def vdrive_mkdir(
        self, path: VPath, *, parents: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        return await self._vd().vdrive_mkdir(
            path, parents=parents, expected_sequence=expected_sequence, op_id=op_id
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
        return await self._vd().vdrive_link(
            path, cap, replace=replace, expected_sequence=expected_sequence, op_id=op_id
        )

    async def vdrive_unlink(
        self, path: VPath, *, recursive: bool, expected_sequence: int | None, op_id: OpId = None
    ) -> int:
        return await self._vd().vdrive_unlink(
            path, recursive=recursive, expected_sequence=expected_sequence, op_id=op_id
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
        return await self._vd().vdrive_rename(
            src, dst, replace=replace, expected_sequence=expected_sequence, op_id=op_id
        )

    async def vdrive_outcome(self, drive: str, op_id: bytes) -> ChangeOutcome:
        return await self._vd().vdrive_outcome(drive, op_id)
