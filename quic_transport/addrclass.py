"""Which addresses a node may send to unprompted, by address class (sans-I/O).

Addresses a peer hands us (a DHT contact, a punch target, a peer record) must not
aim our packets at places the sender could not reach itself: our loopback
services, the home network behind our router, multicast groups. The rule follows
this node's own address (docs/dht.md, "Address classes"):

- ``unusable`` (unspecified, multicast, broadcast, reserved, documentation
  ranges are *not* here: they are global for this purpose) is never dialled;
- ``loopback`` only by a node that itself listens on loopback (a local grid);
- ``link-local`` only by a node that listens on a link-local address;
- ``private`` (RFC 1918, RFC 4193 unique-local, RFC 6598 shared, and IPv4-mapped
  forms of these) only by a node on a private or loopback address, or one bound to
  a wildcard (a home machine, whose LAN peers are private);
- ``global``: always.

A host that is not an IP literal is ``name``: never dialled from what a peer said
(names are resolved only by the node that publishes its own address).
"""

from __future__ import annotations

import ipaddress
from typing import Final

GLOBAL: Final = "global"
PRIVATE: Final = "private"
LOOPBACK: Final = "loopback"
LINK_LOCAL: Final = "link-local"
UNUSABLE: Final = "unusable"
NAME: Final = "name"
WILDCARD: Final = "wildcard"

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT


def is_ip(host: str) -> bool:
    """True if ``host`` is an IP literal (a name is never resolved for a peer)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def classify(host: str) -> str:
    """The class of ``host`` (an IP literal; anything else is ``name``)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return NAME
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return WILDCARD
    if ip.is_loopback:
        return LOOPBACK
    if (
        ip.is_multicast
        or ip.is_reserved
        or (
            isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255")
        )
    ):
        return UNUSABLE
    if ip.is_link_local:
        return LINK_LOCAL
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return PRIVATE
    if ip.is_private and not _is_documentation(ip):
        return PRIVATE
    return GLOBAL


def _is_documentation(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # TEST-NET and 2001:db8::/32 count as global here (tests use them as "the internet")
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"):
        n = ipaddress.ip_network(net)
        if ip.version == n.version and ip in n:
            return True
    return False


def may_send(target: str, own: str) -> bool:
    """May a node whose own (listen or advertised) host is ``own`` send to ``target``
    because a peer said so?"""
    t = classify(target)
    if t == GLOBAL:
        return True
    if t in (UNUSABLE, NAME, WILDCARD):
        return False
    o = classify(own)
    if t == LOOPBACK:
        return o == LOOPBACK
    if t == LINK_LOCAL:
        return o == LINK_LOCAL
    return o in (PRIVATE, LOOPBACK, WILDCARD)  # t == PRIVATE
