"""The storage server's business logic: shares and slots on disk, uploads, quota, leases.

No wire code lives here (the RPC adapter is ``rpc.py``); callers pass the already
authenticated node ID of whoever asks (``owner``). Methods are synchronous and
thread-safe, so an async caller runs them in a worker thread and the event loop
never waits on ``fsync``.

Invariants:
- A share is visible (listed, readable) only once complete: it is written under
  ``incoming/``, fsynced, its uploader's lease is recorded, then it is renamed into
  ``shares/`` and the directory fsynced. Whatever is in ``incoming/`` when a server
  opens the directory is a crashed upload and is deleted.
- Complete shares are immutable: no call writes to them; they disappear only when
  the last lease is cancelled or all leases have expired.
- One upload per (storage index, share number) at a time; it belongs to the owner
  that allocated it, and only that owner may write, close or abort it.
- ``used`` counts bytes of complete shares and slot records, ``reserved`` the bytes
  set aside for uploads in progress (the declared size, or the high-water mark of
  a streamed upload). Allocations, growing writes and slot records must fit under
  ``max_bytes`` and leave ``reserved_space`` free; refusals never affect reads.
- Locks: ``upload.lock`` may be taken before ``_lock`` or ``_leases.lock``, never
  after; ``_leases.lock`` may be taken before ``_lock``. ``_lock`` guards only the
  in-memory tables and counters and is held across file I/O only to create or
  remove an incoming file (so a discarded upload's temp file is gone before the
  same (storage index, share number) can be allocated again).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from quic_transport.identity import NodeId

from . import leases as lz
from .config import MAX_HASH_RANGES, StorageConfig
from .disk_layout import (
    LEASES_NAME,
    Layout,
    check_shnum,
    check_storage_index,
    fsync_dir,
    pwrite_all,
    si_b32,
)
from .errors import (
    AlreadyUploading,
    BadRequest,
    IncompleteShare,
    NoSuchLease,
    NoSuchShare,
    NoSuchUpload,
    OutOfRange,
    QuotaExceeded,
    ShareExists,
    StorageError,
    TooFragmented,
    TooLarge,
    TooManyUploads,
    Unavailable,
    from_os_error,
)
from .lease_store import LeaseStore
from .quota import FreeSpace, available, disk_free
from .reads import ranges_hasher, read_ranges, share_ranges, share_sizes
from .results import Allocation, ClosedShare, StorageStats
from .scan import clean_incoming, list_prefixes, scan_usage, storage_indexes_in
from .slot_store import SlotStore
from .upload_state import Upload, check_lease_term, check_offset
from .written_ranges import RangeLimitError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Buf = bytes | bytearray | memoryview


class StorageServer:
    """Stores opaque shares under a root directory. Build with :meth:`open`."""

    def __init__(
        self,
        layout: Layout,
        config: StorageConfig,
        clock: Clock,
        free_space: FreeSpace,
        lock_fd: int,
        used: int,
        share_count: int,
    ) -> None:
        self.layout = layout
        self.config = config
        self._clock = clock
        self._free_space = free_space
        self._lock_fd: int | None = lock_fd
        self._lock = threading.Lock()
        self._leases = LeaseStore(layout, config, clock)
        self._uploads: dict[tuple[bytes, int], Upload] = {}
        self._used = used
        self._share_count = share_count
        self._reserved = 0
        self._slots = SlotStore(layout, self._leases, self._charge, self._check_open)

    @classmethod
    def open(
        cls,
        root: Path,
        config: StorageConfig | None = None,
        *,
        clock: Clock = time.time,
        free_space: FreeSpace = disk_free,
    ) -> StorageServer:
        """Take the directory's lock, delete crashed uploads, count stored bytes."""
        # The root itself may be a symlink the operator chose (another disk); it is
        # resolved once here and everything below it is held to "no symlinks".
        Path(root).mkdir(mode=0o700, parents=True, exist_ok=True)
        layout = Layout(Path(root).resolve())
        layout.create()
        fd = layout.lock(f"storage directory {root}")
        try:
            clean_incoming(layout)  # (logs what it removed)
            used, count = scan_usage(layout)
        except BaseException:
            os.close(fd)
            raise
        return cls(layout, config or StorageConfig(), clock, free_space, fd, used, count)

    def close(self) -> None:
        """Abort uploads in progress and release the directory. Idempotent."""
        with self._lock:
            uploads = list(self._uploads.values())
        self._abort(uploads)
        with self._lock:
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def free_space(self) -> FreeSpace:
        return self._free_space

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise Unavailable("storage server is closed")

    # ----- uploads ---------------------------------------------------------

    def allocate(
        self,
        storage_index: bytes,
        shnum: int,
        owner: NodeId,
        size: int | None = None,
        lease: float | None = None,
    ) -> Allocation:
        """Start an upload of one share; ``size`` (if known) is reserved against the quota.
        ``lease`` (seconds, at most ``lease_duration``) is the term of the lease the
        closed share gets: a repairer carries over the lease of the shares it replaces
        (docs/maintenance.md, "Leases")."""
        self._check_open()
        si = check_storage_index(storage_index)
        check_shnum(shnum)
        cfg = self.config
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise BadRequest("size must be a positive integer or absent")
            if size > cfg.max_share_size:
                raise TooLarge(f"share size {size} exceeds the limit {cfg.max_share_size}")
        check_lease_term(lease)
        key = (si, shnum)
        path = self.layout.incoming_path(si, shnum)
        with self._lock:
            if key in self._uploads:
                raise AlreadyUploading(f"share {shnum} of {si_b32(si)} is already being uploaded")
            if os.path.lexists(self.layout.share_path(si, shnum)):
                raise ShareExists(f"share {shnum} of {si_b32(si)} is already stored here")
            if len(self._uploads) >= cfg.max_uploads:
                raise TooManyUploads(f"server has {cfg.max_uploads} uploads in progress")
            mine = sum(1 for u in self._uploads.values() if u.owner == owner.raw)
            if mine >= cfg.max_uploads_per_owner:
                raise TooManyUploads(f"you have {mine} uploads in progress here")
            self._check_space_locked(size or 0, streamed=size is None)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                os.close(fd)
            except OSError as e:
                raise from_os_error("create upload file", e) from None
            up = Upload(
                si, shnum, owner.raw, size, path, self._clock(), cfg.max_ranges_per_upload, lease
            )
            self._uploads[key] = up
            self._reserved += up.reserved
        limit = size if size is not None else cfg.max_share_size
        return Allocation(si, shnum, size, limit)

    def write(
        self, storage_index: bytes, shnum: int, owner: NodeId, offset: int, data: bytes
    ) -> None:
        """Write ``data`` at ``offset`` of an upload in progress (any order, overlaps allowed;
        the last write of a byte wins)."""
        self.writev(storage_index, shnum, owner, offset, (data,))

    def writev(
        self, storage_index: bytes, shnum: int, owner: NodeId, offset: int, pieces: Sequence[Buf]
    ) -> None:
        """:meth:`write` of the concatenation of ``pieces``, without joining them (one
        ``os.pwritev`` per 512 pieces); the total is bounded by ``max_write``."""
        self._check_open()
        check_offset(offset, "offset")
        if not all(isinstance(p, bytes | bytearray | memoryview) for p in pieces):
            raise BadRequest("data must be bytes")
        try:
            views = [memoryview(p).cast("B") for p in pieces]
        except TypeError:  # e.g. a non-contiguous view
            raise BadRequest("data must be contiguous bytes") from None
        length = sum(v.nbytes for v in views)
        if length > self.config.max_write:
            raise TooLarge(f"write of {length} bytes exceeds limit {self.config.max_write}")
        up = self._get_upload(storage_index, shnum, owner)
        end = offset + length
        limit = up.size if up.size is not None else self.config.max_share_size
        if end > limit:
            what = "declared size" if up.size is not None else "maximum share size"
            raise OutOfRange(f"write ends at {end}, past the {what} {limit}")
        with up.lock:
            if up.done:
                raise NoSuchUpload("the upload was aborted")
            if not length:  # nothing to store: only counts as activity
                up.last_active = self._clock()
                return
            if up.size is None and end > up.reserved:
                with self._lock:
                    try:
                        self._check_space_locked(end - up.reserved, streamed=False)
                    except QuotaExceeded as e:
                        self._discard_locked(up)
                        raise QuotaExceeded(f"{e.message}; upload aborted") from None
                    self._reserved += end - up.reserved
                    up.reserved = end
            try:
                up.ranges.add(offset, end)
            except RangeLimitError:
                self._discard(up)
                raise TooFragmented(
                    f"more than {self.config.max_ranges_per_upload} disjoint ranges; upload aborted"
                ) from None
            try:
                fd = os.open(up.path, os.O_WRONLY | os.O_NOFOLLOW)
                try:
                    pwrite_all(fd, views, offset)
                finally:
                    os.close(fd)
            except OSError as e:
                self._discard(up)
                raise from_os_error("write", e) from None
            up.last_active = self._clock()

    def close_share(self, storage_index: bytes, shnum: int, owner: NodeId) -> ClosedShare:
        """Finish an upload: refuse if bytes are missing, else fsync, lease, rename."""
        self._check_open()
        up = self._get_upload(storage_index, shnum, owner)
        with up.lock:
            if up.done:
                raise NoSuchUpload("the upload was aborted")
            end = up.size if up.size is not None else up.ranges.high_water
            if end == 0:
                raise IncompleteShare("nothing was written")
            gap = up.ranges.first_gap(end)
            if gap is not None:
                raise IncompleteShare(f"bytes {gap[0]}..{gap[1]} of {end} were never written")
            try:
                fd = os.open(up.path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                with self._leases.lock:
                    expires = self._leases.add(up.si, up.owner, create=True, duration=up.lease)
                    final = self.layout.share_path(up.si, up.shnum)
                    os.rename(up.path, final)
                    try:
                        fsync_dir(final.parent)
                    except OSError as e:  # the share is in place; only durability is late
                        log.warning("fsync of %s failed: %s", si_b32(up.si), e.strerror)
            except OSError as e:
                self._discard(up)
                raise from_os_error("close", e) from None
            except StorageError:
                self._discard(up)
                raise
            up.done = True
            with self._lock:
                self._uploads.pop((up.si, up.shnum), None)
                self._reserved -= up.reserved
                self._used += end
                self._share_count += 1
        return ClosedShare(up.si, up.shnum, end, expires)

    def abort(self, storage_index: bytes, shnum: int, owner: NodeId) -> None:
        """Drop an upload in progress and release its reservation."""
        self._check_open()
        up = self._get_upload(storage_index, shnum, owner)
        with up.lock:
            if not up.done:
                self._discard(up)

    def abort_uploads_of(self, owner: NodeId, idle_for: float = 0.0) -> int:
        """Abort ``owner``'s uploads in progress (with ``idle_for``: only those with no
        write for that many seconds, e.g. when one of its connections closes)."""
        with self._lock:
            mine = [u for u in self._uploads.values() if u.owner == owner.raw]
        return self._abort(mine, self._clock() - idle_for if idle_for > 0 else None)

    def _abort(self, uploads: list[Upload], idle_before: float | None = None) -> int:
        n = 0
        for up in uploads:
            with up.lock:
                if not up.done and (idle_before is None or up.last_active <= idle_before):
                    self._discard(up)
                    n += 1
        return n

    def sweep_idle_uploads(self, now: float | None = None) -> int:
        """Abort uploads with no write for ``upload_idle_timeout``; returns how many."""
        cutoff = (self._clock() if now is None else now) - self.config.upload_idle_timeout
        with self._lock:
            idle = [u for u in self._uploads.values() if u.last_active <= cutoff]
        n = 0
        for up in idle:
            if not up.lock.acquire(blocking=False):
                continue  # busy writing, so not idle
            try:
                if not up.done and up.last_active <= cutoff:
                    log.info("aborting idle upload of share %d of %s", up.shnum, si_b32(up.si))
                    self._discard(up)
                    n += 1
            finally:
                up.lock.release()
        return n

    def _get_upload(self, storage_index: bytes, shnum: int, owner: NodeId) -> Upload:
        si = check_storage_index(storage_index)
        check_shnum(shnum)
        with self._lock:
            up = self._uploads.get((si, shnum))
        if up is None or up.owner != owner.raw:
            if up is None and os.path.lexists(self.layout.share_path(si, shnum)):
                raise ShareExists(f"share {shnum} of {si_b32(si)} is complete and immutable")
            raise NoSuchUpload(f"you have no upload of share {shnum} of {si_b32(si)} here")
        return up

    def _discard(self, up: Upload) -> None:
        with self._lock:
            self._discard_locked(up)

    def _discard_locked(self, up: Upload) -> None:
        # Caller holds up.lock and self._lock.
        up.done = True
        try:
            up.path.unlink(missing_ok=True)
        except OSError as e:
            log.error("cannot remove upload file %s: %s", up.path.name, e.strerror)
        if self._uploads.get((up.si, up.shnum)) is up:
            del self._uploads[(up.si, up.shnum)]
        self._reserved -= up.reserved

    def _available_locked(self) -> tuple[int, str]:
        free = self._free_space(self.layout.root)
        unwritten = sum(max(0, u.reserved - u.ranges.high_water) for u in self._uploads.values())
        return available(
            self.config, free=free, unwritten=unwritten, used=self._used, reserved=self._reserved
        )

    def _check_space_locked(self, need: int, *, streamed: bool) -> None:
        avail, why = self._available_locked()
        if need > avail or (streamed and avail <= 0):
            raise QuotaExceeded(f"storage full: need {max(need, 1)} bytes; {why}")

    def _charge(self, delta: int) -> None:
        """Count ``delta`` bytes of slot records in ``used``; a growth must fit."""
        with self._lock:
            if delta > 0:
                self._check_space_locked(delta, streamed=False)
            self._used += delta

    # ----- reads -------------------------------------------------------------

    def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` of a complete share, clamped at its end
        (a short or empty result means the share ends there)."""
        return self.readv(storage_index, shnum, [(offset, length)])[0]

    def readv(self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Several clamped reads of one share; total length bounded by ``max_read``."""
        self._check_open()
        cfg, si = self.config, check_storage_index(storage_index)
        limits = (cfg.max_readv_ranges, cfg.max_read)
        return share_ranges(self.layout, si, check_shnum(shnum), ranges, limits, read_ranges)

    def hashv(
        self, storage_index: bytes, shnum: int, prefix: bytes, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        """SHA-256 of ``prefix`` and each clamped range of one share: what a reader
        checks, without the bytes moving (docs/storage.md, ``storage.hashv``)."""
        self._check_open()
        si, hashed = check_storage_index(storage_index), ranges_hasher(prefix, ranges)
        limits = (MAX_HASH_RANGES, self.config.max_hash)
        return share_ranges(self.layout, si, check_shnum(shnum), ranges, limits, hashed)

    def list_shares(self, storage_index: bytes) -> dict[int, int]:
        """``{shnum: size}`` of the complete shares of one storage index."""
        self._check_open()
        si = check_storage_index(storage_index)
        d = self.layout.si_dir(si)
        return share_sizes(d) if self.layout.is_inside(d) else {}

    def share_path(self, storage_index: bytes, shnum: int) -> Path:
        """Where a complete share lives (for admin tools and test helpers)."""
        return self.layout.share_path(check_storage_index(storage_index), shnum)

    def stat(self) -> StorageStats:
        self._check_open()
        cfg = self.config
        with self._lock:
            avail, _ = self._available_locked()
            return StorageStats(
                used=self._used,
                reserved=self._reserved,
                max_bytes=cfg.max_bytes,
                reserved_space=cfg.reserved_space,
                disk_free=self._free_space(self.layout.root),
                available=min(avail, cfg.max_share_size),
                shares=self._share_count,
                uploads=len(self._uploads),
                max_share_size=cfg.max_share_size,
                max_write=cfg.max_write,
                max_read=cfg.max_read,
                lease_duration=cfg.lease_duration,
            )

    # ----- slots (signed mutable records; docs/storage.md, "Slots") -----------

    def slot_read(self, storage_index: bytes) -> bytes | None:
        """The slot record held for a storage index, or None."""
        return self._slots.read(storage_index)

    def slot_write(
        self, storage_index: bytes, record: bytes, owner: NodeId, lease: float | None = None
    ) -> tuple[bool, bytes]:
        """Test-and-set of the slot record (:meth:`.slot_store.SlotStore.write`)."""
        return self._slots.write(storage_index, record, owner, lease)

    # ----- leases ------------------------------------------------------------

    def add_lease(self, storage_index: bytes, owner: NodeId) -> float:
        """Add or extend ``owner``'s lease on a storage index; returns the expiry time."""
        self._check_open()
        si = check_storage_index(storage_index)
        with self._leases.lock:
            if not self._holds(si):
                raise NoSuchShare(f"no shares of {si_b32(si)} here")
            return self._leases.add(si, owner.raw, create=False)

    def renew_lease(self, storage_index: bytes, owner: NodeId) -> float:
        """Extend an existing lease of ``owner``; :class:`NoSuchLease` if it has none."""
        self._check_open()
        si = check_storage_index(storage_index)
        with self._leases.lock:
            if not self._holds(si):
                raise NoSuchShare(f"no shares of {si_b32(si)} here")
            held = self._leases.load(si)
            if not any(le.owner in (owner.raw, lz.OVERFLOW_OWNER) for le in held):
                raise NoSuchLease(f"you hold no lease on {si_b32(si)}")
            # (an owner whose time is in the overflow lease renews that one)
            return self._leases.add(si, owner.raw, create=False)

    def cancel_lease(self, storage_index: bytes, owner: NodeId) -> int:
        """Drop ``owner``'s lease; if no live lease remains the shares are deleted now.
        Returns how many shares were deleted."""
        self._check_open()
        si = check_storage_index(storage_index)
        with self._leases.lock:
            current = self._leases.load(si)
            if not any(le.owner == owner.raw for le in current):
                raise NoSuchLease(f"you hold no lease on {si_b32(si)}")
            now = self._clock()
            rest = [le for le in current if le.owner != owner.raw and le.live(now)]
            if not rest:
                return self._delete_index_locked(si)
            self._leases.write(si, rest)
            return 0

    def leases(self, storage_index: bytes) -> list[lz.Lease]:
        """The lease records of a storage index (expired ones included until crawled)."""
        si = check_storage_index(storage_index)
        with self._leases.lock:
            return self._leases.load(si)

    def expire(self, storage_index: bytes, now: float | None = None) -> int:
        """Delete a storage index's shares if none of its leases is live at ``now``.

        A missing or corrupt lease file gets a fresh grace lease (owned by nobody)
        instead of deleting data on a technicality. Returns shares deleted."""
        si = check_storage_index(storage_index)
        now = self._clock() if now is None else now
        with self._leases.lock:
            if not self._holds(si):
                return self._delete_index_locked(si)  # tidy an empty directory
            try:
                current = self._leases.load_strict(si)
            except (OSError, lz.LeaseFileError) as e:
                log.warning("lease file of %s unusable (%s); granting a grace lease", si_b32(si), e)
                grace = lz.Lease(lz.SERVER_OWNER, now + self.config.lease_duration)
                self._leases.write(si, [grace])
                return 0
            live = [le for le in current if le.live(now)]
            if not live:
                return self._delete_index_locked(si)
            if len(live) != len(current):
                self._leases.write(si, live)
            return 0

    def _holds(self, si: bytes) -> bool:
        return bool(self.list_shares(si)) or self._slots.exists(si)

    def _delete_index_locked(self, si: bytes) -> int:
        d = self.layout.si_dir(si)
        if not self._leases.dir_ok(si):
            return 0  # never delete through a symlink
        removed = 0
        for shnum, size in self.list_shares(si).items():
            try:
                (d / str(shnum)).unlink()
            except FileNotFoundError:
                continue
            removed += 1
            with self._lock:
                self._used -= size
                self._share_count -= 1
        self._slots.delete_locked(si)
        for name in (LEASES_NAME, LEASES_NAME + ".tmp"):
            (d / name).unlink(missing_ok=True)
        for directory in (d, d.parent):
            try:
                directory.rmdir()
            except OSError:
                break  # not empty (junk, or other storage indexes) or already gone
        if removed:
            log.info("deleted %d share(s) of %s: no live lease", removed, si_b32(si))
        return removed

    def remove_share(self, storage_index: bytes, shnum: int) -> bool:
        """Delete one complete share held here (this node's maintenance only, never a
        wire operation: a share moved to a nearer peer, or a copy found corrupt).
        The storage index goes with its last share. Returns whether it existed."""
        si = check_storage_index(storage_index)
        check_shnum(shnum)
        with self._leases.lock:
            size = self.list_shares(si).get(shnum)
            if size is None or not self._leases.dir_ok(si):
                return False
            self.share_path(si, shnum).unlink(missing_ok=True)
            with self._lock:
                self._used -= size
                self._share_count -= 1
            if not self._holds(si):
                self._delete_index_locked(si)
        log.info("removed share %d of %s", shnum, si_b32(si))
        return True

    # ----- enumeration (for the lease crawler) -------------------------------

    def list_prefixes(self) -> list[str]:
        """The two-character prefix directories under ``shares/``, sorted."""
        return list_prefixes(self.layout)

    def storage_indexes_in(self, prefix: str) -> list[bytes]:
        """Storage indexes stored under one prefix directory, in name order."""
        return storage_indexes_in(self.layout, prefix)
