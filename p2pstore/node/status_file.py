"""The node's ``status.json``, as the runner writes it and as the CLI and the daemon
control read it (docs/node.md). Light on purpose: every CLI command that talks to a
node reads it, and none of them needs the runner."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from p2pstore.base.fsutil import read_bounded

if TYPE_CHECKING:
    from .nodedir import NodeDir

STATUS_FORMAT = "p2pstore-status-v1"
MAX_STATUS_BYTES = 256 * 1024


def read_status_file(nd: NodeDir) -> dict[str, Any] | None:
    """The node's last ``status.json``, or None if absent or unreadable."""
    try:
        doc = json.loads(read_bounded(nd.status_path, MAX_STATUS_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != STATUS_FORMAT:
        return None
    return doc
