"""End to end with real processes: create, start as a daemon, status, a stale pid file
after kill -9, stop with SIGTERM, bootstrap show/add, config errors, systemd unit."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pstore.node.main import node_environment
from tests.realgrid import wait_gone

pytestmark = pytest.mark.e2e


def cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"p2pstore {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_introducer_daemon_lifecycle(tmp_path: Path) -> None:
    intro = tmp_path / "intro"
    cli("create-introducer", intro, "--listen", "127.0.0.1:0", "--nickname", "seed-1")
    refused = cli("create-introducer", intro, check=False)
    assert refused.returncode == 1 and "refusing to overwrite" in refused.stderr

    started = cli("start", intro)
    assert "started (pid" in started.stdout
    status = json.loads(cli("status", intro, "--json").stdout)
    assert status["running"] and status["state"] == "running" and status["alive"]
    pid, port = status["pid"], status["listen_port"]
    assert port > 0 and status["peers_known"] == 0 and status["storage_used"] == 0
    if os.path.exists(f"/proc/{pid}/environ"):  # how its Python was started
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert b"PYTHONNODEBUGRANGES=1" in environ
        # and the memcpy tunable on AMD x86-64 (node_environment)
        wanted = node_environment(os.environ).get("GLIBC_TUNABLES")
        tunables = [e for e in environ if e.startswith(b"GLIBC_TUNABLES=")]
        assert tunables == ([f"GLIBC_TUNABLES={wanted}".encode()] if wanted else [])
    line = f"p2ps-seed {status['node_id']} 127.0.0.1:{port}  # seed-1"
    # an introducer serves the vdrive: its p2ps-vdrive line follows (docs/vdrive.md)
    self_lines = (intro / "bootstrap-self.txt").read_text().splitlines()
    assert self_lines[0] == line and self_lines[1].startswith("p2ps-vdrive ")
    assert line in started.stdout
    assert cli("bootstrap", "show", intro).stdout.splitlines() == self_lines
    human = cli("status", intro).stdout
    assert "running" in human and status["node_id"] in human and f"port {port}" in human
    # which erasure coder its uploads use (docs/file-format.md, "Erasure coding kernel")
    from p2pstore.immutable.gf256 import describe

    assert status["erasure_coder"] == describe() and f"erasure:      {describe()}" in human
    again = cli("start", intro)
    assert "already running" in again.stdout

    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    stale = cli("status", intro, check=False)
    assert stale.returncode == 1 and "stale pid file" in stale.stdout
    recovered = cli("start", intro)
    assert "removed a stale pid file" in recovered.stdout
    new_pid = json.loads(cli("status", intro, "--json").stdout)["pid"]
    assert new_pid != pid

    stopped = cli("stop", intro)
    assert "stopped" in stopped.stdout
    wait_gone(new_pid)
    gone = cli("status", intro, check=False)
    assert gone.returncode == 3 and "not running" in gone.stdout
    assert not (intro / "run" / "node.pid").exists()
    log = (intro / "logs" / "node.log").read_text()
    assert "SIGTERM received" in log and log.count("starting: node") == 2
    assert "not running" in cli("stop", intro).stdout


def test_node_joins_list_and_config_errors(tmp_path: Path) -> None:
    intro = tmp_path / "intro"
    cli("create-introducer", intro, "--listen", "127.0.0.1:0")
    cli("start", intro)
    try:
        node = tmp_path / "node"
        cli(
            "create-node",
            node,
            "--bootstrap",
            intro / "bootstrap-self.txt",
            "--listen",
            "127.0.0.1:0",
            "--storage-quota",
            "500MiB",
        )
        seed_line = (intro / "bootstrap-self.txt").read_text().split("  #")[0]
        assert seed_line in (node / "bootstrap.txt").read_text()
        assert 'quota = "500MiB"' in (node / "p2pstore.toml").read_text()

        other = "p2ps-seed " + "a" * 32 + " [2001:db8::1]:3456"
        added = cli("bootstrap", "add", node, other, "# a comment")
        assert "added" in added.stdout and "2 seeds" in added.stdout
        bad = cli("bootstrap", "add", node, other, "p2ps-seed nope 1.2.3.4:5", check=False)
        assert bad.returncode == 78 and "given lines, line 2: node ID" in bad.stderr

        config = node / "p2pstore.toml"
        good_text = config.read_text()
        config.write_text(good_text.replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:70000"'))
        err = cli("start", node, check=False)
        assert err.returncode == 78
        assert "p2pstore.toml: [node] listen: '0.0.0.0:70000': port 70000 is out of range" in (
            err.stderr
        )
        assert not (node / "run" / "node.pid").exists()
        config.write_text(good_text)

        cli("start", node)
        status = json.loads(cli("status", node, "--json").stdout)
        assert status["running"] and not status["introducer"]
        cli("restart", node)
        restarted = json.loads(cli("status", node, "--json").stdout)
        assert restarted["running"] and restarted["pid"] != status["pid"]
        cli("stop", node)

        shown = cli("systemd-unit", node)
        unit = shown.stdout  # only the unit: `systemd-unit DIR > FILE` gives a valid unit
        assert f"run {node}" in unit and "Restart=on-failure" in unit
        assert "systemctl" not in unit
        assert "systemctl --user enable --now p2pstore-node.service" in shown.stderr
    finally:
        cli("stop", intro)


def test_start_reports_a_port_conflict_from_the_child(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        node = tmp_path / "node"
        cli("create-node", node, "--listen", f"127.0.0.1:{port}")
        proc = cli("start", node, check=False)
    assert proc.returncode == 78
    assert "exited during start (exit code 78)" in proc.stderr
    assert f"[node] listen: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert not (node / "run" / "node.pid").exists()


def test_stop_timeout_then_force(tmp_path: Path) -> None:
    from p2pstore.node import daemon
    from p2pstore.node.nodedir import CreateOptions, create_node_dir

    nd, _ = create_node_dir(tmp_path / "n", CreateOptions(web_port=0))
    code = (
        "import signal, sys, time; from pathlib import Path;"
        "from p2pstore.node.pidfile import PidLock;"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "PidLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(nd.pid_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        out = io.StringIO()
        assert daemon.stop(nd.root, timeout=0.3, out=out) == 1
        assert "still running" in out.getvalue() and proc.poll() is None
        assert daemon.stop(nd.root, timeout=0.3, force=True, out=out) == 0
        assert "killed pid" in out.getvalue()
        assert proc.wait(5) == -signal.SIGKILL
        assert not nd.pid_path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_foreground_run_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    node = tmp_path / "fg"
    cli("create-node", node, "--listen", "127.0.0.1:0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pstore.cli", "run", str(node)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status_path = node / "run" / "status.json"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if status_path.exists() and '"running"' in status_path.read_text():
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the node never reported running")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "SIGINT received: shutting down" in err  # foreground: the log also goes to stderr
    assert not (node / "run" / "node.pid").exists() and not status_path.exists()
