"""One node's storage service: server + lease crawler + RPC registration, as a unit
with ``async close()`` (what the node assembly starts and stops).

Invariants: ``start`` opens the directory (lock, crash cleanup, usage scan) in a
worker thread, registers the ``storage.*`` handlers, then starts the crawler;
``close`` stops the crawler (waiting for a tick in progress) before closing the
server, so no background work touches a closed directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from quic_transport.identity import NodeId

from .config import StorageConfig
from .crawler import LeaseCrawler
from .rpc import ErrorFactory, Registry, StorageRpcAdapter, StorageRpcError, register_storage_rpc
from .server import Clock, FreeSpace, StorageServer, disk_free


class StorageService:
    def __init__(
        self, server: StorageServer, adapter: StorageRpcAdapter, crawler: LeaseCrawler
    ) -> None:
        self.server = server
        self.adapter = adapter
        self.crawler = crawler

    @classmethod
    async def start(
        cls,
        root: Path,
        registry: Registry,
        config: StorageConfig | None = None,
        *,
        error_factory: ErrorFactory = StorageRpcError,
        crawl_per_tick: int = 100,
        crawl_interval: float = 1.0,
        clock: Clock | None = None,
        free_space: FreeSpace = disk_free,
    ) -> StorageService:
        server = await asyncio.to_thread(
            lambda: StorageServer.open(root, config, free_space=free_space, **_clock(clock))
        )
        try:
            adapter = register_storage_rpc(registry, server, error_factory=error_factory)
            crawler = LeaseCrawler(server, per_tick=crawl_per_tick, interval=crawl_interval)
            crawler.start()
        except BaseException:
            server.close()
            raise
        return cls(server, adapter, crawler)

    def peer_disconnected(self, peer_id: NodeId) -> int:
        """Abort a disconnected peer's uploads (wire to the transport's close event)."""
        return self.adapter.peer_disconnected(peer_id)

    async def close(self) -> None:
        await self.crawler.close()
        await asyncio.to_thread(self.server.close)


def _clock(clock: Clock | None) -> dict[str, Clock]:
    return {} if clock is None else {"clock": clock}
