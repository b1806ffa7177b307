"""PortMapper against fake routers on 127.0.0.1 (real UDP and HTTP sockets, port 0):
PCP, the NAT-PMP fallback, UPnP IGD; refusals, garbage, silence, renewal, loss,
delete on close, and "no gateway" reported cleanly."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from p2pstore.nat.portmap.mapper import PortMapper, PortmapSettings
from p2pstore.nat.portmap.pmp import PcpMapRequest, encode_pcp_reply
from p2pstore.nat.portmap.upnp import ssdp_response_text
from p2pstore.testing.fake_gateway import FakeIgd, FakePmpGateway, igd_description

from .. import polling

HOST = "127.0.0.1"
FAST = (0.1, 0.2, 0.4)


async def until(cond: Callable[[], bool]) -> None:
    """:func:`tests.polling.until`, polled more often (the renewal timings here are
    tenths of a second)."""
    await polling.until(cond, within=8.0, step=0.02)


def make_mapper(port: int = 4433, **kw: Any) -> PortMapper:
    gateway = kw.pop("gateway", HOST)
    kw.setdefault("udp_timeouts", FAST)
    kw.setdefault("ssdp_wait", 0.8)
    kw.setdefault("http_timeout", 2.0)
    return PortMapper(
        port,
        internal_host=HOST,
        settings=PortmapSettings(**kw),
        gateway=lambda: gateway,
    )


async def mapped(pm: PortMapper) -> PortMapper:
    await pm.start()
    await asyncio.wait_for(pm.wait_first_attempt(), 10)
    return pm


@pytest.fixture
async def pmp() -> AsyncIterator[FakePmpGateway]:
    gw = FakePmpGateway()
    await gw.open()
    yield gw
    gw.close()


@pytest.fixture
async def igd() -> AsyncIterator[FakeIgd]:
    gw = FakeIgd()
    await gw.open()
    yield gw
    await gw.close()


def port_of(gw: FakePmpGateway) -> int:
    assert gw.transport is not None
    port: int = gw.transport.get_extra_info("sockname")[1]
    return port


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


# -- PCP / NAT-PMP ---------------------------------------------------------------------


async def test_pcp_maps_reports_and_deletes_on_close(pmp: FakePmpGateway) -> None:
    changes: list[object] = []
    pm = make_mapper(server_port=port_of(pmp), methods=("pcp",))
    pm.on_change = changes.append
    await mapped(pm)
    st = pm.status()
    assert st["state"] == "mapped" and st["method"] == "pcp", st
    assert st["external"] == "203.0.113.7:5433" and st["gateway"] == HOST
    assert st["internal"] == "127.0.0.1:4433" and st["lifetime"] == 7200
    assert st["external_is_private"] is True  # TEST-NET-3 is not a global address
    assert pm.mapped_address() == ("203.0.113.7", 5433) and changes == [("203.0.113.7", 5433)]
    assert pmp.mappings == {4433: 5433}
    kind, first = pmp.requests[0]
    assert kind == "pcp" and isinstance(first, PcpMapRequest)
    assert first.client_ip == HOST and first.lifetime == 7200 and first.internal_port == 4433
    await pm.close()
    assert pmp.mappings == {} and pm.mapped_address() is None and changes[-1] is None
    kind, last = pmp.requests[-1]
    assert isinstance(last, PcpMapRequest) and last.lifetime == 0 and last.nonce == first.nonce
    assert pm.status()["state"] == "closed"


async def test_nat_pmp_fallback_when_router_answers_version_0(pmp: FakePmpGateway) -> None:
    pmp.speaks = "nat-pmp"
    pm = await mapped(make_mapper(server_port=port_of(pmp), methods=("pcp",)))
    assert pm.status()["method"] == "nat-pmp"
    assert pm.mapped_address() == ("203.0.113.7", 5433)
    assert [k for k, _ in pmp.requests] == ["version", "nat-pmp-external", "nat-pmp-map"]
    assert pmp.requests[2][1] == (4433, 4433, 7200)  # suggests the internal port first
    await pm.close()
    assert pmp.requests[-1] == ("nat-pmp-map", (4433, 0, 0)) and pmp.mappings == {}


@pytest.mark.parametrize(
    ("speaks", "knob", "name"),
    [("pcp", "pcp_result", "NOT_AUTHORIZED (2)"), ("nat-pmp", "pmp_result", "NO_RESOURCES (4)")],
)
async def test_error_result_codes_make_mapping_unavailable(
    pmp: FakePmpGateway, speaks: str, knob: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    pmp.speaks = speaks
    setattr(pmp, knob, 2 if speaks == "pcp" else 4)
    caplog.set_level(logging.DEBUG, logger="p2pstore.nat")
    pm = await mapped(make_mapper(server_port=port_of(pmp), methods=("pcp",)))
    st = pm.status()
    assert st["state"] == "unavailable" and name in st["reason"], st
    assert pm.mapped_address() is None
    await pm.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_garbage_before_the_reply_is_ignored(pmp: FakePmpGateway) -> None:
    wrong_nonce = encode_pcp_reply(
        PcpMapRequest(b"\xee" * 12, HOST, 4433, 7200, 4433), external_ip="6.6.6.6"
    )
    pmp.garbage = [b"", b"\x02", b"\x02\x81" + b"\xff" * 2000, wrong_nonce, b"\x00" * 60]
    pm = await mapped(make_mapper(server_port=port_of(pmp), methods=("pcp",)))
    assert pm.mapped_address() == ("203.0.113.7", 5433)
    await pm.close()


@pytest.mark.parametrize(
    "reply",
    [b"\x02\x81" + b"\x00" * 1198, b"\x02\x81\x00\x00" + b"\x00" * 56, b"junk"],
    ids=["oversized", "zero-nonce", "junk"],
)
async def test_only_garbage_means_unavailable(pmp: FakePmpGateway, reply: bytes) -> None:
    pmp.replace_reply = reply
    pm = await mapped(make_mapper(server_port=port_of(pmp), methods=("pcp",)))
    st = pm.status()
    assert st["state"] == "unavailable" and "last reply refused" in st["reason"], st
    await pm.close()


async def test_silent_or_closed_port_gives_up_quickly(pmp: FakePmpGateway) -> None:
    pmp.silent = True
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pm = await mapped(make_mapper(server_port=port_of(pmp), methods=("pcp",)))
    assert loop.time() - t0 < 4.0 and "no answer" in pm.status()["reason"]
    await pm.close()
    pm = await mapped(make_mapper(server_port=closed_udp_port(), methods=("pcp",)))
    # ICMP port unreachable ends the exchange at once (not "no answer" after timeouts)
    st = pm.status()
    assert st["state"] == "unavailable" and "Connection refused" in st["reason"], st
    await pm.close()


async def test_renews_before_the_lifetime_ends(pmp: FakePmpGateway) -> None:
    pmp.grant_lifetime = 1
    pm = await mapped(
        make_mapper(server_port=port_of(pmp), methods=("pcp",), min_renew_interval=0.2)
    )
    assert pm.status()["lifetime"] == 1
    await until(lambda: pm.status()["renewals"] >= 2)
    assert pm.status()["state"] == "mapped"
    nonces = {r.nonce for k, r in pmp.requests if k == "pcp"}
    assert len(nonces) == 1  # a renewal is the same mapping (RFC 6887 section 11.2)
    ports = {r.suggested_external_port for k, r in pmp.requests[1:] if k == "pcp"}
    assert ports == {5433}  # and asks for the port it holds
    await pm.close()


async def test_nat_pmp_renewal_asks_for_the_port_held(pmp: FakePmpGateway) -> None:
    pmp.speaks, pmp.grant_lifetime = "nat-pmp", 1
    pm = await mapped(
        make_mapper(server_port=port_of(pmp), methods=("nat-pmp",), min_renew_interval=0.2)
    )
    await until(lambda: pm.status()["renewals"] >= 1)
    maps = [args for kind, args in pmp.requests if kind == "nat-pmp-map"]
    assert len(maps) >= 2 and maps[0] == (4433, 4433, 7200) and maps[1] == (4433, 5433, 7200)
    assert pm.status()["renewals"] >= 1 and pm.status()["method"] == "nat-pmp"
    await pm.close()


async def test_lost_mapping_is_reported_and_searched_again(pmp: FakePmpGateway) -> None:
    pmp.grant_lifetime = 1
    changes: list[object] = []
    pm = make_mapper(
        server_port=port_of(pmp), methods=("pcp",), min_renew_interval=0.2, retry_interval=0.3
    )
    pm.on_change = changes.append
    await mapped(pm)
    pmp.silent = True
    await until(lambda: pm.status()["state"] == "unavailable")
    st = pm.status()
    assert st["state"] == "unavailable" and pm.mapped_address() is None, st
    assert changes == [("203.0.113.7", 5433), None]
    pmp.silent = False  # the router is back: the periodic search finds it
    await until(lambda: pm.mapped_address() is not None)
    assert pm.mapped_address() == ("203.0.113.7", 5433) and pm.status()["attempts"] >= 2
    await pm.close()


async def test_local_errors_during_renewal_count_as_failed_renewals(
    pmp: FakePmpGateway, caplog: pytest.LogCaptureFixture
) -> None:
    pmp.grant_lifetime = 1
    changes: list[object] = []
    pm = make_mapper(
        server_port=port_of(pmp), methods=("pcp",), min_renew_interval=0.1, retry_interval=60
    )
    pm.on_change = changes.append
    await mapped(pm)
    assert pm._mapper is not None

    async def broken(lifetime: int) -> Any:
        raise OSError(101, "Network is unreachable")

    pm._mapper.map = broken  # type: ignore[method-assign]
    await until(lambda: len(changes) == 3)
    # renewals failed until the lease ran out: lost, then found again by a new search
    assert changes == [("203.0.113.7", 5433), None, ("203.0.113.7", 5433)]
    assert pm.status()["attempts"] == 2 and pm.status()["state"] == "mapped"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await pm.close()


# -- UPnP IGD --------------------------------------------------------------------------


def upnp_mapper(igd: FakeIgd, **kw: Any) -> PortMapper:
    return make_mapper(methods=("upnp",), ssdp_address=(HOST, igd.ssdp_port), **kw)


async def test_upnp_maps_and_deletes_on_close(igd: FakeIgd) -> None:
    pm = await mapped(upnp_mapper(igd))
    st = pm.status()
    assert st["state"] == "mapped" and st["method"] == "upnp", st
    assert pm.mapped_address() == ("203.0.113.9", 4433)
    assert igd.mappings == {4433: (HOST, 4433, 7200)}
    actions = [a for a, _ in igd.calls]
    assert actions == ["GetExternalIPAddress", "AddPortMapping"]
    add = igd.calls[1][1]
    assert add["NewProtocol"] == "UDP" and add["NewRemoteHost"] == ""
    assert add["NewPortMappingDescription"] == "p2pstore"
    await pm.close()
    assert igd.calls[-1][0] == "DeletePortMapping" and igd.mappings == {}


async def test_pcp_absent_then_upnp(igd: FakeIgd) -> None:
    pm = await mapped(
        make_mapper(
            methods=("pcp", "upnp"),
            server_port=closed_udp_port(),
            ssdp_address=(HOST, igd.ssdp_port),
        )
    )
    assert pm.status()["method"] == "upnp" and pm.mapped_address() == ("203.0.113.9", 4433)
    await pm.close()


async def test_upnp_conflict_tries_another_port(igd: FakeIgd) -> None:
    igd.faults = [718]
    pm = await mapped(upnp_mapper(igd))
    addr = pm.mapped_address()
    assert addr is not None and addr[1] != 4433 and list(igd.mappings) == [addr[1]]
    await pm.close()
    assert igd.mappings == {}


async def test_upnp_permanent_only_router(igd: FakeIgd) -> None:
    igd.permanent_only = True
    pm = await mapped(upnp_mapper(igd))
    assert pm.status()["lifetime"] == 0 and igd.mappings == {4433: (HOST, 4433, 0)}
    await pm.close()
    assert igd.mappings == {}  # permanent mappings must be deleted by us


async def test_upnp_renewal_re_adds_the_same_port(igd: FakeIgd) -> None:
    pm = await mapped(upnp_mapper(igd, lifetime=1, min_renew_interval=0.2))
    await until(lambda: pm.status()["renewals"] >= 1)
    adds = [args["NewExternalPort"] for a, args in igd.calls if a == "AddPortMapping"]
    assert len(adds) >= 2 and set(adds) == {"4433"} and pm.status()["renewals"] >= 1
    await pm.close()


@pytest.mark.parametrize(
    ("setup", "expect"),
    [
        (lambda g: setattr(g, "faults", [606]), "Action not authorized (606)"),
        (lambda g: setattr(g, "faults", [718, 718, 718, 718]), "ConflictInMappingEntry"),
        (lambda g: setattr(g, "external_ip", "0.0.0.0"), "no usable external address"),
        (lambda g: setattr(g, "external_ip", "not-an-ip"), "not IPv4"),
        (lambda g: setattr(g, "huge_body", True), "over 65536 bytes"),
        (lambda g: setattr(g, "location", "http://127.0.0.2:1/d.xml"), "not the gateway"),
        (lambda g: setattr(g, "location", "https://127.0.0.1/d.xml"), "only http"),
        (lambda g: setattr(g, "ssdp_reply", b"HTTP/1.1 200 OK\r\n\r\n"), "no LOCATION"),
        (
            lambda g: setattr(
                g, "ssdp_reply", ssdp_response_text(g.desc_url, "urn:x:device:MediaServer:1")
            ),
            "answer for 'urn:x:device:MediaServer:1'",
        ),
        (lambda g: setattr(g, "ssdp_reply", b"HTTP/1.1 200 OK\r\n" + b"x" * 5000), "max 4096"),
        (
            lambda g: setattr(g, "description", igd_description("http://10.0.0.1/ctl")),
            "not the gateway",
        ),
        (
            lambda g: setattr(g, "description", b'<!DOCTYPE r [<!ENTITY x "y">]><root>&x;</root>'),
            "DTD",
        ),
        (lambda g: setattr(g, "description", b"<root>"), "bad XML"),
    ],
    ids=[
        "refused",
        "conflicts",
        "no-wan-ip",
        "bad-wan-ip",
        "huge",
        "foreign-location",
        "https-location",
        "ssdp-garbage",
        "ssdp-other-device",
        "ssdp-oversized",
        "foreign-control",
        "dtd",
        "broken-xml",
    ],
)
async def test_upnp_failures_are_reasons_not_errors(
    igd: FakeIgd, setup: Any, expect: str, caplog: pytest.LogCaptureFixture
) -> None:
    setup(igd)
    caplog.set_level(logging.INFO, logger="p2pstore.nat")
    pm = await mapped(upnp_mapper(igd))
    st = pm.status()
    assert st["state"] == "unavailable" and expect in st["reason"], st
    assert pm.mapped_address() is None
    await pm.close()
    infos = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(infos) == 1 and infos[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_no_ssdp_answer(igd: FakeIgd) -> None:
    pm = await mapped(make_mapper(methods=("upnp",), ssdp_address=(HOST, closed_udp_port())))
    assert pm.status()["state"] == "unavailable"
    await pm.close()


# -- absence ---------------------------------------------------------------------------


async def test_no_gateway_is_unavailable_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="p2pstore.nat")
    pm = PortMapper(
        4433,
        settings=PortmapSettings(retry_interval=0.02),
        gateway=lambda: None,
    )
    await mapped(pm)
    await until(lambda: pm.status()["attempts"] >= 3)
    st = pm.status()
    assert st["state"] == "unavailable" and st["reason"] == "no IPv4 default gateway"
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "not an error" in infos[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await pm.close()


async def test_off_for_loopback_and_disabled() -> None:
    for host, enabled, why in (
        ("127.0.0.1", True, "loopback"),
        ("0.0.0.0", False, "disabled"),
    ):
        pm = PortMapper.for_node(host, 4433, enabled=enabled, lifetime=600)
        await pm.start()
        await asyncio.wait_for(pm.wait_first_attempt(), 0.1)
        st = pm.status()
        assert st["state"] == "off" and why in st["reason"] and pm.mapped_address() is None
        assert not pm._tasks  # no mapping loop was started
        await pm.close()
        assert pm.status()["state"] == "off"
    pm = PortMapper.for_node("192.168.5.5", 4433, enabled=True, lifetime=600)
    assert pm.internal_host == "192.168.5.5" and pm.settings.lifetime == 600 and pm.off is None
