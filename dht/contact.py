"""Contacts: how the DHT names and dials a peer.

A :class:`Contact` has the same three fields as ``quic_transport.PeerAddress``
(``node_id``, ``host``, ``port``), so a transport adapter converts one into the other
field by field. Invariants (checked on construction, so a Contact decoded from the
network is always well formed): ``host`` is a non-empty printable ASCII string of at
most 255 characters with no whitespace; ``port`` is in 1..65535.

Wire form (inside CBOR bodies): a 3-element array ``[node_id (20 bytes), host (text),
port (uint)]``. A contact from the wire must name an IP literal: a peer never makes
this node resolve a name (names, from a bootstrap list, are resolved locally).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dht.errors import MessageError
from quic_transport import addrclass
from quic_transport.identity import ID_BYTES, NodeId

MAX_HOST_LEN = 255


_HOST_RE = re.compile(r"[!-~]{1,255}")  # printable ASCII, no whitespace


@dataclass(frozen=True, slots=True)
class Contact:
    """A peer the DHT can dial: verified-or-claimed node ID plus its UDP address."""

    node_id: NodeId
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, NodeId):
            raise MessageError("contact node_id must be a NodeId")
        if not isinstance(self.host, str) or not _HOST_RE.fullmatch(self.host):
            raise MessageError("contact host must be 1-255 printable ASCII characters")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise MessageError("contact port must be an integer")
        if not 0 < self.port < 65536:
            raise MessageError(f"contact port {self.port} out of range 1..65535")

    def to_wire(self) -> list[Any]:
        return [self.node_id.raw, self.host, self.port]

    @classmethod
    def from_wire(cls, item: Any) -> Contact:
        if not isinstance(item, list) or len(item) != 3:
            raise MessageError("contact must be a 3-element array")
        raw, host, port = item
        if not isinstance(raw, bytes) or len(raw) != ID_BYTES:
            raise MessageError(f"contact node ID must be {ID_BYTES} bytes")
        if not isinstance(host, str) or not addrclass.is_ip(host):
            raise MessageError("contact host must be an IP address")
        return cls(NodeId(raw), host, port)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.node_id.b32, "host": self.host, "port": self.port}

    @classmethod
    def from_json(cls, item: Any) -> Contact:
        if not isinstance(item, dict) or set(item) != {"id", "host", "port"}:
            raise MessageError("contact must be an object with id, host, port")
        try:
            node_id = NodeId.from_b32(item["id"])
        except ValueError as e:
            raise MessageError(f"contact id: {e}") from None
        return cls(node_id, item["host"], item["port"])

    def __str__(self) -> str:
        return f"{self.node_id.short()}@{self.host}:{self.port}"
