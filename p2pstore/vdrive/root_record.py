"""The signed root record of a drive: what its value holds, how it is sealed, and
the reader's memory of the highest sequence seen (no rollback). Sans-I/O except
:class:`SeenStore`, which reads and writes one small JSON file.

A drive is published as a DHT record (docs/dht.md) under the owner's key and a
fixed name (:data:`SHARED_NAME` or :data:`PRIVATE_NAME`). The record's value is the
*sealed pointer* (docs/vdrive.md "Root record")::

    value = 0x01 || nonce (24) || XChaCha20-Poly1305(key, nonce, aad = pk || name,
                                   CBOR {"v": 1, "seq": n, "root": dircap, "t": time})
    key   = BLAKE2b(pk || name, key=read_secret, digest_size=32, person="p2ps:vd-read:v1")

So DHT nodes that store the record (they see pk, name, value) cannot find the root
cap without the drive's 32-byte *read secret*, which travels in the bootstrap list
(shared drive) or never leaves the owner's node directory (private drive). The
record signature covers the value, so only the drive's key holder can publish a
pointer; the read secret only grants reading.

Invariants:
- the drive *sequence* is the ``seq`` inside the sealed pointer (it grows by exactly
  one per change); it is distinct from the DHT record's own ``seq``, which the DHT
  also bumps when it re-signs a record to extend its life;
- a reader accepts a pointer only if its sequence is >= the highest it has seen for
  that drive, and, at equal sequence, only the same root (:class:`SeenStore`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2
import nacl.bindings as nb
import nacl.exceptions

from p2pstore.base.fsutil import write_text_atomic

from .dirnode import DirCap, parse_dircap
from .errors import VdriveRemoteError

SHARED_NAME: Final = b"p2ps:vdrive:shared:v1"
PRIVATE_NAME: Final = b"p2ps:vdrive:private:v1"
SECRET_BYTES: Final = 32
SEAL_VERSION: Final = 1
NONCE_BYTES: Final = 24
MAX_POINTER_BYTES: Final = 1024
_PERSON = b"p2ps:vd-read:v1"


def new_read_secret() -> bytes:
    return os.urandom(SECRET_BYTES)


@dataclass(frozen=True, slots=True)
class RootPointer:
    """Drive state: ``sequence`` (0 = never written: the empty drive) and its root."""

    sequence: int
    root: DirCap | None
    time: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            raise ValueError("sequence must be an integer")
        if not 0 <= self.sequence < 2**63:
            raise ValueError("sequence out of range")
        if (self.root is None) != (self.sequence == 0):
            raise ValueError("sequence 0 (and only it) has no root")

    def digest(self) -> str:
        """A non-secret fingerprint of the root (what SeenStore remembers)."""
        text = "" if self.root is None else self.root.to_string()
        return hashlib.blake2b(text.encode(), digest_size=16, person=b"p2ps:vd-seen:v1").hexdigest()

    def __repr__(self) -> str:
        return f"RootPointer(sequence={self.sequence})"


EMPTY_POINTER = RootPointer(0, None)


def _read_key(read_secret: bytes, public_key: bytes, name: bytes) -> bytes:
    if len(read_secret) != SECRET_BYTES:
        raise ValueError(f"read secret must be {SECRET_BYTES} bytes")
    h = hashlib.blake2b(public_key + name, key=read_secret, digest_size=32, person=_PERSON)
    return h.digest()


def seal_pointer(p: RootPointer, *, read_secret: bytes, public_key: bytes, name: bytes) -> bytes:
    if p.root is None:
        raise ValueError("the empty drive is never published")
    body = cbor2.dumps({"v": 1, "seq": p.sequence, "root": p.root.to_string(), "t": float(p.time)})
    nonce = os.urandom(NONCE_BYTES)
    ct = nb.crypto_aead_xchacha20poly1305_ietf_encrypt(
        body, public_key + name, nonce, _read_key(read_secret, public_key, name)
    )
    return bytes([SEAL_VERSION]) + nonce + ct


def open_pointer(
    value: bytes, *, read_secret: bytes, public_key: bytes, name: bytes
) -> RootPointer:
    """Decrypt and validate a sealed pointer; raises ``bad-record``."""

    def bad(why: str) -> VdriveRemoteError:
        return VdriveRemoteError("bad-record", f"drive record unusable: {why}")

    if not isinstance(value, bytes) or len(value) < 1 + NONCE_BYTES + 16:
        raise bad("too short")
    if len(value) > MAX_POINTER_BYTES + 1 + NONCE_BYTES + 16:
        raise bad("too long")
    if value[0] != SEAL_VERSION:
        raise bad(f"unknown seal version {value[0]}")
    nonce, ct = value[1 : 1 + NONCE_BYTES], value[1 + NONCE_BYTES :]
    try:
        body = nb.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, public_key + name, nonce, _read_key(read_secret, public_key, name)
        )
    except nacl.exceptions.CryptoError:
        raise bad("cannot be decrypted with this read secret") from None
    try:
        obj = cbor2.loads(body)
    except Exception:
        raise bad("not CBOR") from None
    if not isinstance(obj, dict) or set(obj) != {"v", "seq", "root", "t"} or obj["v"] != 1:
        raise bad("unexpected fields")
    t = obj["t"]
    if not isinstance(t, float) or not math.isfinite(t):
        raise bad("bad time")
    try:
        root = parse_dircap(obj["root"])
        ptr = RootPointer(obj["seq"], root, t)
    except (ValueError, TypeError) as e:
        raise bad(str(e)) from None
    if ptr.sequence == 0:
        raise bad("sequence 0 is never published")
    return ptr


class SeenStore:
    """Highest drive sequence seen per drive, persisted (``state/vdrive_seen.json``).

    ``check(drive_id, pointer)`` raises ``rollback`` for an older pointer or a
    different root at the same sequence, and records a newer one (written through
    to disk before returning, so a restart cannot be rolled back either). Holds at
    most :data:`MAX_DRIVES` drives (the least recently raised dropped first).
    """

    FORMAT = "p2pstore-vdrive-seen-v1"
    MAX_DRIVES = 1000

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[str, tuple[int, str]] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = path.read_bytes()[: 1 << 20]
            obj: Any = json.loads(raw)
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            # A damaged file cannot be trusted either way; keep it for inspection.
            os.replace(path, path.with_suffix(".json.corrupt"))
            return
        drives = obj.get("drives") if isinstance(obj, dict) else None
        if not isinstance(drives, dict):
            return
        for k, v in list(drives.items())[-self.MAX_DRIVES :]:
            if (
                isinstance(k, str)
                and isinstance(v, dict)
                and isinstance(v.get("sequence"), int)
                and isinstance(v.get("root"), str)
            ):
                self._seen[k] = (v["sequence"], v["root"])

    def highest(self, drive_id: str) -> int:
        return self._seen.get(drive_id, (0, ""))[0]

    def check(self, drive_id: str, p: RootPointer) -> None:
        seq, digest = self._seen.get(drive_id, (0, EMPTY_POINTER.digest()))
        if p.sequence < seq:
            raise VdriveRemoteError(
                "rollback",
                f"refusing drive record sequence {p.sequence}: this node has already "
                f"seen sequence {seq} (a stale or replayed record)",
                details={"seen": seq, "offered": p.sequence},
            )
        if p.sequence == seq:
            if p.digest() != digest:
                raise VdriveRemoteError(
                    "rollback",
                    f"refusing drive record: sequence {seq} with a different root than seen",
                )
            return
        self._seen.pop(drive_id, None)
        self._seen[drive_id] = (p.sequence, p.digest())
        while len(self._seen) > self.MAX_DRIVES:
            self._seen.pop(next(iter(self._seen)))
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "format": self.FORMAT,
            "drives": {k: {"sequence": s, "root": d} for k, (s, d) in self._seen.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(data, indent=1) + "\n", mode=0o600)
