"""A real local grid for end-to-end tests: ``p2pstore grid up`` (an introducer and
storage nodes, each its own daemon process), the CLI run as a subprocess, and
``p2pstore grid down`` when done (also when the test fails)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("P2PSTORE_NODE", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli(
    *args: str | Path, check: bool = True, timeout: float = 60.0, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``p2pstore ARGS`` in a subprocess; with ``check``, fail showing its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"p2pstore {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class Grid:
    root: Path
    nodes: int

    @property
    def introducer(self) -> Path:
        return self.root / "introducer"

    def node(self, i: int) -> Path:
        return self.root / f"node{i}"


@contextmanager
def local_grid(root: Path, nodes: int = 3) -> Iterator[Grid]:
    """``p2pstore grid up --nodes N ROOT``; ``grid down`` at exit, whatever happened."""
    try:
        cli("grid", "up", "--nodes", str(nodes), root, timeout=90.0)
        yield Grid(root, nodes)
    finally:
        cli("grid", "down", root, check=False, timeout=60.0)


def wait_gone(pid: int, timeout: float = 10) -> None:
    """Wait until process ``pid`` has exited (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive")
