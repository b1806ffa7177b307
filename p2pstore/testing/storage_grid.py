"""An in-process grid of storage servers for upload/download/repair tests.

Each :class:`GridServer` is a real :class:`StorageServer` in its own temporary
directory with a deterministic node ID. Clients get a :class:`StorageAPI` that
goes straight to the server (``via_rpc=False``) or through the RPC adapter and a
CBOR round trip (``via_rpc=True``), wrapped in :class:`FaultyStorage` so a test
can make any server misbehave:

- ``broken()``: every call fails with :class:`Unavailable` (a refusing/dead peer),
- ``hang()``: every call waits until ``heal()`` (or until the caller's timeout
  cancels it), like a peer that never answers,
- ``corrupt_share()``: flip one byte of a stored share file,
- ``delete_share()`` / ``delete_all()``: remove stored shares behind the server's back,
- slots: ``corrupt_slot()`` / ``delete_slot()`` change the slot file on disk (the
  server then holds no usable record), ``serve_slot()`` makes the server answer
  ``slot_read`` with any bytes (an old record, a corrupted one, none) while writes
  still reach it; ``serve_slots_honestly()`` ends that.

Servers use a fake clock shared by the grid (``grid.clock``) unless one is given.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from p2pstore.storage.api import LocalStorageClient, StorageAPI
from p2pstore.storage.config import StorageConfig
from p2pstore.storage.errors import Unavailable
from p2pstore.storage.quota import FreeSpace, disk_free
from p2pstore.storage.results import Allocation, ClosedShare, StorageStats
from p2pstore.storage.rpc import register_storage_rpc
from p2pstore.storage.rpc_client import RpcStorageClient
from p2pstore.storage.server import StorageServer
from p2pstore.testing.fake_rpc import FakeRegistry, FakeRpcError
from quic_transport.identity import NodeId


class FakeClock:
    """A settable wall clock for leases and idle timeouts."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Mode(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    HUNG = "hung"


def grid_node_id(index: int) -> NodeId:
    return NodeId(hashlib.blake2b(f"grid-server-{index}".encode(), digest_size=20).digest())


class GridServer:
    def __init__(self, index: int, server: StorageServer) -> None:
        self.index = index
        self.node_id = grid_node_id(index)
        self.mode = Mode.OK
        self.calls: Counter[str] = Counter()
        self._healed = asyncio.Event()
        self._healed.set()
        self._error: Callable[[], Exception] | None = None
        self.served_slots: dict[bytes, bytes | None] = {}
        self._attach(server)

    def _attach(self, server: StorageServer) -> None:
        self.server = server
        self.registry = FakeRegistry()
        register_storage_rpc(self.registry, server, error_factory=FakeRpcError)

    def client(self, owner: NodeId, *, via_rpc: bool = False) -> FaultyStorage:
        """A :class:`StorageAPI` for ``owner``; it follows the server across restarts."""
        return FaultyStorage(self, owner, via_rpc)

    def api(self, owner: NodeId, via_rpc: bool) -> StorageAPI:
        if via_rpc:
            return RpcStorageClient(self.registry.caller(owner), peer=self.node_id.b32)
        return LocalStorageClient(self.server, owner)

    def restart(self) -> None:
        """Close and reopen the server on the same directory (uploads in progress are
        lost, complete shares and leases survive), like a node reboot."""
        old = self.server
        old.close()
        self._attach(
            StorageServer.open(
                old.layout.root, old.config, clock=old.clock, free_space=old.free_space
            )
        )

    def broken(self, error: Callable[[], Exception] | None = None) -> None:
        """Every call fails: with ``error()`` if given (e.g. the transport's
        ConnectError), else :class:`Unavailable`."""
        self.mode = Mode.BROKEN
        self._error = error
        self._healed.set()

    def hang(self) -> None:
        self.mode = Mode.HUNG
        self._healed.clear()

    def heal(self) -> None:
        self.mode = Mode.OK
        self._healed.set()

    async def gate(self, method: str) -> None:
        self.calls[method] += 1
        if self.mode is Mode.HUNG:
            await self._healed.wait()
        if self.mode is Mode.BROKEN:
            if self._error is not None:
                raise self._error()
            raise Unavailable("server is broken (test grid)", remote=True, peer=self.node_id.b32)

    def corrupt_share(self, si: bytes, shnum: int, offset: int | None = None) -> int:
        """Flip every bit of one byte (the middle one by default); returns its offset."""
        path = self.server.share_path(si, shnum)
        size = path.stat().st_size
        pos = size // 2 if offset is None else offset
        if not 0 <= pos < size:
            raise ValueError(f"offset {pos} outside share of {size} bytes")
        with open(path, "r+b") as f:
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0xFF]))
        return pos

    def delete_share(self, si: bytes, shnum: int) -> None:
        os.unlink(self.server.share_path(si, shnum))

    def corrupt_slot(self, si: bytes, offset: int | None = None) -> int:
        """Flip every bit of one byte of the slot file (the middle one by default)."""
        path = self.server.layout.slot_path(si)
        data = bytearray(path.read_bytes())
        pos = len(data) // 2 if offset is None else offset
        if not 0 <= pos < len(data):
            raise ValueError(f"offset {pos} outside a slot file of {len(data)} bytes")
        data[pos] ^= 0xFF
        path.write_bytes(bytes(data))
        return pos

    def delete_slot(self, si: bytes) -> None:
        os.unlink(self.server.layout.slot_path(si))

    def serve_slot(self, si: bytes, record: bytes | None) -> None:
        """From now on ``slot_read(si)`` on this server answers ``record`` (a stale or
        corrupted record, or None), whatever it holds; ``slot_write`` still reaches
        the server and answers honestly."""
        self.served_slots[si] = record

    def serve_slots_honestly(self) -> None:
        self.served_slots.clear()

    def delete_all(self, si: bytes) -> int:
        shares = self.server.list_shares(si)
        for shnum in shares:
            self.delete_share(si, shnum)
        return len(shares)


class FaultyStorage:
    """A :class:`StorageAPI` that obeys its grid server's break/hang switches."""

    def __init__(self, gs: GridServer, owner: NodeId, via_rpc: bool) -> None:
        self.grid_server = gs
        self.node_id = gs.node_id
        self.owner = owner
        self.via_rpc = via_rpc

    @property
    def _inner(self) -> StorageAPI:
        return self.grid_server.api(self.owner, self.via_rpc)

    async def allocate(
        self, storage_index: bytes, shnum: int, size: int | None = None, lease: int | None = None
    ) -> Allocation:
        await self.grid_server.gate("allocate")
        return await self._inner.allocate(storage_index, shnum, size, lease)

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None:
        await self.grid_server.gate("write")
        await self._inner.write(storage_index, shnum, offset, data)

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare:
        await self.grid_server.gate("close_share")
        return await self._inner.close_share(storage_index, shnum)

    async def abort(self, storage_index: bytes, shnum: int) -> None:
        await self.grid_server.gate("abort")
        await self._inner.abort(storage_index, shnum)

    async def put_share(
        self, storage_index: bytes, shnum: int, data: bytes, lease: int | None = None
    ) -> ClosedShare:
        """A whole small share in one call (``storage.put``), as a node's client does."""
        await self.grid_server.gate("put_share")
        inner = self._inner
        assert isinstance(inner, LocalStorageClient | RpcStorageClient)
        return await inner.put_share(storage_index, shnum, data, lease)

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes:
        await self.grid_server.gate("read")
        return await self._inner.read(storage_index, shnum, offset, length)

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        await self.grid_server.gate("readv")
        return await self._inner.readv(storage_index, shnum, ranges)

    async def hashv(
        self, storage_index: bytes, shnum: int, prefix: bytes, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        await self.grid_server.gate("hashv")
        return await self._inner.hashv(storage_index, shnum, prefix, ranges)

    async def list_shares(self, storage_index: bytes) -> dict[int, int]:
        await self.grid_server.gate("list_shares")
        return await self._inner.list_shares(storage_index)

    async def add_lease(self, storage_index: bytes) -> float:
        await self.grid_server.gate("add_lease")
        return await self._inner.add_lease(storage_index)

    async def renew_lease(self, storage_index: bytes) -> float:
        await self.grid_server.gate("renew_lease")
        return await self._inner.renew_lease(storage_index)

    async def cancel_lease(self, storage_index: bytes) -> int:
        await self.grid_server.gate("cancel_lease")
        return await self._inner.cancel_lease(storage_index)

    async def stat(self) -> StorageStats:
        await self.grid_server.gate("stat")
        return await self._inner.stat()

    async def slot_read(self, storage_index: bytes) -> bytes | None:
        await self.grid_server.gate("slot_read")
        served = self.grid_server.served_slots
        if storage_index in served:
            return served[storage_index]
        return await self._inner.slot_read(storage_index)

    async def slot_write(
        self, storage_index: bytes, record: bytes, lease: int | None = None
    ) -> tuple[bool, bytes]:
        await self.grid_server.gate("slot_write")
        return await self._inner.slot_write(storage_index, record, lease)


class StorageGrid:
    """``n`` storage servers under ``root`` (use as a context manager, or call close)."""

    def __init__(
        self,
        root: Path,
        n: int,
        config: StorageConfig | None = None,
        *,
        clock: Any = None,
        free_space: FreeSpace = disk_free,
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.config = config or StorageConfig()
        self.servers: list[GridServer] = []
        try:
            for i in range(n):
                server = StorageServer.open(
                    Path(root) / f"server-{i:03d}",
                    self.config,
                    clock=self.clock,
                    free_space=free_space,
                )
                self.servers.append(GridServer(i, server))
        except BaseException:
            self.close()
            raise

    def __getitem__(self, i: int) -> GridServer:
        return self.servers[i]

    def __len__(self) -> int:
        return len(self.servers)

    def clients(self, owner: NodeId, *, via_rpc: bool = False) -> list[FaultyStorage]:
        return [gs.client(owner, via_rpc=via_rpc) for gs in self.servers]

    def shares(self, si: bytes) -> dict[int, dict[int, int]]:
        """``{server index: {shnum: size}}`` for servers holding any share of ``si``."""
        out = {}
        for gs in self.servers:
            held = gs.server.list_shares(si)
            if held:
                out[gs.index] = held
        return out

    def slots(self, si: bytes) -> dict[int, bytes]:
        """``{server index: record bytes}`` for servers holding a usable slot record."""
        out = {}
        for gs in self.servers:
            record = gs.server.slot_read(si)
            if record is not None:
                out[gs.index] = record
        return out

    def delete_all(self, si: bytes) -> int:
        """Delete every share of ``si`` on every server; returns how many were deleted."""
        return sum(gs.delete_all(si) for gs in self.servers)

    def close(self) -> None:
        for gs in self.servers:
            gs.server.close()

    def __enter__(self) -> StorageGrid:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
