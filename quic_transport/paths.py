"""Virtual paths: datagrams carried by something other than the endpoint's socket.

A relay client (p2pstore/nat/relay/client.py) receives datagrams for this
endpoint over another connection and feeds them in with ``Endpoint.inject``;
datagrams the endpoint sends back go to the callable registered with
``Endpoint.attach_path`` instead of the socket. To everything above the socket
(aioquic, connections, ``CallContext``) the far end of such a path looks like a
normal peer address ``(host, port)``: the *virtual key*.

Why keys cannot collide with real addresses: a virtual key's host is a DNS name
under ``relay.invalid`` (e.g. ``"3.r7.relay.invalid"``). ``recvfrom`` only ever
reports numeric IP addresses, and the ``.invalid`` top-level domain is reserved
never to resolve (RFC 6761 section 6.4), so no datagram from the socket carries
such a host and no dial can reach one through DNS. The endpoint never passes a
virtual host to the socket: a send to a virtual key without an attached path is
dropped.

QUIC Retry tokens bind the caller's address as packed IP bytes (aioquic), so for
tokens a virtual key is mapped to a stand-in IPv6 address in the discard-only
prefix 100::/64 (RFC 6666), derived from a hash of the key: stable for one key,
different for different keys, and never a source address on a real network.

Invariants: ``virtual_key`` only returns keys ``is_virtual`` accepts; ``check_key``
raises ValueError for anything else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import Any

VIRTUAL_SUFFIX = ".relay.invalid"
_LABEL = re.compile(r"[a-z0-9-]{1,63}")

PathSend = Callable[[bytes], None]


def virtual_key(*labels: str | int, port: int) -> tuple[str, int]:
    """The key ``("<labels joined by dots>.relay.invalid", port)``.

    Labels are lower-case letters, digits and hyphens (1-63 characters each);
    ``port`` is 1..65535 so the key also passes as a dialable address shape.
    """
    parts = [str(x) for x in labels]
    if not parts or not all(_LABEL.fullmatch(p) for p in parts):
        raise ValueError(f"bad virtual path labels {labels!r}")
    key = (".".join(parts) + VIRTUAL_SUFFIX, port)
    check_key(key)
    return key


def is_virtual(addr: Any) -> bool:
    """True for an address whose host names a virtual path (never a socket address)."""
    host = addr[0]
    return isinstance(host, str) and host.endswith(VIRTUAL_SUFFIX)


def check_key(key: Any) -> tuple[str, int]:
    if (
        not isinstance(key, tuple)
        or len(key) != 2
        or not isinstance(key[0], str)
        or not key[0].endswith(VIRTUAL_SUFFIX)
        or len(key[0]) > 253
        or isinstance(key[1], bool)
        or not isinstance(key[1], int)
        or not 0 < key[1] < 65536
    ):
        raise ValueError(f"not a virtual path key: {key!r}")
    return key


def token_address(addr: Any) -> tuple[Any, ...]:
    """The address a Retry token binds: ``addr`` itself, or for a virtual key a
    stand-in IPv6 address in 100::/64 (see the module docstring)."""
    if not is_virtual(addr):
        return tuple(addr)
    digest = hashlib.blake2b(addr[0].encode(), digest_size=8).digest()
    ip = ipaddress.IPv6Address(b"\x01\x00" + bytes(6) + digest)
    return (str(ip), addr[1])
