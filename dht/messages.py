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
- ``dht.announce``  ``{"ann": announcement}`` -> ``{"stored": bool}``

Every request may carry ``"client": true``: the caller runs in DHT client mode and
must not be added to the receiver's routing table. ``find_node`` and ``get`` requests
may carry ``"want_anns": true``; their responses then may carry ``"anns": [...]``,
node announcements (``dht.announce``) whose announcers are closest to the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dht.announce import Announcement
from dht.contact import Contact
from dht.errors import MessageError, RecordError
from dht.records import Record
from quic_transport.identity import ID_BYTES, NodeId

PING = "dht.ping"
FIND_NODE = "dht.find_node"
GET = "dht.get"
PUT = "dht.put"
ANNOUNCE = "dht.announce"
METHODS = (PING, FIND_NODE, GET, PUT, ANNOUNCE)

# Responses never list more contacts than this, whatever k the peer runs with.
MAX_NODES = 20
# Responses never carry more announcements than this.
MAX_ANNS = 20


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


def _flag(body: dict[str, Any], key: str) -> bool:
    """An optional boolean flag; absent means False."""
    if key not in body:
        return False
    v = body[key]
    if not isinstance(v, bool):
        raise MessageError(f"{key} must be a boolean")
    return v


def _with_flags(body: dict[str, Any], **flags: bool) -> dict[str, Any]:
    for k, v in flags.items():
        if v:
            body[k] = True
    return body


def _anns(value: Any, max_anns: int) -> tuple[Announcement, ...]:
    if not isinstance(value, list):
        raise MessageError("anns must be an array")
    if len(value) > max_anns:
        raise MessageError(f"{len(value)} announcements in a response, limit {max_anns}")
    return tuple(_ann(item) for item in value)


def _ann(value: Any) -> Announcement:
    try:
        return Announcement.from_wire(value)
    except RecordError as e:
        raise MessageError(f"announcement: {e}") from None


def _record(value: Any) -> Record:
    try:
        return Record.from_wire(value)
    except RecordError as e:
        raise MessageError(f"record: {e}") from None


@dataclass(frozen=True, slots=True)
class PingRequest:
    client: bool = False

    def to_body(self) -> dict[str, Any]:
        return _with_flags({}, client=self.client)

    @classmethod
    def from_body(cls, body: Any) -> PingRequest:
        _expect_map(body, set(), "ping", optional={"client"})
        return cls(_flag(body, "client"))


@dataclass(frozen=True, slots=True)
class PingResponse:
    def to_body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_body(cls, body: Any) -> PingResponse:
        _expect_map(body, set(), "ping response")
        return cls()


_LOOKUP_FLAGS = {"client", "want_anns"}


@dataclass(frozen=True, slots=True)
class FindNodeRequest:
    target: NodeId
    client: bool = False
    want_anns: bool = False

    def to_body(self) -> dict[str, Any]:
        body = {"target": self.target.raw}
        return _with_flags(body, client=self.client, want_anns=self.want_anns)

    @classmethod
    def from_body(cls, body: Any) -> FindNodeRequest:
        _expect_map(body, {"target"}, "find_node", optional=_LOOKUP_FLAGS)
        return cls(_id(body["target"], "target"), _flag(body, "client"), _flag(body, "want_anns"))


def _anns_body(body: dict[str, Any], anns: tuple[Announcement, ...]) -> dict[str, Any]:
    if anns:
        body["anns"] = [a.to_wire() for a in anns]
    return body


@dataclass(frozen=True, slots=True)
class NodesResponse:
    nodes: tuple[Contact, ...]
    anns: tuple[Announcement, ...] = ()

    def to_body(self) -> dict[str, Any]:
        return _anns_body({"nodes": [c.to_wire() for c in self.nodes]}, self.anns)

    @classmethod
    def from_body(
        cls, body: Any, *, max_nodes: int = MAX_NODES, max_anns: int = MAX_ANNS
    ) -> NodesResponse:
        _expect_map(body, {"nodes"}, "find_node response", optional={"anns"})
        anns = _anns(body["anns"], max_anns) if "anns" in body else ()
        return cls(_nodes(body["nodes"], max_nodes), anns)


@dataclass(frozen=True, slots=True)
class GetRequest:
    key: NodeId
    client: bool = False
    want_anns: bool = False

    def to_body(self) -> dict[str, Any]:
        body = {"key": self.key.raw}
        return _with_flags(body, client=self.client, want_anns=self.want_anns)

    @classmethod
    def from_body(cls, body: Any) -> GetRequest:
        _expect_map(body, {"key"}, "get", optional=_LOOKUP_FLAGS)
        return cls(_id(body["key"], "key"), _flag(body, "client"), _flag(body, "want_anns"))


@dataclass(frozen=True, slots=True)
class GetResponse:
    nodes: tuple[Contact, ...]
    record: Record | None
    anns: tuple[Announcement, ...] = ()

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"nodes": [c.to_wire() for c in self.nodes]}
        if self.record is not None:
            body["record"] = self.record.to_wire()
        return _anns_body(body, self.anns)

    @classmethod
    def from_body(
        cls, body: Any, *, max_nodes: int = MAX_NODES, max_anns: int = MAX_ANNS
    ) -> GetResponse:
        _expect_map(body, {"nodes"}, "get response", optional={"record", "anns"})
        record = _record(body["record"]) if "record" in body else None
        anns = _anns(body["anns"], max_anns) if "anns" in body else ()
        return cls(_nodes(body["nodes"], max_nodes), record, anns)


@dataclass(frozen=True, slots=True)
class PutRequest:
    record: Record
    client: bool = False

    def to_body(self) -> dict[str, Any]:
        return _with_flags({"record": self.record.to_wire()}, client=self.client)

    @classmethod
    def from_body(cls, body: Any) -> PutRequest:
        _expect_map(body, {"record"}, "put", optional={"client"})
        return cls(_record(body["record"]), _flag(body, "client"))


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    ann: Announcement
    client: bool = False

    def to_body(self) -> dict[str, Any]:
        return _with_flags({"ann": self.ann.to_wire()}, client=self.client)

    @classmethod
    def from_body(cls, body: Any) -> AnnounceRequest:
        _expect_map(body, {"ann"}, "announce", optional={"client"})
        return cls(_ann(body["ann"]), _flag(body, "client"))


@dataclass(frozen=True, slots=True)
class PutResponse:
    """Reply to ``dht.put`` and ``dht.announce``."""

    stored: bool  # False: an identical record/announcement was already held

    def to_body(self) -> dict[str, Any]:
        return {"stored": self.stored}

    @classmethod
    def from_body(cls, body: Any) -> PutResponse:
        _expect_map(body, {"stored"}, "put response")
        if not isinstance(body["stored"], bool):
            raise MessageError("stored must be a boolean")
        return cls(body["stored"])
