"""Read-side file operations on complete shares (no state, no validation of inputs:
the server checks storage indexes, share numbers and lengths before calling).

Invariants: share files are opened with ``O_NOFOLLOW`` (a symlink fails with
``ELOOP``); reads are clamped at the end of the file; listings report only
regular files with canonical share-number names.
"""

from __future__ import annotations

import os
from pathlib import Path

from .disk_layout import parse_shnum_name


def read_ranges(path: Path, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(offset, length)`` range of ``path``, each clamped at EOF."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        out = []
        for off, length in ranges:
            chunks = []
            pos, want = off, length
            while want > 0:
                chunk = os.pread(fd, want, pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
                want -= len(chunk)
            out.append(b"".join(chunks))
        return out
    finally:
        os.close(fd)


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
