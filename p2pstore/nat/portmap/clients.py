"""The I/O side of port mapping: PCP, NAT-PMP and UPnP IGD clients for one UDP port.

Each client implements :class:`Mapper` (``map(lifetime) -> Lease``, ``unmap()``) and
keeps what a renewal needs (PCP nonce, granted external port, UPnP control URL).
The message formats and their validation live in :mod:`.pmp` and
:mod:`.upnp`; this module only moves bytes, with a timeout on every wait.

Invariants:
- UDP replies are read on a socket connected to the gateway's port; a datagram
  from any other address or port, and any reply the decoder refuses, is dropped
  and the wait goes on (RFC 6886 section 3.1); an ICMP port-unreachable ends the
  exchange at once ("no server").
- Retransmissions follow RFC 6886 section 3.1's doubling, but start at 250 ms and
  stop after the configured list of timeouts (default 0.25 + 0.5 + 1 s) instead of
  RFC 6887's 3 s / unbounded retries: a router that slow is treated as absent
  and tried again later, so a node never waits long on a missing feature.
- SSDP answers count only if they come from the gateway and name a ``LOCATION``
  on it; every HTTP exchange is plain HTTP to the gateway, proxies from the
  environment ignored, no redirects, no compression, at most
  :data:`~.upnp.MAX_XML` bytes read, within ``http_timeout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp

from p2pstore.nat.portmap.errors import (
    GatewayRefused,
    MalformedReply,
    NoAnswer,
    VersionMismatch,
    excerpt,
)
from p2pstore.nat.portmap.pmp import (
    PMP_OP_EXTERNAL,
    PMP_OP_MAP_UDP,
    SERVER_PORT,
    PcpFailure,
    PcpMapping,
    PcpMapRequest,
    PcpVersionMismatch,
    PmpExternalAddress,
    PmpFailure,
    PmpMapping,
    decode_pcp_reply,
    decode_pmp_reply,
    encode_pmp_external_request,
    encode_pmp_map_request,
)
from p2pstore.nat.portmap.upnp import (
    ERR_CONFLICT,
    ERR_PERMANENT_ONLY,
    ERR_SAME_PORT,
    IGD_DEVICE_TYPES,
    MAX_XML,
    SSDP_ADDRESS,
    GatewayUrl,
    IgdService,
    SsdpResponse,
    UpnpFault,
    build_msearch,
    build_soap,
    check_url,
    parse_description,
    parse_soap_response,
    parse_ssdp_response,
)

T = TypeVar("T")
DEFAULT_TIMEOUTS = (0.25, 0.5, 1.0)
MAX_DATAGRAMS = 256  # per exchange: what a flood of junk can cost us
_IGD_ST_WORDS = ("InternetGatewayDevice", "WANIPConnection", "WANPPPConnection")


@dataclass(frozen=True, slots=True)
class Lease:
    """A mapping the gateway granted: ``lifetime`` seconds (0: until deleted)."""

    method: str
    external_host: str
    external_port: int
    lifetime: int


class Mapper(Protocol):
    method: str

    async def map(self, lifetime: int) -> Lease: ...

    async def unmap(self) -> None: ...


def _check_external_ip(method: str, host: str) -> str:
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise MalformedReply(method, "external address is not IPv4") from None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise GatewayRefused(method, 0, f"no usable external address ({ip})")
    return str(ip)


# -- UDP request/response ----------------------------------------------------------------


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int], decode: Callable[[bytes], object], method: str):
        self.peer, self.decode, self.method = peer, decode, method
        self.result: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.refused: MalformedReply | None = None
        self.seen = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.seen += 1
        if self.result.done() or self.seen > MAX_DATAGRAMS:
            return
        if (addr[0], addr[1]) != self.peer:
            return
        try:
            value = self.decode(data)
        except MalformedReply as e:
            self.refused = e
            return
        self.result.set_result(value)

    def error_received(self, exc: Exception) -> None:
        if not self.result.done():
            why = getattr(exc, "strerror", None) or type(exc).__name__
            host, port = self.peer
            self.result.set_exception(NoAnswer(self.method, f"{host}:{port}: {why}"))


async def udp_exchange(
    peer: tuple[str, int],
    request: bytes,
    decode: Callable[[bytes], T],
    *,
    method: str,
    timeouts: Sequence[float] = DEFAULT_TIMEOUTS,
    local_host: str | None = None,
) -> T:
    """Send ``request`` to ``peer`` and return the first reply ``decode`` accepts,
    retransmitting after each timeout; :class:`NoAnswer` when none did."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Exchange(peer, decode, method),
            remote_addr=peer,
            local_addr=(local_host, 0) if local_host else None,
        )
    except OSError as e:
        raise NoAnswer(method, f"cannot reach {peer[0]}:{peer[1]}: {e.strerror or e}") from None
    try:
        for timeout in timeouts:
            transport.sendto(request)
            done, _ = await asyncio.wait({proto.result}, timeout=timeout)
            if done:
                return proto.result.result()  # type: ignore[return-value]
        detail = f" (last reply refused: {proto.refused.reason})" if proto.refused else ""
        raise NoAnswer(method, f"no answer from {peer[0]}:{peer[1]}{detail}")
    finally:
        transport.close()
        if not proto.result.done():
            proto.result.cancel()


# -- PCP and NAT-PMP ---------------------------------------------------------------------


class PcpMapper:
    """PCP MAP for one UDP port (RFC 6887 section 11); the nonce is kept for renewals
    and the delete, the granted port and address are suggested again on renewal."""

    method = "pcp"

    def __init__(
        self,
        gateway: str,
        client_ip: str,
        internal_port: int,
        *,
        server_port: int = SERVER_PORT,
        timeouts: Sequence[float] = DEFAULT_TIMEOUTS,
    ) -> None:
        self.peer = (gateway, server_port)
        self.client_ip = client_ip
        self.internal_port = internal_port
        self.timeouts = timeouts
        self.nonce = os.urandom(12)
        self._port = internal_port
        self._ip: str | None = None

    async def _send(self, lifetime: int) -> PcpMapping | PcpFailure | PcpVersionMismatch:
        req = PcpMapRequest(
            self.nonce, self.client_ip, self.internal_port, lifetime, self._port, self._ip
        )
        return await udp_exchange(
            self.peer,
            req.encode(),
            lambda d: decode_pcp_reply(d, req),
            method=self.method,
            timeouts=self.timeouts,
            local_host=self.client_ip,
        )

    async def map(self, lifetime: int) -> Lease:
        reply = await self._send(lifetime)
        if isinstance(reply, PcpVersionMismatch):
            raise VersionMismatch(self.method, reply.server_version)
        if isinstance(reply, PcpFailure):
            raise GatewayRefused(self.method, reply.result, reply.name)
        ip = _check_external_ip(self.method, reply.external_ip)
        self._port, self._ip = reply.external_port, ip
        return Lease(self.method, ip, self._port, reply.lifetime)

    async def unmap(self) -> None:
        reply = await self._send(0)
        if isinstance(reply, PcpFailure):
            raise GatewayRefused(self.method, reply.result, reply.name)


class PmpMapper:
    """NAT-PMP (RFC 6886): external address request, then a UDP mapping request."""

    method = "nat-pmp"

    def __init__(
        self,
        gateway: str,
        internal_port: int,
        *,
        local_host: str | None = None,
        server_port: int = SERVER_PORT,
        timeouts: Sequence[float] = DEFAULT_TIMEOUTS,
    ) -> None:
        self.peer = (gateway, server_port)
        self.internal_port = internal_port
        self.local_host = local_host
        self.timeouts = timeouts
        self._port = internal_port

    async def _exchange(self, request: bytes, opcode: int) -> PmpExternalAddress | PmpMapping:
        port = self.internal_port if opcode == PMP_OP_MAP_UDP else None
        reply = await udp_exchange(
            self.peer,
            request,
            lambda d: decode_pmp_reply(d, opcode, port),
            method=self.method,
            timeouts=self.timeouts,
            local_host=self.local_host,
        )
        if isinstance(reply, PmpFailure):
            raise GatewayRefused(self.method, reply.result, reply.name)
        return reply

    async def map(self, lifetime: int) -> Lease:
        ext = await self._exchange(encode_pmp_external_request(), PMP_OP_EXTERNAL)
        assert isinstance(ext, PmpExternalAddress)
        ip = _check_external_ip(self.method, ext.address)
        request = encode_pmp_map_request(self.internal_port, self._port, lifetime)
        m = await self._exchange(request, PMP_OP_MAP_UDP)
        assert isinstance(m, PmpMapping)
        if not m.lifetime:
            raise GatewayRefused(self.method, 0, "mapping granted with lifetime 0")
        self._port = m.external_port
        return Lease(self.method, ip, m.external_port, m.lifetime)

    async def unmap(self) -> None:
        # RFC 6886 section 3.4: lifetime 0 and suggested external port 0 delete it
        await self._exchange(encode_pmp_map_request(self.internal_port, 0, 0), PMP_OP_MAP_UDP)


# -- UPnP IGD ----------------------------------------------------------------------------


class _Ssdp(asyncio.DatagramProtocol):
    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.result: asyncio.Future[tuple[SsdpResponse, GatewayUrl]] = (
            asyncio.get_running_loop().create_future()
        )
        self.refused: MalformedReply | None = None
        self.send_error: OSError | None = None
        self.seen = 0

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.seen += 1
        if self.result.done() or self.seen > MAX_DATAGRAMS or addr[0] != self.gateway:
            return
        try:
            resp = parse_ssdp_response(data)
            if not any(kind in resp.st for kind in _IGD_ST_WORDS):
                # e.g. a media server on the router: not the device we asked for
                raise MalformedReply("ssdp", f"answer for {excerpt(resp.st)}")
            url = check_url(resp.location, self.gateway)
        except MalformedReply as e:
            self.refused = e
            return
        self.result.set_result((resp, url))

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.send_error = exc


async def ssdp_search(
    gateway: str,
    *,
    local_host: str | None = None,
    ssdp_address: tuple[str, int] = SSDP_ADDRESS,
    wait: float = 1.5,
) -> tuple[SsdpResponse, GatewayUrl]:
    """M-SEARCH for an IGD; the first valid answer from the gateway wins."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if local_host:
            sock.bind((local_host, 0))
        if ipaddress.IPv4Address(ssdp_address[0]).is_multicast:
            # UDA 1.1 section 1.1.2: TTL 2 by default; leave on our interface to the router
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            if local_host:
                sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local_host)
                )
        transport, proto = await loop.create_datagram_endpoint(lambda: _Ssdp(gateway), sock=sock)
    except OSError as e:
        sock.close()
        raise NoAnswer("upnp", f"cannot send an SSDP search: {e.strerror or e}") from None
    try:
        for _round in range(2):  # once more halfway through, in case a datagram was lost
            for st in IGD_DEVICE_TYPES:
                transport.sendto(build_msearch(st, mx=1), ssdp_address)
            done, _ = await asyncio.wait({proto.result}, timeout=wait / 2)
            if done:
                return proto.result.result()
        if proto.refused is not None:
            raise NoAnswer("upnp", f"no usable SSDP answer (last refused: {proto.refused.reason})")
        if proto.send_error is not None:
            why = proto.send_error.strerror or proto.send_error
            raise NoAnswer("upnp", f"cannot send an SSDP search: {why}")
        raise NoAnswer("upnp", "no Internet Gateway Device answered the SSDP search")
    finally:
        transport.close()
        if not proto.result.done():
            proto.result.cancel()


async def http_request(
    url: GatewayUrl,
    *,
    timeout: float,  # noqa: ASYNC109 (the whole exchange, connect to last byte)
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """GET (or POST ``body``) ``url``; status and at most MAX_XML bytes of body."""
    hdrs = {"Accept-Encoding": "identity", "Connection": "close", **(headers or {})}
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout),
                auto_decompress=False,
                trust_env=False,
            ) as session,
            session.request(
                "GET" if body is None else "POST",
                str(url),
                data=body,
                headers=hdrs,
                allow_redirects=False,
            ) as resp,
        ):
            if resp.content_length is not None and resp.content_length > MAX_XML:
                raise MalformedReply("upnp", f"HTTP body of {resp.content_length} bytes")
            if resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
                raise MalformedReply("upnp", "compressed HTTP body")
            data = bytearray()
            while chunk := await resp.content.read(16384):
                data += chunk
                if len(data) > MAX_XML:
                    raise MalformedReply("upnp", f"HTTP body over {MAX_XML} bytes")
            return resp.status, bytes(data)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise NoAnswer("upnp", f"HTTP {url}: {type(e).__name__} {e}"[:200]) from None


async def discover_igd(
    gateway: str,
    *,
    local_host: str | None = None,
    ssdp_address: tuple[str, int] = SSDP_ADDRESS,
    ssdp_wait: float = 1.5,
    http_timeout: float = 3.0,
) -> IgdService:
    """SSDP search, then the device description: the gateway's WAN connection service."""
    _resp, location = await ssdp_search(
        gateway, local_host=local_host, ssdp_address=ssdp_address, wait=ssdp_wait
    )
    status, body = await http_request(location, timeout=http_timeout)
    if status != 200:
        raise MalformedReply("upnp", f"device description: HTTP status {status}")
    return parse_description(body, str(location), gateway)


class UpnpMapper:
    """AddPortMapping / DeletePortMapping / GetExternalIPAddress on an IGD service."""

    method = "upnp"
    RANDOM_PORT_TRIES = 3

    def __init__(
        self,
        service: IgdService,
        internal_client: str,
        internal_port: int,
        *,
        http_timeout: float = 3.0,
        description: str = "p2pstore",
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.internal_client = internal_client
        self.internal_port = internal_port
        self.http_timeout = http_timeout
        self.description = description
        self.rng = rng or random.Random()
        self.external_port: int | None = None
        self.permanent_only = False

    async def call(self, action: str, args: list[tuple[str, str]]) -> dict[str, str]:
        req = build_soap(self.service.service_type, action, args)
        status, body = await http_request(
            self.service.control, timeout=self.http_timeout, body=req.body, headers=req.headers
        )
        if status not in (200, 500):
            raise MalformedReply(self.method, f"{action}: HTTP status {status}")
        values = parse_soap_response(body, action)  # raises UpnpFault for a fault
        if status != 200:
            raise MalformedReply(self.method, f"{action}: HTTP status 500 without a fault")
        return values

    async def external_ip(self) -> str:
        values = await self.call("GetExternalIPAddress", [])
        return _check_external_ip(self.method, values.get("NewExternalIPAddress", ""))

    async def _add(self, port: int, lease: int) -> None:
        await self.call(
            "AddPortMapping",
            [
                ("NewRemoteHost", ""),
                ("NewExternalPort", str(port)),
                ("NewProtocol", "UDP"),
                ("NewInternalPort", str(self.internal_port)),
                ("NewInternalClient", self.internal_client),
                ("NewEnabled", "1"),
                ("NewPortMappingDescription", self.description),
                ("NewLeaseDuration", str(lease)),
            ],
        )

    async def map(self, lifetime: int) -> Lease:
        ip = await self.external_ip()
        if self.external_port is not None:
            ports = [self.external_port]
        else:
            ports = [self.internal_port] + [
                self.rng.randrange(1024, 65536) for _ in range(self.RANDOM_PORT_TRIES)
            ]
        last: UpnpFault | None = None
        for port in ports:
            lease = 0 if self.permanent_only else lifetime
            try:
                try:
                    await self._add(port, lease)
                except UpnpFault as f:
                    if f.code != ERR_PERMANENT_ONLY or not lease:
                        raise
                    # IGD:1 routers may only grant permanent leases; we delete at close
                    self.permanent_only, lease = True, 0
                    await self._add(port, lease)
            except UpnpFault as f:
                last = f
                if f.code == ERR_CONFLICT and self.external_port is None:
                    continue  # taken by someone else: try another external port
                if f.code == ERR_SAME_PORT:
                    break  # only external == internal works, and that one failed
                raise
            self.external_port = port
            return Lease(self.method, ip, port, lease)
        assert last is not None
        raise last

    async def unmap(self) -> None:
        if self.external_port is None:
            return
        await self.call(
            "DeletePortMapping",
            [
                ("NewRemoteHost", ""),
                ("NewExternalPort", str(self.external_port)),
                ("NewProtocol", "UDP"),
            ],
        )
