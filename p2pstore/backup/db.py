"""The backup database: a SQLite file in the node directory (``backup.sqlite``).

It remembers, per local file (absolute path), the size, mtime, ctime and inode it
had when it was uploaded and the cap it got, so a later run links an unchanged
file without reading it, and when the file was last found whole in the grid (its
upload, or a later check: an unchanged file is checked again now and then, and
uploaded again if its shares have gone); and, per directory listing (a hash of its entries), the
directory object already made for it, so an unchanged folder costs nothing. Each
upload is committed at once: a backup killed part-way runs again without sending
what already reached the grid. The file holds caps (read access to the backed-up
files): it is created ``0600`` in the node directory, which is private anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from p2pstore.api_client import ClientError

DB_NAME: Final = "backup.sqlite"
SCHEMA_VERSION: Final = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    cap TEXT NOT NULL,
    uploaded REAL NOT NULL,
    checked REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dirs (
    hash TEXT PRIMARY KEY,
    cap TEXT NOT NULL,
    made REAL NOT NULL
);
"""


class BackupDbError(ClientError):
    """The backup database cannot be opened, is not ours, or is in use by another
    backup (exit 1, with what to do)."""


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What says a local file is unchanged since it was uploaded."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def entries_hash(entries: Sequence[dict[str, Any]]) -> str:
    """A directory listing's identity: the same entries (names, caps, times, modes)
    always give the same hash."""
    raw = json.dumps(list(entries), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


def _take_lock(path: Path) -> int:
    """One backup at a time per database: ``backup.sqlite.lock``, held while open."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupDbError(
            f"another backup is running with {path}; wait for it to finish"
        ) from None
    return fd


def _connect(path: Path | None, read_only: bool) -> sqlite3.Connection:
    if path is None:
        return sqlite3.connect(":memory:")
    if not read_only and not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    try:
        if read_only:
            return sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
        return sqlite3.connect(str(path), timeout=10)
    except sqlite3.Error as e:
        raise BackupDbError(f"cannot open the backup database {path}: {e}") from None


def _from_schema_1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2 in one transaction: the ``checked`` column, each file's upload
    counting as its last check (a column left by a move cut short is reused)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {c[1] for c in conn.execute("PRAGMA table_info(files)").fetchall()}
        if "checked" not in columns:
            conn.execute("ALTER TABLE files ADD COLUMN checked REAL NOT NULL DEFAULT 0")
        conn.execute("UPDATE files SET checked = uploaded WHERE checked = 0")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _prepare(conn: sqlite3.Connection, path: Path | None, read_only: bool) -> None:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise BackupDbError(
                f"the backup database {path} has schema {version}, this version "
                f"reads up to {SCHEMA_VERSION}"
            )
        if not read_only:
            if version == 1:
                _from_schema_1(conn)
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.commit()
    except sqlite3.OperationalError as e:
        raise BackupDbError(f"cannot use the backup database {path}: {e}") from None
    except sqlite3.DatabaseError as e:
        raise BackupDbError(
            f"the backup database {path} is damaged or not ours: {e} (move it away: the "
            "next backup reads every file again and stores nothing new)"
        ) from None


class BackupDb:
    """Open with :meth:`open`; ``None`` paths give an in-memory database (dry runs
    that have no database yet, tests)."""

    def __init__(
        self, conn: sqlite3.Connection, *, read_only: bool = False, lock: int | None = None
    ) -> None:
        self._conn = conn
        self.read_only = read_only
        self._lock = lock
        self._checked: str | None = None  # the column that says when (file_record)

    @classmethod
    def open(cls, path: Path | None, *, read_only: bool = False) -> BackupDb:
        lock = None if path is None or read_only else _take_lock(path)
        try:
            conn = _connect(path, read_only)
            try:
                _prepare(conn, path, read_only)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock is not None:
                os.close(lock)
            raise
        return cls(conn, read_only=read_only, lock=lock)

    def close(self) -> None:
        self._conn.close()
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    def _has_tables(self) -> bool:
        row = self._conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='files'"
        ).fetchone()
        return bool(row[0])

    def file_cap(self, path: str, stamp: FileStamp) -> str | None:
        """The cap recorded for ``path`` if it still has ``stamp``, else None."""
        found = self.file_record(path, stamp)
        return None if found is None else found[0]

    def file_record(self, path: str, stamp: FileStamp) -> tuple[str, float] | None:
        """``(cap, when last found whole)`` recorded for ``path`` if it still has
        ``stamp``, else None."""
        if self.read_only and not self._has_tables():
            return None
        # a schema 1 database opened read-only (a dry run) has no checked column
        if self._checked is None:
            columns = self._conn.execute("PRAGMA table_info(files)").fetchall()
            self._checked = "checked" if any(c[1] == "checked" for c in columns) else "uploaded"
        row = self._conn.execute(
            f"SELECT size, mtime_ns, ctime_ns, inode, cap, {self._checked} FROM files "
            "WHERE path = ?",
            (path,),
        ).fetchone()
        if row is None or FileStamp(row[0], row[1], row[2], row[3]) != stamp:
            return None
        return str(row[4]), float(row[5])

    def record_file(self, path: str, stamp: FileStamp, cap: str) -> None:
        """``path`` was uploaded now, with ``stamp``, as ``cap``."""
        if self.read_only:
            return
        now = time.time()
        self._conn.execute(
            "INSERT OR REPLACE INTO files (path, size, mtime_ns, ctime_ns, inode, cap, "
            "uploaded, checked) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (path, stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.inode, cap, now, now),
        )
        self._conn.commit()

    def record_checked(self, path: str, when: float) -> None:
        """``path``'s recorded file was found whole in the grid at ``when``."""
        if self.read_only:
            return
        self._conn.execute("UPDATE files SET checked = ? WHERE path = ?", (when, path))
        self._conn.commit()

    def dir_cap(self, digest: str) -> str | None:
        if self.read_only and not self._has_tables():
            return None
        row = self._conn.execute("SELECT cap FROM dirs WHERE hash = ?", (digest,)).fetchone()
        return None if row is None else str(row[0])

    def record_dir(self, digest: str, cap: str) -> None:
        if self.read_only:
            return
        self._conn.execute(
            "INSERT OR REPLACE INTO dirs VALUES (?, ?, ?)", (digest, cap, time.time())
        )
        self._conn.commit()

    def counts(self) -> tuple[int, int]:
        """(files, directories) recorded."""
        if not self._has_tables():
            return 0, 0
        files = self._conn.execute("SELECT count(*) FROM files").fetchone()[0]
        dirs = self._conn.execute("SELECT count(*) FROM dirs").fetchone()[0]
        return int(files), int(dirs)
