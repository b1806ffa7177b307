"""One backup run: ``LOCAL_DIR`` into ``DRIVE_PATH/Archives/<UTC time>`` and
``DRIVE_PATH/Latest`` (docs/backup.md).

The folder is walked depth first. A file whose size, mtime, ctime and inode match
the backup database is linked with the cap it got before, without being read
(unless it is due for a check, below); any other regular file is uploaded
(convergent: identical contents anywhere give the same cap and store nothing new).
Each directory becomes a whole directory object (``POST /api/v1/dir``) made
bottom-up; one whose entries did not change since a previous run is the object
made then (the database remembers it by a hash of its entries). The finished tree
is linked twice, at ``Archives/<time>`` and, replacing the previous one, at
``Latest``; both are read-only snapshots (directory caps).

Files decay in a grid whose machines come and go, and a file too damaged for the
grid to repair can only come back from its original. So an unchanged file is
checked in the grid (``check``, no share read) once it has gone ``check_after``
(30 days) since its upload or last check, the more likely the older (certainly at
twice that, so the checks of files backed up on one day spread over about two
weeks of daily runs; Tahoe-LAFS's backup database does the same); one that has
lost too many shares (:func:`~.send.thin_below`) is uploaded again from the local
file (only the missing shares are placed). ``check`` is ``"auto"`` (that),
``"all"`` (every unchanged file, this run) or ``"none"``. Literal files (held in
their caps) are never checked.

What cannot be backed up is said, one line each, and does not stop the run:
symlinks and special files are skipped; an unreadable file or folder, a name the
drive cannot hold, or a file that changed while it was read is a failure (exit 1
with the list). A node that goes away stops the run; everything uploaded so far is
in the database, so the next run sends only the rest.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from p2pstore.api_client import ApiCallError, ClientError, NodeUnreachable, TransferError
from p2pstore.api_drive import new_op_id
from p2pstore.immutable import LiteralCap, parse_cap

from . import JOBS  # uploads at once; the default lives in the package
from .db import BackupDb, FileStamp, entries_hash
from .scan import Excluder, Found, list_dir
from .send import BackupStopped, Rechecker, Sent, node_gone, recheck_file, send_file
from .workers import stop_workers

#: a file modified this close to the start of the run is not remembered as unchanged
RACY_NS = 2_000_000_000
ARCHIVES = "Archives"
LATEST = "Latest"
MAX_TIME = float(2**40) - 1
#: an unchanged file is checked in the grid from this long after its last check on,
#: certainly at twice this (module doc)
CHECK_AFTER = 30 * 86400.0
CHECKS = ("auto", "all", "none")


class BackupClient(Rechecker, Protocol):
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
    checked: int = 0  # unchanged files found whole in the grid
    reuploaded: int = 0  # unchanged files uploaded again: the grid lost too many shares
    unchecked: int = 0  # checks that could not be made (the file is linked as it was)

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
            "checked": self.checked,
            "reuploaded": self.reuploaded,
            "unchecked": self.unchecked,
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


def _literal(cap: str) -> bool:
    """A literal file's cap holds the file: nothing in the grid to check."""
    try:
        return isinstance(parse_cap(cap), LiteralCap)
    except ValueError:
        return False


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
        jobs: int = JOBS,
        check: str = "auto",
        check_after: float = CHECK_AFTER,
        chance: Callable[[], float] = random.random,
    ) -> None:
        if check not in CHECKS:
            raise ValueError(f"check must be one of {CHECKS}, not {check!r}")
        self.client = client
        self.jobs = max(1, jobs)
        self.check, self.check_after, self.chance = check, check_after, chance
        self._pool: ThreadPoolExecutor | None = None
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
        self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="p2ps-backup")
        try:
            cap = self._dir(found)
        except BaseException:
            stop_workers(self._pool, self.client)  # the node stores nothing half-sent
            raise
        finally:
            self._pool.shutdown(wait=True)
        self.report.cap = cap
        self.report.seconds = time.monotonic() - started
        return cap

    def _dir(self, found: list[Found | str], where: str = "") -> str | None:
        """This folder's directory cap. Its files are uploaded by the workers (up to
        ``jobs`` at once) while its subfolders are walked; the folder is stored once
        every entry has its cap."""
        entries: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        pending: list[tuple[Found, Future[Sent]]] = []
        for f in found:
            if isinstance(f, str):
                self._fail(f)
                continue
            entry = self._one(f, names, pending)
            if entry is not None:
                entries.append(entry)
        stop: ClientError | None = None
        for f, fut in pending:
            sent = fut.result()
            if sent.stop is not None:  # remember the uploads that did finish, then stop
                stop = stop or sent.stop
                continue
            cap = self._settle(f, str(f.path.absolute()), sent)
            self.on_change(self.report)
            if cap is not None:
                assert f.stored is not None
                entries.append(_entry(f.stored, "file", cap, f.st))
        if stop is not None:
            raise stop
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

    def _one(
        self, f: Found, names: dict[str, str], pending: list[tuple[Found, Future[Sent]]]
    ) -> dict[str, Any] | None:
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
        cap = self._file(f, pending)
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

    def _due(self, checked: float) -> bool:
        """Is an unchanged file last found whole at ``checked`` due for a check?"""
        if self.dry_run or self.check == "none":
            return False
        if self.check == "all":
            return True
        late = (self.started - checked - self.check_after) / self.check_after
        return late >= 0 and self.chance() < late

    def _file(self, f: Found, pending: list[tuple[Found, Future[Sent]]]) -> str | None:
        """The recorded cap of an unchanged file; else its upload, or the check of an
        unchanged file that is due for one, is queued (``pending``) and None returned."""
        key = str(f.path.absolute())
        found = self.db.file_record(key, FileStamp.of(f.st))
        r = self.report
        if found is not None and not _literal(found[0]) and self._due(found[1]):
            assert self._pool is not None
            pending.append((f, self._pool.submit(recheck_file, self.client, f, found[0])))
            return None
        cap = None if found is None else found[0]
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
        assert self._pool is not None
        pending.append((f, self._pool.submit(send_file, self.client, f)))
        return None

    def _settle(self, f: Found, key: str, sent: Sent) -> str | None:
        """On the main thread: what a worker's upload or check of ``f`` came to."""
        r = self.report
        r.bytes_read += sent.bytes_read
        if sent.checked or sent.unchecked is not None or sent.reuploaded is not None:
            return self._settle_check(f, key, sent)
        if sent.skipped is not None:
            self._skip(sent.skipped)
            return None
        if sent.failed is not None or sent.cap is None or sent.stamp is None:
            self._fail(sent.failed or f"{f.path}: not uploaded", file=True)
            return None
        self._remember(key, sent.stamp, sent.cap)
        r.uploaded += 1
        r.uploaded_bytes += sent.stamp.size
        if self.verbose:
            self.note(f"uploaded: {f.rel}")
        return sent.cap

    def _remember(self, key: str, stamp: FileStamp, cap: str) -> None:
        """Record an upload; but a file written less than RACY_NS before it was read
        may change again within the same timestamp tick and look unchanged later:
        it is read again next time."""
        if self.started_ns - stamp.mtime_ns > RACY_NS:
            self.db.record_file(key, stamp, cap)

    def _settle_check(self, f: Found, key: str, sent: Sent) -> str | None:
        """An unchanged file checked: linked with the cap of its upload again if there
        was one, else with its recorded cap (the copy the grid has; a failed upload
        again is listed). One that vanished meanwhile is skipped."""
        r = self.report
        if sent.skipped is not None:  # gone since the walk: not in this snapshot
            self._skip(sent.skipped)
            self.on_change(r)
            return None
        r.unchanged += 1
        r.unchanged_bytes += f.st.st_size
        if sent.checked:
            r.checked += 1
            self.db.record_checked(key, self.started)
            if self.verbose:
                self.note(f"checked: {f.rel}")
        elif sent.unchecked is not None:
            r.unchecked += 1
            if self.verbose:
                self.note(f"not checked: {sent.unchecked}")
        elif sent.failed is None and sent.stamp is not None and sent.cap is not None:
            r.reuploaded += 1
            self._remember(key, sent.stamp, sent.cap)
            new = sent.cap != sent.recorded
            if self.verbose or new:
                why = "; a new cap: the node's encoding settings changed" if new else ""
                self.note(f"uploaded again: {f.rel} ({sent.reuploaded}{why})")
        else:
            self._fail(
                f"{sent.failed} (it was being uploaded again: {sent.reuploaded}; the "
                "snapshot links the copy in the grid)"
            )
        self.on_change(r)
        return sent.cap

    def _call(self, call: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
        """One call to the node; a node that went away stops the run."""
        try:
            return call()
        except (NodeUnreachable, TransferError) as e:
            raise node_gone(what, e) from None


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
