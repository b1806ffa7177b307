"""A real, working :class:`~p2pstore.app.contract.Application` that keeps shares in memory.

Files are encrypted and erasure-coded with the real :mod:`p2pstore.immutable`
encoder into N shares held in a dict; downloads, checks and repairs read them back
through the real verifier (``read_plaintext``, ``check_shares``,
``regenerate_shares``), so the API and CLI are exercised end to end against true
caps. Used by tests and by the development server (``python -m p2pstore.testing.dev_server``)
for the shell and web-UI work.
Production nodes use the grid backend: nothing here is persistent or networked.

Invariants:
- bounded memory: at most ``max_bytes`` of shares in total; an upload that would
  exceed it fails with ``507 insufficient-storage`` and stores nothing; convergent
  uploads spool the plaintext to a temporary file (two passes: key, then encode);
- an upload is stored only when complete: if the body iterator raises or the call
  is cancelled, nothing changes;
- CPU work (encoding, decoding, verifying) runs in worker threads, never on the
  event loop;
- test helpers :meth:`MemoryApplication.corrupt_share` / :meth:`delete_share` damage
  stored shares so check/verify/repair are tested for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from p2pstore.app.contract import (
    CheckReport,
    DelegateVdrive,
    PeerInfo,
    ProgressFn,
    UploadMode,
    UploadResult,
)
from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Conflict,
    GridError,
    InsufficientStorage,
    NotFound,
    Unrecoverable,
)
from p2pstore.app.keeper import PinBook, PinOps
from p2pstore.grid import FileShrank, fd_source
from p2pstore.immutable import (
    HEADER_SIZE,
    CapError,
    ConvergenceHasher,
    EncodedSegment,
    Encoder,
    EncodeResult,
    EncodingParams,
    ImmutableError,
    InconsistentEncodingError,
    LiteralCap,
    MemoryShares,
    NotEnoughSharesError,
    ReadCap,
    VerifyCap,
    check_shares,
    new_convergence_secret,
    read_plaintext,
    regenerate_shares,
)
from p2pstore.immutable.encoder import ShareTrailer
from p2pstore.mutable import VerifyCap as MutableVerifyCap

from .memory_vdrive import MemoryVdrive

BATCH = 1 << 20  # plaintext handed to the encoder per worker-thread call
SPOOL_IN_MEMORY = 8 << 20  # convergent uploads: spool to disk beyond this
DEFAULT_MAX_BYTES = 1 << 30


@dataclass
class _Stored:
    k: int
    n: int
    shares: dict[int, bytes]


class _ShareBuilder:
    """Accumulates N shares from encoder output, counting bytes against a budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.shares: list[bytearray] = []
        self.used = 0

    def _grow(self, n: int) -> None:
        self.used += n
        if self.used > self.budget:
            raise InsufficientStorage("the in-memory store is full")

    def segments(self, segs: list[EncodedSegment] | tuple[EncodedSegment, ...]) -> None:
        for seg in segs:
            if not self.shares:
                self.shares = [bytearray(HEADER_SIZE) for _ in seg.blocks]
                self._grow(HEADER_SIZE * len(seg.blocks))
            for i, block in enumerate(seg.blocks):
                self._grow(len(block))
                self.shares[i] += block

    def trailers(self, trailers: tuple[ShareTrailer, ...]) -> dict[int, bytes]:
        for t in trailers:
            self._grow(len(t.trailer))
            self.shares[t.share_number] += t.trailer
            self.shares[t.share_number][:HEADER_SIZE] = t.header
        return {i: bytes(s) for i, s in enumerate(self.shares)}


def _map_immutable(e: ImmutableError) -> AppError:
    if isinstance(e, NotEnoughSharesError):
        return Unrecoverable(f"the file cannot be recovered: {e}")
    if isinstance(e, CapError):
        return BadRequest(f"the cap does not match the stored file: {e}", code="cap-mismatch")
    if isinstance(e, InconsistentEncodingError):
        return GridError(str(e), code="integrity-error")
    return GridError(f"cannot read the file: {e}")


_END = object()


def _next_or_end(it: Iterator[bytes]) -> bytes | object:
    return next(it, _END)


class MemoryApplication(PinOps, DelegateVdrive):
    """See the module docstring. ``node_info``/``peer_source`` let a hosting service
    add its own status fields and peer list."""

    def __init__(
        self,
        *,
        params: EncodingParams | None = None,
        convergence_secret: bytes | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        vdrive: MemoryVdrive | None = None,
        node_info: Callable[[], Mapping[str, Any]] | None = None,
        peer_source: Callable[[], list[PeerInfo]] | None = None,
    ) -> None:
        self.params = params or EncodingParams()
        self._secret = convergence_secret or new_convergence_secret()
        self.max_bytes = max_bytes
        self.vdrive = vdrive
        self.node_info = node_info
        self.peer_source = peer_source
        self._files: dict[bytes, _Stored] = {}
        self.pin_book = PinBook(None)  # pins kept in memory
        self._lock = asyncio.Lock()  # serializes commits and repairs

    def __repr__(self) -> str:
        return f"MemoryApplication(files={len(self._files)}, bytes={self.bytes_used})"

    @property
    def bytes_used(self) -> int:
        return sum(len(s) for f in self._files.values() for s in f.shares.values())

    # -- upload ------------------------------------------------------------------
    async def upload_file(
        self, fd: int, size: int, *, mode: UploadMode, progress: ProgressFn | None = None
    ) -> UploadResult:
        try:
            return await self.upload(
                aiter(fd_source(fd, size)()), size_hint=size, mode=mode, progress=progress
            )
        except FileShrank as e:
            raise Conflict(f"{e}; nothing was linked", code="file-changed") from None

    async def upload(
        self,
        chunks: AsyncIterator[bytes],
        *,
        size_hint: int | None,
        mode: UploadMode,
        progress: ProgressFn | None = None,
    ) -> UploadResult:
        budget = self.max_bytes - self.bytes_used
        if size_hint is not None and size_hint * self.params.n // self.params.k > budget:
            raise InsufficientStorage(
                f"a {size_hint}-byte file does not fit in the in-memory store ({budget} bytes free)"
            )
        builder = _ShareBuilder(budget)
        if mode == "convergent":
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
                hasher = ConvergenceHasher(self._secret, self.params)
                async for chunk in chunks:
                    hasher.update(chunk)
                    spool.write(chunk)
                    self._check_raw(hasher.size, budget)
                    if progress:
                        progress(hasher.size)
                encoder = Encoder(hasher.key(), self.params, expected_size=hasher.size)
                spool.seek(0)
                result = await asyncio.to_thread(self._encode_spool, encoder, spool, builder)
        elif mode == "random":
            encoder = Encoder.with_random_key(self.params)
            batch = bytearray()
            done = 0
            async for chunk in chunks:
                batch += chunk
                done += len(chunk)
                self._check_raw(done, budget)
                if len(batch) >= BATCH:
                    segs = await asyncio.to_thread(encoder.feed, batch)
                    builder.segments(segs)
                    batch = bytearray()
                if progress:
                    progress(done)
            if batch:
                builder.segments(await asyncio.to_thread(encoder.feed, batch))
            result = await asyncio.to_thread(encoder.finish)
            builder.segments(result.segments)
        else:
            raise BadRequest(f"unknown upload mode {mode!r}", code="bad-mode")
        cap = result.cap
        assert not isinstance(cap, VerifyCap)  # a keyed Encoder makes read caps
        if isinstance(cap, ReadCap):
            shares = builder.trailers(result.trailers)
            async with self._lock:
                if self.bytes_used + sum(map(len, shares.values())) > self.max_bytes:
                    raise InsufficientStorage("the in-memory store is full")
                self._files[cap.storage_index] = _Stored(cap.k, cap.n, shares)
        details: dict[str, Any] = {"backend": "memory"}
        if isinstance(cap, ReadCap):
            details["shares_placed"] = cap.n
        return UploadResult(cap, cap.size, mode, details)

    def _check_raw(self, size: int, budget: int) -> None:
        if size * self.params.n // self.params.k > budget:
            raise InsufficientStorage(
                f"the in-memory store is full ({self.max_bytes} bytes of shares at most)"
            )

    @staticmethod
    def _encode_spool(encoder: Encoder, spool: IO[bytes], builder: _ShareBuilder) -> EncodeResult:
        while block := spool.read(BATCH):
            builder.segments(encoder.feed(block))
        result = encoder.finish()
        builder.segments(result.segments)
        return result

    # -- download ----------------------------------------------------------------
    def _stored(self, cap: ReadCap | VerifyCap) -> _Stored:
        stored = self._files.get(cap.storage_index)
        if stored is None:
            raise NotFound("no shares of this file were found", code="file-not-found")
        return stored

    async def download(
        self, cap: ReadCap | LiteralCap, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        if isinstance(cap, LiteralCap):
            return _one(cap.data[offset : offset + length])
        shares = dict(self._stored(cap).shares)
        gen = read_plaintext(cap, MemoryShares(shares), shares.keys(), offset=offset, length=length)
        try:  # open the shares and verify the first segment before answering
            first = await asyncio.to_thread(_next_or_end, gen)
        except ImmutableError as e:
            raise _map_immutable(e) from None
        return _stream(first, gen)

    # -- info / check / repair ---------------------------------------------------
    async def info(self, cap: ReadCap | VerifyCap) -> Mapping[str, Any]:
        stored = self._stored(cap)
        return {
            "backend": "memory",
            "shares_held": sorted(stored.shares),
            "share_size": max((len(s) for s in stored.shares.values()), default=0),
        }

    async def check(self, cap: ReadCap | VerifyCap, *, verify: bool, repair: bool) -> CheckReport:
        async with self._lock:
            return await self._check_locked(cap, verify=verify, repair=repair)

    async def _check_locked(
        self, cap: ReadCap | VerifyCap, *, verify: bool, repair: bool
    ) -> CheckReport:
        stored = self._files.get(cap.storage_index)
        if stored is None:
            return CheckReport(
                healthy=False,
                recoverable=False,
                shares_needed=cap.k,
                shares_total=cap.n,
                shares_good=0,
                verified=verify,
                problems=("no shares found",),
                repair_attempted=repair,
            )
        shares = dict(stored.shares)
        if verify:
            report = await asyncio.to_thread(check_shares, cap, MemoryShares(shares), range(cap.n))
        else:
            report = {i: (None if i in shares else "missing") for i in range(cap.n)}
        good = sorted(i for i, why in report.items() if why is None)
        problems = tuple(f"share {i}: {why}" for i, why in sorted(report.items()) if why)
        healthy = len(good) == cap.n
        recoverable = len(good) >= cap.k
        if not repair or healthy:
            return CheckReport(
                healthy, recoverable, cap.k, cap.n, len(good), verify, problems, repair, False
            )
        if not recoverable:
            return CheckReport.unrepaired(
                k=cap.k,
                n=cap.n,
                good=len(good),
                verified=verify,
                recoverable=False,
                problems=(*problems, f"cannot repair: need {cap.k} good shares, have {len(good)}"),
            )
        source = MemoryShares({i: shares[i] for i in good})
        try:
            fresh = await asyncio.to_thread(_regenerate, cap, source, good)
        except ImmutableError as e:
            raise _map_immutable(e) from None
        replaced = [i for i in range(cap.n) if i not in good]
        for i in replaced:
            stored.shares[i] = fresh[i]
        return CheckReport(
            healthy=True,
            recoverable=True,
            shares_needed=cap.k,
            shares_total=cap.n,
            shares_good=cap.n,
            verified=verify,
            problems=problems,
            repair_attempted=True,
            repaired=True,
            details={"shares_replaced": replaced},
        )

    # -- node ----------------------------------------------------------------------
    async def status(self) -> Mapping[str, Any]:
        doc: dict[str, Any] = dict(self.node_info() if self.node_info else {})
        doc.setdefault("backend", "memory")
        doc["memory_store"] = {
            "files": len(self._files),
            "bytes_used": self.bytes_used,
            "max_bytes": self.max_bytes,
        }
        doc["vdrive"] = self.vdrive is not None
        return doc

    async def _keep_now(self, vc: VerifyCap | MutableVerifyCap) -> int:
        if isinstance(vc, MutableVerifyCap):
            return 0  # no mutable files in memory
        stored = self._files.get(vc.storage_index)
        return 0 if stored is None else len(stored.shares)

    async def peers(self) -> list[PeerInfo]:
        return list(self.peer_source()) if self.peer_source else []

    # -- test helpers ------------------------------------------------------------
    def stored_shares(self, cap: ReadCap | VerifyCap) -> dict[int, bytes]:
        return dict(self._stored(cap).shares)

    def corrupt_share(self, cap: ReadCap | VerifyCap, share: int, offset: int) -> None:
        stored = self._stored(cap)
        data = bytearray(stored.shares[share])
        data[offset] ^= 0x01
        stored.shares[share] = bytes(data)

    def delete_share(self, cap: ReadCap | VerifyCap, share: int) -> None:
        del self._stored(cap).shares[share]


def _regenerate(
    cap: ReadCap | VerifyCap, source: MemoryShares, good: list[int]
) -> dict[int, bytes]:
    builder = _ShareBuilder(1 << 62)
    for item in regenerate_shares(cap, source, good):
        if isinstance(item, EncodedSegment):
            builder.segments([item])
        else:
            return builder.trailers(item)
    raise GridError("repair produced no trailers")


async def _one(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


async def _stream(first: bytes | object, gen: Iterator[bytes]) -> AsyncIterator[bytes]:
    try:
        item = first
        while isinstance(item, bytes):
            yield item
            try:
                item = await asyncio.to_thread(_next_or_end, gen)
            except ImmutableError as e:
                raise _map_immutable(e) from None
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # still running in a worker thread
                close()
