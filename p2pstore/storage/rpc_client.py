"""Client side of the ``storage.*`` RPC methods: a :class:`StorageAPI` over a call function.

``call(method, body) -> result`` is whatever reaches one storage server (the node
binds ``Endpoint.call`` to a peer address; tests bind an in-memory registry). A
failure carrying string ``code`` and ``message`` attributes (``RpcError``) becomes
the matching :class:`StorageError` subclass with ``remote=True``; other exceptions
(timeouts, connection failures) pass through unchanged.

Replies come from a peer we do not trust: every result is checked against the
documented schema (and against the request: a read never returns more than was
asked) and a malformed one raises :class:`BadResponse`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .config import MAX_SHNUM
from .errors import BadResponse, UnknownStorageError, error_from_code
from .results import Allocation, ClosedShare, StorageStats
from .slots import MAX_RECORD
from .whole import put_in_steps

Call = Callable[[str, Any], Awaitable[Any]]


class EndpointLike(Protocol):
    """The part of ``quic_transport.Endpoint`` this client needs."""

    # The transport contract takes a timeout argument.
    async def call(
        self,
        peer: Any,
        method: str,
        body: Any,
        *,
        timeout: float = ...,  # noqa: ASYNC109
    ) -> Any: ...


def bind_endpoint(endpoint: EndpointLike, peer: Any, *, timeout: float = 10.0) -> Call:
    """A ``call(method, body)`` that sends to one peer address through an Endpoint."""

    async def call(method: str, body: Any) -> Any:
        return await endpoint.call(peer, method, body, timeout=timeout)

    return call


class RpcStorageClient:
    """:class:`p2pstore.storage.api.StorageAPI` over ``storage.*`` RPC calls."""

    def __init__(self, call: Call, *, peer: str | None = None) -> None:
        self._call = call
        self.peer = peer

    async def _rpc(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self._call(method, body)
        except Exception as e:
            code, message = getattr(e, "code", None), getattr(e, "message", None)
            if isinstance(code, str) and isinstance(message, str):
                raise error_from_code(code[:64], message[:1000], peer=self.peer) from None
            raise
        if not isinstance(result, dict):
            raise self._bad(method, "reply is not a map")
        return result

    def _bad(self, method: str, why: str) -> BadResponse:
        return BadResponse(f"{method}: {why}", remote=True, peer=self.peer)

    def _int(self, method: str, result: dict[str, Any], key: str, *, optional: bool = False) -> Any:
        v = result.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise self._bad(method, f"{key} is not a non-negative integer")
        return v

    def _float(self, method: str, result: dict[str, Any], key: str) -> float:
        v = result.get(key)
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise self._bad(method, f"{key} is not a number")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise self._bad(method, f"{key} is not a finite number")
        return f

    async def allocate(
        self, storage_index: bytes, shnum: int, size: int | None = None, lease: int | None = None
    ) -> Allocation:
        body: dict[str, Any] = {"si": storage_index, "shnum": shnum}
        if size is not None:
            body["size"] = size
        if lease is not None:
            body["lease"] = lease
        r = await self._rpc("storage.allocate", body)
        limit = self._int("storage.allocate", r, "limit")
        got_size = self._int("storage.allocate", r, "size", optional=True)
        if got_size != size or (size is not None and limit != size):
            raise self._bad("storage.allocate", "size or limit does not match the request")
        return Allocation(storage_index, shnum, got_size, limit)

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None:
        await self._rpc(
            "storage.write",
            {"si": storage_index, "shnum": shnum, "offset": offset, "data": bytes(data)},
        )

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare:
        r = await self._rpc("storage.close", {"si": storage_index, "shnum": shnum})
        size = self._int("storage.close", r, "size")
        return ClosedShare(
            storage_index, shnum, size, self._float("storage.close", r, "lease_expires")
        )

    async def abort(self, storage_index: bytes, shnum: int) -> None:
        await self._rpc("storage.abort", {"si": storage_index, "shnum": shnum})

    async def put_share(
        self, storage_index: bytes, shnum: int, data: bytes, lease: int | None = None
    ) -> ClosedShare:
        """A whole (small) share in one ``storage.put`` call; from a server that
        predates it (``no-such-method``), allocate, write and close instead."""
        body: dict[str, Any] = {"si": storage_index, "shnum": shnum, "data": bytes(data)}
        if lease is not None:
            body["lease"] = lease
        try:
            r = await self._rpc("storage.put", body)
        except UnknownStorageError as e:
            if e.wire_code != "no-such-method":
                raise
            return await put_in_steps(self, storage_index, shnum, data, lease)
        if self._int("storage.put", r, "size") != len(data):
            raise self._bad("storage.put", "size does not match the data sent")
        return ClosedShare(
            storage_index, shnum, len(data), self._float("storage.put", r, "lease_expires")
        )

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes:
        r = await self._rpc(
            "storage.read",
            {"si": storage_index, "shnum": shnum, "offset": offset, "length": length},
        )
        data = r.get("data")
        if not isinstance(data, bytes) or len(data) > length:
            raise self._bad("storage.read", "data missing or longer than requested")
        return data

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        r = await self._rpc(
            "storage.readv",
            {"si": storage_index, "shnum": shnum, "ranges": [[o, n] for o, n in ranges]},
        )
        data = r.get("data")
        if not isinstance(data, list) or len(data) != len(ranges):
            raise self._bad("storage.readv", "data is not one entry per range")
        for d, (_, n) in zip(data, ranges, strict=True):
            if not isinstance(d, bytes) or len(d) > n:
                raise self._bad("storage.readv", "an entry is longer than requested")
        return data

    async def hashv(
        self, storage_index: bytes, shnum: int, prefix: bytes, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        r = await self._rpc(
            "storage.hashv",
            {
                "si": storage_index,
                "shnum": shnum,
                "prefix": prefix,
                "ranges": [[o, n] for o, n in ranges],
            },
        )
        hashes = r.get("hashes")
        if not isinstance(hashes, list) or len(hashes) != len(ranges):
            raise self._bad("storage.hashv", "hashes is not one entry per range")
        if not all(isinstance(h, bytes) and len(h) == 32 for h in hashes):
            raise self._bad("storage.hashv", "a hash is not 32 bytes")
        return hashes

    async def list_shares(self, storage_index: bytes) -> dict[int, int]:
        r = await self._rpc("storage.list", {"si": storage_index})
        shares = r.get("shares")
        if not isinstance(shares, dict) or len(shares) > MAX_SHNUM + 1:
            raise self._bad("storage.list", "shares is not a map of at most 256 entries")
        out: dict[int, int] = {}
        for k, v in shares.items():
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_SHNUM:
                raise self._bad("storage.list", "share number out of range")
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise self._bad("storage.list", "share size is not a non-negative integer")
            out[k] = v
        return dict(sorted(out.items()))

    async def add_lease(self, storage_index: bytes) -> float:
        r = await self._rpc("storage.add_lease", {"si": storage_index})
        return self._float("storage.add_lease", r, "expires")

    async def renew_lease(self, storage_index: bytes) -> float:
        r = await self._rpc("storage.renew_lease", {"si": storage_index})
        return self._float("storage.renew_lease", r, "expires")

    async def cancel_lease(self, storage_index: bytes) -> int:
        r = await self._rpc("storage.cancel_lease", {"si": storage_index})
        removed: int = self._int("storage.cancel_lease", r, "removed")
        return removed

    async def slot_read(self, storage_index: bytes) -> bytes | None:
        r = await self._rpc("storage.slot_read", {"si": storage_index})
        record = r.get("record")
        if record is not None and (not isinstance(record, bytes) or len(record) > MAX_RECORD):
            raise self._bad("storage.slot_read", f"record is not null or bytes of <= {MAX_RECORD}")
        return record

    async def slot_write(
        self, storage_index: bytes, record: bytes, lease: int | None = None
    ) -> tuple[bool, bytes]:
        body: dict[str, Any] = {"si": storage_index, "record": bytes(record)}
        if lease is not None:
            body["lease"] = lease
        r = await self._rpc("storage.slot_write", body)
        stored, held = r.get("stored"), r.get("record")
        if not isinstance(stored, bool):
            raise self._bad("storage.slot_write", "stored is not a boolean")
        if not isinstance(held, bytes) or len(held) > MAX_RECORD:
            raise self._bad("storage.slot_write", f"record is not bytes of <= {MAX_RECORD}")
        return stored, held

    async def stat(self) -> StorageStats:
        m = "storage.stat"
        r = await self._rpc(m, {})
        return StorageStats(
            used=self._int(m, r, "used"),
            reserved=self._int(m, r, "reserved"),
            max_bytes=self._int(m, r, "max_bytes", optional=True),
            reserved_space=self._int(m, r, "reserved_space"),
            disk_free=self._int(m, r, "disk_free"),
            available=self._int(m, r, "available"),
            shares=self._int(m, r, "shares"),
            uploads=self._int(m, r, "uploads"),
            max_share_size=self._int(m, r, "max_share_size"),
            max_write=self._int(m, r, "max_write"),
            max_read=self._int(m, r, "max_read"),
            lease_duration=self._float(m, r, "lease_duration"),
        )
