"""A storage node process for ``bench_grid``: one QUIC endpoint on 127.0.0.1 and a
StorageService (plus the bulk ``storage.write_stream`` handler) in a directory.

Usage: ``python -m benchmarks.grid_node DIR``. Prints ``READY <host> <port> <node id
b32>`` once serving, then serves until its stdin is closed (the bench closes it).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from p2pstore.immutable.allocator import tune_allocator
from p2pstore.storage import StorageConfig, StorageService
from p2pstore.storage.bulk import register_storage_streams
from quic_transport import RpcError, open_endpoint
from quic_transport.identity import NodeKey


async def serve(root: Path) -> None:
    ep = await open_endpoint(NodeKey.generate(), "127.0.0.1", 0)
    svc = await StorageService.start(root, ep, StorageConfig(), error_factory=RpcError)
    register_storage_streams(ep, svc.server, error_factory=RpcError)
    host, port = ep.local_address
    print(f"READY {host} {port} {ep.node_id.b32}", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await svc.close()
        await ep.aclose()


def main() -> None:
    tune_allocator()
    asyncio.run(serve(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
