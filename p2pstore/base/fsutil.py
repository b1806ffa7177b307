"""Small file-system helpers every layer may use: atomic writes and bounded reads.

Invariants:
- An atomic write goes to a temp file in the same directory, is fsynced, renamed over
  the target and the directory fsynced: a reader (or a crash) sees the old content or
  the new, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (temp + fsync + rename + dir fsync).

    ``durable=False`` skips both fsyncs: still atomic for readers, but a power cut may
    leave the old content (fine for files rewritten every few seconds, like
    ``status.json``; it spares a home machine's disk a sync every refresh).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644, durable: bool = True) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode, durable=durable)


def read_bounded(path: Path, limit: int) -> bytes:
    """Read at most ``limit`` bytes; ``ValueError`` if the file is longer."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: file is larger than {limit} bytes")
    return data


def umask() -> int:
    """The process's umask (read by setting and restoring it: call from one thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
