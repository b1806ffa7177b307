"""Node announcements: format, signing, validation and the bounded store (sans-I/O).

A node announcement is a small signed statement a node makes about itself (its peer
record: how to reach it), stored on the k DHT servers closest to the announcer's own
node ID and returned by them in lookup responses. It is how a node that is not in
anyone's routing table (a DHT client behind NAT) can still be found near an ID.

Wire form: the CBOR map ``{"pk", "seq", "exp", "value", "sig"}`` (exactly these keys);
the announcer's node ID is ``NodeId.from_public_key(pk)``, so a valid signature also
proves the ID. An announcement with an empty ``value`` is a *withdrawal*: it replaces
the announcer's earlier ones (higher ``seq``) and consumers treat the node as not
announced. Byte format and limits: docs/dht.md, "Node announcements".

Invariants:
- :func:`validate_announcement` checks shapes, expiry bounds and the signature;
  every store and every lookup runs it before keeping or using an announcement.
- :class:`AnnouncementStore` holds at most one announcement per announcer (the one
  with the highest ``seq``), at most ``max_count`` in total, never an expired one; when
  full it keeps the announcers closest to its own ID (those it is responsible for).
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass
from typing import Any

from dht.errors import RecordError
from dht.records import Signer
from quic_transport.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeId, verify_signature

MAX_ANN_VALUE = 1024  # bytes of opaque value (a peer record)
MAX_ANN_SEQ = 2**63 - 1
MAX_ANN_TTL = 24 * 3600  # an announcement may claim at most this lifetime from "now"
ANN_CLOCK_SLACK = 600  # seconds of clock skew tolerated on the MAX_ANN_TTL check
ANN_FIELDS = frozenset({"pk", "seq", "exp", "value", "sig"})
_ANN_DOMAIN = b"p2pstore dht announcement v1\x00"


def announcement_signed_bytes(public_key: bytes, seq: int, expires: int, value: bytes) -> bytes:
    """The exact bytes an announcement's signature covers (docs/dht.md)."""
    return b"".join((_ANN_DOMAIN, public_key, struct.pack(">QQI", seq, expires, len(value)), value))


def _check_shape(public_key: Any, seq: Any, expires: Any, value: Any, sig: Any) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise RecordError("bad-key", f"public key must be {PUBLIC_KEY_BYTES} bytes")
    for label, n in (("seq", seq), ("expires", expires)):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_ANN_SEQ:
            raise RecordError("bad-" + label, f"{label} must be an integer in 0..2^63-1")
    if not isinstance(value, bytes):
        raise RecordError("bad-value", "value must be bytes")
    if len(value) > MAX_ANN_VALUE:
        raise RecordError("too-large", f"value is {len(value)} bytes, limit {MAX_ANN_VALUE}")
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise RecordError("bad-signature", f"signature must be {SIGNATURE_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Announcement:
    """A signed node announcement. Construction checks shapes; validation checks trust."""

    public_key: bytes
    seq: int
    expires: int  # Unix seconds after which it is dead
    value: bytes  # opaque to the DHT; empty = withdrawn
    signature: bytes

    def __post_init__(self) -> None:
        _check_shape(self.public_key, self.seq, self.expires, self.value, self.signature)

    @property
    def node_id(self) -> NodeId:
        return NodeId.from_public_key(self.public_key)

    @property
    def withdrawn(self) -> bool:
        return not self.value

    def to_wire(self) -> dict[str, Any]:
        return {
            "pk": self.public_key,
            "seq": self.seq,
            "exp": self.expires,
            "value": self.value,
            "sig": self.signature,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Announcement:
        if not isinstance(obj, dict) or set(obj) != ANN_FIELDS:
            raise RecordError("malformed", "announcement must be a map with exactly " + _FIELDS)
        return cls(obj["pk"], obj["seq"], obj["exp"], obj["value"], obj["sig"])

    def __repr__(self) -> str:
        return (
            f"Announcement(node={self.node_id.short()}, seq={self.seq}, "
            f"expires={self.expires}, value={len(self.value)} bytes)"
        )


_FIELDS = ", ".join(sorted(ANN_FIELDS))


def sign_announcement(signer: Signer, seq: int, value: bytes, *, expires: int) -> Announcement:
    pk = bytes(signer.public_key)
    _check_shape(pk, seq, expires, value, bytes(SIGNATURE_BYTES))
    sig = signer.sign(announcement_signed_bytes(pk, seq, expires, value))
    return Announcement(pk, seq, expires, value, sig)


def validate_announcement(ann: Announcement, *, now: float) -> None:
    """Raise :class:`RecordError` unless ``ann`` is trustworthy at wall time ``now``."""
    if ann.expires <= now:
        raise RecordError("expired", f"announcement expired at {ann.expires}")
    if ann.expires > now + MAX_ANN_TTL + ANN_CLOCK_SLACK:
        raise RecordError("ttl-too-long", f"announcement claims a lifetime over {MAX_ANN_TTL} s")
    msg = announcement_signed_bytes(ann.public_key, ann.seq, ann.expires, ann.value)
    if not verify_signature(ann.public_key, msg, ann.signature):
        raise RecordError("bad-signature", "announcement signature does not verify")


def ann_order(ann: Announcement) -> tuple[int, int, bytes]:
    """Sort key among valid announcements of one node: the maximum wins."""
    return (ann.seq, ann.expires, ann.signature)


class AnnouncementStore:
    """Announcements this server holds for others (see the module invariants)."""

    def __init__(self, self_id: NodeId, *, max_count: int = 5000) -> None:
        if max_count < 1:
            raise ValueError("max_count must be positive")
        self.self_id = self_id
        self.max_count = max_count
        self._anns: dict[NodeId, Announcement] = {}

    def put(self, ann: Announcement, now: float) -> bool:
        """Validate and store; True if stored, False if this exact one was held.

        Raises ``RecordError``: validation failures, ``stale`` (seq not above the held
        one), ``full`` (store full of announcers closer to this node).
        """
        validate_announcement(ann, now=now)
        nid = ann.node_id
        old = self.get(nid, now)
        if old is not None:
            if old == ann:
                return False
            if ann.seq <= old.seq:
                raise RecordError("stale", f"seq {ann.seq} does not exceed the held {old.seq}")
        elif len(self._anns) >= self.max_count:
            self.expire(now)
            if len(self._anns) >= self.max_count:
                # Keep the announcers this node is responsible for: evict the farthest
                # from our own ID if the newcomer is closer, else refuse it.
                far = max(self._anns, key=self.self_id.distance)
                if self.self_id.distance(nid) >= self.self_id.distance(far):
                    raise RecordError("full", "announcement store is full")
                del self._anns[far]
        self._anns[nid] = ann
        return True

    def get(self, node_id: NodeId, now: float) -> Announcement | None:
        ann = self._anns.get(node_id)
        if ann is None:
            return None
        if ann.expires <= now:
            del self._anns[node_id]
            return None
        return ann

    def closest(self, target: NodeId, count: int, now: float) -> list[Announcement]:
        """Up to ``count`` live announcements whose announcers are closest to ``target``
        (withdrawals included, so newer withdrawals reach readers)."""
        t = int(target)
        live = [(nid, a) for nid, a in self._anns.items() if a.expires > now]
        best = heapq.nsmallest(count, live, key=lambda item: int(item[0]) ^ t)
        return [a for _, a in best]

    def expire(self, now: float) -> int:
        dead = [nid for nid, a in self._anns.items() if a.expires <= now]
        for nid in dead:
            del self._anns[nid]
        return len(dead)

    def __len__(self) -> int:
        return len(self._anns)

    def node_ids(self) -> list[NodeId]:
        return list(self._anns)


class Announcer:
    """This node's own announcement (sans-I/O): what to send, and when to re-send.

    ``seq`` values are ``max(previous + 1, wall-clock milliseconds)``, so a node that
    restarts (and forgot its last seq) still supersedes its earlier announcements.
    """

    def __init__(self, signer: Signer, *, ttl: int, interval: float) -> None:
        if not 0 < ttl <= MAX_ANN_TTL:
            raise ValueError(f"announcement ttl must be in 1..{MAX_ANN_TTL} s")
        self.signer = signer
        self.node_id = NodeId.from_public_key(bytes(signer.public_key))
        self.ttl = ttl
        self.interval = interval
        self.current: Announcement | None = None  # None: nothing announced (or withdrawn)
        self.due = 0.0  # monotonic time of the next re-announce
        self._seq = -1
        self._life = ttl

    def _next_seq(self, now_wall: float) -> int:
        self._seq = max(self._seq + 1, int(now_wall * 1000))
        return self._seq

    def make(self, value: bytes, ttl: int | None, now_wall: float) -> Announcement:
        """Sign a new announcement of ``value`` (non-empty) and make it current."""
        if not isinstance(value, bytes) or not value:
            raise RecordError("bad-value", "an announcement value must be non-empty bytes")
        life = self.ttl if ttl is None else ttl
        if not 0 < life <= MAX_ANN_TTL:
            raise RecordError("bad-expires", f"ttl must be in 1..{MAX_ANN_TTL} s")
        ann = sign_announcement(
            self.signer, self._next_seq(now_wall), value, expires=int(now_wall) + life
        )
        self.current = ann
        self._life = life
        return ann

    def refreshed(self, now_wall: float) -> Announcement | None:
        """The announcement to re-send now: the current one, re-signed with a fresh
        lifetime once less than half of it remains; None when nothing is announced."""
        cur = self.current
        if cur is None:
            return None
        if cur.expires - now_wall < self._life / 2:
            cur = self.make(cur.value, self._life, now_wall)
        return cur

    def withdrawal(self, now_wall: float) -> Announcement | None:
        """A withdrawal superseding the current announcement (None if none), which
        stops being current. It lives as long as the announcement it replaces would
        have (at least a minute), so stale copies cannot resurface meanwhile."""
        cur = self.current
        if cur is None:
            return None
        self.current = None
        expires = max(cur.expires, int(now_wall) + 60)
        return sign_announcement(self.signer, self._next_seq(now_wall), b"", expires=expires)
