"""Finding the home router: the IPv4 default gateway and our address towards it.

:func:`parse_proc_net_route` is sans-I/O (the text of Linux's ``/proc/net/route``);
:func:`default_gateway` reads that file (bounded) and returns None anywhere else
(no file, another OS, no default route): port mapping then reports "no default
gateway" and never guesses. :func:`local_address_towards` asks the kernel which
source address it would use, by ``connect()``-ing a UDP socket (no packet is sent).

Invariant: only an up, gateway-flagged IPv4 default route (destination and mask
0.0.0.0) counts; among several the lowest metric wins; the gateway must be a
unicast private/public address, never 0.0.0.0, loopback or multicast.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

PROC_NET_ROUTE = Path("/proc/net/route")
MAX_ROUTE_FILE = 256 * 1024
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def _hex_ipv4(field: str) -> ipaddress.IPv4Address:
    """``/proc/net/route`` prints addresses as host-order (little-endian) hex."""
    if len(field) != 8:
        raise ValueError(field)
    return ipaddress.IPv4Address(int(field, 16).to_bytes(4, "little"))


def parse_proc_net_route(text: str) -> str | None:
    """The default gateway in ``/proc/net/route`` text, or None."""
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, gw, mask = _hex_ipv4(fields[1]), _hex_ipv4(fields[2]), _hex_ipv4(fields[7])
            flags, metric = int(fields[3], 16), int(fields[6])
        except ValueError:
            continue
        if int(dest) or int(mask) or flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY:
            continue
        if gw.is_unspecified or gw.is_loopback or gw.is_multicast or gw.is_reserved:
            continue
        if best is None or metric < best[0]:
            best = (metric, str(gw))
    return None if best is None else best[1]


def default_gateway(path: Path = PROC_NET_ROUTE) -> str | None:
    """The IPv4 default gateway from the routing table (Linux), else None."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_ROUTE_FILE)
    except OSError:
        return None
    return parse_proc_net_route(raw.decode("ascii", "replace"))


def local_address_towards(gateway: str) -> str | None:
    """Our IPv4 source address for packets to ``gateway`` (None if unroutable)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((gateway, 5351))
            host: str = s.getsockname()[0]
    except OSError:
        return None
    return None if host == "0.0.0.0" else host
