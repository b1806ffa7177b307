"""Port mapping, sans-I/O: NAT-PMP / PCP codecs, SSDP / description / SOAP parsing,
URL checks, the routing-table parser and the renewal schedule. Fuzzed decoders."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.nat.portmap.errors import MalformedReply, excerpt
from p2pstore.nat.portmap.mapper import off_reason, renew_delay
from p2pstore.nat.portmap.pmp import (
    PcpFailure,
    PcpMapping,
    PcpMapRequest,
    PcpVersionMismatch,
    PmpExternalAddress,
    PmpFailure,
    PmpMapping,
    decode_pcp_reply,
    decode_pmp_reply,
    encode_pcp_reply,
    encode_pmp_external_request,
    encode_pmp_map_request,
    parse_pcp_request,
)
from p2pstore.nat.portmap.route import parse_proc_net_route
from p2pstore.nat.portmap.upnp import (
    MAX_XML,
    UpnpFault,
    build_msearch,
    build_soap,
    check_url,
    parse_description,
    parse_soap_call,
    parse_soap_response,
    parse_ssdp_response,
    parse_xml,
    soap_fault_text,
    soap_response_text,
    ssdp_response_text,
)
from p2pstore.testing.fake_gateway import IGD_SERVICE, igd_description

NONCE = bytes(range(12))
GW = "192.168.1.1"


def req(lifetime: int = 7200, port: int = 4433) -> PcpMapRequest:
    return PcpMapRequest(NONCE, "192.168.1.10", port, lifetime, port)


# -- NAT-PMP ---------------------------------------------------------------------------


def test_pmp_requests_are_the_rfc_bytes() -> None:
    assert encode_pmp_external_request() == b"\x00\x00"
    assert encode_pmp_map_request(4433, 4434, 7200) == bytes.fromhex("0001 0000 1151 1152 00001c20")
    with pytest.raises(ValueError):
        encode_pmp_map_request(0, 1, 1)
    with pytest.raises(ValueError):
        encode_pmp_map_request(1, 70000, 1)
    with pytest.raises(ValueError):
        encode_pmp_map_request(1, 1, -1)


def test_pmp_replies_decode_and_validate() -> None:
    ext = struct.pack(">BBHI", 0, 128, 0, 55) + bytes([203, 0, 113, 7])
    assert decode_pmp_reply(ext, 0) == PmpExternalAddress(55, "203.0.113.7")
    m = struct.pack(">BBHIHHI", 0, 129, 0, 56, 4433, 5433, 3600)
    assert decode_pmp_reply(m, 1, 4433) == PmpMapping(56, 4433, 5433, 3600)
    fail = struct.pack(">BBHI", 0, 129, 2, 57)
    reply = decode_pmp_reply(fail, 1, 4433)
    assert reply == PmpFailure(1, 2, 57) and isinstance(reply, PmpFailure)
    assert reply.name == "NOT_AUTHORIZED"
    bad = [
        (ext[:7], 0),  # short
        (ext + b"\x00" * 5, 0),  # over 16 bytes
        (b"\x01" + ext[1:], 0),  # version
        (ext[:1] + b"\x81" + ext[2:], 0),  # a mapping reply to an address request
        (ext + b"\x00", 0),  # external reply with a trailing byte
        (m[:15], 1),  # truncated mapping
        (struct.pack(">BBHIHHI", 0, 129, 0, 56, 9999, 5433, 3600), 1),  # other port
        (struct.pack(">BBHIHHI", 0, 129, 0, 56, 4433, 0, 3600), 1),  # granted port 0
    ]
    for data, opcode in bad:
        with pytest.raises(MalformedReply):
            decode_pmp_reply(data, opcode, 4433)


@given(st.binary(max_size=40), st.sampled_from([0, 1]), st.integers(0, 65535))
@settings(max_examples=100, deadline=None)
def test_fuzz_pmp_decoder(data: bytes, opcode: int, port: int) -> None:
    try:
        reply = decode_pmp_reply(data, opcode, port)
    except MalformedReply:
        return
    assert len(data) <= 16
    if isinstance(reply, PmpMapping):
        assert reply.internal_port == port and (reply.external_port or not reply.lifetime)


# -- PCP -------------------------------------------------------------------------------


def test_pcp_request_layout() -> None:
    data = req().encode()
    assert len(data) == 60
    assert data[:4] == bytes([2, 1, 0, 0])
    assert struct.unpack(">I", data[4:8])[0] == 7200
    assert data[8:24] == b"\x00" * 10 + b"\xff\xff" + bytes([192, 168, 1, 10])
    assert data[24:36] == NONCE
    assert data[36] == 17 and data[37:40] == b"\x00\x00\x00"
    assert data[40:44] == struct.pack(">HH", 4433, 4433)
    assert data[44:60] == b"\x00" * 10 + b"\xff\xff" + b"\x00" * 4
    assert parse_pcp_request(data) == req()
    for bad in (
        dict(nonce=b"x"),
        dict(client_ip="::1"),
        dict(internal_port=0),
        dict(lifetime=2**32),
    ):
        args: dict[str, object] = dict(
            nonce=NONCE, client_ip="10.0.0.2", internal_port=1, lifetime=1
        )
        args.update(bad)
        with pytest.raises(ValueError):
            PcpMapRequest(**args)  # type: ignore[arg-type]


def test_pcp_reply_success_failure_and_fallback() -> None:
    r = req()
    ok = encode_pcp_reply(r, lifetime=3600, epoch=9, external_port=5000, external_ip="198.51.100.4")
    assert decode_pcp_reply(ok, r) == PcpMapping(3600, 9, 4433, 5000, "198.51.100.4", ())
    # options are walked (and ignored)
    opts = bytes([130, 0, 0, 5]) + b"abcde\x00\x00\x00" + bytes([1, 0, 0, 0])
    with_opts = encode_pcp_reply(r, external_port=5000, external_ip="198.51.100.4", options=opts)
    got = decode_pcp_reply(with_opts, r)
    assert isinstance(got, PcpMapping) and got.options == (130, 1)
    fail = encode_pcp_reply(r, result=8, lifetime=30)
    failure = decode_pcp_reply(fail, r)
    assert failure == PcpFailure(8, 30, 0) and isinstance(failure, PcpFailure)
    assert failure.name == "NO_RESOURCES"
    # a short error reply (header only) is still an error
    assert decode_pcp_reply(fail[:24], r) == PcpFailure(8, 30, 0)
    # RFC 6887 section 9: a NAT-PMP-only server answers with its version 0 reply
    assert decode_pcp_reply(struct.pack(">BBHI", 0, 129, 1, 7), r) == PcpVersionMismatch(0)
    future = bytearray(fail[:24])
    future[0], future[3] = 3, 1
    assert decode_pcp_reply(bytes(future), r) == PcpVersionMismatch(3)


def test_pcp_reply_rejections() -> None:
    r = req()
    ok = encode_pcp_reply(r, external_port=5000, external_ip="198.51.100.4")

    def patched(offset: int, value: bytes) -> bytes:
        b = bytearray(ok)
        b[offset : offset + len(value)] = value
        return bytes(b)

    other = PcpMapRequest(b"\xff" * 12, "192.168.1.10", 4433, 7200, 4433)
    bad = {
        "short": ok[:3],
        "too long": ok + b"\x00" * 1100,
        "not multiple of 4": ok + b"\x00",
        "version 1": patched(0, b"\x01"),
        "R bit clear": patched(1, b"\x01"),
        "opcode": patched(1, b"\x82"),
        "truncated map": ok[:56],
        "protocol": patched(36, b"\x06"),
        "internal port": patched(40, b"\x00\x01"),
        "external port 0": patched(42, b"\x00\x00"),
        "lifetime 0": patched(4, b"\x00\x00\x00\x00"),
        "IPv6 external": patched(44, b"\x20\x01"),
        "option overruns": ok + bytes([1, 0, 0, 8, 0, 0, 0, 0]),
        "option header cut": ok + bytes([1, 0, 0, 0, 1, 0, 0, 0])[:4] + b"\x00" * 0 + b"\x01",
        "nonce": encode_pcp_reply(other, external_port=1, external_ip="1.2.3.4"),
    }
    for name, data in bad.items():
        with pytest.raises(MalformedReply):
            decode_pcp_reply(data, r)
            pytest.fail(name)


@given(st.binary(max_size=1200))
@settings(max_examples=100, deadline=None)
def test_fuzz_pcp_decoder(data: bytes) -> None:
    r = req()
    try:
        reply = decode_pcp_reply(data, r)
    except MalformedReply:
        return
    assert len(data) <= 1100
    if isinstance(reply, PcpMapping):
        assert data[24:36] == NONCE and reply.internal_port == r.internal_port


@given(
    st.binary(min_size=60, max_size=1100).filter(lambda b: len(b) % 4 == 0),
    st.integers(0, 13),
)
@settings(max_examples=100, deadline=None)
def test_fuzz_pcp_decoder_near_valid(tail: bytes, result: int) -> None:
    """Valid header and nonce, random rest: the decoder still only says yes to replies
    for our port and protocol."""
    r = req()
    data = bytes([2, 0x81, 0, result]) + tail[4:24] + NONCE + tail[36:]
    try:
        reply = decode_pcp_reply(data, r)
    except MalformedReply:
        return
    if isinstance(reply, PcpMapping):
        assert data[36] == 17 and reply.internal_port == 4433 and reply.external_port


@settings(max_examples=100, deadline=None)
@given(
    st.binary(min_size=12, max_size=12),
    st.integers(1, 65535),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.ip_addresses(v=4).map(str),
)
def test_pcp_round_trip(nonce: bytes, port: int, ext: int, life: int, ip: str) -> None:
    r = PcpMapRequest(nonce, ip, port, life, ext)
    assert parse_pcp_request(r.encode()) == r
    if life and ext:
        reply = decode_pcp_reply(encode_pcp_reply(r, external_ip=ip), r)
        assert reply == PcpMapping(life, 0, port, ext, ip, ())


# -- SSDP ------------------------------------------------------------------------------


def test_msearch_and_ssdp_response() -> None:
    text = build_msearch("urn:schemas-upnp-org:device:InternetGatewayDevice:1").decode()
    assert text.startswith("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n")
    assert 'MAN: "ssdp:discover"\r\n' in text and text.endswith("\r\n\r\n")
    resp = parse_ssdp_response(ssdp_response_text("http://192.168.1.1:5000/d.xml", "st:x"))
    assert resp.location == "http://192.168.1.1:5000/d.xml" and resp.st == "st:x"
    lower = b"HTTP/1.1 200 OK\r\nlocation: http://a/\r\nst: x\r\n\r\n"
    assert parse_ssdp_response(lower).location == "http://a/"
    bad = [
        b"NOTIFY * HTTP/1.1\r\nLOCATION: http://a/\r\nST: x\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nLOCATION: http://a/\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: http://a/\r\nST: x\r\n" + b"X: y\r\n" * 50,
        b"HTTP/1.1 200 OK\r\nLOCATION: http://\xff/\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: " + b"a" * 2000 + b"\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
        b"x" * 5000,
    ]
    for data in bad:
        with pytest.raises(MalformedReply):
            parse_ssdp_response(data)


@given(st.binary(max_size=5000))
@settings(max_examples=100, deadline=None)
def test_fuzz_ssdp(data: bytes) -> None:
    try:
        resp = parse_ssdp_response(data)
    except MalformedReply:
        return
    assert resp.location and resp.st and len(data) <= 4096


# -- URLs --------------------------------------------------------------------------------


def test_check_url_only_accepts_the_gateway() -> None:
    u = check_url("http://192.168.1.1:5000/ctl?x=1", GW)
    assert (u.host, u.port, u.target) == (GW, 5000, "/ctl?x=1")
    assert str(check_url("http://192.168.1.1", GW)) == "http://192.168.1.1:80/"
    for bad in (
        "https://192.168.1.1/",
        "http://192.168.1.2/",
        "http://router.local/",
        "http://evil@192.168.1.1/",
        "http://192.168.1.1:99999/",
        "http://192.168.1.1:abc/",
        "file:///etc/passwd",
        "http://192.168.1.1/a b",
        "http://192.168.1.1/\x00",
        "http://[::1]/",
        "//192.168.1.1/",
        "http://192.168.1.1/" + "a" * 2000,
    ):
        with pytest.raises(MalformedReply):
            check_url(bad, GW)


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_fuzz_check_url(url: str) -> None:
    try:
        u = check_url(url, GW)
    except MalformedReply:
        return
    assert u.host == GW and str(u).startswith(f"http://{GW}:") and 1 <= u.port <= 65535


# -- XML, description, SOAP --------------------------------------------------------------


def test_parse_xml_refuses_dtds_entities_and_bombs() -> None:
    assert parse_xml(b"\xef\xbb\xbf<a><b>x</b></a>").tag == "a"
    # a declared UTF-16 encoding cannot smuggle anything: we hand over checked text
    assert parse_xml(b'<?xml version="1.0" encoding="UTF-16"?><a/>').tag == "a"
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;">]><a>&lol2;</a>'
    )
    xxe = b'<!doctype a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    for bad in (
        laughs,
        xxe,
        b"<a>&undefined;</a>",
        "<a/>".encode("utf-16"),
        b"<a>\xff</a>",
        b"<a>" * 40 + b"</a>" * 40,
        b"<r>" + b"<e/>" * 5000 + b"</r>",
        b"<a>" + b"x" * MAX_XML + b"</a>",
        b"",
        b"<a><b></a>",
    ):
        with pytest.raises(MalformedReply):
            parse_xml(bad)


def test_description_picks_the_wan_service_on_the_gateway() -> None:
    loc = "http://192.168.1.1:5000/rootDesc.xml"
    svc = parse_description(igd_description("/ctl/IPConn"), loc, GW)
    assert svc.service_type == IGD_SERVICE
    assert str(svc.control) == "http://192.168.1.1:5000/ctl/IPConn"
    # relative to URLBase when present
    svc = parse_description(igd_description("ctl", url_base="http://192.168.1.1:6000/x/"), loc, GW)
    assert str(svc.control) == "http://192.168.1.1:6000/x/ctl"
    ppp = "urn:schemas-upnp-org:service:WANPPPConnection:1"
    assert parse_description(igd_description("/p", ppp), loc, GW).service_type == ppp
    for control in ("http://10.0.0.99/ctl", "https://192.168.1.1/ctl", ""):
        with pytest.raises(MalformedReply):
            parse_description(igd_description(control), loc, GW)
    with pytest.raises(MalformedReply):  # URLBase pointing elsewhere
        parse_description(igd_description("c", url_base="http://10.9.9.9/"), loc, GW)
    with pytest.raises(MalformedReply):
        parse_description(igd_description("/c", "urn:schemas-upnp-org:service:Other:1"), loc, GW)


def test_soap_round_trip_fault_and_escaping() -> None:
    call = build_soap(IGD_SERVICE, "AddPortMapping", [("NewPortMappingDescription", "<a&b>")])
    assert call.headers["SOAPAction"] == f'"{IGD_SERVICE}#AddPortMapping"'
    assert b"&lt;a&amp;b&gt;" in call.body
    assert parse_soap_call(call.body) == (
        "AddPortMapping",
        {"NewPortMappingDescription": "<a&b>"},
    )
    out = soap_response_text(
        "GetExternalIPAddress", IGD_SERVICE, {"NewExternalIPAddress": "1.2.3.4"}
    )
    assert parse_soap_response(out, "GetExternalIPAddress") == {"NewExternalIPAddress": "1.2.3.4"}
    with pytest.raises(MalformedReply):
        parse_soap_response(out, "AddPortMapping")
    with pytest.raises(UpnpFault) as info:
        parse_soap_response(soap_fault_text(718, "ConflictInMappingEntry"), "AddPortMapping")
    assert info.value.code == 718 and "ConflictInMappingEntry" in str(info.value)
    with pytest.raises(ValueError):
        build_soap('x"\r\nEvil: 1', "AddPortMapping", [])
    with pytest.raises(ValueError):
        build_soap(IGD_SERVICE, "Add Port", [])


@given(st.binary(max_size=3000))
@settings(max_examples=100, deadline=None)
def test_fuzz_xml_parsers(data: bytes) -> None:
    for parse in (
        lambda: parse_description(data, "http://192.168.1.1/", GW),
        lambda: parse_soap_response(data, "AddPortMapping"),
    ):
        with contextlib.suppress(MalformedReply):
            parse()


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@settings(max_examples=100, deadline=None)
def test_fuzz_description_text_content(junk: str) -> None:
    """Arbitrary text spliced into a real description never escapes validation."""
    doc = igd_description("/ctl/IPConn").replace(b"Fake router", junk.encode())
    try:
        svc = parse_description(doc, "http://192.168.1.1/", GW)
    except MalformedReply:
        return
    assert svc.control.host == GW


# -- routing table, schedule, helpers ---------------------------------------------------

ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
wlan0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


def test_proc_net_route() -> None:
    assert parse_proc_net_route(ROUTE) == "10.0.0.1"  # lowest metric
    only_eth = "\n".join(line for line in ROUTE.splitlines() if "wlan0" not in line)
    assert parse_proc_net_route(only_eth) == "192.168.1.1"
    assert parse_proc_net_route(ROUTE.splitlines()[0]) is None
    down = ROUTE.replace("\t0003\t", "\t0002\t")  # not RTF_UP
    assert parse_proc_net_route(down) is None
    assert parse_proc_net_route("garbage\nx y z\n\x00") is None
    loop = "h\neth0\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    assert parse_proc_net_route(loop) is None


@given(st.text(max_size=500))
@settings(max_examples=100, deadline=None)
def test_fuzz_proc_net_route(text: str) -> None:
    assert parse_proc_net_route(text) is None or parse_proc_net_route(text).count(".") == 3  # type: ignore[union-attr]


def test_renew_delay_and_off_reason() -> None:
    assert renew_delay(7200, 7200, 10) == 3600
    assert renew_delay(2**32 - 1, 7200, 10) == 3600  # never trust a longer grant
    assert renew_delay(0, 7200, 10) == 3600  # permanent UPnP leases are refreshed too
    assert renew_delay(4, 7200, 10) == 10  # a tiny grant cannot make us hammer the router
    assert off_reason("0.0.0.0", True) is None
    assert off_reason("192.168.1.10", True) is None
    assert off_reason("::", True) is None
    assert off_reason("0.0.0.0", False) is not None
    assert "loopback" in (off_reason("127.0.0.1", True) or "")
    assert "loopback" in (off_reason("::1", True) or "")
    assert "IPv6" in (off_reason("2001:db8::1", True) or "")
    assert off_reason("example.org", True) is not None


def test_excerpt_is_short_and_printable() -> None:
    e = excerpt(b"\x00\x01abc" * 100)
    assert len(e) < 80 and "\x00" not in e
