"""Upload helper, the serving side (docs/helper.md).

A client behind a slow uplink encrypts a file and sends its ciphertext here once;
this node erasure codes it and places the shares (``Uploader.upload_ciphertext``).
The helper never has the key or the plaintext, and it returns no cap: the client
computed the encoding itself and verifies the placed shares on the grid before it
trusts the upload (:mod:`p2pstore.grid.helper_client`).

Invariants:
- One spool per (caller, storage index): ``<dir>/<caller>-<si>.ct`` with its
  parameters in ``.json``. Ciphertext arrives in order: a push must start at the
  spooled length (else :class:`HelperError` ``helper-offset``), so an interrupted
  upload resumes where it stopped. A spool unused for ``keep_partial`` seconds is
  deleted; a spool is deleted once its shares are placed.
- Only the helper's own encoding parameters are accepted (the cost of encoding and
  placing is the helper's; ``bad-request`` otherwise).
- Limits, each refused with its own code before any byte is spooled: callers not in
  ``accept`` (when set) ``helper-refused``; more than ``max_uploads`` spools, or
  than ``MAX_PER_CALLER`` of one caller, ``helper-busy`` (a caller at its limit
  replaces its own oldest spool; a full helper first drops a spool idle for
  ``IDLE_EVICT`` seconds); more than ``max_bytes_per_day`` bytes a
  UTC day ``helper-quota``; less than ``reserve`` bytes of free disk ``helper-full``.
- ``start`` first asks the peers nearest the storage index which shares they hold:
  a file the grid already holds happily is answered ``present`` and nothing is sent.
- Placement streams: from ``start`` on, a task encodes and places each segment as
  its ciphertext reaches the spool, so the shares are on the grid soon after the last
  byte. It waits for the caller's pushes (resumed ones included) up to
  ``STREAM_STALL`` seconds at a time; a stream that stalls or fails is given up
  (the storage peers' unfinished uploads aborted), and ``finish`` then places the
  complete spool in one pass. At most ``MAX_STREAMS`` streams per spool.
- At most one ``finish`` runs per spool; a failed placement keeps the spool, so the
  client can ask again without sending anything, up to ``MAX_FINISH_ATTEMPTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic

from p2pstore.base.tasks import TaskOwner
from p2pstore.immutable import EncodingParams
from p2pstore.immutable.errors import ParameterError
from p2pstore.immutable.params import LITERAL_MAX, MAX_FILE_SIZE
from quic_transport.identity import NodeId, b32encode

from .errors import GridLocalError, UploadError
from .peers import P, describe
from .placement import happiness, holdings_of
from .regenerate import list_existing
from .sources import Reopenable, file_source
from .upload import Uploader, UploadResult

log = logging.getLogger(__name__)

DAY = 86400.0
#: ciphertext gathered per spool write
BATCH = 1 << 20
#: spools one caller may keep at once
MAX_PER_CALLER = 2
#: a full helper drops a spool untouched this long (seconds) to take a new upload
IDLE_EVICT = 600.0
#: placements of one spool (each sends N/k x its size); then it is dropped
MAX_FINISH_ATTEMPTS = 3
#: a streamed placement waits this long (seconds) for more ciphertext, then gives up
STREAM_STALL = 120.0
#: streamed placements of one spool (each may send N/k x what had arrived)
MAX_STREAMS = 2


@dataclass(frozen=True, slots=True)
class HelperConfig:
    enabled: bool = False
    #: spools (uploads in progress or waiting to resume) at once
    max_uploads: int = 4
    #: ciphertext bytes accepted per UTC day, from all callers together
    max_bytes_per_day: int = 50 * 10**9
    #: node IDs (raw) allowed to use this helper; None: any peer of the grid
    accept: frozenset[bytes] | None = None
    #: seconds an unfinished upload is kept for its caller to resume
    keep_partial: float = 2 * DAY
    #: free disk the spools never take
    reserve: int = 1 << 30


class HelperError(Exception):
    """A refusal or failure the client is told about: ``code`` and ``message``
    (docs/helper.md, "Errors"); ``have`` is the spooled length where it matters."""

    def __init__(self, code: str, message: str, *, have: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.have = have


@dataclass(slots=True)
class _Spool:
    path: Path
    params: EncodingParams
    size: int
    have: int
    lock: asyncio.Lock
    attempts: int = 0  # placements tried (finish)
    #: set whenever ``have`` grows (the streamed placement waits on it)
    grown: asyncio.Event = field(default_factory=asyncio.Event)
    #: the streamed placement; its result is None when it was given up
    stream: asyncio.Task[UploadResult[Any] | None] | None = None
    streams: int = 0  # streamed placements started
    #: bytes of this spool counted against the day's quota (a stream counts them all);
    #: never below ``have``
    charged: int = 0
    #: when the last ciphertext was received (``time.monotonic``), spooled or not yet
    heard: float = 0.0


class HelperService(Generic[P]):
    def __init__(
        self,
        directory: Path,
        uploader: Uploader[P],
        config: HelperConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.uploader = uploader
        self.config = config
        self.clock = clock
        self._spools: dict[str, _Spool] = {}
        self._day = -1
        self.bytes_today = 0
        self.uploads_placed = 0
        self.uploads_present = 0
        self.uploads_failed = 0
        self.bytes_received = 0
        self._loaded = False
        self._tasks = TaskOwner()  # the streamed placements
        self._closed = False

    def __repr__(self) -> str:
        return f"HelperService({self.directory}, spools={len(self._spools)})"

    # -- public operations (the RPC adapter calls these as the verified caller) ------
    def status(self, caller: NodeId) -> dict[str, Any]:
        self._load()
        return {
            "enabled": self.config.enabled,
            "accepts": self._accepts(caller),
            "uploads": len(self._spools),
            "max_uploads": self.config.max_uploads,
            "bytes_today": self._today(),
            "max_bytes_per_day": self.config.max_bytes_per_day,
        }

    async def start(
        self, caller: NodeId, si: bytes, params: EncodingParams, size: int
    ) -> dict[str, Any]:
        """``{"state": "present"}`` or ``{"state": "send", "have": spooled bytes}``."""
        self._check_caller(caller)
        if not LITERAL_MAX < size <= MAX_FILE_SIZE:
            raise HelperError("bad-request", f"size {size} cannot be uploaded through a helper")
        own = self.uploader.params
        if params != own:  # the cost of an encoding is the helper's: only its own
            raise HelperError(
                "bad-request",
                f"this helper encodes {own.k}-of-{own.n} with {own.segment_size}-byte segments",
            )
        self._load()
        self._sweep()
        key = self._key(caller, si)
        self._replace_if_changed(key, size)
        if await self._present(si, params):
            spool = self._spools.get(key)
            if spool is not None and not spool.lock.locked():
                self._drop(key)
            self.uploads_present += 1
            return {"state": "present"}
        # from here to the new spool's entry nothing awaits: parallel starts see it
        self._replace_if_changed(key, size)
        spool = self._spools.get(key)
        if spool is None:
            mine = sorted(k for k in self._spools if k.startswith(caller.b32))
            if len(mine) >= MAX_PER_CALLER and not self._evict_idle(mine, None):
                raise HelperError("helper-busy", f"you have {len(mine)} uploads in progress here")
            if len(self._spools) >= self.config.max_uploads and not self._evict_idle(
                list(self._spools), IDLE_EVICT
            ):
                raise HelperError("helper-busy", f"{len(self._spools)} uploads in progress")
            self._check_space(size + sum(s.size - s.have for s in self._spools.values()))
            spool = self._create(key, params, size)
        self._stream(key, si, spool)
        return {"state": "send", "have": spool.have}

    def _replace_if_changed(self, key: str, size: int) -> None:
        """A spool of another size under this key (the caller's file changed) is
        dropped; one in use is refused."""
        spool = self._spools.get(key)
        if spool is not None and spool.size != size:
            if spool.lock.locked():
                raise HelperError("helper-busy", "this upload is being sent or placed")
            self._drop(key)

    async def push(
        self, caller: NodeId, si: bytes, offset: int, chunks: AsyncIterable[bytes]
    ) -> int:
        """Append ciphertext at ``offset`` (the spooled length); returns the new length."""
        self._check_caller(caller)
        spool = self._spools.get(self._key(caller, si))
        if spool is None:
            raise HelperError("helper-unknown", "no upload of this file started here")
        if spool.lock.locked():
            raise HelperError("helper-busy", "this upload is already being sent or placed")
        async with spool.lock:
            if offset != spool.have:
                raise HelperError(
                    "helper-offset", f"have {spool.have} bytes, not {offset}", have=spool.have
                )
            fd = await asyncio.to_thread(os.open, spool.path, os.O_WRONLY)
            pending = bytearray()

            async def flush() -> None:
                end = spool.have + len(pending)
                if end > spool.size:
                    raise HelperError("bad-request", f"more than the {spool.size} bytes")
                self._count(max(0, end - spool.charged))
                spool.charged = max(spool.charged, end)
                self._check_space(len(pending))
                await asyncio.to_thread(os.pwrite, fd, pending, spool.have)
                spool.have += len(pending)
                spool.grown.set()
                self.bytes_received += len(pending)
                pending.clear()

            try:
                try:
                    async for chunk in chunks:
                        pending += chunk
                        spool.heard = time.monotonic()
                        if len(pending) >= BATCH:
                            await flush()
                finally:  # what arrived before a broken stream is kept for resuming
                    if pending:
                        await flush()
            finally:
                os.close(fd)
                os.utime(spool.path)
        return spool.have

    async def finish(self, caller: NodeId, si: bytes) -> dict[str, Any]:
        """Encode and place a complete spool; the spool is deleted when it succeeded."""
        self._check_caller(caller)
        key = self._key(caller, si)
        spool = self._spools.get(key)
        if spool is None:
            raise HelperError("helper-unknown", "no upload of this file started here")
        if spool.lock.locked():
            raise HelperError("helper-busy", "this upload is already being sent or placed")
        async with spool.lock:
            if spool.have != spool.size:
                raise HelperError(
                    "helper-offset", f"have {spool.have} of {spool.size} bytes", have=spool.have
                )
            # the streamed placement ends soon after the last byte (a finish cut off
            # meanwhile leaves it running, for the next finish)
            res = None
            stream = spool.stream
            if stream is not None and not _given_up(stream):
                try:
                    res = await asyncio.shield(stream)
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if not stream.cancelled() or (me is not None and me.cancelling()):
                        raise
                    # the helper is stopping (close cancelled the stream)
                    raise HelperError("helper-refused", "this helper is stopping") from None
            spool.stream = None
            if res is None:
                spool.attempts += 1
                try:
                    res = await self.uploader.upload_ciphertext(
                        file_source(str(spool.path)), si, spool.size, params=spool.params
                    )
                except (UploadError, GridLocalError, OSError) as e:
                    self.uploads_failed += 1
                    if spool.attempts >= MAX_FINISH_ATTEMPTS:  # each costs N/k x size sent
                        self._drop(key)
                    raise HelperError("helper-placement", str(e)[:1500]) from None
        await asyncio.to_thread(self._drop, key)
        self.uploads_placed += 1
        return {"happiness": res.happiness, "sent": res.shares_sent, "present": res.shares_present}

    async def close(self) -> None:
        """Give up the streamed placements (the spools stay, for resuming); refuse
        every call from now on."""
        self._closed = True
        await self._tasks.close()

    def figures(self) -> dict[str, Any]:
        """For the node's status (docs/helper.md, "Status")."""
        self._load()
        return {
            "uploads_in_progress": len(self._spools),
            "uploads_placed": self.uploads_placed,
            "uploads_present": self.uploads_present,
            "uploads_failed": self.uploads_failed,
            "bytes_received": self.bytes_received,
            "bytes_today": self._today(),
        }

    # -- internals -----------------------------------------------------------------
    def _accepts(self, caller: NodeId) -> bool:
        return self.config.enabled and (
            self.config.accept is None or caller.raw in self.config.accept
        )

    def _check_caller(self, caller: NodeId) -> None:
        if self._closed:
            raise HelperError("helper-refused", "this helper is stopping")
        if not self.config.enabled:
            raise HelperError("helper-refused", "this node is not an upload helper")
        if not self._accepts(caller):
            raise HelperError("helper-refused", "this helper does not accept uploads from you")

    @staticmethod
    def _key(caller: NodeId, si: bytes) -> str:
        return f"{caller.b32}-{b32encode(si)}"

    def _today(self) -> int:
        day = int(self.clock() // DAY)
        if day != self._day:
            self._day, self.bytes_today = day, 0
        return self.bytes_today

    def _count(self, n: int) -> None:
        if self._today() + n > self.config.max_bytes_per_day:
            raise HelperError(
                "helper-quota", f"this helper took its {self.config.max_bytes_per_day} bytes today"
            )
        self.bytes_today += n

    def _check_space(self, more: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.directory).free
        if free - more < self.config.reserve:
            raise HelperError("helper-full", f"{free} bytes free on the helper's disk")

    async def _present(self, si: bytes, params: EncodingParams) -> bool:
        up = self.uploader
        found = await up.find_peers(si, 2 * params.n)
        peers = {p.node_id.raw: p for p in found}
        existing, _dead = await list_existing(si, peers, up.storage_for, up.config.list_timeout)
        return happiness(holdings_of(existing)) >= up.config.happy

    def _load(self) -> None:
        """Spools left by an earlier run of the node: resumable like any other."""
        if self._loaded:
            return
        self._loaded = True
        if not self.directory.is_dir():
            return
        for meta in self.directory.glob("*.json"):
            ct = meta.with_suffix(".ct")
            try:
                m = json.loads(meta.read_text(encoding="utf-8"))
                params = EncodingParams(m["k"], m["n"], m["segment_size"])
                size, have = int(m["size"]), ct.stat().st_size
                if not LITERAL_MAX < size <= MAX_FILE_SIZE or have > size:
                    raise ValueError("bad size")
            except (OSError, ValueError, KeyError, TypeError, ParameterError):
                for p in (meta, ct):
                    p.unlink(missing_ok=True)
                continue
            self._spools[meta.stem] = _Spool(ct, params, size, have, asyncio.Lock(), charged=have)

    def _create(self, key: str, params: EncodingParams, size: int) -> _Spool:
        self.directory.mkdir(parents=True, exist_ok=True)
        ct = self.directory / f"{key}.ct"
        ct.write_bytes(b"")
        meta = {"k": params.k, "n": params.n, "segment_size": params.segment_size, "size": size}
        (self.directory / f"{key}.json").write_text(json.dumps(meta), encoding="utf-8")
        spool = _Spool(ct, params, size, 0, asyncio.Lock())
        self._spools[key] = spool
        return spool

    def _stream(self, key: str, si: bytes, spool: _Spool) -> None:
        """Start placing ``spool`` as its ciphertext arrives, unless a stream runs
        or succeeded, the spool is complete (``finish`` places it), or the spool
        had its ``MAX_STREAMS``."""
        if spool.stream is not None and not _given_up(spool.stream):
            return
        spool.stream = None
        if self._closed or spool.have >= spool.size or spool.streams >= MAX_STREAMS:
            return
        # a stream reserves the whole file's shares on the storage peers at its first
        # segment: the declared size counts against the day's bytes now
        try:
            self._count(spool.size - spool.charged)
        except HelperError:
            return  # placed after the last byte instead, if the pushes fit the day
        spool.charged = spool.size
        spool.streams += 1
        spool.stream = self._tasks.start(
            self._place_streaming(key, si, spool), name=f"helper {key}"
        )

    async def _place_streaming(
        self, key: str, si: bytes, spool: _Spool
    ) -> UploadResult[Any] | None:
        try:
            res = await self.uploader.upload_ciphertext(
                _growing(spool), si, spool.size, params=spool.params
            )
        except Exception as e:  # any: finish places the whole spool instead
            log.info("helper: streamed placement of %s given up: %s", key, describe(e))
            return None
        log.info("helper: %s placed as it arrived (happiness %d)", key, res.happiness)
        return res

    def _drop(self, key: str) -> None:
        spool = self._spools.get(key)
        if spool is not None and spool.stream is not None:
            spool.stream.cancel()  # its unfinished uploads are aborted as it ends
        self._spools.pop(key, None)
        for suffix in (".ct", ".json"):
            (self.directory / f"{key}{suffix}").unlink(missing_ok=True)

    def _evict_idle(self, keys: list[str], idle_for: float | None) -> bool:
        """Make room: drop the spool of ``keys`` idle longest, if idle ``idle_for``
        seconds (None: however recent; abandoned uploads must not lock their caller
        or others out)."""
        idle: list[tuple[float, str]] = []
        for key in keys:
            spool = self._spools[key]
            with contextlib.suppress(OSError):
                if not spool.lock.locked():
                    idle.append((spool.path.stat().st_mtime, key))
        if not idle or (idle_for is not None and min(idle)[0] > self.clock() - idle_for):
            return False
        self._drop(min(idle)[1])
        return True

    def _sweep(self) -> None:
        cutoff = self.clock() - self.config.keep_partial
        for key, spool in list(self._spools.items()):
            with contextlib.suppress(OSError):
                if not spool.lock.locked() and spool.path.stat().st_mtime < cutoff:
                    self._drop(key)


def _given_up(task: asyncio.Task[UploadResult[Any] | None]) -> bool:
    return task.done() and (task.cancelled() or task.result() is None)


class _Stalled(Exception):
    """No ciphertext arrived for ``STREAM_STALL`` seconds."""


def _growing(spool: _Spool) -> Reopenable:
    """A source over the spool's ``size`` bytes that waits at the spooled end for
    the caller's next push (each pass reads from the start)."""

    async def chunks() -> AsyncIterator[bytes]:
        fd = os.open(spool.path, os.O_RDONLY)  # no await before the try: no fd leaks
        try:
            offset = 0
            while offset < spool.size:
                if offset >= spool.have:
                    spool.grown.clear()
                    try:
                        async with asyncio.timeout(STREAM_STALL):
                            await spool.grown.wait()
                    except TimeoutError:
                        if time.monotonic() - spool.heard < STREAM_STALL:
                            continue  # a slow caller: bytes arrive, the batch fills
                        raise _Stalled(f"no ciphertext for {STREAM_STALL:.0f} s") from None
                    continue
                n = min(BATCH, spool.have - offset)
                data = await asyncio.to_thread(os.pread, fd, n, offset)
                if not data:
                    raise OSError(f"the spool ended at {offset} of {spool.have} bytes")
                offset += len(data)
                yield data
        finally:
            os.close(fd)

    return chunks
