"""Walking the local folder of a backup: what is left out, what cannot be stored,
and what is not a regular file. Pure but for ``os.scandir`` / ``os.lstat``.

Exclusion patterns (``--exclude``, ``--exclude-from``) are shell globs
(``fnmatch``: ``*``, ``?``, ``[...]``): a pattern without ``/`` is matched against
each entry's name at any depth (``*.tmp``, ``node_modules``, ``.cache``); a
pattern with ``/`` against the entry's path relative to the backed-up folder
(``photos/raw``, ``build/*.o``); a trailing ``/`` matches directories only.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

MAX_NAME_BYTES: Final = 255

Kind = Literal["file", "dir", "symlink", "special"]


class ExcludeFileError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Pattern:
    glob: str
    dirs_only: bool
    anchored: bool  # has a "/": matched against the relative path

    @classmethod
    def parse(cls, text: str) -> Pattern:
        dirs_only = text.endswith("/")
        glob = text.rstrip("/") or text
        return cls(glob.lstrip("/"), dirs_only, "/" in glob)


class Excluder:
    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(Pattern.parse(p) for p in patterns if p.strip())

    def excluded(self, rel: str, is_dir: bool) -> bool:
        name = rel.rpartition("/")[2]
        for p in self.patterns:
            if p.dirs_only and not is_dir:
                continue
            if fnmatch.fnmatchcase(rel if p.anchored else name, p.glob):
                return True
        return False


def read_exclude_file(path: str) -> list[str]:
    """Patterns from a file: one per line; blank lines and ``#`` comments ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ExcludeFileError(f"cannot read the exclude file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ExcludeFileError(f"the exclude file {path} is not UTF-8 text") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def drive_name(name: str) -> str | None:
    """The name this local entry gets in the drive (NFC), or None if a drive cannot
    hold it (undecodable bytes, control characters, longer than 255 bytes)."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped undecodable byte
        return None
    if len(raw) > MAX_NAME_BYTES or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return None
    return unicodedata.normalize("NFC", name)


@dataclass(frozen=True, slots=True)
class Found:
    """One entry of a local directory: ``name`` as on disk, ``stored`` as in the
    drive (None: cannot be stored), ``st`` its ``lstat``."""

    name: str
    path: Path
    rel: str
    stored: str | None
    kind: Kind
    st: os.stat_result


def _kind(st: os.stat_result) -> Kind:
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "special"


def list_dir(path: Path, rel: str, excluder: Excluder) -> Iterator[Found | str]:
    """The entries of ``path`` not excluded, sorted by name; an entry that vanished
    or cannot be looked at yields an error line instead. Raises :class:`OSError`
    if ``path`` itself cannot be listed."""
    with os.scandir(path) as it:
        names = sorted(e.name for e in it)
    for name in names:
        child_rel = f"{rel}/{name}" if rel else name
        child = path / name
        try:
            st = os.lstat(child)
        except OSError as e:
            yield f"{child}: cannot look at it: {e.strerror}"
            continue
        kind = _kind(st)
        if excluder.excluded(child_rel, kind == "dir"):
            continue
        yield Found(name, child, child_rel, drive_name(name), kind, st)
