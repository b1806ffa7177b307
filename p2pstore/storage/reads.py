"""Read-side file operations on complete shares (no state: the server checks storage
indexes and share numbers before calling; :func:`share_ranges` checks the ranges).

Invariants: share files are opened with ``O_NOFOLLOW`` (a symlink fails with
``ELOOP``); reads are clamped at the end of the file; listings report only
regular files with canonical share-number names.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .config import MAX_HASH_PREFIX
from .disk_layout import Layout, parse_shnum_name, si_b32
from .errors import BadRequest, NoSuchShare, TooLarge, from_os_error
from .upload_state import check_offset

T = TypeVar("T")


def share_ranges(
    layout: Layout,
    si: bytes,
    shnum: int,
    ranges: list[tuple[int, int]],
    limits: tuple[int, int],
    fn: Callable[[Path, list[tuple[int, int]]], T],
) -> T:
    """``fn(path, ranges)`` on a complete share, with at most ``limits[0]`` ranges of
    ``limits[1]`` bytes in all. A missing share or a symlink is :class:`NoSuchShare`,
    other file-system errors their storage error."""
    max_ranges, limit = limits
    if len(ranges) > max_ranges:
        raise TooLarge(f"more than {max_ranges} ranges in one call")
    total = 0
    for off, length in ranges:
        check_offset(off, "offset")
        total += check_offset(length, "length")
    if total > limit:
        raise TooLarge(f"{total} bytes in one call exceed the limit of {limit}")
    path = layout.share_path(si, shnum)
    missing = NoSuchShare(f"no share {shnum} of {si_b32(si)} here")
    if not layout.is_inside(path.parent):
        raise missing
    try:
        return fn(path, ranges)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise missing from e
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink: never followed
            raise missing from None
        raise from_os_error("read", e) from None


#: largest piece read at once while hashing
HASH_PIECE = 1 << 20


def _pieces(fd: int, offset: int, length: int, piece: int) -> Iterator[bytes]:
    """The bytes of one range, clamped at EOF, at most ``piece`` at a time."""
    pos, want = offset, length
    while want > 0:
        chunk = os.pread(fd, min(want, piece), pos)
        if not chunk:
            return
        yield chunk
        pos += len(chunk)
        want -= len(chunk)


def read_ranges(path: Path, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(offset, length)`` range of ``path``, each clamped at EOF."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return [b"".join(_pieces(fd, off, length, length)) for off, length in ranges]
    finally:
        os.close(fd)


def ranges_hasher(
    prefix: bytes, ranges: list[tuple[int, int]]
) -> Callable[[Path, list[tuple[int, int]]], list[bytes]]:
    """Hashes each ``(offset, length)`` range of a file (clamped at EOF), read a
    piece at a time, as SHA-256 of ``prefix`` and the range. The ranges must be in
    order and must not overlap: each byte is hashed at most once per call."""
    if len(prefix) > MAX_HASH_PREFIX:
        raise BadRequest(f"a hash prefix is at most {MAX_HASH_PREFIX} bytes")
    end = 0
    for off, length in ranges:
        if off < end:
            raise BadRequest("hash ranges must be in order and must not overlap")
        end = off + length
    base = hashlib.sha256(prefix)

    def hash_ranges(path: Path, ranges: list[tuple[int, int]]) -> list[bytes]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            out = []
            for off, length in ranges:
                h = base.copy()
                for chunk in _pieces(fd, off, length, HASH_PIECE):
                    h.update(chunk)
                out.append(h.digest())
            return out
        finally:
            os.close(fd)

    return hash_ranges


def share_sizes(si_dir: Path) -> dict[int, int]:
    """``{shnum: size}`` of the share files in one storage-index directory."""
    out: dict[int, int] = {}
    try:
        with os.scandir(si_dir) as it:
            for entry in it:
                n = parse_shnum_name(entry.name)
                if n is None or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    out[n] = entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # removed by an expiry while we listed
    except (FileNotFoundError, NotADirectoryError):
        pass
    return dict(sorted(out.items()))
