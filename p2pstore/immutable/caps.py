"""Caps: the strings that name immutable files, and their strict parser.

Grammar (docs/file-format.md, "Caps")::

    p2ps:chk:<k>:<N>:<size>:<key b32, 52>:<ext hash b32, 52>          read cap
    p2ps:chk-verify:<k>:<N>:<size>:<SI b32, 32>:<ext hash b32, 52>    verify cap
    p2ps:lit:<data b32>:<check b32, 8>                                literal cap

Invariants:
- Decimal fields are canonical (no sign, no leading zero); base32 is lowercase,
  unpadded and canonical (quic_transport.identity.b32decode). A fixed-length field
  ends every cap, so any truncation is refused at parse time.
- ``ReadCap.verify_cap()`` is the only way from a read cap to a verify cap, and
  there is no way back (the storage index is a one-way hash of the key).
- A literal cap's check is ``BLAKE2b-40(data, person="p2ps:lit:v1")``: it catches
  typos and truncation (it is not a MAC: a literal cap is its own content).
- ``repr`` of a read cap never shows the key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from p2pstore.immutable.crypto import HASH_BYTES, KEY_BYTES, storage_index
from p2pstore.immutable.errors import CapError, ParameterError
from p2pstore.immutable.params import LITERAL_MAX, MAX_FILE_SIZE, check_k_n
from quic_transport.identity import ID_BYTES, IdentityError, b32decode, b32encode

PREFIX: Final = "p2ps:"
_LIT_CHECK_BYTES: Final = 5
_LIT_PERSON: Final = b"p2ps:lit:v1"
_DEC_RE: Final = re.compile(r"^(0|[1-9][0-9]{0,19})$")


def literal_check(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_LIT_CHECK_BYTES, person=_LIT_PERSON).digest()


@dataclass(frozen=True, slots=True)
class _ChkFields:
    k: int
    n: int
    size: int

    def _validate(self) -> None:
        try:
            check_k_n(self.k, self.n)
        except ParameterError as e:
            raise CapError("k/N", str(e)) from None
        if not LITERAL_MAX < self.size <= MAX_FILE_SIZE:
            raise CapError(
                "size",
                f"{self.size} is out of range for a coded file ({LITERAL_MAX + 1}.."
                f"{MAX_FILE_SIZE}; smaller files use literal caps)",
            )


@dataclass(frozen=True, slots=True, repr=False)
class ReadCap:
    """Read (decrypt + verify) capability for an erasure-coded file."""

    k: int
    n: int
    size: int
    key: bytes
    ext_hash: bytes

    def __post_init__(self) -> None:
        _ChkFields(self.k, self.n, self.size)._validate()
        if len(self.key) != KEY_BYTES:
            raise CapError("key", f"must be {KEY_BYTES} bytes")
        if len(self.ext_hash) != HASH_BYTES:
            raise CapError("extension hash", f"must be {HASH_BYTES} bytes")

    @property
    def storage_index(self) -> bytes:
        return storage_index(self.key)

    def verify_cap(self) -> VerifyCap:
        return VerifyCap(self.k, self.n, self.size, self.storage_index, self.ext_hash)

    def to_string(self) -> str:
        return (
            f"{PREFIX}chk:{self.k}:{self.n}:{self.size}:"
            f"{b32encode(self.key)}:{b32encode(self.ext_hash)}"
        )

    def __repr__(self) -> str:
        return (
            f"ReadCap(k={self.k}, n={self.n}, size={self.size}, si={b32encode(self.storage_index)})"
        )


@dataclass(frozen=True, slots=True, repr=False)
class VerifyCap:
    """Check/verify/repair capability: locates and verifies shares, cannot decrypt."""

    k: int
    n: int
    size: int
    storage_index: bytes
    ext_hash: bytes

    def __post_init__(self) -> None:
        _ChkFields(self.k, self.n, self.size)._validate()
        if len(self.storage_index) != ID_BYTES:
            raise CapError("storage index", f"must be {ID_BYTES} bytes")
        if len(self.ext_hash) != HASH_BYTES:
            raise CapError("extension hash", f"must be {HASH_BYTES} bytes")

    def verify_cap(self) -> VerifyCap:
        return self

    def __repr__(self) -> str:
        si = b32encode(self.storage_index)
        return f"VerifyCap(k={self.k}, n={self.n}, size={self.size}, si={si})"

    def to_string(self) -> str:
        return (
            f"{PREFIX}chk-verify:{self.k}:{self.n}:{self.size}:"
            f"{b32encode(self.storage_index)}:{b32encode(self.ext_hash)}"
        )


@dataclass(frozen=True, slots=True, repr=False)
class LiteralCap:
    """A tiny file held inline in its cap."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) > LITERAL_MAX:
            raise CapError(
                "data", f"{len(self.data)} bytes exceeds the literal limit {LITERAL_MAX}"
            )

    @property
    def size(self) -> int:
        return len(self.data)

    def to_string(self) -> str:
        return f"{PREFIX}lit:{b32encode(self.data)}:{b32encode(literal_check(self.data))}"

    def __repr__(self) -> str:
        return f"LiteralCap(size={len(self.data)})"


Cap = ReadCap | VerifyCap | LiteralCap


def _int_field(text: str, name: str) -> int:
    if not _DEC_RE.match(text):
        raise CapError(name, f"{text!r} is not a canonical decimal number")
    return int(text)


def _b32_field(text: str, name: str, length: int | None) -> bytes:
    if length is not None:
        want = len(b32encode(bytes(length)))
        if len(text) < want:  # before any base32 detail: the usual cause is a partial copy
            raise CapError(
                name, f"{len(text)} of {want} characters: the cap looks cut off (copy it whole)"
            )
    try:
        return b32decode(text, expected_len=length, what=name)
    except IdentityError as e:
        raise CapError(name, str(e).removeprefix(f"{name}: ")) from None


def parse_cap(text: str) -> Cap:
    """Parse any cap string; raises :class:`CapError` saying which part is wrong."""
    if not isinstance(text, str):
        raise CapError("cap", f"expected a string, got {type(text).__name__}")
    if len(text) > 400:
        raise CapError("cap", f"{len(text)} characters is longer than any valid cap")
    if not text.startswith(PREFIX):
        raise CapError("prefix", f"cap must start with {PREFIX!r}")
    parts = text[len(PREFIX) :].split(":")
    kind, fields = parts[0], parts[1:]
    if kind == "lit":
        if len(fields) != 2:
            raise CapError("lit", f"expected 2 fields (data, check), got {len(fields)}")
        data = _b32_field(fields[0], "literal data", None)
        check = _b32_field(fields[1], "literal check", _LIT_CHECK_BYTES)
        if len(data) > LITERAL_MAX:
            raise CapError("literal data", f"{len(data)} bytes exceeds the limit {LITERAL_MAX}")
        if check != literal_check(data):
            raise CapError("literal check", "does not match the data (mistyped or truncated)")
        return LiteralCap(data)
    if kind in ("chk", "chk-verify"):
        if len(fields) != 5:
            raise CapError(kind, f"expected 5 fields (k, N, size, id, ext hash), got {len(fields)}")
        k = _int_field(fields[0], "k")
        n = _int_field(fields[1], "N")
        size = _int_field(fields[2], "size")
        if kind == "chk":
            key = _b32_field(fields[3], "key", KEY_BYTES)
            ext = _b32_field(fields[4], "extension hash", HASH_BYTES)
            return ReadCap(k, n, size, key, ext)
        si = _b32_field(fields[3], "storage index", ID_BYTES)
        ext = _b32_field(fields[4], "extension hash", HASH_BYTES)
        return VerifyCap(k, n, size, si, ext)
    raise CapError("kind", f"unknown cap kind {kind!r} (expected chk, chk-verify or lit)")
