"""The stand-in node service used until the QUIC transport, DHT and storage server land.

It does exactly what its name says and nothing more: it binds the configured listen
address with a UDP socket (so a port conflict or a bad address stops the node at
start, as the real QUIC endpoint will), reports status (bound address, peers in the
known-peers store, bytes under ``storage/``), and drops every datagram it receives
(counting them). It does not join the grid, answer peers or store anything.

For the local HTTP API it provides a
:class:`~p2pstore.web.memory_backend.MemoryBackend`: files put through this node
are really encrypted and erasure-coded, but the shares live in this process's
memory only (lost at stop), and there is no virtual drive (``vdrive-unavailable``).

REPLACED when the real services exist: node assembly passes its own
:data:`~p2pstore.node.service.ServiceFactory` to the runner. Nothing else in the
runner, daemon or CLI depends on this class.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from p2pstore.web.backend import PeerInfo
from p2pstore.web.memory_backend import MemoryBackend

from .service import NodeContext, ServiceStatus

log = logging.getLogger(__name__)
STORAGE_RESCAN_SECONDS = 60.0
MEMORY_BACKEND_MAX_BYTES = 256 << 20


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


class _DropProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: ListenOnlyService) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.owner.datagrams_dropped += 1


class ListenOnlyService:
    """Binds the listen address and reports status; see the module docstring."""

    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self.datagrams_dropped = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._bound: tuple[str, int] | None = None
        self._storage_used = 0
        self._storage_scanned_at: float | None = None
        self._backend: MemoryBackend | None = None

    def api_backend(self) -> MemoryBackend:
        """The stand-in API backend (see the module docstring); one per service."""
        if self._backend is None:
            self._backend = MemoryBackend(
                convergence_secret=self.context.convergence_secret,
                max_bytes=MEMORY_BACKEND_MAX_BYTES,
                node_info=self._node_info,
                peer_source=self._peers,
            )
        return self._backend

    def _node_info(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "node_id": self.context.key.node_id.b32,
            "nickname": self.context.config.node.nickname,
            "backend": "memory (stand-in: shares held in this process only, lost at stop)",
        }
        if self._bound is not None:
            doc.update(self.status())
        return doc

    def _peers(self) -> list[PeerInfo]:
        return [
            PeerInfo(p.node_id.b32, f"{p.host}:{p.port}", connected=False, last_seen=p.last_seen)
            for p in self.context.known_peers.peers()
        ]

    async def start(self) -> None:
        listen = self.context.config.node.listen
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _DropProtocol(self), local_addr=(listen.host, listen.port)
        )
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self._bound = (listen.host, int(sockname[1]))
        log.info(
            "listen-only service bound UDP %s port %d (stand-in until the QUIC transport lands)",
            listen.host,
            self._bound[1],
        )
        self._rescan_storage()

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        log.info("listen-only service closed (%d datagrams dropped)", self.datagrams_dropped)

    def _rescan_storage(self) -> None:
        now = self.context.clock()
        if (
            self._storage_scanned_at is None
            or now - self._storage_scanned_at >= STORAGE_RESCAN_SECONDS
        ):
            self._storage_used = disk_usage(self.context.node_dir.storage_dir)
            self._storage_scanned_at = now

    def status(self) -> ServiceStatus:
        if self._bound is None:
            raise RuntimeError("status() before start()")
        self._rescan_storage()
        return ServiceStatus(
            listen_host=self._bound[0],
            listen_port=self._bound[1],
            peers_known=len(self.context.known_peers),
            storage_used=self._storage_used,
            details={
                "service": "listen-only (stand-in: no transport, DHT or storage yet)",
                "datagrams_dropped": self.datagrams_dropped,
            },
        )
