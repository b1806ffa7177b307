"""Sans-I/O frame codec for QUIC stream payloads.

A stream carries a sequence of frames::

    frame = kind (1 byte) || length (4 bytes, big-endian) || payload (length bytes)

Kinds: ``MSG`` (0x01) carries one CBOR message (see ``messages.py``); ``DATA``
(0x02) carries raw bulk bytes. Lengths are explicit because ``cbor2.loads``
ignores trailing bytes.

Invariants of :class:`FrameDecoder`:
- Never buffers more than one MSG payload (at most ``max_message`` bytes) plus a
  4-byte partial header; DATA payloads are handed out piece by piece as they
  arrive, never reassembled.
- Any unknown kind, zero length, or length above the kind's limit raises
  :class:`~quic_transport.errors.FrameError` before any payload is buffered.
- After an error the decoder is dead: every later call raises again.
- :meth:`FrameDecoder.finish` raises if the stream ended inside a frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import FrameError

KIND_MSG = 0x01
KIND_DATA = 0x02
HEADER_BYTES = 5
_HEADER = struct.Struct(">BI")


@dataclass(frozen=True, slots=True)
class MessageFrame:
    """One complete MSG frame payload (still CBOR-encoded)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class DataPiece:
    """Some bytes of a DATA frame (frames may be delivered in several pieces)."""

    data: bytes


FrameEvent = MessageFrame | DataPiece


def encode_header(kind: int, length: int) -> bytes:
    if kind not in (KIND_MSG, KIND_DATA):
        raise ValueError(f"unknown frame kind {kind}")
    if not 0 < length < 1 << 32:
        raise ValueError(f"frame length {length} out of range")
    return _HEADER.pack(kind, length)


def encode_message_frame(payload: bytes) -> bytes:
    return encode_header(KIND_MSG, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: ``feed(bytes) -> list[FrameEvent]``; ``finish()`` at end of stream."""

    __slots__ = ("_dead", "_header", "_kind", "_max_data", "_max_message", "_msg", "_remaining")

    def __init__(self, *, max_message: int, max_data: int) -> None:
        self._max_message = max_message
        self._max_data = max_data
        self._header = bytearray()
        self._kind = 0  # 0: reading a header
        self._remaining = 0
        self._msg = bytearray()
        self._dead: str | None = None

    @property
    def at_boundary(self) -> bool:
        return self._kind == 0 and not self._header

    @property
    def buffered(self) -> int:
        """Bytes held by the decoder (bounded by max_message + 4)."""
        return len(self._header) + len(self._msg)

    def _fail(self, reason: str) -> FrameError:
        self._dead = reason
        self._header.clear()
        self._msg = bytearray()
        return FrameError(reason)

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self._dead is not None:
            raise FrameError(self._dead)
        out: list[FrameEvent] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self._kind == 0:
                need = HEADER_BYTES - len(self._header)
                self._header += data[pos : pos + need]
                pos += min(need, n - pos)
                if len(self._header) < HEADER_BYTES:
                    break
                kind, length = _HEADER.unpack(self._header)
                self._header.clear()
                if kind == KIND_MSG:
                    limit = self._max_message
                elif kind == KIND_DATA:
                    limit = self._max_data
                else:
                    raise self._fail(f"unknown frame kind 0x{kind:02x}")
                if length == 0:
                    raise self._fail("zero-length frame")
                if length > limit:
                    raise self._fail(f"frame of {length} bytes exceeds the limit of {limit}")
                self._kind = kind
                self._remaining = length
                continue
            take = min(self._remaining, n - pos)
            if self._kind == KIND_DATA:
                piece = data if (pos == 0 and take == n) else data[pos : pos + take]
                out.append(DataPiece(piece))
            else:
                self._msg += data[pos : pos + take]
            pos += take
            self._remaining -= take
            if self._remaining == 0:
                if self._kind == KIND_MSG:
                    out.append(MessageFrame(bytes(self._msg)))
                    self._msg = bytearray()
                self._kind = 0
        return out

    def finish(self) -> None:
        """The stream ended: raise unless it ended exactly on a frame boundary."""
        if self._dead is not None:
            raise FrameError(self._dead)
        if not self.at_boundary:
            raise self._fail("stream ended inside a frame (truncated)")
