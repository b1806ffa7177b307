"""The async storage interface clients code against, and its in-process implementation.

:class:`StorageAPI` is what an uploader or downloader holds for one storage server:
the caller's identity is implicit (bound at construction locally, proven by the
transport remotely). Two implementations exist and pass the same contract suite:
:class:`LocalStorageClient` (a :class:`StorageServer` in this process, run in a
worker thread so ``fsync`` never blocks the event loop) and
:class:`p2pstore.storage.rpc_client.RpcStorageClient` (over the RPC adapter).

:func:`write_stream` is the streamed write path: it appends an async iterable of
chunks of any size at an offset in ``max_write``-sized calls, which is also how a
bulk-stream handler feeds the server. :func:`read_stream` is its mirror: a long
range fetched as ``max_read``-sized pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Protocol, TypeVar

from quic_transport.identity import NodeId

from .results import Allocation, ClosedShare, StorageStats
from .server import StorageServer

T = TypeVar("T")


class StorageAPI(Protocol):
    """One storage server as seen by one caller. Every method may raise StorageError."""

    async def allocate(
        self, storage_index: bytes, shnum: int, size: int | None = None
    ) -> Allocation: ...

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None: ...

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare: ...

    async def abort(self, storage_index: bytes, shnum: int) -> None: ...

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes: ...

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]: ...

    async def list_shares(self, storage_index: bytes) -> dict[int, int]: ...

    async def add_lease(self, storage_index: bytes) -> float: ...

    async def renew_lease(self, storage_index: bytes) -> float: ...

    async def cancel_lease(self, storage_index: bytes) -> int: ...

    async def stat(self) -> StorageStats: ...


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
        self, storage_index: bytes, shnum: int, size: int | None = None
    ) -> Allocation:
        return await self._run(self.server.allocate, storage_index, shnum, self.owner, size)

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None:
        await self._run(self.server.write, storage_index, shnum, self.owner, offset, data)

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare:
        return await self._run(self.server.close_share, storage_index, shnum, self.owner)

    async def abort(self, storage_index: bytes, shnum: int) -> None:
        await self._run(self.server.abort, storage_index, shnum, self.owner)

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes:
        return await self._run(self.server.read, storage_index, shnum, offset, length)

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        return await self._run(self.server.readv, storage_index, shnum, ranges)

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


async def write_stream(
    api: StorageAPI,
    storage_index: bytes,
    shnum: int,
    offset: int,
    chunks: AsyncIterable[bytes],
    *,
    max_write: int,
) -> int:
    """Append ``chunks`` at ``offset`` in calls of at most ``max_write`` bytes.

    Returns the offset one past the last byte written. Chunks are not buffered
    beyond one ``max_write`` piece, so memory stays bounded whatever the length."""
    if max_write < 1:
        raise ValueError("max_write must be >= 1")
    pos = offset
    async for chunk in chunks:
        view = memoryview(chunk)
        while view:
            piece = bytes(view[:max_write])
            await api.write(storage_index, shnum, pos, piece)
            pos += len(piece)
            view = view[len(piece) :]
    return pos


async def read_stream(
    api: StorageAPI,
    storage_index: bytes,
    shnum: int,
    offset: int,
    length: int | None,
    *,
    max_read: int,
) -> AsyncIterator[bytes]:
    """Yield ``[offset, offset+length)`` of a share (to its end if ``length`` is None)
    in pieces of at most ``max_read`` bytes; stops early at the end of the share."""
    if max_read < 1:
        raise ValueError("max_read must be >= 1")
    pos = offset
    end = None if length is None else offset + length
    while end is None or pos < end:
        want = max_read if end is None else min(max_read, end - pos)
        piece = await api.read(storage_index, shnum, pos, want)
        if piece:
            yield piece
        if len(piece) < want:
            return  # the share ends here
        pos += len(piece)
