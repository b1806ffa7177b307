"""The pid file ``run/node.pid`` and its lock: how a running node is told from a stale file.

Invariants:
- A running node holds an exclusive ``flock`` on the pid file for its whole life
  (the descriptor is close-on-exec, so children never inherit it). The kernel drops
  the lock when the process dies, however it dies, so "the file exists but nobody
  holds its lock" means stale, reliably, even if the pid was reused.
- The holder verifies after locking that the path still names the inode it locked
  (a concurrent stale-file cleanup may have unlinked it) and retries otherwise, so
  two nodes can never both believe they own one directory.
- Readers only take a non-blocking shared lock for an instant; the owner retries
  for a short while before concluding another node is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import DaemonError

MAX_PID_FILE_BYTES = 64


class AlreadyRunning(DaemonError):
    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path}: the node is already running ({who} holds the pid file lock)")


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, MAX_PID_FILE_BYTES).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


class PidLock:
    """Held by the running node from :meth:`acquire` until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, retry_for: float = 1.0) -> None:
        """Lock the pid file and write our pid; raises :class:`AlreadyRunning`."""
        if self._fd is not None:
            raise DaemonError(f"{self.path}: already held by this process")
        deadline = time.monotonic() + retry_for
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise AlreadyRunning(self.path, pid) from None
                time.sleep(0.05)  # maybe a reader's instant probe; look again
                continue
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):
                os.close(fd)  # unlinked under us by a stale-file cleanup: start over
                continue
            break
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the pid file (if it is still ours) and drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)


PidStateName = Literal["running", "stopped", "stale"]


@dataclass(frozen=True, slots=True)
class PidState:
    """``running``: the lock is held; ``stale``: file present, lock free; ``stopped``: no file."""

    state: PidStateName
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


def probe(path: Path) -> PidState:
    """Look at a pid file without disturbing its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return PidState("stopped")
    try:
        pid = _read_pid(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return PidState("running", pid)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return PidState("stale", pid)
    finally:
        os.close(fd)


def remove_stale(path: Path) -> PidState:
    """Delete the pid file if (and only if) no process holds its lock.

    Returns what was found: ``stale`` (and removed), ``running`` (left alone) or
    ``stopped`` (no file).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return PidState("stopped")
    try:
        pid = _read_pid(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return PidState("running", pid)
        if _same_file(fd, path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return PidState("stale", pid)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
