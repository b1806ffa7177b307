"""Secret files of a node directory (convergence secret, API token, vdrive secrets).

Invariants:
- Secret files are created with ``O_EXCL`` and mode 0600 and refused at load time if
  group or other may read them.
- Reads are bounded; every failure is a :class:`~.errors.SecretFileError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2pstore.base.fsutil import read_bounded

from .errors import SecretFileError


def create_secret_file(path: Path, text: str) -> None:
    """Create a new file readable only by its owner; refuses to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_secret_file(path: Path, *, what: str, limit: int = 4096) -> str:
    """Read a secret file's text, refusing group/other-readable files."""
    try:
        mode = path.stat().st_mode & 0o777
        data = read_bounded(path, limit)
    except OSError as e:
        raise SecretFileError(path, f"cannot read {what}: {e.strerror}") from None
    except ValueError:
        raise SecretFileError(path, f"{what} file is too large") from None
    if mode & 0o077:
        raise SecretFileError(
            path, f"{what} is readable by others (mode {mode:o}); run chmod 600 {path}"
        )
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise SecretFileError(path, f"{what} file is not ASCII text") from None
