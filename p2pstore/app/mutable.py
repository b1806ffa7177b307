"""Mutable files for the front ends (docs/mutable.md): create, publish a new version,
resolve the latest version, info and check, over :class:`p2pstore.grid.mutable.MutableFiles`.

The HTTP API, the CLI and the shell reach these through the backend: a backend
that has them (``GridApplication``) mixes in :class:`MutableOperations`; one that
does not (the in-memory test backend) answers ``400 no-mutable-files``.

Invariants:
- A version is read by resolving the cap to the latest version's immutable read
  cap (:meth:`mutable_latest`) and downloading that: everything the immutable
  path verifies is verified.
- Grid failures become :class:`AppError`: no root anywhere -> ``404
  file-not-found``; another writer first -> ``409 mutable-conflict`` (with the
  latest ``sequence`` in the details); too few peers -> ``503 unavailable``; a
  stale or forged latest root -> ``502 integrity-error``.
- Messages never hold caps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pstore.grid import GridLocalError, UploadError
from p2pstore.grid.errors import GridRemoteError
from p2pstore.grid.mutable import (
    MutableBad,
    MutableConflict,
    MutableFiles,
    MutableNotFound,
    MutableUnavailable,
    Published,
)
from p2pstore.immutable import CapError, LiteralCap, ReadCap, VerifyCap, parse_cap
from p2pstore.mutable import (
    MutableCap,
    MutableCapError,
    Version,
    WriteCap,
    is_mutable_cap,
    parse_mutable_cap,
)
from p2pstore.mutable import ReadCap as MutableReadCap
from p2pstore.vdrive.dirnode import MAX_DIR_BYTES, decode_directory
from p2pstore.vdrive.errors import VdriveError

from .contract import CheckReport, ProgressFn
from .errors import AppError, BadRequest, Conflict, GridError, NotFound, Unavailable

NO_MUTABLE = "this node's backend has no mutable files"


class NoMutableFiles(BadRequest):
    default_code = "no-mutable-files"


@dataclass(frozen=True, slots=True)
class MutableResult:
    """A published version: the file's caps, its sequence and the version's size."""

    write_cap: WriteCap
    sequence: int
    size: int
    details: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # keep caps out of logs
        return f"MutableResult(seq={self.sequence}, size={self.size})"


@dataclass(frozen=True, slots=True)
class MutableLatest:
    """The latest version of a mutable file as resolved now."""

    version: ReadCap | LiteralCap | None  # None for a verify cap
    sequence: int
    time: float | None
    size: int | None
    peers: dict[str, Any]

    def __repr__(self) -> str:
        return f"MutableLatest(seq={self.sequence}, size={self.size})"


class MutableOps(Protocol):
    async def mutable_publish(
        self,
        chunks: AsyncIterator[bytes],
        *,
        cap: WriteCap | None,
        size_hint: int | None,
        expected_sequence: int | None = None,
        directory: bool = False,
        progress: ProgressFn | None = None,
    ) -> MutableResult: ...

    async def mutable_latest(self, cap: MutableCap) -> MutableLatest: ...

    async def mutable_check(
        self, cap: MutableCap, *, verify: bool, repair: bool
    ) -> CheckReport: ...


def mutable_backend(backend: Any) -> MutableOps:
    """``backend`` if it has mutable files, else ``400 no-mutable-files``."""
    if getattr(backend, "mutable", None) is None or not hasattr(backend, "mutable_publish"):
        raise NoMutableFiles(NO_MUTABLE)
    return backend  # type: ignore[no-any-return]


def _app_error(e: GridRemoteError) -> AppError:
    if isinstance(e, MutableConflict):
        return Conflict(str(e), code="mutable-conflict", details={"sequence": e.sequence})
    if isinstance(e, MutableNotFound):
        return NotFound(str(e), code="file-not-found")
    if isinstance(e, MutableBad):
        return GridError(str(e), code="integrity-error")
    if isinstance(e, MutableUnavailable):
        return Unavailable(str(e))
    return GridError(str(e)[:500])


@contextlib.contextmanager
def _mapped() -> Any:
    try:
        yield
    except GridRemoteError as e:  # the mutable errors, and any other peer failure
        raise _app_error(e) from None
    except UploadError as e:
        hint = " ([client] shares_happy in the node's p2pstore.toml)"
        raise Unavailable(str(e)[:2000] + hint, code="not-enough-peers") from None
    except GridLocalError as e:
        raise BadRequest(str(e)[:500]) from None


class MutableOperations:
    """Mixin for :class:`p2pstore.app.grid.GridApplication` (see the module docstring)."""

    mutable: MutableFiles[Any]
    _operation: Callable[[], contextlib.AbstractAsyncContextManager[None]]

    #: the immutable check of GridApplication (the latest version is one)
    check: Callable[..., Awaitable[CheckReport]]

    async def mutable_publish(
        self,
        chunks: AsyncIterator[bytes],
        *,
        cap: WriteCap | None,
        size_hint: int | None,
        expected_sequence: int | None = None,
        directory: bool = False,
        progress: ProgressFn | None = None,
    ) -> MutableResult:
        mf = self.mutable
        prog = (lambda done, _t: progress(done)) if progress else None
        if directory:  # a live directory's versions are directory objects, nothing else
            chunks = await directory_body(chunks)
        async with self._operation():
            with _mapped():
                if cap is None:
                    cap, pub = await mf.create(
                        chunks, size=size_hint, directory=directory, progress=prog
                    )
                else:
                    pub = await mf.publish(
                        cap,
                        chunks,
                        size=size_hint,
                        expected_sequence=expected_sequence,
                        progress=prog,
                    )
        return MutableResult(cap, pub.version.sequence, pub.version.size, _published(pub))

    async def mutable_latest(self, cap: MutableCap) -> MutableLatest:
        mf = self.mutable
        async with self._operation():
            with _mapped():
                if isinstance(cap, WriteCap | MutableReadCap):
                    v, s = await mf.latest(cap)
                    return _latest(v, s.report())
                s = await mf.latest_root(cap)
        assert s.latest is not None
        return MutableLatest(None, s.latest.sequence, None, None, s.report())

    async def mutable_check(self, cap: MutableCap, *, verify: bool, repair: bool) -> CheckReport:
        """Check the root on the nearest peers and the latest version's shares;
        ``repair`` stores the latest root where it is missing and repairs the version."""
        mf = self.mutable
        async with self._operation():
            with _mapped():
                s = await mf.latest_root(cap)
                spread = await mf.spread(s) if repair and s.stale else 0
        assert s.latest is not None
        problems = [f"peer {p}: no copy of the latest root" for p in s.stale]
        problems += [f"peer {p}: bad root: {why}" for p, why in sorted(s.bad.items())]
        problems += [f"peer {p}: {why}" for p, why in sorted(s.unreachable.items())]
        details: dict[str, Any] = {"mutable": s.report(), "roots_spread": spread}
        if s.latest.verify is None:  # a literal version: the root is all there is
            return CheckReport(
                healthy=not problems or (repair and spread == len(s.stale)),
                recoverable=True,
                shares_needed=1,
                shares_total=1,
                shares_good=1,
                verified=verify,
                problems=tuple(problems),
                repair_attempted=repair and bool(s.stale),
                repaired=repair and spread == len(s.stale),
                details=details,
            )
        vc = parse_cap(s.latest.verify)
        assert isinstance(vc, VerifyCap)
        inner = await self.check(vc, verify=verify, repair=repair)
        roots_ok = not s.stale or (repair and spread == len(s.stale))
        return CheckReport(
            healthy=inner.healthy and roots_ok and not s.bad,
            recoverable=inner.recoverable,
            shares_needed=inner.shares_needed,
            shares_total=inner.shares_total,
            shares_good=inner.shares_good,
            verified=verify,
            problems=tuple(problems) + tuple(inner.problems),
            repair_attempted=inner.repair_attempted or (repair and bool(s.stale)),
            repaired=(inner.repaired or not inner.repair_attempted) and roots_ok,
            details={**details, **inner.details},
        )


async def directory_body(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body of a live directory's version, checked to be a directory object."""
    data = bytearray()
    async for c in chunks:
        data += c
        if len(data) > MAX_DIR_BYTES:
            raise BadRequest(f"a directory object is at most {MAX_DIR_BYTES} bytes")
    try:
        decode_directory(bytes(data))
    except VdriveError as e:
        raise BadRequest(
            f"a live directory's content must be a directory object: {e.message}",
            code="bad-directory",
        ) from None
    return _one(bytes(data))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def entry_version(backend: Any, text: str) -> ReadCap | LiteralCap:
    """What a file entry's cap reads as now: an immutable file's own cap, or the
    latest version of a linked mutable file (``400``/``404``/... as the backend says)."""
    if is_mutable_cap(text):
        try:
            cap = parse_mutable_cap(text)
        except MutableCapError as e:
            raise GridError(
                f"the drive holds an unreadable cap: {e}", code="integrity-error"
            ) from None
        latest = await mutable_backend(backend).mutable_latest(cap)
        if latest.version is None:
            raise BadRequest("a verify cap cannot read a file", code="verify-cap-cannot-read")
        return latest.version
    try:
        parsed = parse_cap(text)
    except CapError:
        raise GridError("the drive holds an unreadable cap", code="integrity-error") from None
    if not isinstance(parsed, ReadCap | LiteralCap):
        raise GridError("the drive holds a cap that cannot be read", code="integrity-error")
    return parsed


def _published(pub: Published) -> dict[str, Any]:
    return {
        "backend": "grid",
        "roots_stored": pub.stored,
        "peers_asked": pub.asked,
        "storage_index": pub.survey.report()["storage_index"],
    }


def _latest(v: Version, report: dict[str, Any]) -> MutableLatest:
    return MutableLatest(v.cap, v.sequence, v.time, v.size, report)
