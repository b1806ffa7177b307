"""NAT-PMP (RFC 6886) and PCP (RFC 6887) messages for mapping one UDP port: sans-I/O.

Encoders build the exact request bytes; decoders take one received datagram and
either return a frozen reply dataclass or raise
:class:`~p2pstore.nat.portmap.errors.MalformedReply`. No sockets here.

Invariants:
- Decoders never read past the datagram: every length is checked before a field
  is unpacked, PCP options are walked with their declared lengths bounded by what
  remains, and datagrams longer than :data:`MAX_DATAGRAM` (PCP's 1100-byte limit,
  RFC 6887 section 7) are refused outright.
- A reply is accepted only if it answers *our* request: right version, the
  response bit/opcode of the request, and for success the same protocol, internal
  port and (PCP) the 96-bit mapping nonce we sent (RFC 6887 section 11.3). The
  caller also checks the datagram came from the gateway's address and port 5351.
- Result codes other than success become ``PmpFailure`` / ``PcpFailure``;
  a NAT-PMP-only server answering our PCP request (version 0, result 1) becomes
  ``PcpVersionMismatch`` so the client can fall back (RFC 6887 section 9).
- Only IPv4 is mapped (the node's QUIC port behind a home IPv4 NAT); PCP carries
  IPv4 addresses as IPv4-mapped IPv6 ``::ffff:a.b.c.d`` (RFC 6887 section 5).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from p2pstore.nat.portmap.errors import MalformedReply

SERVER_PORT = 5351  # RFC 6886 section 3.1, RFC 6887 section 19.1
MAX_DATAGRAM = 1100  # RFC 6887 section 7: the largest PCP message
NATPMP_VERSION = 0
PCP_VERSION = 2
PROTO_UDP = 17
MAX_LIFETIME = 0xFFFFFFFF

# RFC 6886 section 3.2 / 3.3: opcodes; replies carry 128 + opcode
PMP_OP_EXTERNAL = 0
PMP_OP_MAP_UDP = 1
PMP_RESULTS = {
    0: "SUCCESS",
    1: "UNSUPP_VERSION",
    2: "NOT_AUTHORIZED",
    3: "NETWORK_FAILURE",
    4: "NO_RESOURCES",
    5: "UNSUPP_OPCODE",
}

# RFC 6887 section 19.2 / 7.4
PCP_OP_MAP = 1
PCP_RESULTS = {
    0: "SUCCESS",
    1: "UNSUPP_VERSION",
    2: "NOT_AUTHORIZED",
    3: "MALFORMED_REQUEST",
    4: "UNSUPP_OPCODE",
    5: "UNSUPP_OPTION",
    6: "MALFORMED_OPTION",
    7: "NETWORK_FAILURE",
    8: "NO_RESOURCES",
    9: "UNSUPP_PROTOCOL",
    10: "USER_EX_QUOTA",
    11: "CANNOT_PROVIDE_EXTERNAL",
    12: "ADDRESS_MISMATCH",
    13: "EXCESSIVE_REMOTE_PEERS",
}
PCP_NONCE_BYTES = 12
PCP_HEADER = 24
PCP_MAP_PAYLOAD = 36
_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def result_name(table: dict[int, str], code: int) -> str:
    return table.get(code, f"result {code}")


def _check_port(name: str, port: int, *, allow_zero: bool) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"{name} {port} is out of range")


def _check_lifetime(lifetime: int) -> None:
    if not 0 <= lifetime <= MAX_LIFETIME:
        raise ValueError(f"lifetime {lifetime} is out of range 0..{MAX_LIFETIME}")


def _v4_mapped(host: str | None) -> bytes:
    """``::ffff:a.b.c.d`` for an IPv4 host; ``::ffff:0.0.0.0`` (no preference) for None."""
    addr = ipaddress.IPv4Address(host or "0.0.0.0")
    return _V4_MAPPED_PREFIX + addr.packed


def _from_v4_mapped(raw: bytes, what: str) -> str:
    if raw[:12] != _V4_MAPPED_PREFIX:
        raise MalformedReply("pcp", f"{what} is not an IPv4-mapped address")
    return str(ipaddress.IPv4Address(raw[12:16]))


# -- NAT-PMP ---------------------------------------------------------------------------


def encode_pmp_external_request() -> bytes:
    """RFC 6886 section 3.2: version 0, opcode 0."""
    return bytes([NATPMP_VERSION, PMP_OP_EXTERNAL])


def encode_pmp_map_request(internal_port: int, suggested_port: int, lifetime: int) -> bytes:
    """RFC 6886 section 3.3: a UDP mapping request (12 bytes). Lifetime 0 with
    external port 0 deletes the mapping (section 3.4)."""
    _check_port("internal port", internal_port, allow_zero=False)
    _check_port("external port", suggested_port, allow_zero=True)
    _check_lifetime(lifetime)
    return struct.pack(
        ">BBHHHI", NATPMP_VERSION, PMP_OP_MAP_UDP, 0, internal_port, suggested_port, lifetime
    )


@dataclass(frozen=True, slots=True)
class PmpFailure:
    """A NAT-PMP reply with a non-zero result code (RFC 6886 section 3.5)."""

    opcode: int
    result: int
    epoch: int

    @property
    def name(self) -> str:
        return result_name(PMP_RESULTS, self.result)


@dataclass(frozen=True, slots=True)
class PmpExternalAddress:
    epoch: int
    address: str  # dotted IPv4; "0.0.0.0" means the router has none yet


@dataclass(frozen=True, slots=True)
class PmpMapping:
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


def decode_pmp_reply(
    data: bytes, opcode: int, internal_port: int | None = None
) -> PmpExternalAddress | PmpMapping | PmpFailure:
    """Decode a NAT-PMP reply to a request with ``opcode``; for a mapping reply the
    internal port must be ``internal_port``."""
    if len(data) < 8 or len(data) > 16:
        raise MalformedReply("nat-pmp", f"reply of {len(data)} bytes (expected 8..16)")
    version, op, result, epoch = struct.unpack_from(">BBHI", data)
    if version != NATPMP_VERSION:
        raise MalformedReply("nat-pmp", f"reply version {version}")
    if op != 128 + opcode:
        raise MalformedReply("nat-pmp", f"reply opcode {op} (expected {128 + opcode})")
    if result != 0:
        return PmpFailure(opcode, result, epoch)
    if opcode == PMP_OP_EXTERNAL:
        if len(data) != 12:
            raise MalformedReply("nat-pmp", f"external-address reply of {len(data)} bytes")
        return PmpExternalAddress(epoch, str(ipaddress.IPv4Address(data[8:12])))
    if opcode != PMP_OP_MAP_UDP:
        raise ValueError(f"unknown NAT-PMP opcode {opcode}")
    if len(data) != 16:
        raise MalformedReply("nat-pmp", f"mapping reply of {len(data)} bytes")
    internal, external, lifetime = struct.unpack_from(">HHI", data, 8)
    if internal_port is not None and internal != internal_port:
        raise MalformedReply("nat-pmp", f"reply for internal port {internal}")
    if lifetime and not external:
        raise MalformedReply("nat-pmp", "mapping reply with external port 0")
    return PmpMapping(epoch, internal, external, lifetime)


# -- PCP -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PcpMapRequest:
    """A PCP MAP request for UDP (RFC 6887 sections 7.1 and 11.1), no options.
    Lifetime 0 deletes the mapping with this nonce (section 15)."""

    nonce: bytes
    client_ip: str
    internal_port: int
    lifetime: int
    suggested_external_port: int = 0
    suggested_external_ip: str | None = None

    def __post_init__(self) -> None:
        if len(self.nonce) != PCP_NONCE_BYTES:
            raise ValueError(f"PCP nonce must be {PCP_NONCE_BYTES} bytes")
        _check_port("internal port", self.internal_port, allow_zero=False)
        _check_port("external port", self.suggested_external_port, allow_zero=True)
        _check_lifetime(self.lifetime)
        ipaddress.IPv4Address(self.client_ip)  # ValueError if not IPv4
        if self.suggested_external_ip is not None:
            ipaddress.IPv4Address(self.suggested_external_ip)

    def encode(self) -> bytes:
        header = struct.pack(">BBHI", PCP_VERSION, PCP_OP_MAP, 0, self.lifetime) + _v4_mapped(
            self.client_ip
        )
        payload = (
            self.nonce
            + struct.pack(">B3xHH", PROTO_UDP, self.internal_port, self.suggested_external_port)
            + _v4_mapped(self.suggested_external_ip)
        )
        return header + payload


@dataclass(frozen=True, slots=True)
class PcpFailure:
    """A PCP reply with a non-zero result code; ``lifetime`` says how long the error
    holds (RFC 6887 section 7.2)."""

    result: int
    lifetime: int
    epoch: int

    @property
    def name(self) -> str:
        return result_name(PCP_RESULTS, self.result)


@dataclass(frozen=True, slots=True)
class PcpVersionMismatch:
    """The server speaks another version (0: a NAT-PMP server; RFC 6887 section 9)."""

    server_version: int


@dataclass(frozen=True, slots=True)
class PcpMapping:
    lifetime: int
    epoch: int
    internal_port: int
    external_port: int
    external_ip: str
    options: tuple[int, ...]  # option codes seen (their contents are not used)


def _walk_options(data: bytes, start: int) -> tuple[int, ...]:
    """Option codes in ``data[start:]``; each is code, reserved, 16-bit length, then
    the data padded to 4 bytes (RFC 6887 section 7.3)."""
    codes = []
    pos = start
    while pos < len(data):
        if len(data) - pos < 4:
            raise MalformedReply("pcp", "truncated option header")
        code, _reserved, length = struct.unpack_from(">BBH", data, pos)
        padded = (length + 3) & ~3
        if padded > len(data) - pos - 4:
            raise MalformedReply("pcp", f"option {code} of {length} bytes overruns the reply")
        codes.append(code)
        pos += 4 + padded
    return tuple(codes)


def decode_pcp_reply(
    data: bytes, request: PcpMapRequest
) -> PcpMapping | PcpFailure | PcpVersionMismatch:
    """Decode the reply to ``request`` (raises MalformedReply for anything else)."""
    if len(data) > MAX_DATAGRAM:
        raise MalformedReply("pcp", f"reply of {len(data)} bytes (max {MAX_DATAGRAM})")
    if len(data) < 4:
        raise MalformedReply("pcp", f"reply of {len(data)} bytes")
    version = data[0]
    if version != PCP_VERSION:
        # a NAT-PMP server answers any version but 0 with its own 8-byte
        # "unsupported version" reply (RFC 6886 section 3.5, RFC 6887 section 9)
        if version == NATPMP_VERSION and 8 <= len(data) <= 16 and data[2:4] == b"\x00\x01":
            return PcpVersionMismatch(0)
        if len(data) >= PCP_HEADER and data[3] == 1:
            return PcpVersionMismatch(version)
        raise MalformedReply("pcp", f"reply version {version}")
    if len(data) < PCP_HEADER or len(data) % 4:
        raise MalformedReply("pcp", f"reply of {len(data)} bytes (need 24+, a multiple of 4)")
    if not data[1] & 0x80:
        raise MalformedReply("pcp", "a request, not a response (R bit clear)")
    if data[1] & 0x7F != PCP_OP_MAP:
        raise MalformedReply("pcp", f"reply opcode {data[1] & 0x7F} (expected MAP)")
    result = data[3]
    lifetime, epoch = struct.unpack_from(">II", data, 4)
    full = len(data) >= PCP_HEADER + PCP_MAP_PAYLOAD
    if full:
        nonce = data[PCP_HEADER : PCP_HEADER + PCP_NONCE_BYTES]
        if nonce != request.nonce:
            raise MalformedReply("pcp", "reply nonce does not match the request")
    if result != 0:
        return PcpFailure(result, lifetime, epoch)
    if not full:
        raise MalformedReply("pcp", f"MAP reply of {len(data)} bytes (need 60+)")
    proto, internal, external = struct.unpack_from(">B3xHH", data, PCP_HEADER + 12)
    if proto != PROTO_UDP:
        raise MalformedReply("pcp", f"reply for protocol {proto}")
    if internal != request.internal_port:
        raise MalformedReply("pcp", f"reply for internal port {internal}")
    if request.lifetime and (not lifetime or not external):
        raise MalformedReply("pcp", "successful MAP reply without a mapping")
    ip = _from_v4_mapped(data[PCP_HEADER + 20 : PCP_HEADER + 36], "assigned external address")
    options = _walk_options(data, PCP_HEADER + PCP_MAP_PAYLOAD)
    return PcpMapping(lifetime, epoch, internal, external, ip, options)


def encode_pcp_reply(
    request: PcpMapRequest,
    *,
    result: int = 0,
    lifetime: int | None = None,
    epoch: int = 0,
    external_port: int | None = None,
    external_ip: str = "0.0.0.0",
    options: bytes = b"",
) -> bytes:
    """A server's reply to ``request`` (used by the fake routers in tests and the
    round-trip property tests)."""
    lt = request.lifetime if lifetime is None else lifetime
    ext = request.suggested_external_port if external_port is None else external_port
    header = struct.pack(">BBBBII", PCP_VERSION, 0x80 | PCP_OP_MAP, 0, result, lt, epoch)
    payload = (
        request.nonce
        + struct.pack(">B3xHH", PROTO_UDP, request.internal_port, ext)
        + _v4_mapped(external_ip)
    )
    return header + b"\x00" * 12 + payload + options


def parse_pcp_request(data: bytes) -> PcpMapRequest:
    """The server side of :meth:`PcpMapRequest.encode` (fake routers, round trips)."""
    if len(data) < PCP_HEADER + PCP_MAP_PAYLOAD or data[0] != PCP_VERSION:
        raise MalformedReply("pcp", "not a PCP MAP request")
    if data[1] != PCP_OP_MAP:
        raise MalformedReply("pcp", f"opcode {data[1]}")
    (lifetime,) = struct.unpack_from(">I", data, 4)
    client = _from_v4_mapped(data[8:24], "client address")
    nonce = data[PCP_HEADER : PCP_HEADER + PCP_NONCE_BYTES]
    proto, internal, external = struct.unpack_from(">B3xHH", data, PCP_HEADER + 12)
    if proto != PROTO_UDP:
        raise MalformedReply("pcp", f"protocol {proto}")
    suggested = _from_v4_mapped(data[PCP_HEADER + 20 : PCP_HEADER + 36], "suggested address")
    try:
        return PcpMapRequest(
            nonce,
            client,
            internal,
            lifetime,
            external,
            None if suggested == "0.0.0.0" else suggested,
        )
    except ValueError as e:
        raise MalformedReply("pcp", str(e)) from None
