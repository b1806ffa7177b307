"""End to end with real node processes (docs/grid.md): an introducer and five storage
nodes created with the CLI, started as daemons, put and get through the CLI, one
node stopped and the file still read, everything stopped cleanly, restarted, and the
file read again (shares survive restarts); then ``p2pstore grid up/status/down``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.nat_grid import set_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def cli(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"p2pstore {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_all(*commands: tuple[str | Path, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run several CLI commands at once (each process start costs ~1 s here)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda c: cli(*c), commands))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def status(node: Path) -> dict[str, Any]:
    """The running node's run/status.json (what `p2pstore status` shows), or {}."""
    try:
        doc: dict[str, Any] = json.loads((node / "run/status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def wait_peers(nodes: list[Path], want: int, within: float = 40.0) -> None:
    deadline = time.monotonic() + within
    while True:
        seen = {n.name: status(n).get("peers_known") for n in nodes}
        if all(isinstance(v, int) and v >= want for v in seen.values()):
            return
        assert time.monotonic() < deadline, f"not joined after {within} s: {seen}"
        time.sleep(0.5)


def test_cli_grid_put_get_stop_one_restart_all(tmp_path: Path) -> None:
    intro = tmp_path / "intro"
    cli("create-introducer", intro, "--listen", f"127.0.0.1:{free_udp_port()}")
    line = cli("bootstrap", "show", intro).stdout
    assert line.startswith("p2ps-seed ")
    nodes = [tmp_path / f"node{i}" for i in range(1, 6)]
    for node in nodes:
        cli("create-node", node, "--listen", f"127.0.0.1:{free_udp_port()}", "--bootstrap", line)
        conf = node / "p2pstore.toml"
        # five storage nodes: 3-of-10 needs happy <= 5; 4 leaves room for one down
        conf.write_text(
            re.sub(r"(?m)^(# )?shares_happy = 7$", "shares_happy = 4", conf.read_text())
        )
    everyone = [intro, *nodes]
    for node in everyone:  # the waits below read run/status.json: refresh it each second
        set_config(node, "node", {"status_interval": "1s"})
    try:
        cli("start", intro)
        cli_all(*(("start", n) for n in nodes))
        wait_peers(everyone, 5)
        assert json.loads(cli("status", nodes[0], "--json").stdout)["peers_known"] == 5
        data = os.urandom(3_000_000)
        src = tmp_path / "in.bin"
        src.write_bytes(data)
        cap = cli("put", src, "--node", nodes[0]).stdout.strip()
        assert cap.startswith("p2ps:chk:3:10:3000000:")
        out = tmp_path / "out.bin"
        cli("get", cap, out, "--node", nodes[4])
        assert out.read_bytes() == data
        info = json.loads(cli("info", cap, "--json", "--node", nodes[2]).stdout)["storage"]
        holders = {p for ps in info["shares"].values() for p in ps}
        assert len(holders) == 5 and info["shares_found"] == 10
        assert status(intro)["storage_used"] == 0  # the introducer holds nothing
        deadline = time.monotonic() + 15  # status.json is refreshed every second
        while not all(status(n)["storage_used"] > 0 for n in nodes):
            assert time.monotonic() < deadline, [status(n)["storage_used"] for n in nodes]
            time.sleep(0.5)
        # a ranged read through the HTTP API (the CLI writes whole files)
        url = f"{status(nodes[1])['api_url']}api/v1/file/{cap}"
        req = urllib.request.Request(url, headers={"Range": "bytes=1000000-1000099"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 206 and resp.read() == data[1_000_000:1_000_100]

        # stop one node: the file is still readable
        cli("stop", nodes[0])
        out.unlink()
        cli("get", cap, out, "--node", nodes[3])
        assert out.read_bytes() == data
        check = cli("check", cap, "--node", nodes[3], check=False)
        assert "recoverable" in check.stdout and "8 of 10" in check.stdout

        # stop everything cleanly: nothing left half-written
        for done in cli_all(*(("stop", n) for n in everyone)):
            assert "stopped" in done.stdout or "not running" in done.stdout
        for n in nodes:
            assert not any(p.is_file() for p in (n / "storage/incoming").rglob("*"))
            assert (n / "state/known_peers.json").exists()
            assert not (n / "run/status.json").exists()

        # restart: shares survived, the file reads again from any node
        cli("start", intro)
        cli_all(*(("start", n) for n in nodes))
        wait_peers(everyone, 5)
        out.unlink()
        cli("get", cap, out, "--node", nodes[1])
        assert out.read_bytes() == data
        report = cli("check", cap, "--verify", "--node", nodes[2])
        assert "healthy" in report.stdout
    finally:
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda n: cli("stop", n, "--force", check=False), everyone))


def test_grid_up_status_down(tmp_path: Path) -> None:
    root = tmp_path / "grid"
    up = cli("grid", "up", "--nodes", "3", root)
    assert "all 4 nodes joined" in up.stdout and f"P2PSTORE_NODE={root / 'node1'}" in up.stdout
    try:
        env = {**os.environ, "P2PSTORE_NODE": str(root / "node2")}
        piped = subprocess.run(
            [sys.executable, "-m", "p2pstore.cli", "put", "-"],
            input=b"hello grid " * 1000,
            capture_output=True,
            timeout=60,
            env=env,
            check=True,
        )
        cap = piped.stdout.decode().strip()
        got = cli("get", cap, "--node", root / "node3").stdout
        assert got == "hello grid " * 1000
        # SIGTERM during an upload: the upload fails cleanly, the node stops, no peer
        # keeps a partial share, and the node comes back with `grid up`.
        feeding = subprocess.Popen(
            [sys.executable, "-m", "p2pstore.cli", "put", "-", "--mode", "random"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert feeding.stdin is not None
        feeding.stdin.write(os.urandom(4_000_000))
        feeding.stdin.flush()
        deadline = time.monotonic() + 30
        while not any(
            p.is_file()
            for n in ("node1", "node3")
            for p in (root / n / "storage/incoming").rglob("*")
        ):
            assert time.monotonic() < deadline, "the upload never reached the peers"
            time.sleep(0.1)
        stopped = cli("stop", root / "node2")
        assert "stopped" in stopped.stdout
        with contextlib.suppress(BrokenPipeError):
            feeding.stdin.close()
        assert feeding.wait(60) != 0  # the client saw the upload fail
        deadline = time.monotonic() + 30
        while any(
            p.is_file()
            for n in ("node1", "node3")
            for p in (root / n / "storage/incoming").rglob("*")
        ):
            assert time.monotonic() < deadline, "partial shares left behind"
            time.sleep(0.2)
        again = cli("grid", "up", root)  # idempotent: nothing created, all running
        assert "created" not in again.stdout and "all 4 nodes joined" in again.stdout
        assert cli("grid", "status", root).returncode == 0
        assert "stopped 4 nodes" in cli("grid", "down", root).stdout
        assert cli("grid", "status", root, check=False).returncode == 3
        assert "all 4 nodes joined" in cli("grid", "up", root).stdout  # restarts it
        assert cli("get", cap, "--node", root / "node1").stdout == "hello grid " * 1000
    finally:
        cli("grid", "down", root, check=False)
