"""``p2pstore start|stop|restart|status DIR``: the node as a background process.

``start`` validates the node directory first (so config errors print on the
terminal, not only in a log), clears a stale pid file, then spawns
``python -m p2pstore.cli run DIR --daemonized`` (its environment from
``main.node_environment``) in a new session (``setsid``:
detached from the terminal, no SIGHUP when it closes) with stdin from
``/dev/null`` and stdout/stderr appended to ``logs/daemon.out`` (tracebacks that
escape logging land there; the node's own log is the rotated ``logs/node.log``).
It then waits until the node reports ``running`` in ``run/status.json``. The daemon
stays a child of the caller until the caller exits (the CLI exits at once; a
long-lived caller should reap it or use ``run`` in a subprocess instead).

Invariants:
- Whether a node runs is decided by the pid-file lock only (see ``pidfile``), never
  by the pid alone, so a reused pid cannot fool ``status`` or ``stop``.
- ``stop`` sends SIGTERM only to a pid whose pid file is locked, then waits for the
  lock to be released; it never signals a stale pid.
- Exit codes follow LSB init scripts: ``status`` 0 running, 1 dead with a stale pid
  file, 3 not running; ``start``/``stop`` 0 when the node ends up in the asked state.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .config import load_config
from .errors import EXIT_CONFIG, DaemonError, NodeError
from .main import node_environment
from .nodedir import NodeDir
from .pidfile import PidState, pid_alive, probe, remove_stale
from .size import format_size
from .status_file import read_status_file

STATUS_RUNNING, STATUS_STALE, STATUS_NOT_RUNNING = 0, 1, 3
MAX_DAEMON_OUT_BYTES = 1024 * 1024
POLL_SECONDS = 0.05


def _prepare_daemon_out(nd: NodeDir) -> int:
    """Open ``logs/daemon.out`` for appending (truncated when too big); returns its fd."""
    path = nd.daemon_out_path
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        if path.stat().st_size > MAX_DAEMON_OUT_BYTES:
            flags |= os.O_TRUNC
    except FileNotFoundError:
        pass
    fd = os.open(path, flags, 0o644)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.write(fd, f"--- p2pstore start {stamp}\n".encode())
    return fd


def _tail(path: Path, offset: int, limit: int = 4000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace").strip()


def spawn_detached(argv: list[str], out_fd: int, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in a new session with stdin /dev/null and stdout+stderr on ``out_fd``;
    its environment is ours, or ``env``."""
    return os.posix_spawn(
        argv[0],
        argv,
        dict(os.environ) if env is None else env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_fd, 1),
            (os.POSIX_SPAWN_DUP2, out_fd, 2),
        ],
        setsid=True,
    )


@dataclass(frozen=True, slots=True)
class StartResult:
    rc: int
    pid: int | None
    status: dict[str, Any] | None


def start(
    root: Path,
    *,
    timeout: float = 20.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
    python: str = sys.executable,
) -> StartResult:
    out = out or sys.stdout
    err = err or sys.stderr
    from .runner import prepare  # the runner's checks; other commands need none of it

    prepared = prepare(root)  # raises NodeError: shown before anything is spawned
    nd = prepared.node_dir
    nd.ensure_runtime_dirs()
    found = remove_stale(nd.pid_path)
    if found.state == "running":
        print(f"{nd.root}: already running (pid {found.pid})", file=out)
        return StartResult(0, found.pid, read_status_file(nd))
    if found.state == "stale":
        nd.status_path.unlink(missing_ok=True)
        print(
            f"{nd.root}: removed a stale pid file (pid {found.pid} no longer held it)",
            file=out,
        )
    out_fd = _prepare_daemon_out(nd)
    try:
        out_offset = os.fstat(out_fd).st_size
        argv = [python, "-m", "p2pstore.cli", "run", str(nd.root), "--daemonized"]
        pid = spawn_detached(argv, out_fd, node_environment(os.environ))
    finally:
        os.close(out_fd)
    deadline = time.monotonic() + timeout
    while True:
        done_pid, wait_status = os.waitpid(pid, os.WNOHANG)
        if done_pid == pid:
            code = os.waitstatus_to_exitcode(wait_status)
            tail = _tail(nd.daemon_out_path, out_offset)
            print(f"{nd.root}: the node exited during start (exit code {code})", file=err)
            if tail:
                print(tail, file=err)
            return StartResult(EXIT_CONFIG if code == EXIT_CONFIG else 1, None, None)
        doc = read_status_file(nd)
        if doc is not None and doc.get("pid") == pid and doc.get("state") == "running":
            print(f"{nd.root}: started (pid {pid})", file=out)
            print(format_status(nd, "running", pid, doc), file=out)
            if doc.get("introducer"):
                try:
                    line = nd.bootstrap_self_path.read_text(encoding="utf-8")
                except OSError:
                    line = ""
                print(f"introducer bootstrap line (also in {nd.bootstrap_self_path}):", file=out)
                print(line, end="", file=out)
            return StartResult(0, pid, doc)
        if time.monotonic() >= deadline:
            print(
                f"{nd.root}: pid {pid} did not report running within {timeout:g} s; "
                f"see {nd.log_path} and {nd.daemon_out_path}",
                file=err,
            )
            return StartResult(1, pid, None)
        time.sleep(POLL_SECONDS)


def _wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def stop(
    root: Path, *, timeout: float = 30.0, force: bool = False, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    nd = NodeDir(root.absolute())
    nd.require_node()
    found = remove_stale(nd.pid_path)
    if found.state == "stopped":
        print(f"{nd.root}: not running", file=out)
        return 0
    if found.state == "stale":
        nd.status_path.unlink(missing_ok=True)
        print(f"{nd.root}: not running (removed a stale pid file for pid {found.pid})", file=out)
        return 0
    if found.pid is None:
        raise DaemonError(f"{nd.pid_path}: locked but holds no valid pid; cannot signal")
    pid = found.pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it exited between the probe and the signal: wait for the lock below
    except PermissionError:
        raise DaemonError(f"{nd.root}: not allowed to signal pid {pid} (another user?)") from None
    print(f"{nd.root}: sent SIGTERM to pid {pid}; waiting up to {timeout:g} s", file=out)
    if _wait_until(lambda: not probe(nd.pid_path).running, timeout):
        print(f"{nd.root}: stopped", file=out)
        return 0
    if not force:
        print(
            f"{nd.root}: pid {pid} is still running after {timeout:g} s "
            f"(see {nd.log_path}); `p2pstore stop --force` sends SIGKILL",
            file=out,
        )
        return 1
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if _wait_until(lambda: not probe(nd.pid_path).running, 5.0):
        remove_stale(nd.pid_path)
        nd.status_path.unlink(missing_ok=True)
        print(f"{nd.root}: killed pid {pid} with SIGKILL", file=out)
        return 0
    print(f"{nd.root}: pid {pid} survived SIGKILL", file=out)
    return 1


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_status(nd: NodeDir, state: str, pid: int | None, doc: dict[str, Any] | None) -> str:
    now = time.time()
    lines = [f"{nd.root}: {state}" + (f" (pid {pid})" if pid else "")]
    if doc:

        def row(label: str, value: object) -> None:
            lines.append(f"  {label + ':':<14}{value}")

        row("node ID", doc.get("node_id"))
        row("nickname", doc.get("nickname"))
        row("role", "introducer" if doc.get("introducer") else "node")
        row("node state", doc.get("state"))
        if "listen_port" in doc:
            row("listening", f"UDP {doc.get('listen_host')} port {doc.get('listen_port')}")
            row("advertised", doc.get("advertised"))
            row("peers known", doc.get("peers_known"))
            used = doc.get("storage_used")
            row("storage used", format_size(used) if isinstance(used, int) else used)
            if "sftp_listen" in doc:
                row("sftp", doc["sftp_listen"])
            if "erasure_coder" in doc:
                row("erasure", doc["erasure_coder"])
            details = doc.get("details")
            if isinstance(details, dict) and "service" in details:
                row("service", details["service"])
        started = doc.get("started_at")
        if isinstance(started, int | float) and started > 0:
            row("up", _ago(now - started))
        updated = doc.get("updated_at")
        if isinstance(updated, int | float):
            row("status from", f"{_ago(now - updated)} ago")
    return "\n".join(lines)


def status(root: Path, *, as_json: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    nd = NodeDir(root.absolute())
    nd.require_node()
    found: PidState = probe(nd.pid_path)
    doc = read_status_file(nd) if found.running else None
    alive = found.pid is not None and pid_alive(found.pid)
    if found.running:
        rc, state = STATUS_RUNNING, "running"
    elif found.state == "stale":
        rc = STATUS_STALE
        state = f"not running (stale pid file: pid {found.pid} does not hold its lock)"
    else:
        rc, state = STATUS_NOT_RUNNING, "not running"
    if doc is None:
        doc = _offline_status(nd)
    if as_json:
        report = dict(doc or {})
        report.update(running=found.running, pid_file=found.state, pid=found.pid, alive=alive)
        print(json.dumps(report, indent=1, sort_keys=True), file=out)
    else:
        print(format_status(nd, state, found.pid if found.running else None, doc), file=out)
    return rc


def _offline_status(nd: NodeDir) -> dict[str, Any] | None:
    """What can be said about a stopped node from its files (no secrets)."""
    try:
        config = load_config(nd.config_path)
        node_id = nd.load_key().node_id.b32
    except (NodeError, ValueError):
        return None
    return {
        "node_id": node_id,
        "nickname": config.node.nickname,
        "introducer": config.node.introducer,
        "state": "stopped",
    }
