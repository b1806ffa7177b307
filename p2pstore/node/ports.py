"""Ports that cannot collide (docs/node.md, "Ports").

A node keeps its ports across restarts (peers remember where to find it), but a
port picked *for* the user at creation can be taken by the time the node starts
(another process's outgoing connection got it as an ephemeral port: seen with 45
nodes made by ``grid up``). Two defences:

- :func:`pick_port` chooses, at random, a port below the kernel's ephemeral range
  (``/proc/sys/net/ipv4/ip_local_port_range``; 32768 by default), which outgoing
  connections never take, and checks it is free now;
- ports chosen that way are recorded in ``state/auto_ports.json``; at start,
  :func:`reclaim_ports` re-picks such a port if it is taken, rewrites the config
  key and logs one line. A port the user configured stays theirs: taken, it is a
  clear error (exit 78), as before.
"""

from __future__ import annotations

import errno
import json
import logging
import random
import re
import socket
from pathlib import Path

from p2pstore.base.fsutil import write_text_atomic

log = logging.getLogger(__name__)

AUTO_FILE = "auto_ports.json"
LOWEST = 10_000  # below this: well-known and commonly configured service ports
_FALLBACK_EPHEMERAL = 32_768


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; else the default)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL
    return low if low > LOWEST + 1000 else _FALLBACK_EPHEMERAL


def is_free(kind: socket.SocketKind, host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def pick_port(kind: socket.SocketKind, host: str, *, rng: random.Random | None = None) -> int:
    """A free port below the ephemeral range (any free port if none is found)."""
    rng = rng or random.Random()
    top = ephemeral_low()
    for _ in range(64):
        port = rng.randrange(LOWEST, top)
        if is_free(kind, host, port):
            return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def record_auto(state_dir: Path, *, listen: bool, web: bool) -> None:
    """Note which ports ``create-node`` chose (so a start may move them)."""
    write_text_atomic(state_dir / AUTO_FILE, json.dumps({"listen": listen, "web_port": web}) + "\n")


def _auto(state_dir: Path) -> dict[str, bool]:
    try:
        doc = json.loads((state_dir / AUTO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v is True for k, v in doc.items()} if isinstance(doc, dict) else {}


def _rewrite(config_path: Path, pattern: str, replacement: str) -> bool:
    text = config_path.read_text(encoding="utf-8")
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.M)
    if count != 1:
        return False
    write_text_atomic(config_path, new)
    return True


def reclaim_ports(
    state_dir: Path, config_path: Path, host: str, listen_port: int, web_port: int
) -> list[str]:
    """Move each port chosen at creation that is taken now to a free one, rewriting
    the config. Returns what moved (one line each, also logged); the caller reloads
    the config if anything did."""
    auto = _auto(state_dir)
    moved: list[str] = []
    if auto.get("listen") and listen_port and not is_free(socket.SOCK_DGRAM, host, listen_port):
        new = pick_port(socket.SOCK_DGRAM, host)
        wrapped = f"[{host}]" if ":" in host else host
        if _rewrite(config_path, r'^listen = ".*"$', f'listen = "{wrapped}:{new}"'):
            moved.append(f"UDP port {listen_port} (picked at creation) is taken: now {new}")
    if auto.get("web_port") and web_port and not is_free(socket.SOCK_STREAM, "127.0.0.1", web_port):
        new = pick_port(socket.SOCK_STREAM, "127.0.0.1")
        if _rewrite(config_path, r"^web_port = \d+$", f"web_port = {new}"):
            moved.append(f"web port {web_port} (picked at creation) is taken: now {new}")
    for line in moved:
        log.warning("%s; %s updated", line, config_path)
    return moved
