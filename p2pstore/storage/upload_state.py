"""The state of one upload in progress on a storage server, and the offset check
every write and read applies (docs/storage.md, "Share lifecycle").

:class:`Upload` is plain data guarded by its own ``lock``; the server
(:mod:`.server`) owns the table of uploads and every rule about them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .errors import BadRequest
from .written_ranges import RangeSet


class Upload:
    """One share being uploaded: its incoming file, the ranges written so far, the
    space reserved for it, its owner and when it last moved."""

    __slots__ = (
        "done",
        "last_active",
        "lease",
        "lock",
        "owner",
        "path",
        "ranges",
        "reserved",
        "shnum",
        "si",
        "size",
    )

    def __init__(
        self,
        si: bytes,
        shnum: int,
        owner: bytes,
        size: int | None,
        path: Path,
        now: float,
        limit: int,
        lease: float | None = None,
    ) -> None:
        self.si = si
        self.shnum = shnum
        self.owner = owner
        self.size = size
        self.path = path
        self.ranges = RangeSet(limit)
        self.reserved = size or 0
        self.last_active = now
        self.lock = threading.Lock()
        self.done = False
        self.lease = lease  # seconds of lease the closed share gets (None: the default)


# Offsets and lengths beyond this are refused (file offsets are signed 64-bit).
MAX_OFFSET = 2**62


def check_lease_term(value: object) -> None:
    """A requested lease term: absent, or a positive number of seconds."""
    if value is not None and not (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 2**40
    ):
        raise BadRequest("lease must be a positive number of seconds or absent")


def check_offset(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_OFFSET:
        raise BadRequest(f"{what} must be an integer 0..2**62")
    return value
