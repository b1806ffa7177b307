"""Fake home routers on 127.0.0.1 for the port-mapping tests (real sockets, port 0).

:class:`FakePmpGateway` answers PCP (RFC 6887 MAP) and NAT-PMP (RFC 6886) on a UDP
port; :class:`FakeIgd` is a UPnP Internet Gateway Device: an SSDP responder (UDP)
plus an HTTP server for the device description and the WANIPConnection SOAP
control URL. Both keep a table of the mappings they hold and record every request,
and have knobs to misbehave (error result codes, garbage, silence, oversize).

Invariant: test-only helpers; they bind 127.0.0.1 port 0 and are closed by
``close()``. They share the client's codecs for the happy path, but tests also
hand-craft bytes so a bug in a codec cannot hide in both directions.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from p2pstore.nat.portmap.errors import MalformedReply
from p2pstore.nat.portmap.pmp import (
    PCP_VERSION,
    PMP_OP_EXTERNAL,
    PMP_OP_MAP_UDP,
    encode_pcp_reply,
    parse_pcp_request,
)
from p2pstore.nat.portmap.upnp import (
    parse_soap_call,
    soap_fault_text,
    soap_response_text,
    ssdp_response_text,
)

HOST = "127.0.0.1"


@dataclass
class FakePmpGateway(asyncio.DatagramProtocol):
    """``speaks``: "pcp" (PCP, and NAT-PMP for version 0 requests) or "nat-pmp"
    (answers PCP with NAT-PMP's unsupported-version reply)."""

    speaks: str = "pcp"
    external_ip: str = "203.0.113.7"
    grant_lifetime: int | None = None  # None: what was asked
    pcp_result: int = 0
    pmp_result: int = 0
    silent: bool = False
    garbage: list[bytes] = field(default_factory=list)  # sent before each real reply
    replace_reply: bytes | None = None  # sent instead of the real reply
    port_offset: int = 1000  # external = internal + offset
    epoch: int = 100
    requests: list[tuple[str, Any]] = field(default_factory=list)
    mappings: dict[int, int] = field(default_factory=dict)  # internal -> external
    transport: asyncio.DatagramTransport | None = None

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(HOST, 0))
        self.transport = transport
        port: int = transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self._answer(data)
        assert self.transport is not None
        if reply is None or self.silent:
            return
        for junk in self.garbage:
            self.transport.sendto(junk, addr)
        self.transport.sendto(self.replace_reply or reply, addr)

    def _answer(self, data: bytes) -> bytes | None:
        if not data:
            return None
        if data[0] == PCP_VERSION and self.speaks == "pcp":
            return self._pcp(data)
        if data[0] != 0:
            # RFC 6886 section 3.5: unsupported version, in NAT-PMP's format
            self.requests.append(("version", data[0]))
            return struct.pack(">BBHI", 0, 128 + (data[1] & 0x7F), 1, self.epoch)
        return self._pmp(data)

    def _pcp(self, data: bytes) -> bytes | None:
        try:
            req = parse_pcp_request(data)
        except MalformedReply:
            return None
        self.requests.append(("pcp", req))
        if self.pcp_result:
            return encode_pcp_reply(req, result=self.pcp_result, lifetime=30, epoch=self.epoch)
        if req.lifetime == 0:
            self.mappings.pop(req.internal_port, None)
            return encode_pcp_reply(req, lifetime=0, external_port=0, epoch=self.epoch)
        ext = self.mappings.setdefault(req.internal_port, req.internal_port + self.port_offset)
        life = req.lifetime if self.grant_lifetime is None else self.grant_lifetime
        return encode_pcp_reply(
            req, lifetime=life, epoch=self.epoch, external_port=ext, external_ip=self.external_ip
        )

    def _pmp(self, data: bytes) -> bytes | None:
        op = data[1] if len(data) > 1 else -1
        if op == PMP_OP_EXTERNAL and len(data) == 2:
            self.requests.append(("nat-pmp-external", None))
            if self.pmp_result:
                return struct.pack(">BBHI", 0, 128, self.pmp_result, self.epoch)
            ip = bytes(int(x) for x in self.external_ip.split("."))
            return struct.pack(">BBHI", 0, 128, 0, self.epoch) + ip
        if op == PMP_OP_MAP_UDP and len(data) == 12:
            _v, _op, _r, internal, suggested, lifetime = struct.unpack(">BBHHHI", data)
            self.requests.append(("nat-pmp-map", (internal, suggested, lifetime)))
            if self.pmp_result:
                return struct.pack(">BBHI", 0, 129, self.pmp_result, self.epoch)
            if lifetime == 0:
                self.mappings.pop(internal, None)
                return struct.pack(">BBHIHHI", 0, 129, 0, self.epoch, internal, 0, 0)
            ext = self.mappings.setdefault(internal, internal + self.port_offset)
            life = lifetime if self.grant_lifetime is None else self.grant_lifetime
            return struct.pack(">BBHIHHI", 0, 129, 0, self.epoch, internal, ext, life)
        return None


IGD_SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"


def igd_description(control_url: str, service: str = IGD_SERVICE, url_base: str = "") -> bytes:
    base = f"<URLBase>{url_base}</URLBase>" if url_base else ""
    return f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>{base}
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<friendlyName>Fake router</friendlyName>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service>
<serviceType>{service}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>{control_url}</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL>
<SCPDURL>/WANIPCn.xml</SCPDURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>
""".encode()


@dataclass
class FakeIgd(asyncio.DatagramProtocol):
    """An IGD on 127.0.0.1: ``ssdp_port`` answers M-SEARCH, ``http_port`` serves
    ``/rootDesc.xml`` and the control URL ``/ctl/IPConn``."""

    external_ip: str = "203.0.113.9"
    faults: list[int] = field(default_factory=list)  # AddPortMapping faults, in order
    description: bytes | None = None  # None: the standard one
    location: str | None = None  # None: our own description URL
    ssdp_reply: bytes | None = None  # None: a proper answer
    huge_body: bool = False
    permanent_only: bool = False
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    mappings: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # ext port
    searches: int = 0
    ssdp_port: int = 0
    http_port: int = 0
    transport: asyncio.DatagramTransport | None = None
    runner: web.AppRunner | None = None

    async def open(self) -> None:
        app = web.Application()
        app.router.add_get("/rootDesc.xml", self._desc)
        app.router.add_post("/ctl/IPConn", self._control)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0)
        await site.start()
        self.http_port = self.runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(HOST, 0))
        self.transport = transport
        self.ssdp_port = transport.get_extra_info("sockname")[1]

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def desc_url(self) -> str:
        return f"http://{HOST}:{self.http_port}/rootDesc.xml"

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not data.startswith(b"M-SEARCH * HTTP/1.1\r\n"):
            return
        self.searches += 1
        st = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
        reply = self.ssdp_reply or ssdp_response_text(self.location or self.desc_url, st)
        assert self.transport is not None
        self.transport.sendto(reply, addr)

    async def _desc(self, request: web.Request) -> web.StreamResponse:
        if self.huge_body:
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(200):
                await resp.write(b"<a>" + b"x" * 1000 + b"</a>")
            return resp
        return web.Response(
            body=self.description or igd_description("/ctl/IPConn"), content_type="text/xml"
        )

    async def _control(self, request: web.Request) -> web.Response:
        body = await request.read()
        action, args = parse_soap_call(body)
        soap_action = request.headers.get("SOAPAction", "")
        assert soap_action == f'"{IGD_SERVICE}#{action}"', soap_action
        self.calls.append((action, args))
        if action == "GetExternalIPAddress":
            values = {"NewExternalIPAddress": self.external_ip}
        elif action == "AddPortMapping":
            if self.permanent_only and args["NewLeaseDuration"] != "0":
                return self._fault(725, "OnlyPermanentLeasesSupported")
            if self.faults:
                return self._fault(self.faults.pop(0), "Refused")
            port = int(args["NewExternalPort"])
            self.mappings[port] = (
                args["NewInternalClient"],
                int(args["NewInternalPort"]),
                int(args["NewLeaseDuration"]),
            )
            values = {}
        elif action == "DeletePortMapping":
            port = int(args["NewExternalPort"])
            if port not in self.mappings:
                return self._fault(714, "NoSuchEntryInArray")
            del self.mappings[port]
            values = {}
        else:
            return self._fault(401, "Invalid Action")
        return web.Response(
            body=soap_response_text(action, IGD_SERVICE, values),
            content_type="text/xml",
        )

    def _fault(self, code: int, text: str) -> web.Response:
        return web.Response(status=500, body=soap_fault_text(code, text), content_type="text/xml")
