"""Plain results returned by the storage server (frozen dataclasses, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Allocation:
    """An accepted upload: writes may cover ``[0, limit)``."""

    storage_index: bytes
    shnum: int
    size: int | None  # declared size, or None for a streamed upload
    limit: int  # declared size, or the server's max_share_size


@dataclass(frozen=True, slots=True)
class ClosedShare:
    storage_index: bytes
    shnum: int
    size: int
    lease_expires: float


@dataclass(frozen=True, slots=True)
class StorageStats:
    used: int  # bytes in complete shares
    reserved: int  # bytes set aside for uploads in progress
    max_bytes: int | None
    reserved_space: int
    disk_free: int
    available: int  # the largest new share that would be accepted now
    shares: int
    uploads: int
    max_share_size: int
    max_write: int
    max_read: int
    lease_duration: float
