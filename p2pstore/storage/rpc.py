"""Thin RPC adapter: ``storage.*`` methods over a :class:`StorageServer`.

Each handler checks its CBOR body against the schema in docs/storage.md (a map
with exactly the documented keys, each of the documented type and range; unknown
keys are refused), calls the server in a worker thread as the caller's verified
node ID (``ctx.peer_id``), and returns a CBOR-encodable map. Business errors
(:class:`StorageError`) are re-raised through ``error_factory(code, message)``; the
node wires ``quic_transport.RpcError`` there so they cross the wire as typed
errors. Anything else escapes unchanged and the transport reports it as
``internal`` without details.

The schema checks live in :func:`parse_body` and are shared with nothing else: the
server re-validates everything itself, so this layer only guarantees types and
sizes before any work is queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from quic_transport.identity import ID_BYTES, NodeId

from .config import HASH_CONCURRENCY, MAX_HASH_PREFIX, MAX_SHNUM
from .errors import BadRequest, StorageError
from .put import put_whole
from .server import StorageServer
from .slots import MAX_RECORD

# Largest integer accepted in any offset/length/size field (CBOR uint64 fits; this
# keeps arithmetic on offsets far from overflow in any second implementation).
MAX_UINT = 2**62


class CallContextLike(Protocol):
    @property
    def peer_id(self) -> NodeId: ...


Handler = Callable[[Any, Any], Awaitable[Any]]
ErrorFactory = Callable[[str, str], Exception]


class Registry(Protocol):
    def register(self, method: str, handler: Handler) -> None: ...


class StorageRpcError(Exception):
    """Default error the adapter raises: a ``(code, message)`` pair for the transport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ----- body schema -----------------------------------------------------------

Check = Callable[[str, object], object]


def _si(name: str, v: object) -> object:
    if not isinstance(v, bytes) or len(v) != ID_BYTES:
        raise BadRequest(f"{name} must be {ID_BYTES} bytes")
    return v


def _shnum(name: str, v: object) -> object:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SHNUM:
        raise BadRequest(f"{name} must be an integer 0..{MAX_SHNUM}")
    return v


def _uint(name: str, v: object) -> object:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_UINT:
        raise BadRequest(f"{name} must be an integer 0..2**62")
    return v


def _opt_uint(name: str, v: object) -> object:
    return None if v is None else _uint(name, v)


def _bytes(name: str, v: object) -> object:
    if not isinstance(v, bytes):
        raise BadRequest(f"{name} must be bytes")
    return v


def _record(name: str, v: object) -> object:
    if not isinstance(v, bytes) or len(v) > MAX_RECORD:
        raise BadRequest(f"{name} must be bytes of at most {MAX_RECORD}")
    return v


def _prefix(name: str, v: object) -> object:
    if not isinstance(v, bytes) or len(v) > MAX_HASH_PREFIX:
        raise BadRequest(f"{name} must be bytes of at most {MAX_HASH_PREFIX}")
    return v


def _ranges(name: str, v: object) -> object:
    if not isinstance(v, list) or len(v) > 1024:
        raise BadRequest(f"{name} must be a list of at most 1024 [offset, length] pairs")
    out = []
    for item in v:
        if not isinstance(item, list) or len(item) != 2:
            raise BadRequest(f"{name} entries must be [offset, length]")
        out.append((_uint(name, item[0]), _uint(name, item[1])))
    return out


SCHEMAS: dict[str, dict[str, Check]] = {
    "storage.allocate": {"si": _si, "shnum": _shnum, "size": _opt_uint, "lease": _opt_uint},
    "storage.write": {"si": _si, "shnum": _shnum, "offset": _uint, "data": _bytes},
    "storage.close": {"si": _si, "shnum": _shnum},
    "storage.put": {"si": _si, "shnum": _shnum, "data": _bytes, "lease": _opt_uint},
    "storage.abort": {"si": _si, "shnum": _shnum},
    "storage.read": {"si": _si, "shnum": _shnum, "offset": _uint, "length": _uint},
    "storage.readv": {"si": _si, "shnum": _shnum, "ranges": _ranges},
    "storage.hashv": {"si": _si, "shnum": _shnum, "prefix": _prefix, "ranges": _ranges},
    "storage.list": {"si": _si},
    "storage.add_lease": {"si": _si},
    "storage.renew_lease": {"si": _si},
    "storage.cancel_lease": {"si": _si},
    "storage.stat": {},
    "storage.slot_read": {"si": _si},
    "storage.slot_write": {"si": _si, "record": _record, "lease": _opt_uint},
}
OPTIONAL = {
    "storage.allocate": {"size", "lease"},
    "storage.put": {"lease"},
    "storage.slot_write": {"lease"},
}


def parse_body(method: str, body: object) -> dict[str, Any]:
    """Check ``body`` against ``method``'s schema; returns the checked fields."""
    schema = SCHEMAS[method]
    if not isinstance(body, dict):
        raise BadRequest("body must be a map")
    unknown = [k for k in body if k not in schema]
    if unknown:
        raise BadRequest(f"unexpected field {str(unknown[0])[:40]!r}")
    out: dict[str, Any] = {}
    for name, check in schema.items():
        if name not in body:
            if name in OPTIONAL.get(method, ()):
                out[name] = None
                continue
            raise BadRequest(f"missing field {name!r}")
        out[name] = check(name, body[name])
    return out


# ----- the adapter -----------------------------------------------------------


class StorageRpcAdapter:
    """Registers ``storage.*`` handlers for one server on a registry (an Endpoint)."""

    def __init__(
        self,
        server: StorageServer,
        *,
        error_factory: ErrorFactory = StorageRpcError,
        offload: bool = True,
    ) -> None:
        self.server = server
        self._error_factory = error_factory
        self._offload = offload
        # hashing is cheap to ask for: a few at a time, so callers cannot take every
        # worker thread the server's reads and writes need
        self._hashing = asyncio.Semaphore(HASH_CONCURRENCY)

    def register(self, registry: Registry) -> None:
        for method in SCHEMAS:
            registry.register(method, self._make_handler(method))

    def peer_disconnected(self, peer_id: NodeId) -> int:
        """Abort the uploads of a peer whose connection closed; returns how many."""
        return self.server.abort_uploads_of(peer_id)

    def _make_handler(self, method: str) -> Handler:
        op = getattr(self, "_op_" + method.removeprefix("storage."))

        async def handler(ctx: CallContextLike, body: object) -> object:
            try:
                fields = parse_body(method, body)
                peer = ctx.peer_id
                if method == "storage.hashv":
                    async with self._hashing:
                        return await asyncio.to_thread(op, peer, fields)
                if self._offload:
                    return await asyncio.to_thread(op, peer, fields)
                return op(peer, fields)
            except StorageError as e:
                raise self._error_factory(e.wire_code, e.message) from None

        return handler

    # Each _op_ runs in a worker thread: (caller, checked fields) -> result map.

    def _op_allocate(self, peer: NodeId, f: dict[str, Any]) -> object:
        a = self.server.allocate(f["si"], f["shnum"], peer, f["size"], f["lease"])
        return {"size": a.size, "limit": a.limit}

    def _op_write(self, peer: NodeId, f: dict[str, Any]) -> object:
        self.server.write(f["si"], f["shnum"], peer, f["offset"], f["data"])
        return {}

    def _op_close(self, peer: NodeId, f: dict[str, Any]) -> object:
        c = self.server.close_share(f["si"], f["shnum"], peer)
        return {"size": c.size, "lease_expires": c.lease_expires}

    def _op_put(self, peer: NodeId, f: dict[str, Any]) -> object:
        c = put_whole(self.server, f["si"], f["shnum"], peer, f["data"], f["lease"])
        return {"size": c.size, "lease_expires": c.lease_expires}

    def _op_abort(self, peer: NodeId, f: dict[str, Any]) -> object:
        self.server.abort(f["si"], f["shnum"], peer)
        return {}

    def _op_read(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"data": self.server.read(f["si"], f["shnum"], f["offset"], f["length"])}

    def _op_readv(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"data": self.server.readv(f["si"], f["shnum"], f["ranges"])}

    def _op_hashv(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"hashes": self.server.hashv(f["si"], f["shnum"], f["prefix"], f["ranges"])}

    def _op_list(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"shares": self.server.list_shares(f["si"])}

    def _op_add_lease(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"expires": self.server.add_lease(f["si"], peer)}

    def _op_renew_lease(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"expires": self.server.renew_lease(f["si"], peer)}

    def _op_cancel_lease(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"removed": self.server.cancel_lease(f["si"], peer)}

    def _op_slot_read(self, peer: NodeId, f: dict[str, Any]) -> object:
        return {"record": self.server.slot_read(f["si"])}

    def _op_slot_write(self, peer: NodeId, f: dict[str, Any]) -> object:
        stored, record = self.server.slot_write(f["si"], f["record"], peer, f["lease"])
        return {"stored": stored, "record": record}

    def _op_stat(self, peer: NodeId, f: dict[str, Any]) -> object:
        s = self.server.stat()
        return {
            "used": s.used,
            "reserved": s.reserved,
            "max_bytes": s.max_bytes,
            "reserved_space": s.reserved_space,
            "disk_free": s.disk_free,
            "available": s.available,
            "shares": s.shares,
            "uploads": s.uploads,
            "max_share_size": s.max_share_size,
            "max_write": s.max_write,
            "max_read": s.max_read,
            "lease_duration": s.lease_duration,
        }


def register_storage_rpc(
    registry: Registry,
    server: StorageServer,
    *,
    error_factory: ErrorFactory = StorageRpcError,
    offload: bool = True,
) -> StorageRpcAdapter:
    """Build the adapter for ``server`` and register its handlers on ``registry``."""
    adapter = StorageRpcAdapter(server, error_factory=error_factory, offload=offload)
    adapter.register(registry)
    return adapter
