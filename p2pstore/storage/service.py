"""One node's storage service: server + lease crawler + RPC registration, as a unit
with ``async close()`` (what the node assembly starts and stops).

Invariants: ``start`` opens the directory (lock, crash cleanup, usage scan) in a
worker thread, registers the ``storage.*`` handlers, then starts the crawler;
``close`` stops the crawler (waiting for a tick in progress) before closing the
server, so no background work touches a closed directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from p2pstore.base.tasks import TaskOwner
from quic_transport.identity import NodeId

from .config import StorageConfig
from .crawler import LeaseCrawler
from .quota import FreeSpace, disk_free
from .rpc import ErrorFactory, Registry, StorageRpcAdapter, StorageRpcError, register_storage_rpc
from .server import Clock, StorageServer

log = logging.getLogger(__name__)

#: seconds without a write after which a peer's upload is dropped when one of its
#: connections closes: the QUIC idle timeout (a rate-limited uploader may write one
#: share only every half minute; a dead connection was silent at least this long)
STALE_UPLOAD = 60.0


class PeerEvents(Protocol):
    def on_peer_gone(self, hook: Callable[[NodeId], None]) -> None: ...
    def on_connection_lost(self, hook: Callable[[NodeId], None]) -> None: ...


class StorageService:
    def __init__(
        self, server: StorageServer, adapter: StorageRpcAdapter, crawler: LeaseCrawler
    ) -> None:
        self.server = server
        self.adapter = adapter
        self.crawler = crawler
        self._tasks = TaskOwner()  # uploads of peers that went away, dropped

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
        crawl_pause: float = 0.0,
        clock: Clock | None = None,
        free_space: FreeSpace = disk_free,
    ) -> StorageService:
        server = await asyncio.to_thread(
            lambda: StorageServer.open(root, config, free_space=free_space, **_clock(clock))
        )
        try:
            adapter = register_storage_rpc(registry, server, error_factory=error_factory)
            crawler = LeaseCrawler(
                server, per_tick=crawl_per_tick, interval=crawl_interval, cycle_pause=crawl_pause
            )
            crawler.start()
        except BaseException:
            server.close()
            raise
        return cls(server, adapter, crawler)

    def peer_disconnected(self, peer_id: NodeId) -> int:
        """Abort a disconnected peer's uploads (wire to the transport's close event)."""
        return self.adapter.peer_disconnected(peer_id)

    def follow_connections(self, events: PeerEvents) -> None:
        """A peer's last connection closed: its unfinished uploads here can never
        complete, so they go now rather than after the idle sweep. One of its
        connections closed while another remains (it restarted and dialed again):
        :data:`STALE_UPLOAD` seconds later, its uploads with no write for that long
        go (docs/storage.md)."""

        async def drop(fn: Callable[..., int], *args: Any, wait: float = 0.0) -> None:
            await asyncio.sleep(wait)
            if self.server.closed:
                return
            try:
                await asyncio.to_thread(fn, *args)
            except Exception as e:
                log.warning("dropping a peer's uploads failed: %s", e)

        def gone(peer: NodeId) -> None:
            self._tasks.start(drop(self.peer_disconnected, peer), name="drop-uploads")

        def lost(peer: NodeId) -> None:
            # its uploads over the lost connection went quiet when it did; those over
            # a live one keep being written: look again once the quiet ones are stale
            aborts = drop(self.server.abort_uploads_of, peer, STALE_UPLOAD, wait=STALE_UPLOAD)
            self._tasks.start(aborts, name="drop-stale-uploads")

        events.on_peer_gone(gone)
        events.on_connection_lost(lost)

    async def close(self) -> None:
        await self._tasks.close()  # (closing the server aborts every upload anyway)
        await self.crawler.close()
        await asyncio.to_thread(self.server.close)


def _clock(clock: Clock | None) -> dict[str, Clock]:
    return {} if clock is None else {"clock": clock}
