"""On-disk layout of a storage directory, and the checks that guard every path.

Layout (docs/storage.md has the full description)::

    <root>/lock                             held (flock) while a server uses the dir
    <root>/incoming/<si b32>.<shnum>        uploads in progress (deleted at start)
    <root>/shares/<p>/<si b32>/<shnum>      complete shares, immutable
    <root>/shares/<p>/<si b32>/leases       CBOR lease list for that storage index
    <root>/shares/<p>/<si b32>/slot         the signed slot record (:mod:`.slots`), if any

where ``<p>`` is the first two characters of the 32-character base32 storage
index and ``<shnum>`` is the canonical decimal share number 0..255.

Invariants: a path component is only ever built from a storage index that passed
:func:`check_storage_index` (exactly 20 bytes, re-encoded to ``[a-z2-7]{32}``) and a
share number that passed :func:`check_shnum` (an ``int`` 0..255, formatted by
``str``), so nothing from the network can name ``..``, ``/`` or anything outside
the root. Names found on disk are parsed back strictly; anything else (junk files,
symlinks, non-canonical names) is ignored, never followed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from quic_transport.identity import ID_BYTES, IdentityError, b32decode, b32encode

from .config import MAX_SHNUM
from .errors import BadRequest, StorageIOError

SI_B32_LEN = 32
LEASES_NAME = "leases"
SLOT_NAME = "slot"
_SI_RE = re.compile(r"^[a-z2-7]{32}$")
_SHNUM_RE = re.compile(r"^(0|[1-9][0-9]{0,2})$")
_INCOMING_RE = re.compile(r"^([a-z2-7]{32})\.(0|[1-9][0-9]{0,2})$")


def check_storage_index(si: object) -> bytes:
    """Return ``si`` if it is exactly 20 bytes; raise :class:`BadRequest` otherwise."""
    if not isinstance(si, bytes):
        raise BadRequest(f"storage index must be bytes, got {type(si).__name__}")
    if len(si) != ID_BYTES:
        raise BadRequest(f"storage index must be {ID_BYTES} bytes, got {len(si)}")
    return si


def check_shnum(shnum: object) -> int:
    """Return ``shnum`` if it is an int in 0..255 (bool refused); else :class:`BadRequest`."""
    if not isinstance(shnum, int) or isinstance(shnum, bool):
        raise BadRequest(f"share number must be an integer, got {type(shnum).__name__}")
    if not 0 <= shnum <= MAX_SHNUM:
        raise BadRequest(f"share number must be 0..{MAX_SHNUM}, got {shnum}")
    return shnum


def si_b32(si: bytes) -> str:
    text = b32encode(check_storage_index(si))
    assert _SI_RE.match(text)  # 20 bytes always encode to 32 base32 characters
    return text


def parse_si_name(name: str) -> bytes | None:
    """The storage index a directory name stands for, or None if it is not canonical."""
    if not _SI_RE.match(name):
        return None
    try:
        return b32decode(name, expected_len=ID_BYTES, what="storage index")
    except IdentityError:
        return None


def parse_shnum_name(name: str) -> int | None:
    """The share number a file name stands for, or None if it is not canonical."""
    if not _SHNUM_RE.match(name):
        return None
    n = int(name)
    return n if n <= MAX_SHNUM else None


def parse_incoming_name(name: str) -> tuple[bytes, int] | None:
    m = _INCOMING_RE.match(name)
    if m is None:
        return None
    si, sh = parse_si_name(m.group(1)), parse_shnum_name(m.group(2))
    return None if si is None or sh is None else (si, sh)


class Layout:
    """Path arithmetic for one storage root (no I/O except :meth:`create`, :meth:`lock`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.shares = root / "shares"
        self.lock_file = root / "lock"

    def create(self) -> None:
        for d in (self.root, self.incoming, self.shares):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            if d.is_symlink() or not d.is_dir():
                raise NotADirectoryError(f"{d} must be a real directory")

    def prefix_dir(self, si: bytes) -> Path:
        return self.shares / si_b32(si)[:2]

    def si_dir(self, si: bytes) -> Path:
        b = si_b32(si)
        return self.shares / b[:2] / b

    def share_path(self, si: bytes, shnum: int) -> Path:
        return self.si_dir(si) / str(check_shnum(shnum))

    def lease_path(self, si: bytes) -> Path:
        return self.si_dir(si) / LEASES_NAME

    def slot_path(self, si: bytes) -> Path:
        return self.si_dir(si) / SLOT_NAME

    def incoming_path(self, si: bytes, shnum: int) -> Path:
        return self.incoming / f"{si_b32(si)}.{check_shnum(shnum)}"

    def lock(self, what: str) -> int:
        """Take the exclusive ``flock`` on ``lock`` (released when the fd closes or the
        process dies); :class:`StorageIOError` if another server holds it."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageIOError(f"{what} is in use by another server") from None
        return fd

    def is_inside(self, path: Path) -> bool:
        """True iff ``path`` resolves (following any symlinks) to somewhere under root."""
        real_root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        return real == real_root or real.startswith(real_root + os.sep)


IOV_BATCH = 512  # buffers per os.pwritev call, below every platform's IOV_MAX


def pwrite_all(fd: int, views: list[memoryview], pos: int) -> None:
    """Write byte ``views`` back to back at ``pos``, retrying short writes."""
    bufs = [v for v in views if v.nbytes]
    while bufs:
        batch = bufs[:IOV_BATCH]
        n = os.pwritev(fd, batch, pos)
        if n <= 0:  # no progress: never loop forever
            raise OSError(errno.EIO, "pwritev wrote nothing")
        pos += n
        done = 0
        while done < len(batch) and n >= batch[done].nbytes:
            n -= batch[done].nbytes
            done += 1
        del bufs[:done]
        if n:
            bufs[0] = bufs[0][n:]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
