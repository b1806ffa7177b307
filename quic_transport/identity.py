"""Node identity: Ed25519 key pairs and the 160-bit node ID derived from them.

Invariants:
- A node ID is exactly ``ID_BYTES`` (20) bytes: BLAKE2b-160 of the Ed25519 public
  key under a fixed personalization. The same 160-bit space holds storage indexes
  and DHT record keys, so "nearest peers" is plain XOR distance everywhere.
- The textual form is lowercase RFC 4648 base32 without padding; 20 bytes encode
  to exactly 32 characters. Parsing is strict (length and alphabet checked).
- The private key file is created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nacl.signing

ID_BYTES = 20
ID_BITS = ID_BYTES * 8
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

_NODE_ID_PERSON = b"p2ps:node-id:v1"
_KEY_FILE_PREFIX = "p2pstore-node-key-v1:"
_B32_RE = re.compile(r"^[a-z2-7]*$")


class IdentityError(ValueError):
    """A key, node ID or key file is malformed; the message says what is wrong."""


def b32encode(data: bytes) -> str:
    """Lowercase, unpadded RFC 4648 base32."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str, *, expected_len: int | None = None, what: str = "value") -> bytes:
    """Strict inverse of :func:`b32encode`; raises :class:`IdentityError` with a reason."""
    if not isinstance(text, str):
        raise IdentityError(f"{what}: expected text, got {type(text).__name__}")
    if not _B32_RE.match(text):
        bad = next(c for c in text if not re.match(r"[a-z2-7]", c))
        raise IdentityError(f"{what}: character {bad!r} is not lowercase base32 (a-z, 2-7)")
    pad = (-len(text)) % 8
    if len(text) % 8 in (1, 3, 6):
        raise IdentityError(f"{what}: {len(text)} characters is not a valid base32 length")
    try:
        raw = base64.b32decode(text.upper() + "=" * pad)
    except ValueError as e:  # binascii.Error subclasses ValueError
        raise IdentityError(f"{what}: not valid base32 ({e})") from None
    if b32encode(raw) != text:
        raise IdentityError(f"{what}: non-canonical base32 (trailing bits set)")
    if expected_len is not None and len(raw) != expected_len:
        raise IdentityError(
            f"{what}: decodes to {len(raw)} bytes, expected {expected_len} "
            f"({len(b32encode(bytes(expected_len)))} characters)"
        )
    return raw


@dataclass(frozen=True, order=True, slots=True)
class NodeId:
    """A 160-bit identifier in the shared ID space (node, storage index or record key)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != ID_BYTES:
            raise IdentityError(f"node ID must be {ID_BYTES} bytes")

    @classmethod
    def from_public_key(cls, public_key: bytes) -> NodeId:
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise IdentityError(f"Ed25519 public key must be {PUBLIC_KEY_BYTES} bytes")
        digest = hashlib.blake2b(public_key, digest_size=ID_BYTES, person=_NODE_ID_PERSON)
        return cls(digest.digest())

    @classmethod
    def from_b32(cls, text: str) -> NodeId:
        return cls(b32decode(text, expected_len=ID_BYTES, what="node ID"))

    @property
    def b32(self) -> str:
        return b32encode(self.raw)

    def __int__(self) -> int:
        return int.from_bytes(self.raw, "big")

    def distance(self, other: NodeId | bytes) -> int:
        """Kademlia XOR distance as an integer."""
        o = other.raw if isinstance(other, NodeId) else other
        return int.from_bytes(self.raw, "big") ^ int.from_bytes(o, "big")

    def short(self) -> str:
        """Eight characters for logs and status lines (not unique; never used as a key)."""
        return self.b32[:8]

    def __str__(self) -> str:
        return self.b32

    def __repr__(self) -> str:
        return f"NodeId({self.b32})"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    import nacl.exceptions  # libsodium loads on first use, not with the node ID helpers
    import nacl.signing

    try:
        nacl.signing.VerifyKey(bytes(public_key)).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


class NodeKey:
    """An Ed25519 signing key with its derived node ID. Never logged or printed."""

    __slots__ = ("_signing", "node_id", "public_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.node_id: NodeId = NodeId.from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> NodeKey:
        import nacl.signing

        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        if len(seed) != 32:
            raise IdentityError("Ed25519 seed must be 32 bytes")
        import nacl.signing

        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed. Handle with care: it is the node's identity."""
        return bytes(self._signing)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing.sign(bytes(message)).signature)

    def to_text(self) -> str:
        return _KEY_FILE_PREFIX + b32encode(self.seed) + "\n"

    @classmethod
    def from_text(cls, text: str, *, source: str = "key") -> NodeKey:
        text = text.strip()
        if not text.startswith(_KEY_FILE_PREFIX):
            raise IdentityError(f"{source}: not a p2pstore node key (missing {_KEY_FILE_PREFIX!r})")
        seed = b32decode(text[len(_KEY_FILE_PREFIX) :], expected_len=32, what=f"{source} seed")
        return cls.from_seed(seed)

    def save(self, path: Path) -> None:
        """Write the key to a new file with mode 0600; refuses to overwrite."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(self.to_text())
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        try:
            mode = path.stat().st_mode & 0o777
            text = path.read_text(encoding="ascii")
        except OSError as e:
            raise IdentityError(f"{path}: cannot read node key: {e.strerror}") from None
        except UnicodeDecodeError:
            raise IdentityError(f"{path}: node key file is not text") from None
        if mode & 0o077:
            raise IdentityError(
                f"{path}: node key is readable by others (mode {mode:o}); run chmod 600 {path}"
            )
        return cls.from_text(text, source=str(path))

    @classmethod
    def load_or_create(cls, path: Path) -> NodeKey:
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        key.save(path)
        return key

    def __repr__(self) -> str:
        return f"NodeKey(node_id={self.node_id.b32})"
