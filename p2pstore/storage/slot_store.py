"""Slot records on disk: ``shares/<p>/<si>/slot``, one per storage index, replaced only
by a validly signed record with a higher sequence number (docs/storage.md, "Slots").

:class:`SlotStore` belongs to a :class:`~.server.StorageServer` and shares its layout,
its lease store and its byte accounting; the server exposes it as
``slot_read``/``slot_write``.

Invariants:
- The slot file lives in the storage index's own directory, so the SI's lease
  table, the lease crawler, expiry and lease cancellation cover it: it goes with
  the directory when the last lease does.
- Every test-and-set (read the held record, apply :func:`.slots.accepts`, write)
  runs under the lease lock, which already serializes everything that creates,
  rewrites or deletes a storage-index directory; a per-index lock would add
  nothing, as the writer's lease must be written under the lease lock anyway.
  Reads take no lock: the file is only ever replaced by an atomic rename.
- The file is written atomically (temp file ``slot.tmp``, fsync, rename, fsync
  dir) and only after the writer's lease, so a stored slot always has a lease.
- The file's size counts in the server's ``used``; a new record must fit under the
  quota like an allocation, a replacement is charged the size difference.
- A held file that is unreadable, does not decode or belongs to another storage
  index is treated as absent (logged once per storage index): any valid record
  replaces it; it is never served.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable

from quic_transport.identity import NodeId

from .disk_layout import Layout, check_storage_index, si_b32, write_file_atomically
from .errors import BadRecord, from_os_error
from .lease_store import LeaseStore
from .slots import MAX_RECORD, SlotRecord, accepts, decode_record
from .upload_state import check_lease_term

log = logging.getLogger(__name__)

MAX_REPORTED = 4096  # storage indexes remembered as already logged unusable


class SlotStore:
    """The slot records of one storage root. ``charge(delta)`` adds ``delta`` bytes to
    the server's ``used`` (raising ``QuotaExceeded`` if a growth does not fit);
    ``check_open()`` raises ``Unavailable`` once the server is closed."""

    def __init__(
        self,
        layout: Layout,
        leases: LeaseStore,
        charge: Callable[[int], None],
        check_open: Callable[[], None],
    ) -> None:
        self.layout = layout
        self._leases = leases
        self._charge = charge
        self._check_open = check_open
        self._reported: set[bytes] = set()

    def exists(self, si: bytes) -> bool:
        """Whether a slot file (usable or not) is held for ``si``: what keeps an SI
        with no shares from being tidied away as empty."""
        return self._size(si) is not None

    def _size(self, si: bytes) -> int | None:
        try:
            st = os.lstat(self.layout.slot_path(si))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise from_os_error("stat slot", e) from None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def read(self, storage_index: bytes) -> bytes | None:
        """The held record's bytes, or None if there is none (or it is unusable)."""
        self._check_open()
        return self._load(check_storage_index(storage_index))[1]

    def write(
        self, storage_index: bytes, record: bytes, owner: NodeId, lease: float | None = None
    ) -> tuple[bool, bytes]:
        """Store ``record`` if :func:`.slots.accepts` it over the held one, giving
        ``owner`` a lease as closing a share does (``lease``: its term in seconds, at
        most ``lease_duration``). Returns ``(True, record)`` when stored (an identical
        record only renews the lease) and ``(False, held)`` when refused."""
        self._check_open()
        si = check_storage_index(storage_index)
        check_lease_term(lease)
        new = decode_record(record)
        if new.storage_index != si:
            raise BadRecord("the record's key does not match the storage index")
        with self._leases.lock:
            held, held_bytes = self._load(si)
            if not accepts(held, new):
                assert held_bytes is not None  # refusal needs a held record
                return False, held_bytes
            if held is not None and held_bytes == record:
                self._leases.add(si, owner.raw, create=True, duration=lease)
                return True, record
            delta = len(record) - (self._size(si) or 0)
            self._charge(delta)
            try:
                self._leases.add(si, owner.raw, create=True, duration=lease)
                write_file_atomically(self.layout.slot_path(si), record)
            except OSError as e:
                self._charge(-delta)
                raise from_os_error("write slot", e) from None
            except BaseException:
                self._charge(-delta)
                raise
            self._reported.discard(si)
        return True, record

    def delete_locked(self, si: bytes) -> bool:
        """Remove the slot file (and a crashed write's temp file); the caller holds the
        lease lock and has checked the directory is inside the root."""
        size = self._size(si)
        path = self.layout.slot_path(si)
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        if size is None:
            return False
        path.unlink(missing_ok=True)
        self._charge(-size)
        return True

    def _load(self, si: bytes) -> tuple[SlotRecord | None, bytes | None]:
        if not self._leases.dir_ok(si):
            return None, None  # never read through a symlink
        try:
            fd = os.open(self.layout.slot_path(si), os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        except OSError as e:
            if e.errno != errno.ELOOP:  # a symlink named slot is not a slot
                self._report(si, f"unreadable: {e.strerror}")
            return None, None
        try:
            data = b""
            if stat.S_ISREG(os.fstat(fd).st_mode):
                while len(data) <= MAX_RECORD and (chunk := os.read(fd, MAX_RECORD + 1)):
                    data += chunk
        except OSError as e:
            self._report(si, f"unreadable: {e.strerror}")
            return None, None
        finally:
            os.close(fd)
        try:
            record = decode_record(data)
            if record.storage_index != si:
                raise BadRecord("the record's key does not match the storage index")
        except BadRecord as e:
            self._report(si, e.message)
            return None, None
        return record, data

    def _report(self, si: bytes, why: str) -> None:
        if si in self._reported:
            return
        if len(self._reported) >= MAX_REPORTED:
            self._reported.clear()
        self._reported.add(si)
        log.warning("slot record of %s is unusable (%s); treated as absent", si_b32(si), why)
