"""``host:port`` text: parsing, validation and formatting.

Invariants:
- A :class:`HostPort` holds a host that is an IPv4 address, an IPv6 address (stored
  without brackets) or a DNS name (RFC 1123 labels, at most 253 characters), and a
  port in 0..65535. Text form puts IPv6 hosts in brackets: ``[::1]:3456``.
- ``format_host_port(parse_host_port(t))`` is canonical: IPv6 addresses are
  compressed, IPv4 addresses and DNS names lowercased; parsing the canonical text
  again gives the same value.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import AddressError

MAX_HOST_CHARS = 253
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def canonical_host(host: str) -> str:
    """Validate ``host`` (no brackets) and return its canonical spelling."""
    if not host:
        raise AddressError("host is empty")
    if len(host) > MAX_HOST_CHARS:
        raise AddressError(f"host is {len(host)} characters, at most {MAX_HOST_CHARS} allowed")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise AddressError(f"host {host!r}: scoped IPv6 addresses are not supported")
        return ip.compressed
    name = host.lower().removesuffix(".")
    labels = name.split(".")
    if not name or not all(_LABEL_RE.match(label) for label in labels):
        raise AddressError(
            f"host {host!r} is neither an IP address nor a DNS name (letters, digits, '-' and '.')"
        )
    if labels[-1].isdigit():
        raise AddressError(f"host {host!r} looks like a malformed IPv4 address")
    return name


@dataclass(frozen=True, slots=True)
class HostPort:
    """A validated network address; IPv6 hosts are stored without brackets."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise AddressError(f"port must be an integer, got {type(self.port).__name__}")
        if not 0 <= self.port <= 65535:
            raise AddressError(f"port {self.port} is out of range 0..65535")
        if canonical_host(self.host) != self.host:
            raise AddressError(f"host {self.host!r} is not in canonical form")

    @property
    def is_wildcard(self) -> bool:
        """True for ``0.0.0.0`` and ``::`` (listen on every interface)."""
        return self.host in WILDCARD_HOSTS

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return format_host_port(self.host, self.port)


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(text: str, *, allow_port_zero: bool = True) -> HostPort:
    """Parse ``host:port`` or ``[ipv6]:port``; raises :class:`AddressError` with a reason."""
    if not isinstance(text, str):
        raise AddressError(f"expected text like host:port, got {type(text).__name__}")
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"{text!r}: '[' without a closing ']'")
        host_text, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            raise AddressError(f"{text!r}: expected ':port' after ']'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host_text)
        except ValueError:
            raise AddressError(
                f"{text!r}: {host_text!r} in brackets is not an IPv6 address"
            ) from None
    else:
        host_text, sep, port_text = text.rpartition(":")
        if not sep:
            raise AddressError(f"{text!r}: expected host:port (for example 192.0.2.7:3456)")
        if ":" in host_text:
            raise AddressError(
                f"{text!r}: put an IPv6 address in brackets, like [2001:db8::1]:3456"
            )
    if not port_text.isascii() or not port_text.isdigit():
        raise AddressError(f"{text!r}: port {port_text!r} is not a number")
    if len(port_text) > 5:
        raise AddressError(f"{text!r}: port {port_text} is out of range 0..65535")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise AddressError(f"{text!r}: port {port} is out of range 0..65535")
    if port == 0 and not allow_port_zero:
        raise AddressError(f"{text!r}: port 0 cannot be dialled")
    try:
        host = canonical_host(host_text)
    except AddressError as e:
        raise AddressError(f"{text!r}: {e}") from None
    return HostPort(host, port)
