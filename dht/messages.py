"""DHT wire messages: method names and the schema of every request and response body.

Bodies are CBOR-encodable dicts carried by the transport's RPC. Every decoder here
checks the exact key set, every type and every size before anything is used, and
raises :class:`dht.errors.MessageError` (requests) which handlers turn into a
``bad-request`` error reply, or which the caller turns into ``BadResponse``.
Signature and expiry checks on records need a clock and live in ``dht.records``.

Methods (see docs/dht.md for the exact table):

- ``dht.ping``      ``{}`` -> ``{}``
- ``dht.find_node`` ``{"target": id}`` -> ``{"nodes": [contact, ...]}``
- ``dht.get``       ``{"key": id}`` -> ``{"nodes": [...]}`` plus ``"record"`` if held
- ``dht.put``       ``{"record": record}`` -> ``{"stored": bool}``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dht.contact import Contact
from dht.errors import MessageError, RecordError
from dht.records import Record
from quic_transport.identity import ID_BYTES, NodeId

PING = "dht.ping"
FIND_NODE = "dht.find_node"
GET = "dht.get"
PUT = "dht.put"
METHODS = (PING, FIND_NODE, GET, PUT)

# Responses never list more contacts than this, whatever k the peer runs with.
MAX_NODES = 20


def _expect_map(body: Any, keys: set[str], what: str, optional: set[str] | None = None) -> None:
    if not isinstance(body, dict):
        raise MessageError(f"{what}: body must be a map")
    got = set(body)
    opt = optional or set()
    if not keys <= got or not got <= keys | opt:
        raise MessageError(f"{what}: expected keys {sorted(keys)} (optional {sorted(opt)})")


def _id(value: Any, what: str) -> NodeId:
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise MessageError(f"{what} must be {ID_BYTES} bytes")
    return NodeId(value)


def _nodes(value: Any, max_nodes: int) -> tuple[Contact, ...]:
    if not isinstance(value, list):
        raise MessageError("nodes must be an array")
    if len(value) > max_nodes:
        raise MessageError(f"{len(value)} nodes in a response, limit {max_nodes}")
    seen: set[NodeId] = set()
    out: list[Contact] = []
    for item in value:
        c = Contact.from_wire(item)
        if c.node_id not in seen:
            seen.add(c.node_id)
            out.append(c)
    return tuple(out)


def _record(value: Any) -> Record:
    try:
        return Record.from_wire(value)
    except RecordError as e:
        raise MessageError(f"record: {e}") from None


@dataclass(frozen=True, slots=True)
class PingRequest:
    def to_body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_body(cls, body: Any) -> PingRequest:
        _expect_map(body, set(), "ping")
        return cls()


@dataclass(frozen=True, slots=True)
class PingResponse:
    def to_body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_body(cls, body: Any) -> PingResponse:
        _expect_map(body, set(), "ping response")
        return cls()


@dataclass(frozen=True, slots=True)
class FindNodeRequest:
    target: NodeId

    def to_body(self) -> dict[str, Any]:
        return {"target": self.target.raw}

    @classmethod
    def from_body(cls, body: Any) -> FindNodeRequest:
        _expect_map(body, {"target"}, "find_node")
        return cls(_id(body["target"], "target"))


@dataclass(frozen=True, slots=True)
class NodesResponse:
    nodes: tuple[Contact, ...]

    def to_body(self) -> dict[str, Any]:
        return {"nodes": [c.to_wire() for c in self.nodes]}

    @classmethod
    def from_body(cls, body: Any, *, max_nodes: int = MAX_NODES) -> NodesResponse:
        _expect_map(body, {"nodes"}, "find_node response")
        return cls(_nodes(body["nodes"], max_nodes))


@dataclass(frozen=True, slots=True)
class GetRequest:
    key: NodeId

    def to_body(self) -> dict[str, Any]:
        return {"key": self.key.raw}

    @classmethod
    def from_body(cls, body: Any) -> GetRequest:
        _expect_map(body, {"key"}, "get")
        return cls(_id(body["key"], "key"))


@dataclass(frozen=True, slots=True)
class GetResponse:
    nodes: tuple[Contact, ...]
    record: Record | None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"nodes": [c.to_wire() for c in self.nodes]}
        if self.record is not None:
            body["record"] = self.record.to_wire()
        return body

    @classmethod
    def from_body(cls, body: Any, *, max_nodes: int = MAX_NODES) -> GetResponse:
        _expect_map(body, {"nodes"}, "get response", optional={"record"})
        record = _record(body["record"]) if "record" in body else None
        return cls(_nodes(body["nodes"], max_nodes), record)


@dataclass(frozen=True, slots=True)
class PutRequest:
    record: Record

    def to_body(self) -> dict[str, Any]:
        return {"record": self.record.to_wire()}

    @classmethod
    def from_body(cls, body: Any) -> PutRequest:
        _expect_map(body, {"record"}, "put")
        return cls(_record(body["record"]))


@dataclass(frozen=True, slots=True)
class PutResponse:
    stored: bool  # False: an identical record was already held

    def to_body(self) -> dict[str, Any]:
        return {"stored": self.stored}

    @classmethod
    def from_body(cls, body: Any) -> PutResponse:
        _expect_map(body, {"stored"}, "put response")
        if not isinstance(body["stored"], bool):
            raise MessageError("stored must be a boolean")
        return cls(body["stored"])
