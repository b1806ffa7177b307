"""The real shell (``p2pstore shell``) in a pseudo-terminal, driven with pexpect,
against a real local grid (``p2pstore grid up --nodes 3``: introducer and storage
node daemons, QUIC, DHT, shared vdrive): put, ls, Tab completion, cd, get, a bad
command, Ctrl-C during a transfer, the node going away and coming back on a new
port (the shared drive is still there: it lives in the grid), exit. Batch mode
(commands from a pipe) runs against ``tests/shell_node.py`` (the node runner with
the stand-in service), an introducer with nothing else needed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pexpect
import pytest

from p2pstore import cli

from ..realgrid import Grid, local_grid
from ..realgrid import cli as rcli

ROOT = Path(__file__).resolve().parent.parent.parent
PROMPT = r"p2ps node1 ([^\s>]+)>"


def _start_node(root: Path) -> subprocess.Popen[bytes]:
    status = root / "run" / "status.json"
    status.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.shell_node", str(root)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            doc = json.loads(status.read_text())
            if doc.get("state") == "running" and doc.get("api_url"):
                return proc
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, "the node exited at start"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the node did not start")


def _stop_node(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _spawn(
    root: Path, cwd: Path, history: Path, *, columns: int = 120, timeout: float = 20
) -> pexpect.spawn:
    env = dict(os.environ)
    env.update(
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",
        P2PSTORE_SHELL_HISTORY=str(history),
        PYTHONPATH=str(ROOT),
        COLUMNS=str(columns),
        LINES="40",
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "p2pstore.cli", "shell", "--node", str(root)],
        cwd=str(cwd),
        env=env,
        dimensions=(40, columns),
        encoding="utf-8",
        codec_errors="replace",
        timeout=timeout,
    )
    return child


def _cmd(child: pexpect.spawn, line: str) -> None:
    child.sendline(line)
    child.expect("\r\n")  # the line was accepted: what follows is its output


def _run(child: pexpect.spawn, line: str) -> str:
    """Run one command; its output (up to the next prompt)."""
    _cmd(child, line)
    child.expect(PROMPT)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(child.before))


@pytest.mark.e2e
def test_shell_in_a_pty_against_a_real_grid(tmp_path: Path) -> None:
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        _shell_session(grid, tmp_path)


def _shell_session(grid: Grid, tmp_path: Path) -> None:
    root = grid.node(1)
    work = tmp_path / "work"
    work.mkdir()
    data = os.urandom(300_000)
    (work / "report one.bin").write_bytes(data)
    history = tmp_path / "hist"
    child = _spawn(root, work, history)
    try:
        child.expect("type 'help'")
        child.expect(PROMPT)
        assert child.match.group(1) == "shared:/"

        _cmd(child, "mkdir docs")
        child.expect(PROMPT)
        _cmd(child, "put 'report one.bin' docs/")
        child.expect(re.escape("put shared:/docs/report one.bin (293.0 KiB)"))
        child.expect(PROMPT)
        _cmd(child, "ls")
        child.expect("docs/")
        child.expect(PROMPT)

        # Tab completes a remote directory name (fetched from the node).
        child.send("cd do")
        child.send("\t")
        child.expect("cs/")  # the line now reads "cd docs/"
        _cmd(child, "")
        child.expect(r"p2ps node1 shared:/docs>")

        _cmd(child, "ls -l")
        child.expect(re.escape("report one.bin"))
        child.expect(PROMPT)
        _cmd(child, 'get "report one.bin" copy.bin')
        child.expect(re.escape("got copy.bin (293.0 KiB)"))
        child.expect(PROMPT)
        assert (work / "copy.bin").read_bytes() == data

        # A suggestion from history appears as you type; Ctrl-C at the prompt clears the line.
        child.send("mk")
        child.expect("dir docs")
        child.sendcontrol("c")
        child.expect("\r\n")  # the aborted line is left behind; a fresh prompt follows
        child.expect(PROMPT)
        assert "docs/" in _run(child, "ls /")  # the shell is still there, line cleared

        # A listing longer than the screen (40 rows) pages.
        names = " ".join(f"d{i:02d}" for i in range(45))
        _run(child, f"mkdir {names}")
        _cmd(child, "ls -l")
        child.expect("-- more --")
        child.send(" ")
        child.expect("d44/")
        child.expect("46 entries")  # d00..d44 and docs
        child.expect(PROMPT)

        # Tab completes a command and puts a space after it: `mk` Tab `dx` is `mkdir dx`
        child.send("mk\t")
        child.expect("mkdir ")
        child.send("dx")
        child.expect("dx")
        time.sleep(0.3)
        child.send("\r")
        deadline = time.monotonic() + 20
        while "dx/" not in rcli("ls", "--node", root, "shared:/docs").stdout:  # shell cwd
            if time.monotonic() > deadline:
                child.expect(pexpect.TIMEOUT, timeout=1)
                raise AssertionError(f"mk<Tab>dx did not run `mkdir dx`: {child.before!r}")
            time.sleep(0.2)
        child.sendline("")  # realign on a fresh prompt
        child.expect(PROMPT)
        child.expect(PROMPT)

        _cmd(child, "frobnicate now")
        child.expect(re.escape("error: unknown command 'frobnicate'"))
        child.expect(PROMPT)

        # Ctrl-C during a transfer: a put from a FIFO that delivers 1 MiB, then stalls.
        fifo = work / "slow"
        os.mkfifo(fifo)
        writer: dict[str, int] = {}

        def feed() -> None:
            fd = os.open(fifo, os.O_WRONLY)  # blocks until the shell opens it
            writer["fd"] = fd
            os.write(fd, b"x" * (1 << 20))

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        _cmd(child, "put slow slow.bin")
        child.expect(r"put 1\.0 MiB +\S+ \S+/s")  # the progress line
        child.sendcontrol("c")
        time.sleep(0.3)
        t.join(5)
        os.close(writer["fd"])  # lets the blocked read return; the worker then stops
        child.expect("cancelled: nothing was kept")
        child.expect(PROMPT)
        listing = _run(child, "ls")
        assert "report one.bin" in listing and "slow.bin" not in listing
        assert not list(work.glob(".*part*"))

        # Ctrl-C after the last byte went, while the node stores a convergent upload:
        # the bar shows that second pass, and the cancel is real (or, if it came as the
        # node linked the file, says so): what the shell says matches the drive.
        with open(work / "big.bin", "wb") as f:
            f.write(os.urandom(1 << 20) * 100)
        _cmd(child, "put big.bin")
        child.expect(r"put \(storing\) \[", timeout=60)
        child.sendcontrol("c")
        i = child.expect(["cancelled: nothing was kept", "cancelled too late"], timeout=30)
        child.expect(PROMPT)
        listing = _run(child, "ls")
        assert ("big.bin" in listing) == (i == 1), listing

        # The file is in the grid: another node's CLI reads it by path.
        out = tmp_path / "from-node3.bin"
        rcli("get", "--node", grid.node(3), "shared:/docs/report one.bin", out)
        assert out.read_bytes() == data

        # The node goes away: a clear message; it comes back on a new port: the next
        # command works, and the shared drive is still there (it lives in the grid).
        old_api = json.loads((root / "run" / "status.json").read_text())["api_url"]
        rcli("stop", root)
        _cmd(child, "pwd")
        child.expect("shared:/docs")
        child.expect(PROMPT)
        _cmd(child, "ls")
        child.expect("node unreachable: ")
        child.expect(PROMPT)
        # it comes back with a new API port (the shell finds it in run/status.json)
        cfg = root / "p2pstore.toml"
        cfg.write_text(re.sub(r"(?m)^web_port = .*$", "web_port = 0", cfg.read_text()))
        rcli("start", root)
        new_api = json.loads((root / "run" / "status.json").read_text())["api_url"]
        assert new_api != old_api
        assert "report one.bin" in _run(child, "ls /docs")

        _cmd(child, "exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "put 'report one.bin' docs/" in history.read_text()


@pytest.mark.e2e
def test_shell_reads_commands_from_a_pipe_introducer_bootstrap(tmp_path: Path) -> None:
    """Batch mode (stdin not a terminal) on an introducer: `bootstrap` shows its own
    seed line, served by the runner's GET /api/v1/bootstrap."""
    root = tmp_path / "intro"
    assert cli.main(["create-introducer", str(root), "--listen", "127.0.0.1:0"]) == 0
    proc = _start_node(root)
    try:
        node_id = json.loads((root / "run" / "status.json").read_text())["node_id"]
        done = subprocess.run(
            [sys.executable, "-m", "p2pstore.cli", "shell", "--node", str(root)],
            input=b"bootstrap\nstatus\nbogus\nexit\nls\n",
            capture_output=True,
            timeout=30,
            cwd=ROOT,
            check=False,
        )
    finally:
        _stop_node(proc)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert f"p2ps-seed {node_id} 127.0.0.1:" in out
    assert f"node ID:       {node_id}" in out
    assert "error: unknown command 'bogus'" in out
    assert "docs" not in out and out.count("error") == 1  # nothing ran after exit
