"""Where a word typed in the shell points, sans-I/O: remote (vdrive) paths
against the current drive and directory, local paths against the local directory.

Remote words: ``shared:/a``, ``private:/a`` (or ``private:a``) name a drive
explicitly; ``/a`` is from the current drive's root; anything else is relative to
the current directory. ``.`` and ``..`` are resolved here (``..`` at a root stays
there), so the node only ever sees absolute, checked paths. A name may contain
``:`` (``a:b`` is a relative name, not a drive). Caps (``p2ps:...``) are not paths.

Invariant: every :class:`VPath` returned passes :func:`p2pstore.app.vpath.check_name`
for each component.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from p2pstore.app.errors import BadRequest
from p2pstore.app.vpath import DRIVES, MAX_DEPTH, Drive, VPath, check_name

from .errors import UsageError

CAP_PREFIX: Final = "p2ps:"


def is_cap(word: str) -> bool:
    return word.startswith(CAP_PREFIX)


def drive_prefix(word: str) -> tuple[Drive, str] | None:
    """``("private", "/a")`` for ``private:/a``; None if the word names no drive."""
    for d in DRIVES:
        if word.startswith(d + ":"):
            return d, word[len(d) + 1 :]
    return None


def resolve_remote(word: str, cwd: VPath) -> VPath:
    """The absolute path ``word`` names from ``cwd``; :class:`UsageError` if invalid."""
    if is_cap(word):
        raise UsageError("a cap is not a path here")
    named = drive_prefix(word)
    if named is not None:
        drive, rest = named
        parts: list[str] = []
    else:
        drive, rest = cwd.drive, word
        parts = [] if word.startswith("/") else list(cwd.parts)
    for piece in rest.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if parts:
                parts.pop()
            continue
        try:
            check_name(piece)
        except BadRequest as e:
            raise UsageError(f"bad path {word!r}: {e.message}") from None
        parts.append(piece)
    if len(parts) > MAX_DEPTH:
        raise UsageError(f"bad path {word!r}: deeper than {MAX_DEPTH} levels")
    return VPath(drive, tuple(parts))


def root_of(drive: Drive) -> VPath:
    return VPath(drive, ())


def resolve_local(word: str, cwd: Path) -> Path:
    """A local path: ``~`` expanded, relative words joined to ``cwd``, normalised."""
    p = Path(os.path.expanduser(word))
    return Path(os.path.normpath(p if p.is_absolute() else cwd / p))


def show_local(path: Path, cwd: Path) -> str:
    """``path`` as short as is clear: relative to ``cwd`` when below it."""
    try:
        rel = path.relative_to(cwd)
    except ValueError:
        return str(path)
    return str(rel) if str(rel) != "." else "."
