"""Path challenges outside QUIC: "can you receive at this address?" (sans-I/O).

A relay forwards traffic toward a remote address only once that address proved it
receives there (p2pstore/nat/relay/limits.py): it sends a REQUEST carrying a random
token from the relayed port, and every p2pstore endpoint answers a REQUEST with a
REPLY carrying the same token to the address it came from. A spoofed source never
sees the token, so it cannot answer.

Both datagrams have the QUIC fixed bit (0x40) clear, so no QUIC stack takes them for
QUIC, and they are not datagram-size probes (pmtu.py). A REPLY is exactly as long as
its REQUEST (no amplification), and :class:`ReplyLimiter` bounds the replies per
source address and in total, so a stranger who spoofs requests can make an endpoint
send a victim at most ``per_source_burst`` + ``per_source_rate``/s datagrams of
:data:`SIZE` bytes (docs/transport.md, "Path challenges").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

REQUEST_MAGIC: Final = b"\x00p2ps-echo?"
REPLY_MAGIC: Final = b"\x00p2ps-echo!"
TOKEN_BYTES: Final = 16
SIZE: Final = len(REQUEST_MAGIC) + TOKEN_BYTES  # 27 bytes


def request(token: bytes) -> bytes:
    if len(token) != TOKEN_BYTES:
        raise ValueError(f"token must be {TOKEN_BYTES} bytes")
    return REQUEST_MAGIC + token


def is_request(data: bytes) -> bool:
    return len(data) == SIZE and data.startswith(REQUEST_MAGIC)


def reply_to(data: bytes) -> bytes | None:
    """The REPLY to a REQUEST (same length, same token), or None."""
    if not is_request(data):
        return None
    return REPLY_MAGIC + data[len(REQUEST_MAGIC) :]


def reply_token(data: bytes) -> bytes | None:
    """The token of a REPLY, or None if ``data`` is not one."""
    if len(data) != SIZE or not data.startswith(REPLY_MAGIC):
        return None
    return data[len(REPLY_MAGIC) :]


def source_key(host: str) -> str:
    """Rate limits count an IPv4 address, or an IPv6 /64 (what one host usually has)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class ReplyLimiter:
    """Token buckets per source (``source_key``) and in total; ``allow(host, now)``
    spends one reply. The table holds at most ``max_sources`` sources (the oldest
    forgotten first, which only ever lets a forgotten source start from a full burst
    again: the total bucket still holds)."""

    per_source_rate: float = 2.0
    per_source_burst: float = 8.0
    total_rate: float = 200.0
    total_burst: float = 400.0
    max_sources: int = 4096
    _sources: dict[str, tuple[float, float]] = field(default_factory=dict)
    _total: tuple[float, float] | None = None
    refused: int = 0

    def allow(self, host: str, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` (one reply, or its bytes for a byte budget) if both buckets
        hold it."""
        key = source_key(host)
        total_tokens = self._refill(self._total, now, self.total_rate, self.total_burst)
        tokens = self._refill(
            self._sources.get(key), now, self.per_source_rate, self.per_source_burst
        )
        if tokens < cost or total_tokens < cost:
            self.refused += 1
            return False
        self._total = (total_tokens - cost, now)
        self._sources.pop(key, None)
        self._sources[key] = (tokens - cost, now)
        while len(self._sources) > self.max_sources:
            del self._sources[next(iter(self._sources))]
        return True

    @staticmethod
    def _refill(entry: tuple[float, float] | None, now: float, rate: float, burst: float) -> float:
        if entry is None:
            return burst
        tokens, at = entry
        return min(burst, tokens + max(now - at, 0.0) * rate)
