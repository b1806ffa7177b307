"""One backup run: ``LOCAL_DIR`` into ``DRIVE_PATH/Archives/<UTC time>`` and
``DRIVE_PATH/Latest`` (docs/backup.md).

The folder is walked depth first. A file whose size, mtime, ctime and inode match
the backup database is linked with the cap it got before, without being read; any
other regular file is uploaded (convergent: identical contents anywhere give the
same cap and store nothing new). Each directory becomes a whole directory object
(``POST /api/v1/dir``) made bottom-up; one whose entries did not change since a
previous run is the object made then (the database remembers it by a hash of its
entries). The finished tree is linked twice, at ``Archives/<time>`` and, replacing
the previous one, at ``Latest``; both are read-only snapshots (directory caps).

What cannot be backed up is said, one line each, and does not stop the run:
symlinks and special files are skipped; an unreadable file or folder, a name the
drive cannot hold, or a file that changed while it was read is a failure (exit 1
with the list). A node that goes away stops the run; everything uploaded so far is
in the database, so the next run sends only the rest.
"""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

from p2pstore.api_client import (
    EXIT_UNREACHABLE,
    ApiCallError,
    ClientError,
    NodeUnreachable,
    TransferError,
)
from p2pstore.api_drive import new_op_id

from .db import BackupDb, FileStamp, entries_hash
from .scan import Excluder, Found, list_dir

#: a file modified this close to the start of the run is not remembered as unchanged
RACY_NS = 2_000_000_000
ARCHIVES = "Archives"
LATEST = "Latest"
MAX_TIME = float(2**40) - 1


class BackupClient(Protocol):
    def put(
        self,
        source: IO[bytes],
        *,
        size: int | None = None,
        mode: str = "convergent",
        progress: Callable[[int], None] | None = None,
        stored: Callable[[int], None] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]: ...
    def make_dir(self, entries: list[dict[str, Any]]) -> dict[str, Any]: ...
    def stat(self, path: str) -> dict[str, Any]: ...
    def ls(self, path: str) -> dict[str, Any]: ...


Change = Callable[[str, Callable[[str], dict[str, Any]]], dict[str, Any]]
"""``change(what, call)`` makes one drive change, ``call(op_id)``, settling a lost
answer (``p2pstore.api_drive.settled``)."""


class ChangeClient(Protocol):
    def mkdir(self, path: str, *, parents: bool = False, op_id: str | None = None) -> Any: ...
    def link(
        self, path: str, cap: str, *, replace: bool = False, op_id: str | None = None
    ) -> Any: ...
    def unlink(self, path: str, *, recursive: bool = False, op_id: str | None = None) -> Any: ...


class FileChanged(Exception):
    """The file's length changed while it was being sent."""


class _Exact(io.RawIOBase):
    """Reads exactly ``size`` bytes of ``src``: a file that grew or shrank while it
    was sent raises :class:`FileChanged` (the upload is cut, the node stores
    nothing) instead of sending a body of the wrong length."""

    def __init__(self, src: IO[bytes], size: int) -> None:
        self.src, self.left = src, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        if not want:
            return b""
        try:
            data = self.src.read(want)
            self.left -= len(data)
            # Shrank, or grew (checked before the last bytes go, so the node never
            # receives a whole body of a file that was still being written).
            grew = not self.left and self.src.read(1)
        except OSError as e:
            raise ReadFailed(e.strerror or str(e)) from None
        if not data or grew:
            raise FileChanged()
        return data


class ReadFailed(Exception):
    """Reading the local file failed (an I/O error): the file's failure, not the
    node's; the upload is cut at once."""


class BackupStopped(ClientError):
    """The run cannot go on (the drive refused the snapshot)."""


class NodeGone(BackupStopped):
    """The node went away during the run (exit 3, as for any unreachable node)."""

    exit_code = EXIT_UNREACHABLE


@dataclass
class Report:
    files_total: int = 0
    bytes_total: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    unchanged: int = 0
    unchanged_bytes: int = 0
    bytes_read: int = 0
    dirs_made: int = 0
    dirs_reused: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    snapshot: str | None = None
    cap: str | None = None
    seconds: float = 0.0

    files_failed: int = 0

    @property
    def files_done(self) -> int:
        return self.uploaded + self.unchanged + self.files_failed

    def as_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "files": self.files_total,
            "bytes": self.bytes_total,
            "uploaded": self.uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "unchanged": self.unchanged,
            "unchanged_bytes": self.unchanged_bytes,
            "bytes_read": self.bytes_read,
            "dirs_made": self.dirs_made,
            "dirs_reused": self.dirs_reused,
            "skipped": list(self.skipped),
            "failed": list(self.failed),
            "seconds": round(self.seconds, 3),
        }


def snapshot_name(now: float) -> str:
    """``2026-12-05T171503Z``: ISO 8601 (basic time), UTC, sorts by time."""
    return time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime(now))


def count_files(root: Path, excluder: Excluder) -> tuple[int, int]:
    """(regular files, their bytes) below ``root`` as a run will see them."""
    files = size = 0
    todo = [(root, "")]
    while todo:
        path, rel = todo.pop()
        try:
            found = list(list_dir(path, rel, excluder))
        except OSError:
            continue
        for f in found:
            if isinstance(f, str):
                continue
            if f.kind == "dir":
                todo.append((f.path, f.rel))
            elif f.kind == "file":
                files += 1
                size += f.st.st_size
    return files, size


def _entry(name: str, kind: str, cap: str, st: os.stat_result) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "cap": cap,
        "mtime": min(max(st.st_mtime, 0.0), MAX_TIME),
        "mode": stat.S_IMODE(st.st_mode),
    }


class Backup:
    """Back up ``source`` with ``client`` (a :class:`~p2pstore.api_client.NodeClient`).
    ``on_change`` is called after each file (progress), ``note`` with each line
    worth saying as it happens (``verbose`` only: each file, skip and failure; the
    report lists the skips and failures at the end either way)."""

    def __init__(
        self,
        client: BackupClient,
        db: BackupDb,
        source: Path,
        *,
        excluder: Excluder | None = None,
        dry_run: bool = False,
        verbose: bool = False,
        note: Callable[[str], None] = lambda _m: None,
        on_change: Callable[[Report], None] = lambda _r: None,
    ) -> None:
        self.client = client
        self.db = db
        self.source = source
        self.excluder = excluder or Excluder()
        self.dry_run = dry_run
        self.verbose = verbose
        self.note = note
        self.on_change = on_change
        self.report = Report()
        self.started = time.time()
        self.started_ns = time.time_ns()

    def _fail(self, line: str, *, file: bool = False) -> None:
        self.report.failed.append(line)
        self.report.files_failed += file
        if self.verbose:
            self.note(f"failed: {line}")

    def _skip(self, line: str) -> None:
        self.report.skipped.append(line)
        if self.verbose:
            self.note(f"skipped: {line}")

    def tree(self) -> str | None:
        """Walk and upload; the root's directory cap (None in a dry run)."""
        started = time.monotonic()
        files, size = count_files(self.source, self.excluder)
        self.report.files_total, self.report.bytes_total = files, size
        self.on_change(self.report)
        try:
            found = list(list_dir(self.source, "", self.excluder))
        except OSError as e:
            raise BackupStopped(f"cannot list {self.source}: {e.strerror}") from None
        cap = self._dir(found)
        self.report.cap = cap
        self.report.seconds = time.monotonic() - started
        return cap

    def _dir(self, found: list[Found | str], where: str = "") -> str | None:
        entries: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        for f in found:
            if isinstance(f, str):
                self._fail(f)
                continue
            entry = self._one(f, names)
            if entry is not None:
                entries.append(entry)
        if self.dry_run:
            return None
        entries.sort(key=lambda e: str(e["name"]).encode("utf-8"))
        digest = entries_hash(entries)
        cap = self.db.dir_cap(digest)
        if cap is not None:
            self.report.dirs_reused += 1
            return cap
        try:
            doc = self._call(lambda: self.client.make_dir(entries), f"store {where or '.'}")
        except ApiCallError as e:
            self._fail(f"{self.source / where}: the node could not store this folder: {e}")
            return None
        cap = str(doc["cap"])
        self.db.record_dir(digest, cap)
        self.report.dirs_made += 1
        return cap

    def _one(self, f: Found, names: dict[str, str]) -> dict[str, Any] | None:
        if f.kind == "symlink":
            self._skip(f"{f.path}: a symbolic link (links are not backed up)")
            return None
        if f.kind == "special":
            self._skip(f"{f.path}: not a regular file or folder (device, socket or pipe)")
            return None
        if f.stored is None:
            self._fail(
                f"{f.path}: the drive cannot hold this name (not UTF-8, control "
                "characters, or longer than 255 bytes); rename it"
            )
            return None
        if f.stored in names:
            self._fail(
                f"{f.path}: the same name as {names[f.stored]} once normalized "
                "(Unicode NFC); rename one of them"
            )
            return None
        names[f.stored] = f.name
        if f.kind == "dir":
            return self._subdir(f)
        cap = self._file(f)
        return None if cap is None else _entry(f.stored, "file", cap, f.st)

    def _subdir(self, f: Found) -> dict[str, Any] | None:
        assert f.stored is not None
        try:
            found = list(list_dir(f.path, f.rel, self.excluder))
        except OSError as e:
            self._fail(f"{f.path}: cannot list this folder: {e.strerror}")
            return None
        cap = self._dir(found, f.rel)
        return None if cap is None else _entry(f.stored, "dir", cap, f.st)

    def _file(self, f: Found) -> str | None:
        key = str(f.path.absolute())
        cap = self.db.file_cap(key, FileStamp.of(f.st))
        r = self.report
        if cap is not None:
            r.unchanged += 1
            r.unchanged_bytes += f.st.st_size
            if self.verbose:
                self.note(f"unchanged: {f.rel}")
            self.on_change(r)
            return cap
        if self.dry_run:
            r.uploaded += 1
            r.uploaded_bytes += f.st.st_size
            self.note(f"would upload: {f.rel}")
            self.on_change(r)
            return None
        cap = self._upload(f, key)
        self.on_change(r)
        return cap

    def _open(self, f: Found) -> int | None:
        # O_NONBLOCK: a FIFO swapped in since the listing must not hang the run
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        try:
            try:
                return os.open(f.path, flags | getattr(os, "O_NOATIME", 0))
            except PermissionError:  # O_NOATIME needs ownership: open again without it
                return os.open(f.path, flags)
        except FileNotFoundError:
            self._skip(f"{f.path}: vanished during the backup")
        except OSError as e:
            self._fail(f"{f.path}: cannot read it: {e.strerror}", file=True)
        return None

    def _upload(self, f: Found, key: str) -> str | None:
        fd = self._open(f)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as src:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                self._skip(f"{f.path}: no longer a regular file")
                return None
            sent = [0]

            def progress(n: int) -> None:
                sent[0] = n

            body = cast(IO[bytes], _Exact(src, before.st_size))
            try:
                doc = self._call(
                    lambda: self.client.put(
                        body, size=before.st_size, name=f.name, progress=progress
                    ),
                    f"upload {f.rel}",
                )
            except FileChanged:
                doc = {}
            except ReadFailed as e:
                self._fail(f"{f.path}: cannot read it: {e}", file=True)
                return None
            except ApiCallError as e:
                if e.status >= 500:  # the node or the grid cannot take uploads now
                    raise BackupStopped(
                        f"upload {f.rel}: {e}; the backup stopped (what was uploaded is "
                        "remembered: run it again when the grid has room)"
                    ) from None
                self._fail(f"{f.path}: the node refused it: {e}", file=True)
                return None
            finally:
                self.report.bytes_read += sent[0]
            after = os.fstat(fd)
        changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        if changed or doc.get("size") != before.st_size:
            self._fail(
                f"{f.path}: changed while it was read; not backed up (run the backup "
                "again when it is not being written)",
                file=True,
            )
            return None
        cap = str(doc["cap"])
        # A file written less than RACY_NS before it was read may change again within
        # the same timestamp tick and look unchanged later: read it again next time.
        if self.started_ns - before.st_mtime_ns > RACY_NS:
            self.db.record_file(key, FileStamp.of(before), cap)
        self.report.uploaded += 1
        self.report.uploaded_bytes += before.st_size
        if self.verbose:
            self.note(f"uploaded: {f.rel}")
        return cap

    def _call(self, call: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
        """One call to the node; a node that went away stops the run."""
        try:
            return call()
        except (NodeUnreachable, TransferError) as e:
            raise NodeGone(
                f"{what}: {e}; the backup stopped. Run it again: what was uploaded is "
                "remembered and is not sent again"
            ) from None


def publish(
    client: BackupClient,
    change: Change,
    changes: ChangeClient,
    dest: str,
    cap: str,
    started: float,
) -> str:
    """Link the snapshot ``cap`` at ``dest/Archives/<start time>`` (a new name) and at
    ``dest/Latest``; the archive path. ``Latest`` is replaced only when it is one of
    the snapshots in ``Archives`` (so a folder someone else named so, or a snapshot
    changed since, is never deleted)."""
    base = dest.rstrip("/")  # "private:/" -> "private:", so base + "/x" is a path
    archives = f"{base}/{ARCHIVES}"
    change(f"mkdir {archives}", lambda i: changes.mkdir(archives, parents=True, op_id=i))
    path = _link_new(change, changes, archives, snapshot_name(started), cap)
    latest = f"{base}/{LATEST}"
    try:
        entry = client.stat(latest)["entry"]
    except ApiCallError as e:
        if e.status != 404:
            raise
        entry = None
    if entry is not None:
        snapshots = {e.get("cap") for e in client.ls(archives)["entries"]}
        if entry.get("kind") != "dir" or entry.get("cap") not in snapshots:
            what = "a file" if entry.get("kind") != "dir" else "a folder that is not a snapshot"
            raise BackupStopped(
                f"{latest} is {what} (nothing in {archives} is the same), so it was not "
                f"replaced; the snapshot is at {path}. Move {LATEST} away so that it can "
                "point at the newest snapshot"
            )
        change(f"rm {latest}", lambda i: changes.unlink(latest, recursive=True, op_id=i))
    change(f"link {latest}", lambda i: changes.link(latest, cap, op_id=i))
    return path


def _link_new(change: Change, changes: ChangeClient, parent: str, stamp: str, cap: str) -> str:
    """Link ``cap`` at ``parent/stamp``, or ``stamp-2``, ``-3``... if taken."""
    for n in range(1, 100):
        path = f"{parent}/{stamp}" if n == 1 else f"{parent}/{stamp}-{n}"

        def link(op_id: str, path: str = path) -> dict[str, Any]:
            return dict(changes.link(path, cap, op_id=op_id))

        try:
            change(f"link {path}", link)
            return path
        except ApiCallError as e:
            if e.code not in ("exists", "is-a-directory"):
                raise
    raise BackupStopped(f"{parent}: too many snapshots named {stamp}")


def direct_change(what: str, call: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """A :data:`Change` with no settling (tests)."""
    return call(new_op_id())
