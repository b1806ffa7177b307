"""Wire messages: frozen dataclasses, CBOR encoding and schema checks.

Every message is a CBOR map with a text key ``"t"`` naming its type; see
docs/transport.md for the table. :func:`decode_message` accepts exactly one
CBOR item filling the whole payload, checks the schema of the named type and
refuses unknown types, missing or extra keys, wrong types, out-of-range
numbers and application values (bodies, headers, results) containing anything
but maps, arrays, text, bytes, integers, floats, booleans and null, or nested
deeper than ``MAX_DEPTH``. Size limits are enforced by the frame layer before
decoding and by :func:`encode_message` before sending.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import cbor2

from .cbor_budget import check_structure
from .errors import FrameError, MessageTooLarge
from .framing import encode_message_frame

PROTOCOL_VERSION = 1
MAX_DEPTH = 32
MAX_NAME = 64
MAX_ERROR_MESSAGE = 1024
MAX_COUNT = (1 << 62) - 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FrameError(f"{what} must be 1-{MAX_NAME} characters of A-Z a-z 0-9 _ . -")
    return name


def check_value(value: object, depth: int = 0) -> None:
    """Raise FrameError unless ``value`` is a plain CBOR data tree."""
    if depth > MAX_DEPTH:
        raise FrameError(f"value nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return
    if isinstance(value, list):
        for v in value:
            check_value(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | bytes):
                raise FrameError("map keys must be text, bytes or integers")
            check_value(v, depth + 1)
        return
    raise FrameError(f"value of type {type(value).__name__} is not allowed")


@dataclass(frozen=True, slots=True)
class Auth:
    """Client proof of its node key, sent first on stream 0 (see auth.py)."""

    public_key: bytes
    signature: bytes
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if len(self.public_key) != 32 or len(self.signature) != 64:
            raise FrameError("auth: public key must be 32 bytes and signature 64 bytes")


@dataclass(frozen=True, slots=True)
class AuthOk:
    pass


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    body: Any

    def __post_init__(self) -> None:
        check_name(self.method, "method")


@dataclass(frozen=True, slots=True)
class Open:
    """Opens a bulk stream: ``direction`` is "up" (caller sends data) or "down"."""

    method: str
    header: Any
    direction: str

    def __post_init__(self) -> None:
        check_name(self.method, "method")
        if self.direction not in ("up", "down"):
            raise FrameError("open: direction must be 'up' or 'down'")


@dataclass(frozen=True, slots=True)
class Ok:
    result: Any


@dataclass(frozen=True, slots=True)
class Err:
    code: str
    message: str

    def __post_init__(self) -> None:
        check_name(self.code, "error code")
        if not isinstance(self.message, str) or len(self.message) > MAX_ERROR_MESSAGE:
            raise FrameError(f"error message must be text of at most {MAX_ERROR_MESSAGE} chars")


@dataclass(frozen=True, slots=True)
class Credit:
    """The data receiver allows ``amount`` more bulk bytes."""

    amount: int

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not 0 < self.amount <= MAX_COUNT:
            raise FrameError("credit: amount out of range")


@dataclass(frozen=True, slots=True)
class End:
    """The data sender is done; ``total`` bulk bytes were sent on this stream."""

    total: int

    def __post_init__(self) -> None:
        if isinstance(self.total, bool) or not 0 <= self.total <= MAX_COUNT:
            raise FrameError("end: total out of range")


Message = Auth | AuthOk | Request | Open | Ok | Err | Credit | End

# type tag -> (class, {wire key: (field, python type)})
_SCHEMA: dict[str, tuple[type, dict[str, tuple[str, type | tuple[type, ...] | None]]]] = {
    "auth": (
        Auth,
        {"v": ("version", int), "pk": ("public_key", bytes), "sig": ("signature", bytes)},
    ),
    "auth-ok": (AuthOk, {}),
    "req": (Request, {"m": ("method", str), "b": ("body", None)}),
    "open": (Open, {"m": ("method", str), "h": ("header", None), "d": ("direction", str)}),
    "ok": (Ok, {"r": ("result", None)}),
    "err": (Err, {"c": ("code", str), "e": ("message", str)}),
    "credit": (Credit, {"n": ("amount", int)}),
    "end": (End, {"n": ("total", int)}),
}
_TAG_OF: dict[type, str] = {cls: tag for tag, (cls, _) in _SCHEMA.items()}


def _to_wire(msg: Message) -> dict[str, Any]:
    tag = _TAG_OF[type(msg)]
    out: dict[str, Any] = {"t": tag}
    for key, (field, _) in _SCHEMA[tag][1].items():
        out[key] = getattr(msg, field)
    return out


def encode_message(msg: Message, *, limit: int) -> bytes:
    """CBOR-encode ``msg`` into a complete MSG frame; raises MessageTooLarge above ``limit``."""
    for key, (field, typ) in _SCHEMA[_TAG_OF[type(msg)]][1].items():
        if typ is None:
            try:
                check_value(getattr(msg, field))
            except FrameError as e:
                raise ValueError(f"cannot send {key!r}: {e.reason}") from None
    payload = cbor2.dumps(_to_wire(msg))
    if len(payload) > limit:
        raise MessageTooLarge(len(payload), limit)
    return encode_message_frame(payload)


def decode_message(payload: bytes) -> Message:
    """Decode and schema-check one MSG payload; raises FrameError on anything wrong
    (:class:`~.cbor_budget.DecodeBudgetExceeded` for a message over the decoding
    budget, checked before cbor2 builds anything)."""
    check_structure(payload)
    fp = io.BytesIO(payload)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    except Exception as e:  # cbor2 raises several types on malformed input
        raise FrameError(f"malformed CBOR: {type(e).__name__}") from None
    if fp.tell() != len(payload):
        raise FrameError("trailing bytes after the CBOR message")
    if not isinstance(obj, dict):
        raise FrameError("message is not a CBOR map")
    tag = obj.get("t")
    if not isinstance(tag, str) or tag not in _SCHEMA:
        raise FrameError("unknown or missing message type")
    cls, fields = _SCHEMA[tag]
    if set(obj) != {"t", *fields}:
        raise FrameError(f"{tag}: wrong set of keys")
    kwargs: dict[str, Any] = {}
    for key, (field, typ) in fields.items():
        value = obj[key]
        if typ is None:
            check_value(value)
        elif not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise FrameError(f"{tag}: {key!r} has the wrong type")
        kwargs[field] = value
    try:
        msg: Message = cls(**kwargs)
    except FrameError:
        raise
    except (TypeError, ValueError) as e:
        raise FrameError(f"{tag}: {e}") from None
    return msg
