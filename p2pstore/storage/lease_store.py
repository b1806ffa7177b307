"""Lease files on disk: load, atomic rewrite, add/extend, for one storage root.

Callers hold :attr:`LeaseStore.lock` around every read-modify-write sequence and
around anything that creates or removes storage-index directories, so a share
being closed and an expiry of the same storage index never interleave.

Invariants: a lease file is only read or written through a storage-index
directory that is a real directory inside the root (never through a symlink);
writes are atomic (temp file, fsync, rename, fsync dir); a file that does not
decode is treated as holding no leases by :meth:`LeaseStore.load` (the expiry
path uses :meth:`LeaseStore.load_strict` and grants a grace lease instead).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import leases as lz
from .config import StorageConfig
from .disk_layout import Layout, si_b32, write_file_atomically
from .errors import StorageIOError, from_os_error

log = logging.getLogger(__name__)


class LeaseStore:
    def __init__(self, layout: Layout, config: StorageConfig, clock: Callable[[], float]) -> None:
        self.layout = layout
        self.config = config
        self._clock = clock
        self.lock = threading.Lock()

    def dir_ok(self, si: bytes) -> bool:
        """False if the storage index's directory escapes the root through a symlink."""
        d = self.layout.si_dir(si)
        return not d.is_symlink() and self.layout.is_inside(d)

    def load_strict(self, si: bytes) -> list[lz.Lease]:
        """Decode the lease file; raises OSError (e.g. missing) or LeaseFileError."""
        if not self.dir_ok(si):
            raise FileNotFoundError("storage index directory is not inside the root")
        data = self.layout.lease_path(si).read_bytes()
        return lz.decode_leases(data, limit=self.config.max_leases_per_index)

    def load(self, si: bytes) -> list[lz.Lease]:
        """The leases of ``si``; none if the file is missing or does not decode."""
        try:
            return self.load_strict(si)
        except FileNotFoundError:
            return []
        except lz.LeaseFileError as e:
            log.warning("corrupt lease file of %s (%s); treating as empty", si_b32(si), e)
            return []
        except OSError as e:
            raise from_os_error("read leases", e) from None

    def write(self, si: bytes, records: list[lz.Lease]) -> None:
        if not self.dir_ok(si):
            raise StorageIOError(f"directory of {si_b32(si)} is not inside the storage root")
        try:
            write_file_atomically(self.layout.lease_path(si), lz.encode_leases(records))
        except OSError as e:
            raise from_os_error("write leases", e) from None

    def add(self, si: bytes, owner: bytes, *, create: bool, duration: float | None = None) -> float:
        """Add or extend ``owner``'s lease to ``now + lease_duration``; drops expired
        leases of others. ``create`` makes the directory (closing a new share).

        Never refuses: when ``max_leases_per_index`` owners already hold leases, the
        new owner's time goes into the shared *overflow* lease
        (:data:`~.leases.OVERFLOW_OWNER`), folding the soonest-expiring named lease
        into it if there is none yet. Free identities can therefore fill the named
        slots but never keep anyone from keeping the shares alive, and as long as the
        overflow lease is live no cancellation deletes them (docs/storage.md,
        "Leases"). Returns the expiry now covering ``owner``."""
        now = self._clock()
        term = self.config.lease_duration
        expires = now + (term if duration is None else min(duration, term))
        if create:
            self.layout.si_dir(si).mkdir(mode=0o700, parents=True, exist_ok=True)
        current = [le for le in self.load(si) if le.live(now) or le.owner == owner]
        cap = self.config.max_leases_per_index
        if not any(le.owner == owner for le in current) and len(current) >= cap:
            owner = lz.OVERFLOW_OWNER
            if not any(le.owner == owner for le in current):
                # make room: the soonest-expiring named lease moves into the overflow
                fold = min((le for le in current if le.owner != owner), key=lambda le: le.expires)
                current = [le for le in current if le is not fold]
                expires = max(expires, fold.expires)
                log.info("lease list of %s full: new leases share the overflow lease", si_b32(si))
        updated = lz.upsert(current, owner, expires)
        self.write(si, updated)
        return next(le.expires for le in updated if le.owner == owner)

    def overflow(self, si: bytes) -> lz.Lease | None:
        return next((le for le in self.load(si) if le.owner == lz.OVERFLOW_OWNER), None)
