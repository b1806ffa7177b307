"""Mutable caps: the three strings that name a mutable file, and their parser.

Grammar (docs/mutable.md, "Caps")::

    p2ps:mut:<seed b32, 52>:<check b32, 8>                 write cap
    p2ps:mut-ro:<read key b32, 52>:<public key b32, 52>    read cap
    p2ps:mut-verify:<public key b32, 52>                   verify cap

and the same three behind ``p2ps:dir:`` for live directories (``p2ps:dir:mut:...``).

Invariants:
- Authority only diminishes: ``WriteCap.read_cap()`` and ``ReadCap.verify_cap()``
  are one-way. The read key is a keyed hash of the signing seed and the verify cap
  holds only the public key, so no read cap yields the seed and no verify cap
  yields the read key.
- The write cap's check (``BLAKE2b-40(seed, person="p2ps:mut-w:v1")``) catches a
  mistyped or truncated write cap at parse time: publishing under a mistyped seed
  would otherwise start a new file nobody can find.
- ``repr`` never shows the seed or the read key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from p2pstore.storage.slots import slot_index
from quic_transport.identity import IdentityError, b32decode, b32encode

from .errors import MutableCapError

if TYPE_CHECKING:
    import nacl.signing

PREFIX: Final = "p2ps:"
DIR_PREFIX: Final = "p2ps:dir:"
SEED_BYTES: Final = 32
KEY_BYTES: Final = 32
PK_BYTES: Final = 32
_CHECK_BYTES: Final = 5
_CHECK_PERSON: Final = b"p2ps:mut-w:v1"
_READ_PERSON: Final = b"p2ps:mut-rk:v1"
#: longest valid mutable cap (a directory read cap), with room to spare
MAX_CAP_CHARS: Final = 160


def _check(seed: bytes) -> bytes:
    return hashlib.blake2b(seed, digest_size=_CHECK_BYTES, person=_CHECK_PERSON).digest()


def read_key_of(seed: bytes) -> bytes:
    """The key that seals each version's pointer: a one-way function of the seed."""
    return hashlib.blake2b(seed, digest_size=KEY_BYTES, person=_READ_PERSON).digest()


@dataclass(frozen=True, slots=True, repr=False)
class VerifyCap:
    """Find, check and repair every version; cannot read one."""

    public_key: bytes
    directory: bool = False

    def __post_init__(self) -> None:
        if len(self.public_key) != PK_BYTES:
            raise MutableCapError("public key", f"must be {PK_BYTES} bytes")

    def verify_cap(self) -> VerifyCap:
        return self

    @property
    def storage_index(self) -> bytes:
        """The storage index of the file's slot (docs/storage.md, "Slots")."""
        return slot_index(self.public_key)

    def to_string(self) -> str:
        return f"{_prefix(self.directory)}mut-verify:{b32encode(self.public_key)}"

    def __repr__(self) -> str:
        return f"MutableVerifyCap(pk={b32encode(self.public_key)[:12]}, dir={self.directory})"


@dataclass(frozen=True, slots=True, repr=False)
class ReadCap:
    """Read any version (the latest a reader can verify); cannot publish one."""

    read_key: bytes
    public_key: bytes
    directory: bool = False

    def __post_init__(self) -> None:
        if len(self.read_key) != KEY_BYTES:
            raise MutableCapError("read key", f"must be {KEY_BYTES} bytes")
        if len(self.public_key) != PK_BYTES:
            raise MutableCapError("public key", f"must be {PK_BYTES} bytes")

    def read_cap(self) -> ReadCap:
        return self

    def verify_cap(self) -> VerifyCap:
        return VerifyCap(self.public_key, self.directory)

    def to_string(self) -> str:
        return (
            f"{_prefix(self.directory)}mut-ro:"
            f"{b32encode(self.read_key)}:{b32encode(self.public_key)}"
        )

    def __repr__(self) -> str:
        return f"MutableReadCap(pk={b32encode(self.public_key)[:12]}, dir={self.directory})"


@dataclass(frozen=True, slots=True, repr=False)
class WriteCap:
    """Publish new versions (and read them): holds the Ed25519 signing seed."""

    seed: bytes
    directory: bool = False

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise MutableCapError("seed", f"must be {SEED_BYTES} bytes")

    @classmethod
    def generate(cls, *, directory: bool = False) -> WriteCap:
        import nacl.signing  # libsodium loads to make or use a key, not to parse a cap

        return cls(bytes(nacl.signing.SigningKey.generate()), directory)

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        import nacl.signing

        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def read_cap(self) -> ReadCap:
        return ReadCap(read_key_of(self.seed), self.public_key, self.directory)

    def verify_cap(self) -> VerifyCap:
        return VerifyCap(self.public_key, self.directory)

    def to_string(self) -> str:
        return f"{_prefix(self.directory)}mut:{b32encode(self.seed)}:{b32encode(_check(self.seed))}"

    def __repr__(self) -> str:
        return f"MutableWriteCap(pk={b32encode(self.public_key)[:12]}, dir={self.directory})"


MutableCap = WriteCap | ReadCap | VerifyCap


def _prefix(directory: bool) -> str:
    return DIR_PREFIX if directory else PREFIX


def _b32(text: str, name: str, length: int) -> bytes:
    want = len(b32encode(bytes(length)))
    if len(text) < want:
        raise MutableCapError(
            name, f"{len(text)} of {want} characters: the cap looks cut off (copy it whole)"
        )
    try:
        return b32decode(text, expected_len=length, what=name)
    except IdentityError as e:
        raise MutableCapError(name, str(e).removeprefix(f"{name}: ")) from None


def is_mutable_cap(text: object) -> bool:
    """True if ``text`` claims to be a mutable cap (file or directory); parse it to
    know whether it is one."""
    if not isinstance(text, str):
        return False
    rest = PREFIX + text[len(DIR_PREFIX) :] if text.startswith(DIR_PREFIX) else text
    return rest.startswith(("p2ps:mut:", "p2ps:mut-ro:", "p2ps:mut-verify:"))


def parse_mutable_cap(text: str) -> MutableCap:
    """Parse a mutable cap; raises :class:`MutableCapError` saying which part is
    wrong. A ``p2ps:dir:`` prefix gives the cap of a live directory."""
    if not isinstance(text, str):
        raise MutableCapError("cap", f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_CAP_CHARS:
        raise MutableCapError("cap", f"{len(text)} characters is longer than any mutable cap")
    directory = text.startswith(DIR_PREFIX)
    rest = text[len(DIR_PREFIX) :] if directory else text.removeprefix(PREFIX)
    if rest == text:
        raise MutableCapError("prefix", f"cap must start with {PREFIX!r}")
    kind, _, tail = rest.partition(":")
    fields = tail.split(":")
    if kind == "mut":
        if len(fields) != 2:
            raise MutableCapError("mut", f"expected 2 fields (seed, check), got {len(fields)}")
        seed = _b32(fields[0], "seed", SEED_BYTES)
        if _b32(fields[1], "check", _CHECK_BYTES) != _check(seed):
            raise MutableCapError("check", "does not match the seed (mistyped or truncated)")
        return WriteCap(seed, directory)
    if kind == "mut-ro":
        if len(fields) != 2:
            raise MutableCapError(
                "mut-ro", f"expected 2 fields (read key, public key), got {len(fields)}"
            )
        key = _b32(fields[0], "read key", KEY_BYTES)
        return ReadCap(key, _b32(fields[1], "public key", PK_BYTES), directory)
    if kind == "mut-verify":
        if len(fields) != 1:
            raise MutableCapError("mut-verify", f"expected 1 field (public key), got {len(fields)}")
        return VerifyCap(_b32(fields[0], "public key", PK_BYTES), directory)
    raise MutableCapError(
        "kind", f"unknown mutable cap kind {kind!r} (expected mut, mut-ro or mut-verify)"
    )
