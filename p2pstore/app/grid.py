"""The local HTTP API's backend on the real grid (``p2pstore.app.contract.Application``).

Uploads go through :class:`p2pstore.grid.Uploader`, downloads through
:class:`p2pstore.grid.Downloader`, check/verify/repair through
:class:`p2pstore.grid.Health`; peers and storage clients are injected
(``find_peers``, ``storage_for``), so the same class runs over QUIC in a node
(:mod:`p2pstore.node.grid_service`) and over the in-process test grid.

Invariants:
- Convergent uploads need the plaintext twice (key, then encoding): the body is
  spooled to a temporary file in ``spool_dir`` (the node's ``state/`` folder), which
  is refused before it would leave less than ``spool_reserve`` bytes free on that
  disk, and deleted when the upload ends whatever happens. Random-key uploads stream
  the body through the encoder in one pass and hold only a few segments.
- An upload that fails, is cancelled, or whose body iterator raises leaves no
  complete share behind (the grid's sender aborts its uploads on every peer).
- Every grid failure becomes a :class:`~p2pstore.app.errors.AppError` with a
  secret-free message: no shares found -> ``404 file-not-found``; fewer than k ->
  ``503 unrecoverable``; an upload that could not reach ``happy`` peers ->
  ``503 unavailable`` (code ``not-enough-peers``).
- :meth:`close` refuses new work (``503 unavailable``) and cancels operations
  still running, then waits for them: open uploads fail cleanly.
- vdrive calls go to an optional vdrive component (:class:`VdriveComponent`, the
  ``vdrive_*`` half of ``Application``); without one they raise
  ``VdriveUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2pstore.app.contract import (
    CheckReport,
    DelegateVdrive,
    PeerInfo,
    ProgressFn,
    UploadMode,
    UploadResult,
    VdriveOps,
)
from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Conflict,
    GridError,
    InsufficientStorage,
    NotFound,
    Unavailable,
    Unrecoverable,
)
from p2pstore.app.keeper import PinOps
from p2pstore.app.mutable import MutableOperations
from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    DownloadError,
    FileShrank,
    GridLocalError,
    Health,
    HealthConfig,
    RepairError,
    UploadConfig,
    Uploader,
    UploadError,
    fd_source,
    file_source,
)
from p2pstore.grid.errors import GridRemoteError
from p2pstore.grid.helper_client import HelpedUploader
from p2pstore.grid.mutable import MutableConfig, MutableFiles, SeenGuard
from p2pstore.grid.peers import FindPeers, StorageFor
from p2pstore.grid.placement import happiness, holdings_of
from p2pstore.grid.quality import QualitySource
from p2pstore.grid.sources import Reopenable
from p2pstore.immutable import (
    CapError,
    EncodingParams,
    ImmutableError,
    LiteralCap,
    ReadCap,
    VerifyCap,
)
from p2pstore.immutable.params import LITERAL_MAX
from p2pstore.mutable import VerifyCap as MutableVerifyCap
from quic_transport.identity import b32encode

log = logging.getLogger(__name__)
SPOOL_CHUNK = 1 << 20
DEFAULT_SPOOL_RESERVE = 64 << 20


# The vdrive half of the API backend; the vdrive package provides one.
VdriveComponent = VdriveOps


_CAP_MISMATCH = "does not match the cap"  # the decoder's words for a foreign extension


def _download_error(e: DownloadError) -> AppError:
    if e.found == 0 and not e.bad:
        return NotFound("no shares of this file were found", code="file-not-found")
    if e.found == 0 and all(_CAP_MISMATCH in why for why in e.bad.values()):
        # shares exist under this storage index, but none belongs to this cap: a cap
        # typed or copied wrongly, not lost data
        return NotFound(
            f"the {len(e.bad)} share(s) found do not belong to this cap: it is probably "
            "mistyped or cut off (copy it again)",
            code="cap-mismatch",
        )
    return Unrecoverable(f"the file cannot be recovered: {e}"[:2000])


def _spread_over(good: Mapping[int, Sequence[str]]) -> int:
    """Happiness of the good shares found: ``{share: [holder b32, ...]}``."""
    return happiness(holdings_of(good))


def _b32(peer: Any) -> str:
    node_id = getattr(peer, "node_id", None)
    return node_id.b32 if node_id is not None else str(peer)


class GridApplication(MutableOperations, PinOps, DelegateVdrive):
    """See the module docstring. ``node_info`` and ``peer_source`` are the hosting
    service's status fields and peer list."""

    def __init__(
        self,
        find_peers: FindPeers[Any],
        storage_for: StorageFor[Any],
        *,
        convergence_secret: bytes,
        spool_dir: Path,
        params: EncodingParams | None = None,
        happy: int = 7,
        node_info: Callable[[], Mapping[str, Any]] | None = None,
        peer_source: Callable[[], Any] | None = None,
        vdrive: VdriveComponent | None = None,
        spool_reserve: int = DEFAULT_SPOOL_RESERVE,
        quality: QualitySource | None = None,
        upload_config: UploadConfig | None = None,
        download_config: DownloadConfig | None = None,
        seen: SeenGuard | None = None,
    ) -> None:
        self.params = params or EncodingParams()
        self.happy = happy
        self._secret = convergence_secret
        self.spool_dir = spool_dir
        self.spool_reserve = spool_reserve
        self.node_info = node_info
        self.peer_source = peer_source
        self.vdrive = vdrive
        self.direct_uploader: Uploader[Any] = Uploader(
            find_peers,
            storage_for,
            upload_config or UploadConfig(happy=happy),
            params=self.params,
            quality=quality,
        )
        #: a HelpedUploader in front of it when the node uses upload helpers
        self.uploader: Uploader[Any] | HelpedUploader[Any] = self.direct_uploader
        self.downloader: Downloader[Any] = Downloader(find_peers, storage_for, download_config)
        self.health: Health[Any] = Health(
            find_peers, storage_for, HealthConfig(happy=happy), quality=quality
        )
        #: mutable files (docs/mutable.md): roots on the N peers nearest each slot
        self.mutable: MutableFiles[Any] = MutableFiles(
            find_peers,
            storage_for,
            self.direct_uploader,
            MutableConfig(replicas=self.params.n),
            seen=seen,
        )
        self._running: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.uploads_done = 0
        self.uploads_failed = 0

    def __repr__(self) -> str:
        return f"GridApplication(params={self.params.k}-of-{self.params.n}, happy={self.happy})"

    # -- lifecycle -----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _operation(self) -> AsyncIterator[None]:
        if self._closed:
            raise Unavailable("the node is stopping")
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._running.discard(task)

    async def close(self) -> None:
        """Refuse new work, cancel what still runs (open uploads fail), wait for it."""
        self._closed = True
        tasks = [t for t in self._running if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- upload --------------------------------------------------------------------
    async def upload(
        self,
        chunks: AsyncIterator[bytes],
        *,
        size_hint: int | None,
        mode: UploadMode,
        progress: ProgressFn | None = None,
    ) -> UploadResult:
        async def convergent() -> Any:
            return await self._upload_convergent(chunks, size_hint, progress)

        return await self._upload(convergent, chunks, size_hint, mode, progress)

    async def upload_file(
        self, fd: int, size: int, *, mode: UploadMode, progress: ProgressFn | None = None
    ) -> UploadResult:
        """A local file read in place: both convergent passes ``pread`` it, no spool."""
        source = fd_source(fd, size)

        async def convergent() -> Any:
            return await self.uploader.upload_convergent(
                source,
                self._secret,
                progress=(lambda done, _t: progress(done)) if progress else None,
            )

        return await self._upload(convergent, source(), size, mode, progress, source)

    async def _upload(
        self,
        convergent: Callable[[], Awaitable[Any]],
        chunks: AsyncIterable[bytes],
        size_hint: int | None,
        mode: UploadMode,
        progress: ProgressFn | None,
        reopenable: Reopenable | None = None,
    ) -> UploadResult:
        async with self._operation():
            try:
                if mode == "convergent":
                    res = await convergent()
                elif mode == "random":
                    res = await self._upload_random(chunks, size_hint, progress, reopenable)
                else:
                    raise BadRequest(f"unknown upload mode {mode!r}", code="bad-mode")
            except UploadError as e:
                self.uploads_failed += 1
                hint = " ([client] shares_happy in the node's p2pstore.toml)"
                raise Unavailable(str(e)[:2000] + hint, code="not-enough-peers") from None
            except FileShrank as e:
                self.uploads_failed += 1
                raise Conflict(f"{e}; nothing was linked", code="file-changed") from None
            except GridLocalError as e:
                self.uploads_failed += 1
                raise BadRequest(str(e)[:500]) from None
            except BaseException:
                self.uploads_failed += 1
                raise
            self.uploads_done += 1
            details: dict[str, Any] = {"backend": "grid"}
            if isinstance(res.cap, ReadCap):
                details.update(
                    happiness=res.happiness,
                    shares_sent=res.shares_sent,
                    shares_present=res.shares_present,
                    peers_found=res.peers_found,
                    placements={str(s): _b32(p) for s, p in sorted(res.placements.items())},
                )
            if res.helper is not None:  # docs/helper.md
                details["helper"] = res.helper
            if res.helper_failures:
                details["helper_failures"] = list(res.helper_failures)
            return UploadResult(res.cap, res.size, mode, details)

    async def _upload_random(
        self,
        chunks: AsyncIterable[bytes],
        size_hint: int | None,
        progress: ProgressFn | None,
        reopenable: Reopenable | None,
    ) -> Any:
        on = (lambda done, _t: progress(done)) if progress else None
        up = self.uploader
        small = size_hint is not None and size_hint <= LITERAL_MAX
        if isinstance(up, HelpedUploader) and up.wanted() and not small:
            # through a helper (docs/helper.md): read again after a failed helper, so
            # a body is spooled first (a local file is read in place)
            async def helped(source: Reopenable, size: int) -> Any:
                return await up.upload_random_from(source, size, progress=on)

            async def direct(chunks: AsyncIterable[bytes]) -> Any:
                log.info("upload: no room to spool it for a helper; sending it directly")
                return await up.upload_random(chunks, size=size_hint, progress=on)

            if reopenable is not None and size_hint is not None:
                return await helped(reopenable, size_hint)
            return await self._spooled(chunks, size_hint, helped, full=direct)
        return await up.upload_random(chunks, size=size_hint, progress=on)

    async def _upload_convergent(
        self, chunks: AsyncIterable[bytes], size_hint: int | None, progress: ProgressFn | None
    ) -> Any:
        async def convergent(source: Reopenable, _size: int) -> Any:
            # progress over the encoding pass (the second); spooling consumed the
            # body at network speed
            return await self.uploader.upload_convergent(
                source,
                self._secret,
                progress=(lambda done, _t: progress(done)) if progress else None,
            )

        return await self._spooled(chunks, size_hint, convergent)

    async def _spooled(
        self,
        chunks: AsyncIterable[bytes],
        size_hint: int | None,
        then: Callable[[Reopenable, int], Awaitable[Any]],
        full: Callable[[AsyncIterable[bytes]], Awaitable[Any]] | None = None,
    ) -> Any:
        """Write the body to a spool file (keeping the free-space reserve), then
        ``then(source over it, its size)``; the spool is deleted afterwards. When
        the reserve would be crossed: ``full(the whole body)`` (what was spooled,
        then the rest) if given, else :class:`InsufficientStorage`."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".spool", dir=self.spool_dir)
        path = Path(name)
        rest = aiter(chunks)
        pending = bytearray()

        async def whole() -> AsyncIterator[bytes]:
            async for c in file_source(str(path))():
                yield c
            if pending:
                yield bytes(pending)
            async for c in rest:
                yield c

        try:
            with os.fdopen(fd, "wb") as f:
                written = 0
                try:
                    if size_hint is not None:
                        self._check_spool_space(size_hint, 0)
                    async for chunk in rest:
                        pending += chunk
                        written += len(chunk)
                        if len(pending) >= SPOOL_CHUNK:
                            self._check_spool_space(len(pending), written)
                            await asyncio.to_thread(f.write, pending)
                            pending.clear()
                    if pending:
                        self._check_spool_space(len(pending), written)
                        await asyncio.to_thread(f.write, pending)
                        pending.clear()
                except InsufficientStorage:
                    if full is None:
                        raise
                    f.flush()
                    return await full(whole())
            return await then(file_source(str(path)), written)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def _check_spool_space(self, more: int, so_far: int) -> None:
        free = shutil.disk_usage(self.spool_dir).free
        if free - more < self.spool_reserve:
            raise InsufficientStorage(
                f"not enough free disk to spool the upload at {so_far} bytes "
                f"({free} bytes free, {self.spool_reserve} kept in reserve); "
                "a random-key upload (mode=random) needs none, unless it goes through an "
                "upload helper"
            )

    # -- download ------------------------------------------------------------------
    async def download(
        self, cap: ReadCap | LiteralCap, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        if isinstance(cap, LiteralCap):
            return _one(cap.data[offset : offset + length])
        async with self._operation():
            it = self.downloader.read(cap, offset=offset, length=length).__aiter__()
            try:  # find k shares and verify the first segment before answering
                first = await it.__anext__() if length else b""
            except StopAsyncIteration:
                first = b""
            except DownloadError as e:
                await _aclose(it)
                raise _download_error(e) from None
            except CapError as e:
                await _aclose(it)
                raise BadRequest(
                    f"the cap does not match the stored file: {e}", code="cap-mismatch"
                ) from None
            except ImmutableError as e:
                await _aclose(it)
                raise GridError(f"cannot read the file: {e}", code="integrity-error") from None
        return self._stream(first, it)

    async def _stream(self, first: bytes, it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async with self._operation():
            try:
                if first:
                    yield first
                async for chunk in it:
                    yield chunk
            except DownloadError as e:
                raise _download_error(e) from None
            finally:
                await _aclose(it)

    # -- info / check / repair -----------------------------------------------------
    async def info(self, cap: ReadCap | VerifyCap) -> Mapping[str, Any]:
        async with self._operation():
            res = await self.health.check(cap)
        if not res.shares:
            raise NotFound("no shares of this file were found", code="file-not-found")
        return {
            "backend": "grid",
            "storage_index": b32encode(cap.storage_index),
            "k": cap.k,
            "n": cap.n,
            "size": cap.size,
            "shares": {str(s): list(p) for s, p in sorted(res.shares.items())},
            "shares_found": len(res.shares),
            "happiness": res.happiness,
            "peers_asked": res.peers_asked,
            "unreachable": dict(res.unreachable),
        }

    async def check(self, cap: ReadCap | VerifyCap, *, verify: bool, repair: bool) -> CheckReport:
        async with self._operation():
            if verify:
                v = await self.health.verify(cap)
                good = v.good_shares
                problems = [
                    f"share {s} on {p}: {why}" for (s, p), why in sorted(v.copies.items()) if why
                ]
                unreachable = v.check.unreachable
            else:
                c = await self.health.check(cap)
                good = c.shares
                problems = []
                unreachable = c.unreachable
            problems += [f"share {s}: missing" for s in range(cap.n) if s not in good]
            problems += [f"peer {p}: {why}" for p, why in sorted(unreachable.items())]
            spread = _spread_over(good)
            if spread < self.happy:  # health is the configured happiness too
                problems.append(
                    f"shares on {spread} distinct peers, fewer than shares_happy = {self.happy}"
                )
            healthy = len(good) == cap.n and spread >= self.happy
            recoverable = len(good) >= cap.k
            details: dict[str, Any] = {"shares": {str(s): list(p) for s, p in sorted(good.items())}}
            if not repair or healthy:
                return CheckReport(
                    healthy,
                    recoverable,
                    cap.k,
                    cap.n,
                    len(good),
                    verify,
                    tuple(problems),
                    repair,
                    False,
                    details,
                )
            return await self._repair(cap, verify, good, problems, details)

    async def _repair(
        self,
        cap: ReadCap | VerifyCap,
        verify: bool,
        good: Mapping[int, Sequence[str]],
        problems: list[str],
        details: dict[str, Any],
    ) -> CheckReport:
        """The repair half of :meth:`check` (inside its operation)."""

        def unrepaired(why: str, recoverable: bool) -> CheckReport:
            problems.append(why)
            return CheckReport.unrepaired(
                k=cap.k,
                n=cap.n,
                good=len(good),
                verified=verify,
                recoverable=recoverable,
                problems=tuple(problems),
                details=details,
            )

        if len(good) < cap.k:
            return unrepaired(f"cannot repair: need {cap.k} good shares, have {len(good)}", False)
        try:
            r = await self.health.repair(cap, verify=verify)
        except RepairError as e:
            return unrepaired(f"repair failed: {e.reason}", True)
        failed = {s: why for s, why in r.failed.items()}
        details["repaired"] = {str(s): _b32(p) for s, p in sorted(r.repaired.items())}
        details["repair_failed"] = {str(s): why for s, why in sorted(failed.items())}
        details["happiness"] = r.happiness
        now_good = len(good) + len(r.repaired)
        problems += [f"share {s}: repair failed: {why}" for s, why in sorted(failed.items())]
        return CheckReport(
            healthy=now_good >= cap.n and not failed and r.happiness >= self.happy,
            recoverable=True,
            shares_needed=cap.k,
            shares_total=cap.n,
            shares_good=min(now_good, cap.n),
            verified=verify,
            problems=tuple(problems),
            repair_attempted=True,
            repaired=not failed,
            details=details,
        )

    # -- node ------------------------------------------------------------------------
    async def status(self) -> Mapping[str, Any]:
        doc: dict[str, Any] = dict(self.node_info() if self.node_info else {})
        doc.setdefault("backend", "grid")
        doc["encoding"] = {
            "shares_needed": self.params.k,
            "shares_total": self.params.n,
            "shares_happy": self.happy,
            "segment_size": self.params.segment_size,
        }
        doc["uploads"] = {
            "done": self.uploads_done,
            "failed": self.uploads_failed,
            "running": len(self._running),
        }
        doc["vdrive"] = self.vdrive is not None
        return doc

    async def _keep_now(self, vc: VerifyCap | MutableVerifyCap) -> int:
        if isinstance(vc, MutableVerifyCap):
            try:
                answers = await self.mutable.renew(vc, self.health.renew)
            except GridRemoteError:
                return 0  # no root found: nothing to keep
        else:
            answers = await self.health.renew(vc)
        return sum(1 for why in answers.values() if why is None)

    async def peers(self) -> list[PeerInfo]:
        if self.peer_source is None:
            return []
        got = self.peer_source()
        if asyncio.iscoroutine(got):
            got = await got
        out: Sequence[PeerInfo] = got
        return list(out)


async def _aclose(it: AsyncIterator[bytes]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data
