"""Helpers shared by the tests that run hosts as Linux network namespaces
(test_netns_e2e.py, nat_topology.py and the NAT tests): running iproute2, deciding
whether namespaces can be made here (and why not), running the p2pstore CLI inside a
namespace, reading a node's status file, and stopping nodes and namespaces.

Nothing here creates lasting state by itself; the callers delete what they create
in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def run(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (iproute2, nft, ...) and fail with its stderr when ``check``."""
    proc = subprocess.run(
        list(args), input=stdin, capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be created here, or None when they can."""
    if sys.platform != "linux":
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"p2ps-probe-{os.getpid()}"
    r = run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` is not permitted here: {r.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


def delete_namespaces(names: Iterable[str]) -> None:
    """Kill what still runs in each namespace (only processes the tests started in
    it, by pid) and delete it; deleting a namespace also removes its veths."""
    for ns in names:
        pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", ns, check=False)


def cli_in(ns: str, *args: str | Path, stdin: bytes | None = None, timeout: float = 120) -> bytes:
    """``p2pstore ARGS`` inside namespace ``ns``; its stdout, or AssertionError."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"[{ns}] p2pstore {args} -> {proc.returncode}\n{proc.stdout!r}\n{proc.stderr!r}"
        )
    return proc.stdout


def node_status(node: Path) -> dict[str, Any]:
    """The node's run/status.json ({} while it does not exist or is half written)."""
    try:
        doc: dict[str, Any] = json.loads((node / "run/status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def stop_nodes(nodes: Iterable[Path]) -> None:
    """``p2pstore stop --force`` each node (from the root namespace: it signals the pid)."""
    for node in nodes:
        subprocess.run(
            [sys.executable, "-m", "p2pstore.cli", "stop", str(node), "--force"],
            capture_output=True,
            timeout=60,
            check=False,
        )
