"""The async storage interface clients code against, and its in-process implementation.

:class:`StorageAPI` is what an uploader or downloader holds for one storage server:
the caller's identity is implicit (bound at construction locally, proven by the
transport remotely). Two implementations exist and pass the same contract suite:
:class:`LocalStorageClient` (a :class:`StorageServer` in this process, run in a
worker thread so ``fsync`` never blocks the event loop) and
:class:`p2pstore.storage.rpc_client.RpcStorageClient` (over the RPC adapter).

Long writes stream over the transport's bulk streams (:mod:`.bulk`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar

from quic_transport.identity import NodeId

from .put import put_whole
from .results import Allocation, ClosedShare, StorageStats
from .server import StorageServer

T = TypeVar("T")


class StorageAPI(Protocol):
    """One storage server as seen by one caller. Every method may raise StorageError."""

    async def allocate(
        self, storage_index: bytes, shnum: int, size: int | None = None, lease: int | None = None
    ) -> Allocation: ...

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None: ...

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare: ...

    async def abort(self, storage_index: bytes, shnum: int) -> None: ...

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes: ...

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]: ...

    async def hashv(
        self, storage_index: bytes, shnum: int, prefix: bytes, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        """SHA-256 of ``prefix`` and each range of a complete share, computed by the
        server (docs/storage.md, ``storage.hashv``)."""
        ...

    async def list_shares(self, storage_index: bytes) -> dict[int, int]: ...

    async def add_lease(self, storage_index: bytes) -> float: ...

    async def renew_lease(self, storage_index: bytes) -> float: ...

    async def cancel_lease(self, storage_index: bytes) -> int: ...

    async def stat(self) -> StorageStats: ...

    async def slot_read(self, storage_index: bytes) -> bytes | None:
        """The slot record the server holds (unverified: the caller decodes it)."""
        ...

    async def slot_write(
        self, storage_index: bytes, record: bytes, lease: int | None = None
    ) -> tuple[bool, bytes]:
        """Offer a slot record: ``(True, record)`` if stored (or already held),
        ``(False, held)`` if the server keeps a record that wins (docs/storage.md,
        "Slots"). The returned record is unverified: the caller decodes it."""
        ...


class LocalStorageClient:
    """:class:`StorageAPI` over a server in this process, acting as ``owner``."""

    def __init__(self, server: StorageServer, owner: NodeId, *, offload: bool = True) -> None:
        self.server = server
        self.owner = owner
        self._offload = offload

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._offload:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def allocate(
        self, storage_index: bytes, shnum: int, size: int | None = None, lease: int | None = None
    ) -> Allocation:
        return await self._run(self.server.allocate, storage_index, shnum, self.owner, size, lease)

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None:
        await self._run(self.server.write, storage_index, shnum, self.owner, offset, data)

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare:
        return await self._run(self.server.close_share, storage_index, shnum, self.owner)

    async def abort(self, storage_index: bytes, shnum: int) -> None:
        await self._run(self.server.abort, storage_index, shnum, self.owner)

    async def put_share(
        self, storage_index: bytes, shnum: int, data: bytes, lease: int | None = None
    ) -> ClosedShare:
        return await self._run(
            put_whole, self.server, storage_index, shnum, self.owner, data, lease
        )

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes:
        return await self._run(self.server.read, storage_index, shnum, offset, length)

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        return await self._run(self.server.readv, storage_index, shnum, ranges)

    async def hashv(
        self, storage_index: bytes, shnum: int, prefix: bytes, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        return await self._run(self.server.hashv, storage_index, shnum, prefix, ranges)

    async def list_shares(self, storage_index: bytes) -> dict[int, int]:
        return await self._run(self.server.list_shares, storage_index)

    async def add_lease(self, storage_index: bytes) -> float:
        return await self._run(self.server.add_lease, storage_index, self.owner)

    async def renew_lease(self, storage_index: bytes) -> float:
        return await self._run(self.server.renew_lease, storage_index, self.owner)

    async def cancel_lease(self, storage_index: bytes) -> int:
        return await self._run(self.server.cancel_lease, storage_index, self.owner)

    async def stat(self) -> StorageStats:
        return await self._run(self.server.stat)

    async def slot_read(self, storage_index: bytes) -> bytes | None:
        return await self._run(self.server.slot_read, storage_index)

    async def slot_write(
        self, storage_index: bytes, record: bytes, lease: int | None = None
    ) -> tuple[bool, bytes]:
        return await self._run(self.server.slot_write, storage_index, record, self.owner, lease)
