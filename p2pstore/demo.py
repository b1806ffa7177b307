"""``make run``: the main job. Today it creates a fresh node identity in a temporary
directory and prints its node ID; it grows into "bring up a local grid and open the
shell" as the layers land."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from quic_transport.identity import NodeKey


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="p2pstore-demo-") as tmp:
        path = Path(tmp) / "node.key"
        key = NodeKey.load_or_create(path)
        print(f"fresh node identity: {key.node_id.b32}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
