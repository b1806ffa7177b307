"""``p2pstore restore DRIVE_PATH LOCAL_DIR``: a snapshot (or any drive folder) back
to a local folder, with the file modes and mtimes a backup recorded.

Every name from the drive is checked again before it touches the local disk (no
``/``, NUL, ``.`` or ``..``), so a hostile directory object cannot write outside
``LOCAL_DIR``. Each file is downloaded (verified by the node) to a temporary name
beside its target and renamed into place only when complete, so an interrupted
restore leaves no half-written file under a real name. Existing files are not
replaced unless asked (``--force``).

Up to ``jobs`` files are downloaded at once (worker threads; a small file's get is
mostly round trips) while the folders are walked. Every check, the report and the
progress stay on the calling thread; a name listed twice in one folder is a
failure (the first is kept), however its copies are spread over the workers.
Folders get their recorded modes and mtimes at the end, each after everything
inside it, deepest first; a run that stops leaves them ``0700`` (``--force`` again
finishes them). A stop (Ctrl-C, the node gone) drops the queued downloads, cuts
those under way, and lets none of them land afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from p2pstore.api_client import ClientError, NodeUnreachable
from p2pstore.base.fsutil import umask

from . import JOBS
from .workers import stop_workers


class RestoreClient(Protocol):
    def ls(self, path: str) -> dict[str, Any]: ...
    def stat(self, path: str) -> dict[str, Any]: ...
    def get(
        self, cap: str, sink: IO[bytes], *, progress: Callable[[int], None] | None = None
    ) -> int: ...


class RestoreError(ClientError):
    pass


class _Stopped(Exception):
    """The run is stopping: a download under way gives up (never counted)."""


class _CannotWrite(ClientError):
    """This file cannot be put in place (the run goes on with the others)."""


#: a local disk that refuses every file: stop rather than fail each file in turn
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class _Sink:
    """A download's temporary file that stops taking bytes once the run stops."""

    def __init__(self, f: IO[bytes], stop: threading.Event) -> None:
        self.f, self.stop = f, stop

    def write(self, data: bytes) -> int:
        if self.stop.is_set():
            raise _Stopped()
        return self.f.write(data)


@dataclass
class RestoreReport:
    files: int = 0
    bytes: int = 0
    dirs: int = 0
    failed: list[str] = field(default_factory=list)


def safe_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RestoreError(f"the drive holds a name no local file may have: {name!r}")
    return name


def _mode_and_time(path: Path, entry: dict[str, Any], *, is_dir: bool) -> None:
    """The recorded permission bits (never set-user/group-ID: a snapshot from the
    grid must not make a privileged program; a folder stays open to its owner), or
    the umask's default for an entry that recorded none; and the mtime."""
    mode = entry.get("mode")
    if isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777:
        os.chmod(path, (mode & 0o1777) | (0o700 if is_dir else 0))
    else:
        os.chmod(path, (0o777 if is_dir else 0o666) & ~umask())
    mtime = entry.get("mtime")
    if isinstance(mtime, int | float) and not isinstance(mtime, bool):
        os.utime(path, (mtime, mtime))


class Restore:
    def __init__(
        self,
        client: RestoreClient,
        *,
        force: bool = False,
        note: Callable[[str], None] = lambda _m: None,
        on_bytes: Callable[[int], None] = lambda _n: None,
        jobs: int = JOBS,
    ) -> None:
        self.client = client
        self.force = force
        self.note = note
        self.on_bytes = on_bytes
        self.jobs = max(1, jobs)
        self.report = RestoreReport()
        self._pending: deque[tuple[Path, Future[int]]] = deque()  # downloads, in order
        self._folders: list[tuple[Path, dict[str, Any]]] = []  # deepest first
        self._files: set[Path] = set()  # every local file path this run downloads to
        self._stop = threading.Event()

    def run(self, source: str, target: Path) -> RestoreReport:
        entry = self.client.stat(source)["entry"]
        if entry.get("kind") != "dir":
            raise RestoreError(f"{source} is a file; use `p2pstore get` for one file")
        if target.exists() and not target.is_dir():
            raise RestoreError(f"{target} exists and is not a folder")
        if target.is_dir() and any(target.iterdir()) and not self.force:
            raise RestoreError(
                f"{target} is not empty; restore into a new folder, or add --force to "
                "replace the files it has with the snapshot's"
            )
        target.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="p2ps-restore")
        try:
            self._dir(source.rstrip("/") or source, target)
            self._settle(0)
        except BaseException:
            # Stop now (Ctrl-C, the node gone): queued downloads are dropped and those
            # in flight cut; each removes its temporary file, and none lands now.
            self._stop.set()
            stop_workers(self._pool, self.client)
            raise
        finally:
            self._pool.shutdown(wait=True)
        for local, e in self._folders:
            _mode_and_time(local, e, is_dir=True)
            self.report.dirs += 1
        return self.report

    def _dir(self, source: str, target: Path) -> None:
        try:
            entries = self.client.ls(source)["entries"]
        except ClientError as err:
            if isinstance(err, NodeUnreachable):
                raise
            self._failed(f"{source}: cannot list it: {err}")  # the rest is still restored
            return
        base = source if source.endswith("/") else source + "/"
        for e in entries:
            name = safe_name(e.get("name"))
            local = target / name
            if e.get("kind") != "dir":
                self._file(e, local)
                continue
            try:
                if local in self._files:
                    self._failed(f"{local}: listed twice, as a file and a folder (the file kept)")
                    continue
                if local.is_symlink() or (local.exists() and not local.is_dir()):
                    self._failed(f"{local}: exists and is not a folder")
                    continue
                local.mkdir(exist_ok=True)
                if local.is_symlink():  # swapped in since the check: never follow it
                    self._failed(f"{local}: became a symbolic link; not entered")
                    continue
                os.chmod(local, 0o700)  # writable while it is filled
            except OSError as err:
                self._failed(f"{local}: cannot make this folder: {err.strerror}")
                continue
            self._dir(base + name, local)
            self._folders.append((local, e))

    def _failed(self, line: str) -> None:
        self.report.failed.append(line)
        self.note(f"failed: {line}")

    def _file(self, e: dict[str, Any], local: Path) -> None:
        if local in self._files:
            self._failed(f"{local}: listed twice in its folder (the first kept)")
            return
        if local.is_symlink() or local.is_dir() or (local.exists() and not self.force):
            self._failed(f"{local}: already exists (not replaced)")
            return
        cap = e.get("cap")
        if not isinstance(cap, str):
            self._failed(f"{local}: the drive entry has no cap")
            return
        self._files.add(local)
        self._pending.append((local, self._pool.submit(self._fetch, cap, e, local)))
        self._settle(2 * self.jobs)

    def _settle(self, keep: int) -> None:
        """Take in the finished downloads, in order, waiting while more than ``keep``
        are queued or under way (0: all of them)."""
        while self._pending:
            local, fut = self._pending[0]
            if not fut.done():
                if len(self._pending) <= keep:
                    return
                wait([fut], return_when=FIRST_COMPLETED)
            self._pending.popleft()
            try:
                n = fut.result()
            except ClientError as err:
                if isinstance(err, RestoreError | NodeUnreachable):
                    raise
                self._failed(f"{local}: {err}")
                continue
            self.report.files += 1
            self.report.bytes += n
            self.on_bytes(self.report.bytes)

    def _fetch(self, cap: str, e: dict[str, Any], local: Path) -> int:
        """Download ``cap`` beside ``local`` and rename it into place (a worker)."""
        if self._stop.is_set():
            raise _Stopped()
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".p2pstore-restore-", dir=local.parent)
            with os.fdopen(fd, "wb") as f:
                n = self.client.get(cap, _Sink(f, self._stop), progress=None)  # type: ignore[arg-type]
            _mode_and_time(Path(tmp), e, is_dir=False)
            if self._stop.is_set():
                raise _Stopped()
            os.replace(tmp, local)
        except BaseException as err:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(err, OSError) and err.errno not in _DISK_FULL:
                # e.g. a folder of the same name where the file goes (a filesystem that
                # folds case): this file fails, the others go on
                raise _CannotWrite(f"cannot write it: {err.strerror or err}") from None
            raise
        return n
