"""``p2pstore systemd-unit DIR``: a systemd *user* unit that runs the node at boot.

The unit runs ``p2pstore run DIR`` in the foreground (systemd supervises it; no
pid-file daemonizing) with ``main.node_environment`` as its environment, restarts it
on failure but not on a config error (exit 78), and stops it with SIGTERM (the
node's clean shutdown). Starting at boot without logging in needs ``loginctl
enable-linger``; the printed instructions say so.

Invariant: paths are absolute and quoted for systemd's ExecStart syntax
(``%`` doubled, ``$`` doubled, quotes and backslashes escaped).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from .errors import EXIT_CONFIG
from .main import node_environment


def unit_name(root: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", root.absolute().name).strip("-.") or "node"
    return f"p2pstore-{name}.service"


def p2pstore_command() -> list[str]:
    """How to invoke p2pstore from a unit: the script on PATH or next to sys.argv[0]."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "p2pstore" and argv0.exists():
        return [str(argv0.absolute())]
    found = shutil.which("p2pstore")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "p2pstore.cli"]


def systemd_quote(arg: str) -> str:
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./:@+=,-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(root: Path, command: list[str] | None = None) -> str:
    root = root.absolute()
    argv = [*(command or p2pstore_command()), "run", str(root)]
    exec_start = " ".join(systemd_quote(a) for a in argv)
    environment = "\n".join(f"Environment={k}={v}" for k, v in node_environment({}).items())
    return f"""\
[Unit]
Description=p2pstore node {root.name}
# Node directory: {root} (config: p2pstore.toml, log: logs/node.log)

[Service]
Type=simple
ExecStart={exec_start}
# How a node's Python is started (p2pstore/node/main.py, node_environment)
{environment}
Restart=on-failure
RestartSec=10
# Exit code {EXIT_CONFIG} is a config error: restarting would not fix it.
RestartPreventExitStatus={EXIT_CONFIG}
KillSignal=SIGTERM
TimeoutStopSec=60

[Install]
WantedBy=default.target
"""


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def install_instructions(name: str, unit_path: Path) -> str:
    return f"""\
# To install by hand: save the unit above as {unit_path}, then:
systemctl --user daemon-reload
systemctl --user enable --now {name}
# Start at boot even when you are not logged in:
loginctl enable-linger "$USER"
# Follow it: systemctl --user status {name}; journalctl --user -u {name}
"""


def install_unit(root: Path, command: list[str] | None = None) -> Path:
    directory = user_unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / unit_name(root)
    path.write_text(render_unit(root, command), encoding="utf-8")
    return path
