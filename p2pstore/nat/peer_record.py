"""The signed peer record: how to reach a node (docs/nat.md, "Peer record").

Sans-I/O. A node publishes its record as the value of its DHT node announcement so
that others can find it even when it is not in any routing table (DHT client mode).
Wire form (canonical CBOR)::

    record = {"body": bytes, "sig": bytes(64)}
    body   = CBOR {"v": 1, "pk": bytes(32), "seq": uint, "reach": "public"|"private",
                   "nat": "none"|"cone"|"symmetric"|"unknown",
                   "storage": bool, "direct": [[host, port], ...],
                   "relays": [[relay_id(20), host, relay_port, relayed_port], ...]}
    sig    = Ed25519(node key, "p2ps:peer-record:v1" || body)

Invariants:
- :func:`decode_record` returns a :class:`PeerRecord` only if the whole blob is at
  most :data:`MAX_RECORD_BYTES`, both maps have exactly the listed keys with the
  listed types, every host is an IP literal or a DNS name, every port is 1..65535,
  lists hold at most :data:`MAX_DIRECT` / :data:`MAX_RELAYS` entries, a relayed
  port is 0 (the peer is only a rendezvous for hole punching) or 1..65535, the body is
  canonical CBOR (re-encoding gives the same bytes), and the signature verifies
  under ``pk``; anything else is :class:`~p2pstore.nat.errors.NatRemoteError`.
- ``record.node_id`` is derived from ``pk``, never taken from the wire.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final

import cbor2

from p2pstore.nat.errors import NatRemoteError
from quic_transport.identity import (
    ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    NodeId,
    NodeKey,
    verify_signature,
)

VERSION: Final = 1
MAX_RECORD_BYTES: Final = 1024
MAX_DIRECT: Final = 4
MAX_RELAYS: Final = 4
MAX_HOST_CHARS: Final = 253
REACH_VALUES: Final = ("public", "private")
NAT_VALUES: Final = ("none", "cone", "symmetric", "unknown")
_SIG_PREFIX: Final = b"p2ps:peer-record:v1"
_BODY_KEYS: Final = frozenset({"v", "pk", "seq", "reach", "nat", "storage", "direct", "relays"})
_OUTER_KEYS: Final = frozenset({"body", "sig"})
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def check_host(host: Any, field: str = "host") -> str:
    """``host`` if it is an IP literal or a syntactically valid DNS name."""
    if not isinstance(host, str) or not 1 <= len(host) <= MAX_HOST_CHARS:
        raise NatRemoteError(f"{field}: expected a host name or IP address", field=field)
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if host.lower().rstrip(".").endswith(".invalid"):  # RFC 6761: e.g. relay path keys
        raise NatRemoteError(f"{field}: {host[:64]!r} is a reserved .invalid name", field=field)
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise NatRemoteError(f"{field}: {host[:64]!r} is not a host name or IP", field=field)
    return host


def check_ip(host: Any, field: str = "host") -> str:
    """``host`` if it is an IP literal: a peer record never makes its reader resolve
    a name (the publisher resolves its own; docs/nat.md, "Peer record")."""
    check_host(host, field)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise NatRemoteError(f"{field}: expected an IP address, not a name", field=field) from None
    return str(host)


def check_port(port: Any, field: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise NatRemoteError(f"{field}: expected a port 1..65535", field=field)
    return port


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """A reachable peer the record's node keeps a connection to: ``relay_id`` at
    ``host:relay_port`` (its QUIC endpoint: the rendezvous for hole punching) and,
    when ``relayed_port`` is not 0, a relayed UDP port reserved there for the node
    (dial ``PeerAddress(node_id, host, relayed_port)``)."""

    relay_id: NodeId
    host: str
    relay_port: int
    relayed_port: int = 0

    def __post_init__(self) -> None:
        check_ip(self.host, "relays.host")
        check_port(self.relay_port, "relays.relay_port")
        if self.relayed_port != 0:
            check_port(self.relayed_port, "relays.relayed_port")

    @property
    def rendezvous(self) -> tuple[NodeId, str, int]:
        return self.relay_id, self.host, self.relay_port

    @property
    def relayed(self) -> tuple[str, int] | None:
        return None if self.relayed_port == 0 else (self.host, self.relayed_port)


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """What a node says about how to reach it. Build with :meth:`create` (signs);
    read with :func:`decode_record` (verifies)."""

    public_key: bytes
    seq: int
    reach: str
    nat: str
    storage: bool
    direct: tuple[tuple[str, int], ...]
    relays: tuple[RelayAddress, ...]
    body: bytes
    signature: bytes

    @property
    def node_id(self) -> NodeId:
        return NodeId.from_public_key(self.public_key)

    @property
    def reachable(self) -> bool:
        return self.reach == "public"

    @classmethod
    def create(
        cls,
        key: NodeKey,
        *,
        seq: int,
        reach: str,
        storage: bool,
        direct: tuple[tuple[str, int], ...] = (),
        relays: tuple[RelayAddress, ...] = (),
        nat: str = "unknown",
    ) -> PeerRecord:
        doc = {
            "v": VERSION,
            "pk": key.public_key,
            "seq": seq,
            "reach": reach,
            "nat": nat,
            "storage": storage,
            "direct": [[h, p] for h, p in direct],
            "relays": [[r.relay_id.raw, r.host, r.relay_port, r.relayed_port] for r in relays],
        }
        _check_body(doc)  # a node never signs what others would refuse
        body = cbor2.dumps(doc, canonical=True)
        sig = key.sign(_SIG_PREFIX + body)
        rec = cls(key.public_key, seq, reach, nat, storage, direct, relays, body, sig)
        if len(rec.encode()) > MAX_RECORD_BYTES:
            raise NatRemoteError("peer record too large", field="record")
        return rec

    def encode(self) -> bytes:
        return cbor2.dumps({"body": self.body, "sig": self.signature}, canonical=True)

    def to_json(self) -> dict[str, Any]:
        """For status pages (no secrets in a record)."""
        return {
            "node_id": self.node_id.b32,
            "seq": self.seq,
            "reachability": self.reach,
            "nat_type": self.nat,
            "storage": self.storage,
            "direct": [f"{h}:{p}" for h, p in self.direct],
            "relays": [
                {
                    "relay": r.relay_id.b32,
                    "address": f"{r.host}:{r.relay_port}",
                    "relayed": None if r.relayed is None else f"{r.host}:{r.relayed_port}",
                }
                for r in self.relays
            ],
        }

    def __repr__(self) -> str:
        return (
            f"PeerRecord({self.node_id.short()}, seq={self.seq}, {self.reach}, "
            f"direct={list(self.direct)}, relays={len(self.relays)})"
        )


def _loads(data: bytes, field: str) -> Any:
    try:
        return cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on garbage
        raise NatRemoteError(f"{field}: not CBOR ({type(e).__name__})", field=field) from None


def _check_body(doc: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(doc, dict) or set(doc) != _BODY_KEYS:
        raise NatRemoteError("record body: wrong keys", field="body")
    if doc["v"] != VERSION or isinstance(doc["v"], bool):
        raise NatRemoteError(f"record version {doc['v']!r} is not {VERSION}", field="v")
    pk = doc["pk"]
    if not isinstance(pk, bytes) or len(pk) != PUBLIC_KEY_BYTES:
        raise NatRemoteError("pk: expected 32 bytes", field="pk")
    seq = doc["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise NatRemoteError("seq: expected an integer 0..2^63-1", field="seq")
    if doc["reach"] not in REACH_VALUES:
        raise NatRemoteError("reach: expected 'public' or 'private'", field="reach")
    if doc["nat"] not in NAT_VALUES:
        raise NatRemoteError("nat: expected none, cone, symmetric or unknown", field="nat")
    if not isinstance(doc["storage"], bool):
        raise NatRemoteError("storage: expected true or false", field="storage")
    direct = doc["direct"]
    if not isinstance(direct, list) or len(direct) > MAX_DIRECT:
        raise NatRemoteError(f"direct: expected at most {MAX_DIRECT} addresses", field="direct")
    out = []
    for item in direct:
        if not isinstance(item, list) or len(item) != 2:
            raise NatRemoteError("direct: expected [host, port] pairs", field="direct")
        out.append((check_ip(item[0], "direct.host"), check_port(item[1], "direct.port")))
    relays = doc["relays"]
    if not isinstance(relays, list) or len(relays) > MAX_RELAYS:
        raise NatRemoteError(f"relays: expected at most {MAX_RELAYS} entries", field="relays")
    for item in relays:
        if not isinstance(item, list) or len(item) != 4:
            raise NatRemoteError(
                "relays: expected [relay_id, host, relay_port, relayed_port]", field="relays"
            )
        if not isinstance(item[0], bytes) or len(item[0]) != ID_BYTES:
            raise NatRemoteError("relays: relay_id must be 20 bytes", field="relays.id")
        check_ip(item[1], "relays.host")
        check_port(item[2], "relays.relay_port")
        if isinstance(item[3], bool) or not isinstance(item[3], int):
            raise NatRemoteError("relays: relayed_port must be an integer", field="relays")
        if item[3] != 0:
            check_port(item[3], "relays.relayed_port")
    return tuple(out)


def decode_record(data: bytes, *, expected: NodeId | None = None) -> PeerRecord:
    """Parse and verify a peer record (see the module invariants). ``expected``: the
    node the record must belong to (e.g. the announcement's node ID)."""
    if not isinstance(data, bytes) or len(data) > MAX_RECORD_BYTES:
        raise NatRemoteError("peer record: not bytes or too large", field="record")
    outer = _loads(data, "record")
    if not isinstance(outer, dict) or set(outer) != _OUTER_KEYS:
        raise NatRemoteError("peer record: expected {body, sig}", field="record")
    body, sig = outer["body"], outer["sig"]
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise NatRemoteError("peer record: body/sig have wrong types", field="record")
    doc = _loads(body, "body")
    direct = _check_body(doc)
    if cbor2.dumps(doc, canonical=True) != body:
        raise NatRemoteError("record body is not canonical CBOR", field="body")
    if not verify_signature(doc["pk"], _SIG_PREFIX + body, sig):
        raise NatRemoteError("peer record: bad signature", field="sig")
    relays = tuple(RelayAddress(NodeId(r[0]), r[1], r[2], r[3]) for r in doc["relays"])
    rec = PeerRecord(
        doc["pk"], doc["seq"], doc["reach"], doc["nat"], doc["storage"], direct, relays, body, sig
    )
    if expected is not None and rec.node_id != expected:
        raise NatRemoteError("peer record belongs to another node", field="pk")
    return rec
