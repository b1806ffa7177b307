"""A real node process for the shell's end-to-end tests: ``python -m tests.shell_node DIR``
runs :class:`~p2pstore.node.runner.NodeRunner` in the foreground exactly as
``p2pstore run DIR`` does (pid lock, status.json, HTTP API, signals), with today's
stand-in service given an in-memory vdrive (the stand-in has none; the grid node's
vdrive replaces both). Nothing here is a fake of the API the shell talks to."""

from __future__ import annotations

import sys
from pathlib import Path

from p2pstore.node.listen_service import ListenOnlyService
from p2pstore.node.runner import NodeRunner
from p2pstore.web.memory_backend import MemoryBackend
from p2pstore.web.memory_vdrive import MemoryVdrive


class StandInWithVdrive(ListenOnlyService):
    def api_backend(self) -> MemoryBackend:
        backend = super().api_backend()
        if backend.vdrive is None:
            backend.vdrive = MemoryVdrive()
        return backend


def main() -> int:
    return NodeRunner(Path(sys.argv[1]), service_factory=StandInWithVdrive).run()


if __name__ == "__main__":
    sys.exit(main())
