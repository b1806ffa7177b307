"""Signed, sequence-numbered DHT records: format, key derivation, signing, validation.

A record is owned by an Ed25519 key pair. Its DHT key is derived from the public key
and a short ``name`` (a "salt", so one key can publish several records), in the same
160-bit space as node IDs:

    key = BLAKE2b(public_key || name, digest_size=20, person="p2ps:dht-key:v1")

Invariants enforced by :func:`validate` (and therefore by every store and every
lookup before a record is kept, served or returned):

- every field has its exact type and size (``MAX_NAME``, ``MAX_VALUE`` bytes);
- the signature verifies over :func:`signed_bytes` (domain-separated) with the
  record's own public key, and the key asked for equals the key derived above;
- the record has not expired and does not claim to live longer than ``MAX_TTL``.

Among valid records for one key the highest sequence number wins; ties are broken by
later expiry, then by the larger signature bytes, so every reader picks the same one
(:func:`record_order`). The byte format is documented in docs/dht.md.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from dht.errors import RecordError
from quic_transport.identity import (
    ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    NodeId,
    verify_signature,
)

MAX_NAME = 64
MAX_VALUE = 4096
MAX_SEQ = 2**63 - 1
MAX_TTL = 7 * 24 * 3600  # a record may claim at most this lifetime from "now"
CLOCK_SLACK = 600  # seconds of clock skew tolerated on the MAX_TTL check
RECORD_FIELDS = frozenset({"pk", "name", "seq", "exp", "value", "sig"})
# An encoded record is never larger than this (CBOR overhead is < 64 bytes).
MAX_RECORD_WIRE = PUBLIC_KEY_BYTES + MAX_NAME + MAX_VALUE + SIGNATURE_BYTES + 128

_KEY_PERSON = b"p2ps:dht-key:v1"
_SIG_DOMAIN = b"p2pstore dht record v1\x00"


class Signer(Protocol):
    """Anything that holds an Ed25519 key (``quic_transport.identity.NodeKey`` fits)."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def record_key(public_key: bytes, name: bytes) -> NodeId:
    """The DHT key of the record published by ``public_key`` under ``name``."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise RecordError("bad-key", f"public key must be {PUBLIC_KEY_BYTES} bytes")
    if not isinstance(name, bytes) or len(name) > MAX_NAME:
        raise RecordError("bad-name", f"name must be at most {MAX_NAME} bytes")
    h = hashlib.blake2b(public_key + name, digest_size=ID_BYTES, person=_KEY_PERSON)
    return NodeId(h.digest())


def signed_bytes(public_key: bytes, name: bytes, seq: int, expires: int, value: bytes) -> bytes:
    """The exact bytes the signature covers (see docs/dht.md, "Record format")."""
    return b"".join(
        (
            _SIG_DOMAIN,
            public_key,
            struct.pack(">B", len(name)),
            name,
            struct.pack(">QQI", seq, expires, len(value)),
            value,
        )
    )


@dataclass(frozen=True, slots=True)
class Record:
    """A signed record. Construction checks shapes only; :func:`validate` checks trust."""

    public_key: bytes
    name: bytes
    seq: int
    expires: int  # Unix seconds (wall clock) after which the record is dead
    value: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_shape(self.public_key, self.name, self.seq, self.expires, self.value)
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_BYTES:
            raise RecordError("bad-signature", f"signature must be {SIGNATURE_BYTES} bytes")

    @property
    def key(self) -> NodeId:
        return record_key(self.public_key, self.name)

    def to_wire(self) -> dict[str, Any]:
        return {
            "pk": self.public_key,
            "name": self.name,
            "seq": self.seq,
            "exp": self.expires,
            "value": self.value,
            "sig": self.signature,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Record:
        """Decode the CBOR map form; raises :class:`RecordError` on any schema violation."""
        if not isinstance(obj, dict) or set(obj) != RECORD_FIELDS:
            raise RecordError("malformed", "record must be a map with exactly " + _FIELDS_TEXT)
        return cls(obj["pk"], obj["name"], obj["seq"], obj["exp"], obj["value"], obj["sig"])

    def __repr__(self) -> str:
        return (
            f"Record(key={self.key.short()}, seq={self.seq}, expires={self.expires}, "
            f"value={len(self.value)} bytes)"
        )


_FIELDS_TEXT = ", ".join(sorted(RECORD_FIELDS))


def _check_shape(public_key: Any, name: Any, seq: Any, expires: Any, value: Any) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise RecordError("bad-key", f"public key must be {PUBLIC_KEY_BYTES} bytes")
    if not isinstance(name, bytes) or len(name) > MAX_NAME:
        raise RecordError("bad-name", f"name must be bytes of at most {MAX_NAME}")
    for label, n in (("seq", seq), ("expires", expires)):
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SEQ:
            raise RecordError("bad-" + label, f"{label} must be an integer in 0..2^63-1")
    if not isinstance(value, bytes):
        raise RecordError("bad-value", "value must be bytes")
    if len(value) > MAX_VALUE:
        raise RecordError("too-large", f"value is {len(value)} bytes, limit {MAX_VALUE}")


def sign_record(signer: Signer, name: bytes, seq: int, value: bytes, *, expires: int) -> Record:
    """Create a record signed by ``signer``; raises :class:`RecordError` if out of bounds."""
    pk = bytes(signer.public_key)
    _check_shape(pk, name, seq, expires, value)
    sig = signer.sign(signed_bytes(pk, name, seq, expires, value))
    return Record(pk, name, seq, expires, value, sig)


def validate(record: Record, *, now: float, key: NodeId | None = None) -> None:
    """Raise :class:`RecordError` unless ``record`` is trustworthy at wall time ``now``.

    ``key`` is the DHT key the record was asked for or stored under; it must match the
    key derived from the record's own public key and name.
    """
    if key is not None and record.key != key:
        raise RecordError("wrong-key", "record does not belong to the requested key")
    if record.expires <= now:
        raise RecordError("expired", f"record expired at {record.expires}")
    if record.expires > now + MAX_TTL + CLOCK_SLACK:
        raise RecordError("ttl-too-long", f"record claims a lifetime over {MAX_TTL} s")
    msg = signed_bytes(record.public_key, record.name, record.seq, record.expires, record.value)
    if not verify_signature(record.public_key, msg, record.signature):
        raise RecordError("bad-signature", "signature does not verify")


def is_live(record: Record, now: float) -> bool:
    """True while a (validated) record should still be stored and served."""
    return record.expires > now


def record_order(record: Record) -> tuple[int, int, bytes]:
    """Sort key: the maximum over valid records for one key is the winner."""
    return (record.seq, record.expires, record.signature)
