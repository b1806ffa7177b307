"""Where a word typed in the shell points, sans-I/O: remote (vdrive) paths
against the current drive and directory, local paths against the local directory.

Remote words: ``shared:/a``, ``private:/a`` (or ``private:a``) name a drive
explicitly; ``/a`` is from the current drive's root; anything else is relative to
the current directory. ``.`` and ``..`` are resolved here (``..`` at a root stays
there), so the node only ever sees absolute, checked paths. A name may contain
``:`` (``a:b`` is a relative name, not a drive). Caps (``p2ps:...``) are not paths,
except a live directory's (docs/mutable.md): ``p2ps:dir:mut:.../a`` is ``a`` in the
live directory that cap names, a drive of its own, and the cap alone is its root.
A live drive is shown by :func:`p2pstore.app.vpath.drive_label` (``live:`` or ``live-ro:`` and 8
characters of its public key), never by its cap: a write cap is a secret.

Invariant: every :class:`VPath` returned passes :func:`p2pstore.app.vpath.check_name`
for each component.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from pathlib import Path
from typing import Final

from p2pstore.app.errors import BadRequest
from p2pstore.app.vpath import (
    DRIVES,
    LIVE_PREFIX,
    MAX_DEPTH,
    Drive,
    VPath,
    check_name,
    drive_label,
    parse_vpath,
)
from p2pstore.base.reports import safe

from .errors import ShellError, UsageError

CAP_PREFIX: Final = "p2ps:"


def is_cap(word: str) -> bool:
    """A cap, not a path; ``CAP/...`` of a live directory is a path (so is ``CAP``
    itself where a path is expected: :func:`resolve_remote` takes it)."""
    return word.startswith(CAP_PREFIX) and not (word.startswith(LIVE_PREFIX) and "/" in word)


def show_remote(path: VPath | str) -> str:
    """A path as the shell shows it (escaped; a live directory by its label)."""
    if isinstance(path, str):
        return safe(hide_live_caps(path))
    return safe(path.shown)


_LIVE_CAP = re.compile(r"p2ps:dir:mut(?:-ro)?:[a-z2-7]+:[a-z2-7]+")


def hide_live_caps(text: str) -> str:
    """``text`` with each live directory cap in it replaced by its label (a message
    from the node may name a path in a live directory: its cap must not be shown)."""

    def label(m: re.Match[str]) -> str:
        try:
            return drive_label(parse_vpath(m.group(0)).drive) + ":"
        except BadRequest:
            return m.group(0)

    return _LIVE_CAP.sub(label, text)


def _live_prefix(word: str) -> tuple[Drive, str]:
    """(the live drive, the rest) for ``CAP[/rest]``."""
    head, _, rest = word.partition("/")
    try:
        return parse_vpath(head).drive, rest
    except BadRequest as e:
        raise UsageError(f"bad live directory cap: {e.message}") from None


def drive_prefix(word: str) -> tuple[Drive, str] | None:
    """``("private", "/a")`` for ``private:/a``; None if the word names no drive."""
    for d in DRIVES:
        if word.startswith(d + ":"):
            return d, word[len(d) + 1 :]
    return None


def resolve_remote(word: str, cwd: VPath) -> VPath:
    """The absolute path ``word`` names from ``cwd``; :class:`UsageError` if invalid."""
    named = _live_prefix(word) if word.startswith(LIVE_PREFIX) else drive_prefix(word)
    if is_cap(word) and named is None:
        raise UsageError("a cap is not a path here")
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


def put_source_size(src: Path, word: str) -> int | None:
    """The size of the local file ``put`` sends (None for a pipe or device, read to its
    end); a directory or an unreadable path is refused, named as the user typed it."""
    try:
        st = src.stat()
    except OSError as e:
        raise ShellError(f"cannot read {word}: {e.strerror}") from None
    if stat_mod.S_ISDIR(st.st_mode):
        raise UsageError(f"put: {word} is a directory", "put")
    return st.st_size if stat_mod.S_ISREG(st.st_mode) else None
