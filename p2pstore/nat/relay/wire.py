"""Relay wire formats (docs/relay.md): datagram records on the bulk streams, RPC bodies.

Both bulk streams of a reservation (``relay.recv``: relay -> client, ``relay.send``:
client -> relay) carry a byte sequence of records; stream pieces do not align
with records, so :class:`RecordDecoder` reassembles them::

    record = kind (u8) || body
      kind 1 DATA    addr || length (u16, 1..16384) || datagram (length bytes)
      kind 2 CLOSED  addr              the relay forgot this source (relay -> client)
      kind 3 PING    (empty)           keepalive, either direction
    addr = family (u8: 4 or 6) || IP (4 or 16 bytes) || port (u16, 1..65535)

All integers are big-endian. Invariants: the decoder never holds more than one
incomplete record (at most :data:`MAX_RECORD` bytes) and raises
:class:`RelayWireError` on the first malformed byte (unknown kind or family,
zero or oversized length, port 0); encode/decode round-trip (property-tested).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from p2pstore.nat.relay.errors import RelayWireError

MAX_DATAGRAM = 16384  # largest relayed datagram; bigger size probes through a relay are dropped
KIND_DATA = 1
KIND_CLOSED = 2
KIND_PING = 3
MAX_RECORD = 1 + 1 + 16 + 2 + 2 + MAX_DATAGRAM
PING = bytes([KIND_PING])
_U16 = struct.Struct(">H")

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Data:
    addr: Addr
    datagram: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    addr: Addr


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Record = Data | Closed | Ping


def encode_addr(addr: Addr) -> bytes:
    host, port = addr
    if not 0 < port < 65536:
        raise RelayWireError(f"port {port} out of range")
    try:
        if ":" in host:
            return b"\x06" + socket.inet_pton(socket.AF_INET6, host) + _U16.pack(port)
        return b"\x04" + socket.inet_pton(socket.AF_INET, host) + _U16.pack(port)
    except OSError:
        raise RelayWireError(f"not a numeric IP address: {host!r}") from None


def encode_data(addr: Addr, datagram: bytes) -> bytes:
    n = len(datagram)
    if not 0 < n <= MAX_DATAGRAM:
        raise RelayWireError(f"datagram of {n} bytes (allowed 1..{MAX_DATAGRAM})")
    return b"\x01" + encode_addr(addr) + _U16.pack(n) + datagram


def encode_closed(addr: Addr) -> bytes:
    return b"\x02" + encode_addr(addr)


def encode(record: Record) -> bytes:
    if isinstance(record, Data):
        return encode_data(record.addr, record.datagram)
    if isinstance(record, Closed):
        return encode_closed(record.addr)
    return PING


class RecordDecoder:
    """Feed stream pieces, get whole records back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record held (always < MAX_RECORD)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Record]:
        buf = self._buf
        buf += data
        out: list[Record] = []
        pos = 0
        end = len(buf)
        while pos < end:
            kind = buf[pos]
            if kind == KIND_PING:
                out.append(Ping())
                pos += 1
                continue
            if kind not in (KIND_DATA, KIND_CLOSED):
                raise RelayWireError(f"unknown record kind {kind}")
            if pos + 2 > end:
                break
            family = buf[pos + 1]
            if family == 4:
                alen = 4
            elif family == 6:
                alen = 16
            else:
                raise RelayWireError(f"unknown address family {family}")
            head = pos + 2 + alen + 2  # end of the address
            if head > end:
                break
            ip = bytes(buf[pos + 2 : pos + 2 + alen])
            port = _U16.unpack_from(buf, pos + 2 + alen)[0]
            if port == 0:
                raise RelayWireError("port 0 in a record")
            host = socket.inet_ntop(socket.AF_INET if alen == 4 else socket.AF_INET6, ip)
            if kind == KIND_CLOSED:
                out.append(Closed((host, port)))
                pos = head
                continue
            if head + 2 > end:
                break
            n = _U16.unpack_from(buf, head)[0]
            if not 0 < n <= MAX_DATAGRAM:
                raise RelayWireError(f"datagram length {n} (allowed 1..{MAX_DATAGRAM})")
            if head + 2 + n > end:
                break
            out.append(Data((host, port), bytes(buf[head + 2 : head + 2 + n])))
            pos = head + 2 + n
        del buf[:pos]
        return out


# -- RPC bodies ----------------------------------------------------------------------
RESERVE = "relay.reserve"
RENEW = "relay.renew"
RELEASE = "relay.release"
RECV = "relay.recv"  # fetch: relay -> client records
SEND = "relay.send"  # upload: client -> relay records
MAX_RID = (1 << 63) - 1


def reservation_id(body: Any) -> int:
    """The ``id`` of a ``{"id": uint}`` request body or stream header."""
    if not isinstance(body, dict) or set(body) != {"id"}:
        raise RelayWireError('expected {"id": reservation id}')
    rid = body["id"]
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 < rid <= MAX_RID:
        raise RelayWireError("reservation id must be an integer 1..2^63-1")
    return rid


@dataclass(frozen=True, slots=True)
class ReserveReply:
    rid: int
    port: int
    ttl: float  # seconds the reservation lasts unless renewed
    host: str | None  # the relay's advertised host, if it knows one
    limits: dict[str, int | float]

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.rid,
            "port": self.port,
            "ttl": self.ttl,
            "limits": dict(self.limits),
        }
        if self.host is not None:
            body["host"] = self.host
        return body

    @classmethod
    def from_body(cls, body: Any) -> ReserveReply:
        if not isinstance(body, dict) or not {"id", "port", "ttl", "limits"} <= set(body):
            raise RelayWireError("reserve reply must have id, port, ttl, limits")
        if set(body) - {"id", "port", "ttl", "limits", "host"}:
            raise RelayWireError("unexpected keys in reserve reply")
        rid = reservation_id({"id": body["id"]})
        port, ttl, host, limits = body["port"], body["ttl"], body.get("host"), body["limits"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise RelayWireError("reserve reply port out of range")
        if not _positive_number(ttl):
            raise RelayWireError("reserve reply ttl must be a positive number")
        if host is not None and (not isinstance(host, str) or not 0 < len(host) <= 255):
            raise RelayWireError("reserve reply host must be a short string")
        if not isinstance(limits, dict) or len(limits) > 32:
            raise RelayWireError("reserve reply limits must be a small map")
        clean: dict[str, int | float] = {}
        for k, v in limits.items():
            if not isinstance(k, str) or not (_positive_number(v) or v == 0):
                raise RelayWireError("reserve reply limits must map names to numbers")
            clean[k] = v
        return cls(rid, port, float(ttl), host, clean)


def ttl_of(body: Any) -> float:
    """The ``ttl`` of a renew reply ``{"ttl": seconds}``."""
    if not isinstance(body, dict) or set(body) != {"ttl"} or not _positive_number(body["ttl"]):
        raise RelayWireError('renew reply must be {"ttl": positive number}')
    return float(body["ttl"])


def _positive_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and 0 < v < 1e12
