"""``make run``: bring up the local grid, prove it works, then open the shell.

Steps (each says what it does; any failure stops with a message and exit 1):

1. ``p2pstore grid up`` on the grid directory (argument, else ``$P2PSTORE_GRID``,
   else ``~/.local/share/p2pstore/local-grid``): creates an introducer and five
   storage nodes on 127.0.0.1 the first time, starts whatever is not running
   afterwards, and waits until every node has joined.
2. A round trip through the CLI, as a user would type it: ``p2pstore put`` of a
   fresh 1 MB file on node1, ``p2pstore get`` of its cap on node2, byte comparison,
   and the cap printed.
3. The interactive shell (``p2pstore shell --node <node1>``) when the CLI has that
   command and stdin is a terminal; otherwise the command to open it is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .node import localgrid
from .node.errors import NodeError


def _cli(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def has_shell_command() -> bool:
    from .cli_commands import build_parser

    parser = build_parser()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and "shell" in choices:
            return True
    return False


def round_trip(grid: localgrid.Grid) -> str:
    """put on the first storage node, get on the second; returns the cap."""
    first = grid.path(grid.storage_names[0])
    second = grid.path(grid.storage_names[min(1, len(grid.storage_names) - 1)])
    data = b"hello from make run\n" + os.urandom(1_000_000)
    with tempfile.TemporaryDirectory(prefix="p2pstore-demo-") as tmp:
        src, dst = Path(tmp) / "demo.bin", Path(tmp) / "back.bin"
        src.write_bytes(data)
        put = _cli("put", src, "--node", first)
        if put.returncode != 0:
            raise SystemExit(f"p2pstore put failed:\n{put.stderr.decode(errors='replace')}")
        cap = put.stdout.decode().strip()
        got = _cli("get", cap, dst, "--node", second)
        if got.returncode != 0:
            raise SystemExit(f"p2pstore get failed:\n{got.stderr.decode(errors='replace')}")
        if dst.read_bytes() != data:
            raise SystemExit("p2pstore get returned different bytes (this is a bug)")
    print(f"\nround trip: put {len(data)} bytes on {first.name}, got them back on {second.name}")
    print(f"cap: {cap}")
    print(f"try: p2pstore get --node {second} '{cap}' - | head -c 20")
    return cap


def _take_terminal() -> None:
    """In the child, before exec: its own process group, made the terminal's
    foreground group, so Ctrl-C reaches the shell alone (as it would under a job
    control shell), not this process or ``make`` above it."""
    fd = sys.stdin.fileno()
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background tcsetpgrp stops us
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
    finally:
        signal.signal(signal.SIGTTOU, old)


def run_in_foreground(cmd: list[str]) -> int:
    """Run ``cmd`` as the terminal's foreground job and wait for it; the terminal
    comes back to this process afterwards. Ctrl-C in the shell cancels what the
    shell is doing (docs/shell.md) and never ends this program or ``make run``."""
    fd = sys.stdin.fileno()
    # preexec_fn is safe here: this program runs no threads at this point
    proc = subprocess.Popen(cmd, preexec_fn=_take_terminal)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # only if the child had not taken the terminal yet
                continue
    finally:
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(fd, os.getpgrp())
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGTTOU, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2pstore.demo", description=__doc__)
    parser.add_argument("dir", nargs="?", help="grid directory")
    parser.add_argument("--nodes", type=int, default=None, help="storage nodes (default 5)")
    args = parser.parse_args(argv)
    root = Path(args.dir) if args.dir else localgrid.default_grid_dir()
    try:
        rc = localgrid.up(root, args.nodes)
    except NodeError as e:
        print(f"p2pstore: {e}", file=sys.stderr)
        return 1
    if rc != 0:
        return rc
    grid = localgrid.Grid.load(root.absolute())
    assert grid is not None
    round_trip(grid)
    first = grid.path(grid.storage_names[0])
    if not has_shell_command():
        print("\n(the interactive shell is not installed in this version yet)")
        return 0
    if sys.stdin.isatty() and sys.stdout.isatty():
        print(f"\nopening the shell on {first} (exit it with `exit` or Ctrl-D)\n", flush=True)
        return run_in_foreground(
            [sys.executable, "-m", "p2pstore.cli", "shell", "--node", str(first)]
        )
    print(f"\nopen the shell with: p2pstore shell --node {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
