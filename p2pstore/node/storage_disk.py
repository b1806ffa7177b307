"""The node's disk helpers: how much a storage directory holds when the node does
not serve storage, spool files left by a killed node, and the bind error the
runner reports (docs/node.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def disk_usage(root: Path) -> int:
    """Bytes in regular files under ``root`` (not following symlinks)."""
    total = 0
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def raise_bind_oserror(host: str, port: int) -> None:
    """The transport reports a bind failure as ``LocalError`` text; bind once more
    to raise the ``OSError`` (with its errno) the runner turns into a config error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))


def remove_stale_spools(spool_dir: Path) -> None:
    """Spool files left by a node that was killed mid-upload (their uploads failed)."""
    try:
        stale = [p for p in spool_dir.iterdir() if p.name.startswith("upload-")]
    except FileNotFoundError:
        return
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    if stale:
        log.info("removed %d spool files of interrupted uploads", len(stale))
