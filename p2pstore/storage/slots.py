"""Slot records: one small signed, sequence-numbered record per storage index
(docs/storage.md, "Slots (signed mutable records)"). Sans-I/O.

A slot holds what a mutable file needs the servers to keep for it: the storage
layer never knows what ``body`` means (the mutable-file layer defines it); it only
checks the signature and keeps the record with the highest sequence number.
Wire and disk form, canonical CBOR::

    {"pk": bstr .size 32, "seq": uint 1..2^63-1, "body": bstr .size (0..8192),
     "sig": bstr .size 64}
    sig = Ed25519(pk, "p2pstore slot v1\\0" || pk || seq (8 bytes, big-endian)
                      || len(body) (4 bytes, big-endian) || body)

Invariants:
- :func:`decode_record` returns a :class:`SlotRecord` only if the input is at most
  :data:`MAX_RECORD` bytes, is a CBOR map with exactly those keys, types and sizes,
  is canonical (re-encoding gives the input byte for byte, so one record has one
  encoding and ``==`` on records is ``==`` on their bytes), and the signature
  verifies under ``pk``; anything else raises :class:`~.errors.BadRecord`.
- A record's storage index is derived from ``pk`` (:func:`slot_index`), never
  taken from the wire; its personalization differs from that of immutable storage
  indexes, so the two never name the same directory.
- :func:`accepts` is the server's whole replacement rule: a higher ``seq`` wins, the
  identical record is an idempotent retry, anything else is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import cbor2

from quic_transport.identity import (
    ID_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    NodeKey,
    verify_signature,
)

from .errors import BadRecord

SLOT_PERSON: Final = b"p2ps:slot-si:v1"
SIGN_PREFIX: Final = b"p2pstore slot v1\x00"
MAX_BODY: Final = 8192
MAX_SEQ: Final = 2**63 - 1
_KEYS: Final = frozenset({"pk", "seq", "body", "sig"})

if TYPE_CHECKING:
    import nacl.signing

    Signer = bytes | nacl.signing.SigningKey | NodeKey


def slot_index(public_key: bytes) -> bytes:
    """The storage index of the slot signed by ``public_key`` (20 bytes)."""
    return hashlib.blake2b(public_key, digest_size=ID_BYTES, person=SLOT_PERSON).digest()


def _check_fields(pk: Any, seq: Any, body: Any, sig: Any) -> None:
    if not isinstance(pk, bytes) or len(pk) != PUBLIC_KEY_BYTES:
        raise BadRecord(f"pk must be {PUBLIC_KEY_BYTES} bytes")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ:
        raise BadRecord("seq must be an integer 1..2^63-1")
    if not isinstance(body, bytes) or len(body) > MAX_BODY:
        raise BadRecord(f"body must be at most {MAX_BODY} bytes")
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise BadRecord(f"sig must be {SIGNATURE_BYTES} bytes")


def signed_bytes(pk: bytes, seq: int, body: bytes) -> bytes:
    """What the slot's key signs (module docstring)."""
    return SIGN_PREFIX + pk + seq.to_bytes(8, "big") + len(body).to_bytes(4, "big") + body


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """One slot record. Construction checks field types and sizes (``BadRecord``),
    not the signature: :func:`decode_record` and :meth:`verify` do that."""

    pk: bytes
    seq: int
    body: bytes
    sig: bytes

    def __post_init__(self) -> None:
        _check_fields(self.pk, self.seq, self.body, self.sig)

    @classmethod
    def sign(cls, key: Signer, seq: int, body: bytes) -> SlotRecord:
        """A record of ``body`` at ``seq`` signed by ``key`` (a 32-byte Ed25519 seed,
        a ``nacl.signing.SigningKey`` or a ``NodeKey``)."""
        import nacl.signing  # libsodium loads when a slot is signed, not to parse caps

        signing = nacl.signing.SigningKey(key) if isinstance(key, bytes) else key
        if isinstance(signing, NodeKey):
            pk = signing.public_key
            _check_fields(pk, seq, body, bytes(SIGNATURE_BYTES))
            return cls(pk, seq, body, signing.sign(signed_bytes(pk, seq, body)))
        pk = bytes(signing.verify_key)
        _check_fields(pk, seq, body, bytes(SIGNATURE_BYTES))
        return cls(pk, seq, body, bytes(signing.sign(signed_bytes(pk, seq, body)).signature))

    @property
    def storage_index(self) -> bytes:
        return slot_index(self.pk)

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.pk, self.seq, self.body)

    def verify(self) -> bool:
        """True iff ``sig`` is ``pk``'s signature of :meth:`signed_bytes`."""
        return verify_signature(self.pk, self.signed_bytes(), self.sig)

    def encode(self) -> bytes:
        doc = {"pk": self.pk, "seq": self.seq, "body": self.body, "sig": self.sig}
        return cbor2.dumps(doc, canonical=True)

    def __repr__(self) -> str:
        return f"SlotRecord(si={self.storage_index.hex()[:12]}, seq={self.seq}, {len(self.body)} B)"


# The largest encoding: every field at its longest (the map, its keys and the
# length prefixes add 129 bytes to the body's 8192).
MAX_RECORD: Final = len(
    SlotRecord(bytes(PUBLIC_KEY_BYTES), MAX_SEQ, bytes(MAX_BODY), bytes(SIGNATURE_BYTES)).encode()
)


def decode_record(data: bytes) -> SlotRecord:
    """Parse and verify an encoded record (see the module invariants)."""
    if not isinstance(data, bytes) or len(data) > MAX_RECORD:
        raise BadRecord(f"a slot record is bytes of at most {MAX_RECORD}")
    try:
        doc = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on garbage
        raise BadRecord(f"not CBOR ({type(e).__name__})") from None
    if not isinstance(doc, dict) or set(doc) != _KEYS:
        raise BadRecord("expected a map of exactly pk, seq, body, sig")
    record = SlotRecord(doc["pk"], doc["seq"], doc["body"], doc["sig"])
    if record.encode() != data:
        raise BadRecord("not canonical CBOR")
    if not record.verify():
        raise BadRecord("bad signature")
    return record


def accepts(held: SlotRecord | None, new: SlotRecord) -> bool:
    """The server's rule: store ``new`` if nothing is held or its ``seq`` is higher;
    the identical record is an idempotent retry; everything else is refused."""
    return held is None or new.seq > held.seq or new == held
