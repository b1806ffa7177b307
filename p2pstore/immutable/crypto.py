"""Key derivation, hashing and the bulk cipher of the immutable format.

Invariants (docs/file-format.md, "Cryptography"):
- The read key is 32 bytes. Convergent mode: ``key = BLAKE2b-256(key=secret,
  person="p2ps:conv-key:v1", data=params || SHA-256(plaintext))`` (hashlib's
  BLAKE2b, the same function as libsodium's ``crypto_generichash``); random mode: 32
  bytes from the operating system's CSPRNG (``os.urandom``).
- The storage index is ``BLAKE2b-160(key, person="p2ps:si:v1")`` (one-way: it
  reveals nothing about the key) and lives in the 160-bit node-ID space.
- Ciphertext is the plaintext XOR the AES-256-CTR keystream of the read key with an
  initial counter block of 16 zero bytes (one stream over the whole file; the
  segment at byte offset o starts at counter o // 16, skipping o % 16 bytes).
- Every hash-tree and extension-block hash is tagged SHA-256:
  ``SHA-256(len(tag) as one byte || tag || data)``; tags never collide.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import TYPE_CHECKING, Final

from p2pstore.immutable.errors import ParameterError
from p2pstore.immutable.params import EncodingParams
from quic_transport.identity import ID_BYTES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

KEY_BYTES: Final = 32
HASH_BYTES: Final = 32
CONVERGENCE_SECRET_BYTES: Final = 32

_CONV_PERSON: Final = b"p2ps:conv-key:v1"  # BLAKE2b personalization is at most 16 bytes
_SI_PERSON: Final = b"p2ps:si:v1"

TAG_BLOCK: Final = b"p2ps:v1:block"
TAG_SEGMENT: Final = b"p2ps:v1:crypttext-segment"
TAG_NODE: Final = b"p2ps:v1:tree-node"
TAG_PAD: Final = b"p2ps:v1:tree-pad"
TAG_EXT: Final = b"p2ps:v1:extension-block"
TAG_PLAINTEXT: Final = b"p2ps:v1:convergent-plaintext"


def tag_prefix(tag: bytes) -> bytes:
    """What :func:`tagged_hash` feeds SHA-256 before the data (a server that hashes
    stored bytes with it answers the leaves a reader checks: ``storage.hashv``)."""
    return bytes([len(tag)]) + tag


_BASES: dict[bytes, hashlib._Hash] = {}


def tagged_hasher(tag: bytes) -> hashlib._Hash:
    """A fresh SHA-256 object already fed the tag prefix."""
    base = _BASES.get(tag)
    if base is None:
        base = _BASES[tag] = hashlib.sha256(tag_prefix(tag))
    return base.copy()


def tagged_hash(tag: bytes, *parts: bytes | memoryview) -> bytes:
    h = tagged_hasher(tag)
    for p in parts:
        h.update(p)
    return h.digest()


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ParameterError(f"read key must be {KEY_BYTES} bytes")


def storage_index(key: bytes) -> bytes:
    """The 20-byte storage index of a file: a one-way hash of its read key."""
    _check_key(key)
    return hashlib.blake2b(key, digest_size=ID_BYTES, person=_SI_PERSON).digest()


def random_key() -> bytes:
    """A fresh random read key (random-key mode, for one-pass uploads)."""
    return os.urandom(KEY_BYTES)


def new_convergence_secret() -> bytes:
    """A fresh per-node convergence secret."""
    return os.urandom(CONVERGENCE_SECRET_BYTES)


def params_bytes(params: EncodingParams) -> bytes:
    """The encoding parameters as hashed into the convergent key: k, n (u16), segment
    size (u32), big-endian."""
    return struct.pack(">HHI", params.k, params.n, params.segment_size)


class ConvergenceHasher:
    """Incremental convergent key derivation: feed the whole plaintext, get the key.

    The plaintext is digested with tagged SHA-256 (fast, and it releases the GIL), then
    the digest and the parameters are hashed under the secret with keyed BLAKE2b,
    so without the secret nobody can confirm a guess of the plaintext.
    """

    __slots__ = ("_h", "_params", "_secret", "size")

    def __init__(self, secret: bytes, params: EncodingParams) -> None:
        if not isinstance(secret, bytes) or len(secret) != CONVERGENCE_SECRET_BYTES:
            raise ParameterError(f"convergence secret must be {CONVERGENCE_SECRET_BYTES} bytes")
        self._secret = secret
        self._params = params
        self._h = tagged_hasher(TAG_PLAINTEXT)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def key(self) -> bytes:
        msg = params_bytes(self._params) + struct.pack(">Q", self.size) + self._h.digest()
        return hashlib.blake2b(
            msg, digest_size=KEY_BYTES, key=self._secret, person=_CONV_PERSON
        ).digest()

    def __repr__(self) -> str:
        return f"ConvergenceHasher(size={self.size})"


def convergent_key(secret: bytes, params: EncodingParams, data: bytes | memoryview) -> bytes:
    """One-shot :class:`ConvergenceHasher` over ``data``."""
    h = ConvergenceHasher(secret, params)
    h.update(data)
    return h.key()


def keystream_cipher(key: bytes, offset: int) -> CipherContext:
    """An AES-256-CTR context positioned at plaintext byte ``offset`` of the file's
    single keystream; its ``update`` both encrypts and decrypts."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    _check_key(key)
    ctx = Cipher(algorithms.AES(key), modes.CTR((offset // 16).to_bytes(16, "big"))).encryptor()
    skip = offset % 16
    if skip:
        ctx.update(bytes(skip))
    return ctx
