"""A real node process for the shell's end-to-end tests: ``python -m tests.shell_node DIR``
runs :class:`~p2pstore.node.runner.NodeRunner` in the foreground exactly as
``p2pstore run DIR`` does (pid lock, status.json, HTTP API, the bootstrap route,
signals), with a small service of its own: it binds the configured UDP address and
serves the API from the in-memory backend with an in-memory vdrive. The shell only
talks to the HTTP API, which is the same whatever service is behind it; this keeps
the e2e test independent of which network service the runner defaults to."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from p2pstore.node.runner import NodeRunner
from p2pstore.node.service import NodeContext, ServiceStatus
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive


class MemoryNodeService:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.sock: socket.socket | None = None
        self.backend = MemoryApplication(
            convergence_secret=ctx.convergence_secret,
            max_bytes=256 << 20,
            node_info=self._node_info,
            vdrive=MemoryVdrive(),
        )

    async def start(self) -> None:
        listen = self.ctx.config.node.listen
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((listen.host, listen.port))

    async def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def status(self) -> ServiceStatus:
        host, port = self.sock.getsockname() if self.sock else ("127.0.0.1", 0)
        return ServiceStatus(listen_host=host, listen_port=port, peers_known=0, storage_used=0)

    def api_backend(self) -> MemoryApplication:
        return self.backend

    def _node_info(self) -> dict[str, object]:
        return {
            "node_id": self.ctx.key.node_id.b32,
            "nickname": self.ctx.config.node.nickname,
            "backend": "memory (shell e2e test node)",
        }


def main() -> int:
    return NodeRunner(Path(sys.argv[1]), service_factory=MemoryNodeService).run()


if __name__ == "__main__":
    sys.exit(main())
