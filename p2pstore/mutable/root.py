"""A mutable file's root: the signed, sequence-numbered record naming its current
version, and the rule that picks the latest of what the servers hold.

Each version is an immutable file (docs/file-format.md) uploaded with a random key.
The root is a storage slot record (``p2pstore.storage.slots``, signed by the
file's key) whose body is (docs/mutable.md, "Root body")::

    canonical CBOR {"v": 1, "verify": <version verify cap text> | null, "sealed": bstr}
    sealed = nonce (24) || XChaCha20-Poly1305-IETF(read_key, nonce,
             aad = "p2ps:mut-body:v1" || public key || seq (8 bytes BE),
             canonical CBOR {"cap": <version read cap text>, "t": <float Unix time>})

Invariants:
- ``verify`` is in the clear (signed) so a verify-cap holder can check and repair
  the current version; the version's read cap is only in ``sealed``. A literal
  version (at most 55 bytes) has ``verify: null``.
- A reader accepts a version only if the record's signature verifies under the
  cap's public key (the slot decoder does that), the body opens under the read key
  with this record's key and sequence as associated data, and the sealed read cap's
  verify cap equals the signed ``verify`` (else :class:`MutableRemoteError`).
- :func:`choose` is deterministic: highest sequence, then the root held by more
  peers, then the larger BLAKE2b-256 of the record bytes, so every reader that sees
  the same records picks the same one.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import cbor2
import nacl.bindings as nb
import nacl.exceptions

from p2pstore.immutable import CapError, LiteralCap, parse_cap
from p2pstore.immutable import ReadCap as ChkReadCap
from p2pstore.storage.slots import MAX_BODY, SlotRecord

from .caps import ReadCap, VerifyCap, WriteCap
from .errors import MutableRemoteError

NONCE_BYTES: Final = 24
_AAD: Final = b"p2ps:mut-body:v1"
_SEEN_PERSON: Final = b"p2ps:mut-seen:v1"

VersionCap = ChkReadCap | LiteralCap


def _aad(public_key: bytes, seq: int) -> bytes:
    return _AAD + public_key + struct.pack(">Q", seq)


def _dumps(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def make_root(cap: WriteCap, seq: int, version: VersionCap, now: float) -> SlotRecord:
    """The signed root naming ``version`` as sequence ``seq`` of the file."""
    rc = cap.read_cap()
    plain = _dumps({"cap": version.to_string(), "t": float(now)})
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + nb.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _aad(rc.public_key, seq), nonce, rc.read_key
    )
    verify = version.verify_cap().to_string() if isinstance(version, ChkReadCap) else None
    body = _dumps({"v": 1, "verify": verify, "sealed": sealed})
    if len(body) > MAX_BODY:  # a chk read cap is under 200 characters: never
        raise ValueError("root body too large")
    return SlotRecord.sign(cap.seed, seq, body)


@dataclass(frozen=True, slots=True, repr=False)
class Root:
    """What a verify cap can know of a root: its sequence and the version's verify cap."""

    record: SlotRecord
    verify: str | None

    @property
    def sequence(self) -> int:
        return self.record.seq

    def digest(self) -> str:
        """Fingerprint for the rollback guard (not a secret)."""
        h = hashlib.blake2b(self.record.encode(), digest_size=16, person=_SEEN_PERSON)
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"MutableRoot(seq={self.sequence})"


@dataclass(frozen=True, slots=True, repr=False)
class Version:
    """An opened root: the version's read cap and when it was published."""

    root: Root
    cap: VersionCap
    time: float

    @property
    def sequence(self) -> int:
        return self.root.sequence

    @property
    def size(self) -> int:
        return self.cap.size

    def digest(self) -> str:
        return self.root.digest()

    def __repr__(self) -> str:
        return f"MutableVersion(seq={self.sequence}, size={self.size})"


def _is_one(v: object) -> bool:
    return type(v) is int and v == 1  # not True, not 1.0


def _bad(why: str) -> MutableRemoteError:
    return MutableRemoteError(f"mutable root unusable: {why}")


def check_root(record: SlotRecord, cap: ReadCap | VerifyCap | WriteCap) -> Root:
    """The parts of ``record`` a verify cap can check: its key and body layout."""
    if record.pk != cap.verify_cap().public_key:
        raise _bad("signed by another key")
    try:
        obj = cbor2.loads(record.body)
    except Exception:
        raise _bad("body is not CBOR") from None
    if not isinstance(obj, dict) or set(obj) != {"v", "verify", "sealed"} or not _is_one(obj["v"]):
        raise _bad("unexpected body fields")
    if _dumps(obj) != record.body:
        raise _bad("body is not canonical CBOR")
    verify, sealed = obj["verify"], obj["sealed"]
    if not (verify is None or isinstance(verify, str)) or not isinstance(sealed, bytes):
        raise _bad("body field types")
    if verify is not None:
        try:
            parsed = parse_cap(verify)
        except CapError as e:
            raise _bad(f"verify cap: {e}") from None
        if parsed.to_string() != verify or isinstance(parsed, ChkReadCap | LiteralCap):
            raise _bad("verify field is not a verify cap")
    if len(sealed) < NONCE_BYTES + 16:
        raise _bad("sealed pointer too short")
    return Root(record, verify)


def open_root(record: SlotRecord, cap: ReadCap | WriteCap) -> Version:
    """Check ``record`` and open its sealed pointer with the read key."""
    root = check_root(record, cap)
    rc = cap.read_cap()
    sealed = cbor2.loads(record.body)["sealed"]
    nonce, ct = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        plain = nb.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, _aad(record.pk, record.seq), nonce, rc.read_key
        )
    except nacl.exceptions.CryptoError:
        raise _bad("cannot be opened with this read cap (a wrong read key?)") from None
    try:
        obj = cbor2.loads(plain)
    except Exception:
        raise _bad("sealed pointer is not CBOR") from None
    if not isinstance(obj, dict) or set(obj) != {"cap", "t"}:
        raise _bad("unexpected sealed fields")
    t = obj["t"]
    if not isinstance(t, float) or not math.isfinite(t) or not isinstance(obj["cap"], str):
        raise _bad("sealed field types")
    try:
        version = parse_cap(obj["cap"])
    except CapError as e:
        raise _bad(f"version cap: {e}") from None
    if not isinstance(version, ChkReadCap | LiteralCap):
        raise _bad("version cap is not a read cap")
    want = version.verify_cap().to_string() if isinstance(version, ChkReadCap) else None
    if want != root.verify:
        raise _bad("the sealed version does not match the signed verify cap")
    return Version(root, version, t)


def choose(records: Iterable[SlotRecord]) -> SlotRecord | None:
    """The latest of ``records`` (already validated; one per peer that holds it):
    highest sequence; at equal sequence (two writers raced) the root more peers
    hold, then the larger BLAKE2b-256 of the bytes."""
    records = list(records)
    counts = Counter(r.encode() for r in records)
    if not counts:
        return None
    by_bytes = {r.encode(): r for r in records}

    def rank(data: bytes) -> tuple[int, int, bytes]:
        digest = hashlib.blake2b(data, digest_size=32).digest()
        return (by_bytes[data].seq, counts[data], digest)

    return by_bytes[max(counts, key=rank)]
