"""UPnP IGD messages: SSDP search/response, device description, SOAP calls. Sans-I/O.

What a UPnP port mapping takes (UPnP Device Architecture 1.1, IGD WANIPConnection
service): an SSDP ``M-SEARCH`` to 239.255.255.250:1900 for an Internet Gateway
Device, whose answer names a device description URL (``LOCATION``); the description
(XML over HTTP) lists services, among them ``WANIPConnection`` or
``WANPPPConnection`` with a ``controlURL``; SOAP actions posted there add, delete
and query mappings.

Invariants (everything here faces the network, so nothing from it is trusted):
- Sizes are bounded before parsing: SSDP responses (:data:`MAX_SSDP`), XML
  documents (:data:`MAX_XML`), header counts and lengths, element nesting depth,
  number of elements and of text characters kept.
- Every URL taken from the network (``LOCATION``, ``URLBase``, ``controlURL``) goes
  through :func:`check_url`: plain ``http``, no user info, and the host must be the
  gateway's own IPv4 address (as a literal, so no DNS), so a reply can never send
  our requests anywhere but the router we asked.
- XML is parsed by :func:`parse_xml`: UTF-8 only (checked before the parser sees
  it, the parser's encoding forced to UTF-8), any ``<!DOCTYPE`` / ``<!ENTITY`` (so
  any DTD, external entity or entity expansion) refused, depth and size bounded.
  Element names are matched by local name (namespace prefixes vary by vendor).
- Values sent inside SOAP bodies are XML-escaped; the service type (from the
  description) must match the IGD service-type grammar before it is used in the
  ``SOAPAction`` header and the body.
"""

from __future__ import annotations

import html
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:  # imported when a reply is parsed: an idle node never loads it (~9 MB)
    import xml.etree.ElementTree as ET

from p2pstore.nat.portmap.errors import MalformedReply, excerpt

SSDP_ADDRESS = ("239.255.255.250", 1900)
IGD_DEVICE_TYPES = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
)
MAX_SSDP = 4096
MAX_SSDP_HEADERS = 40
MAX_HEADER_LINE = 1024
MAX_URL = 1024
MAX_XML = 64 * 1024
MAX_XML_DEPTH = 32
MAX_XML_ELEMENTS = 4096
MAX_TEXT = 1024
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"

_SERVICE_RE = re.compile(r"urn:schemas-upnp-org:service:(WANIPConnection|WANPPPConnection):([1-9])")
# preference among the services a description offers
_SERVICE_RANK = {("WANIPConnection", "2"): 0, ("WANIPConnection", "1"): 1}

# UPnP IGD error codes worth a name in logs and status (WANIPConnection:2 spec, 2.4)
UPNP_ERRORS = {
    401: "Invalid Action",
    402: "Invalid Args",
    501: "Action Failed",
    606: "Action not authorized",
    714: "NoSuchEntryInArray",
    715: "WildCardNotPermittedInSrcIP",
    716: "WildCardNotPermittedInExtPort",
    718: "ConflictInMappingEntry",
    724: "SamePortValuesRequired",
    725: "OnlyPermanentLeasesSupported",
    726: "RemoteHostOnlySupportsWildcard",
    727: "ExternalPortOnlySupportsWildcard",
    728: "NoPortMapsAvailable",
    729: "ConflictWithOtherMechanisms",
}
ERR_CONFLICT = 718
ERR_SAME_PORT = 724
ERR_PERMANENT_ONLY = 725


# -- SSDP ------------------------------------------------------------------------------


def build_msearch(search_target: str, mx: int = 1) -> bytes:
    """An SSDP ``M-SEARCH`` request (UDA 1.1 section 1.3.2)."""
    if not 1 <= mx <= 5:
        raise ValueError("MX must be 1..5 seconds")
    host = f"{SSDP_ADDRESS[0]}:{SSDP_ADDRESS[1]}"
    lines = [
        "M-SEARCH * HTTP/1.1",
        f"HOST: {host}",
        'MAN: "ssdp:discover"',
        f"MX: {mx}",
        f"ST: {search_target}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class SsdpResponse:
    location: str
    st: str
    usn: str
    server: str


def _header_lines(data: bytes, limit: int, method: str) -> list[str]:
    if len(data) > limit:
        raise MalformedReply(method, f"{len(data)} bytes (max {limit})")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedReply(method, "not ASCII text") from None
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    if len(lines) > MAX_SSDP_HEADERS + 1:
        raise MalformedReply(method, f"more than {MAX_SSDP_HEADERS} header lines")
    for line in lines:
        if len(line) > MAX_HEADER_LINE or not line.isprintable():
            raise MalformedReply(method, f"bad header line {excerpt(line)}")
    return lines


def parse_ssdp_response(data: bytes) -> SsdpResponse:
    """A unicast answer to our ``M-SEARCH``: ``HTTP/1.1 200 OK`` plus headers, of
    which ``LOCATION`` and ``ST`` are required (UDA 1.1 section 1.3.3)."""
    lines = _header_lines(data, MAX_SSDP, "ssdp")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].upper().startswith("HTTP/1.") or status[1] != "200":
        raise MalformedReply("ssdp", f"status line {excerpt(lines[0])}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MalformedReply("ssdp", f"header line {excerpt(line)}")
        headers.setdefault(name.strip().lower(), value.strip())
    for required in ("location", "st"):
        if not headers.get(required):
            raise MalformedReply("ssdp", f"no {required.upper()} header")
    return SsdpResponse(
        headers["location"], headers["st"], headers.get("usn", ""), headers.get("server", "")
    )


def ssdp_response_text(location: str, st: str, usn: str = "uuid:fake::igd") -> bytes:
    """A minimal SSDP answer (fake routers in tests, round trips)."""
    lines = [
        "HTTP/1.1 200 OK",
        "CACHE-CONTROL: max-age=120",
        "EXT:",
        f"LOCATION: {location}",
        "SERVER: Linux/5 UPnP/1.1 fake/1",
        f"ST: {st}",
        f"USN: {usn}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


# -- URLs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayUrl:
    """A validated ``http://<gateway-ipv4>:<port>/path`` URL."""

    host: str
    port: int
    target: str  # path plus optional ?query, starting with "/"

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}{self.target}"


def check_url(url: str, gateway: str) -> GatewayUrl:
    """Accept ``url`` only if it is plain http on the gateway's own address."""
    if len(url) > MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        raise MalformedReply("upnp", f"unacceptable URL {excerpt(url)}")
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        raise MalformedReply("upnp", f"unparsable URL {excerpt(url)}") from None
    if parts.scheme.lower() != "http":
        raise MalformedReply("upnp", f"URL scheme {parts.scheme!r} (only http)")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise MalformedReply("upnp", "URL with user info")
    host = parts.hostname or ""
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise MalformedReply("upnp", f"URL host {excerpt(host)} is not an IPv4 address") from None
    if ip != ipaddress.IPv4Address(gateway):
        raise MalformedReply("upnp", f"URL host {ip} is not the gateway {gateway}")
    target = parts.path or "/"
    if not target.startswith("/"):
        raise MalformedReply("upnp", f"URL path {excerpt(target)}")
    if parts.query:
        target += "?" + parts.query
    return GatewayUrl(str(ip), port, target)


# -- XML -------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def parse_xml(data: bytes, method: str = "upnp") -> ET.Element:
    """Parse a bounded UTF-8 XML document with no DTD (see the module invariants)."""
    if len(data) > MAX_XML:
        raise MalformedReply(method, f"XML of {len(data)} bytes (max {MAX_XML})")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReply(method, "XML is not UTF-8") from None
    folded = text.upper()
    if "<!DOCTYPE" in folded or "<!ENTITY" in folded:
        raise MalformedReply(method, "XML with a DTD or entity declaration refused")
    import xml.etree.ElementTree as ET

    parser: ET.XMLPullParser[Any] = ET.XMLPullParser(events=("start", "end"))
    depth = elements = 0
    root: ET.Element | None = None

    def consume() -> None:
        nonlocal depth, elements, root
        events = cast(Iterator[tuple[str, Any]], parser.read_events())
        for event, elem in events:
            if event == "start" and isinstance(elem, ET.Element):
                depth += 1
                elements += 1
                if depth > MAX_XML_DEPTH or elements > MAX_XML_ELEMENTS:
                    raise MalformedReply(method, "XML too deep or too large")
                if root is None:
                    root = elem
            elif event == "end":
                depth -= 1

    try:
        # the declared encoding is irrelevant: the parser is handed checked text;
        # fed in chunks so depth and element count are checked as the tree grows
        for i in range(0, len(text), 4096):
            parser.feed(text[i : i + 4096])
            consume()
        parser.close()
        consume()
    except ET.ParseError as e:
        raise MalformedReply(method, f"bad XML: {e}") from None
    if root is None:
        raise MalformedReply(method, "empty XML document")
    return root


def _text(elem: ET.Element | None) -> str:
    if elem is None or elem.text is None:
        return ""
    t = elem.text.strip()
    if len(t) > MAX_TEXT:
        raise MalformedReply("upnp", f"<{_local(elem.tag)}> text longer than {MAX_TEXT}")
    return t


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


# -- device description ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IgdService:
    service_type: str  # e.g. urn:schemas-upnp-org:service:WANIPConnection:1
    control: GatewayUrl


def parse_description(data: bytes, location: str, gateway: str) -> IgdService:
    """The best WAN connection service in a device description fetched from
    ``location`` (WANIPConnection:2, then :1, then WANPPPConnection)."""
    root = parse_xml(data)
    base = location
    url_base = _child(root, "URLBase")
    if url_base is not None and _text(url_base):
        base = str(check_url(_text(url_base), gateway))
    found: list[tuple[int, IgdService]] = []
    problems: list[str] = []
    for elem in root.iter():
        if _local(elem.tag) != "service":
            continue
        stype = _text(_child(elem, "serviceType"))
        m = _SERVICE_RE.fullmatch(stype)
        if m is None:
            continue
        control = _text(_child(elem, "controlURL"))
        if not control:
            problems.append(f"{stype} without a controlURL")
            continue
        try:
            url = check_url(urljoin(base, control), gateway)
        except (MalformedReply, ValueError) as e:
            problems.append(str(e))
            continue
        rank = _SERVICE_RANK.get((m.group(1), m.group(2)), 2)
        found.append((rank, IgdService(stype, url)))
    if not found:
        why = f" ({problems[0]})" if problems else ""
        raise MalformedReply("upnp", "no usable WANIPConnection/WANPPPConnection service" + why)
    return min(found, key=lambda f: f[0])[1]


# -- SOAP ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SoapRequest:
    headers: dict[str, str]
    body: bytes


def build_soap(service_type: str, action: str, args: list[tuple[str, str]]) -> SoapRequest:
    """A SOAP 1.1 action call (UDA 1.1 section 3.2.1)."""
    if _SERVICE_RE.fullmatch(service_type) is None:
        raise ValueError(f"unexpected service type {service_type!r}")
    if not action.isalnum():
        raise ValueError(f"unexpected action {action!r}")
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in args)
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        f'<s:Envelope xmlns:s="{SOAP_ENV}" s:encodingStyle="{SOAP_ENCODING}">'
        f'<s:Body><u:{action} xmlns:u="{service_type}">{inner}</u:{action}></s:Body>'
        "</s:Envelope>\r\n"
    ).encode()
    headers = {
        "Content-Type": 'text/xml; charset="utf-8"',
        "SOAPAction": f'"{service_type}#{action}"',
    }
    return SoapRequest(headers, body)


class UpnpFault(MalformedReply):
    """A SOAP fault: ``code`` is the UPnP error code (None if absent)."""

    def __init__(self, code: int | None, description: str) -> None:
        self.code = code
        self.description = description
        name = UPNP_ERRORS.get(code or 0, description or "unknown")
        super().__init__("upnp", f"gateway refused: {name} ({code})")


MAX_SOAP_VALUES = 32


def parse_soap_response(data: bytes, action: str) -> dict[str, str]:
    """The out-arguments of ``<actionResponse>``, or :class:`UpnpFault`."""
    root = parse_xml(data)
    for elem in root.iter():
        name = _local(elem.tag)
        if name == "Fault":
            code_text = description = ""
            for sub in elem.iter():
                if _local(sub.tag) == "errorCode":
                    code_text = _text(sub)
                elif _local(sub.tag) == "errorDescription":
                    description = _text(sub)[:100]
            code = int(code_text) if code_text.isdigit() and len(code_text) <= 4 else None
            raise UpnpFault(code, "".join(c for c in description if c.isprintable()))
        if name == action + "Response":
            out: dict[str, str] = {}
            for child in elem:
                if len(out) >= MAX_SOAP_VALUES:
                    raise MalformedReply("upnp", "too many values in the response")
                out[_local(child.tag)] = _text(child)
            return out
    raise MalformedReply("upnp", f"no {action}Response in the reply")


def soap_response_text(action: str, service_type: str, values: dict[str, str]) -> bytes:
    """A gateway's SOAP answer (fake routers in tests, round trips)."""
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in values.items())
    return (
        f'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="{SOAP_ENV}" '
        f's:encodingStyle="{SOAP_ENCODING}"><s:Body>'
        f'<u:{action}Response xmlns:u="{service_type}">{inner}</u:{action}Response>'
        "</s:Body></s:Envelope>\r\n"
    ).encode()


def soap_fault_text(code: int, description: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="{SOAP_ENV}" '
        f's:encodingStyle="{SOAP_ENCODING}"><s:Body><s:Fault>'
        "<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>"
        '<detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{code}</errorCode><errorDescription>{escape(description)}"
        "</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
    ).encode()


def parse_soap_call(data: bytes) -> tuple[str, dict[str, str]]:
    """The server side of :func:`build_soap` (fake routers): action name and args."""
    root = parse_xml(data)
    body = _child(root, "Body")
    if body is None or len(body) != 1:
        raise MalformedReply("upnp", "SOAP call without exactly one action")
    call = body[0]
    return _local(call.tag), {_local(c.tag): _text(c) for c in call}


def escape(value: str) -> str:
    """XML character data: ``&``, ``<`` and ``>`` escaped (as ``xml.sax.saxutils``)."""
    return html.escape(value, quote=False)
