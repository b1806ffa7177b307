"""The storage package's exception hierarchy and its stable error codes.

Every failure the storage server reports is a :class:`StorageError` carrying a
stable, short ASCII ``code`` (what a program branches on) and a human ``message``
(what a person reads). The codes are part of the wire contract (docs/storage.md):
the RPC adapter sends ``(code, message)`` and the RPC client turns them back into
the same subclass, so code written against the local server and code written
against a remote one catch the same exceptions.

Local vs remote (docs/architecture.md, "Conventions"): an error raised by a server
in this process has ``remote is False``; one rebuilt from a remote server's reply
has ``remote is True`` and names that server in ``peer`` when the caller knows it.
Messages never contain secrets; the server's lease model has none (owners are
authenticated node IDs).
"""

from __future__ import annotations

import errno
import logging
from typing import ClassVar

log = logging.getLogger(__name__)


class StorageError(Exception):
    """Base of every storage failure; ``code`` is stable, ``message`` is for people."""

    code: ClassVar[str] = "storage-error"

    def __init__(self, message: str, *, remote: bool = False, peer: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remote = remote
        self.peer = peer

    def __str__(self) -> str:
        where = f" (from {self.peer})" if self.peer else (" (remote)" if self.remote else "")
        return f"{self.code}: {self.message}{where}"

    @property
    def wire_code(self) -> str:
        """The code to send on the wire (an unknown remote code survives a round trip)."""
        return self.code


class BadRequest(StorageError):
    """A field is missing, of the wrong type or out of its allowed range."""

    code = "bad-request"


class NoSuchShare(StorageError):
    """No complete share with that storage index (and share number) is stored here."""

    code = "no-such-share"


class NoSuchUpload(StorageError):
    """No upload in progress for that (storage index, share number) from this caller."""

    code = "no-such-upload"


class ShareExists(StorageError):
    """The share is already complete here; complete shares are immutable."""

    code = "share-exists"


class AlreadyUploading(StorageError):
    """Another upload of the same (storage index, share number) is in progress."""

    code = "already-being-uploaded"


class QuotaExceeded(StorageError):
    """Accepting this would exceed the byte quota or eat into the reserved free space."""

    code = "quota-exceeded"


class DiskFull(StorageError):
    """The file system ran out of space (ENOSPC/EDQUOT) while writing; upload removed."""

    code = "disk-full"


class TooLarge(StorageError):
    """A share, write or read is larger than the server's configured limit."""

    code = "too-large"


class OutOfRange(StorageError):
    """A write lies outside the share's declared size or the server's maximum share size."""

    code = "out-of-range"


class IncompleteShare(StorageError):
    """``close`` was called on an upload whose written ranges leave holes."""

    code = "incomplete-share"


class TooManyUploads(StorageError):
    """The server (or this caller) has too many uploads in progress."""

    code = "too-many-uploads"


class TooFragmented(StorageError):
    """An upload's writes form too many disjoint ranges; it was aborted."""

    code = "too-fragmented"


class NoSuchLease(StorageError):
    """The caller holds no lease on that storage index."""

    code = "no-such-lease"


class TooManyLeases(StorageError):
    """The storage index already carries the maximum number of leases."""

    code = "too-many-leases"


class BadRecord(StorageError):
    """A slot record is malformed, not canonical, badly signed, or for another storage
    index (docs/storage.md, "Slots")."""

    code = "bad-record"


class Unavailable(StorageError):
    """The server is closed, broken or otherwise not serving requests."""

    code = "unavailable"


class StorageIOError(StorageError):
    """An unexpected local I/O failure; the message names the operation, not the path."""

    code = "io-error"


class BadResponse(StorageError):
    """A remote storage server sent a reply that does not match the schema."""

    code = "bad-response"


class UnknownStorageError(StorageError):
    """A remote reported a code this version does not know; ``wire_code`` keeps it."""

    code = "unknown"

    def __init__(
        self, code: str, message: str, *, remote: bool = True, peer: str | None = None
    ) -> None:
        super().__init__(message, remote=remote, peer=peer)
        self._wire_code = code

    @property
    def wire_code(self) -> str:
        return self._wire_code

    def __str__(self) -> str:
        where = f" (from {self.peer})" if self.peer else " (remote)"
        return f"{self._wire_code}: {self.message}{where}"


_ALL: tuple[type[StorageError], ...] = (
    BadRequest,
    NoSuchShare,
    NoSuchUpload,
    ShareExists,
    AlreadyUploading,
    QuotaExceeded,
    DiskFull,
    TooLarge,
    OutOfRange,
    IncompleteShare,
    TooManyUploads,
    TooFragmented,
    NoSuchLease,
    TooManyLeases,
    BadRecord,
    Unavailable,
    StorageIOError,
    BadResponse,
)

ERROR_CODES: dict[str, type[StorageError]] = {cls.code: cls for cls in _ALL}


def error_from_code(code: str, message: str, *, peer: str | None = None) -> StorageError:
    """Rebuild the exception a remote server raised from its ``(code, message)`` reply."""
    cls = ERROR_CODES.get(code)
    if cls is None:
        return UnknownStorageError(code, message, remote=True, peer=peer)
    return cls(message, remote=True, peer=peer)


def from_os_error(what: str, e: OSError) -> StorageError:
    """Map a local I/O failure to ``disk-full`` (ENOSPC/EDQUOT) or ``io-error``; the
    details are logged here and never sent to the peer."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{what}: file system full; upload removed")
    log.error("storage %s failed: %s", what, e)
    return StorageIOError(f"{what} failed: {e.strerror or 'I/O error'}")
