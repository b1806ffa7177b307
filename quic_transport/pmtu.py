"""Datagram-size discovery in the style of RFC 8899 (DPLPMTUD), sans-I/O.

Before dialing, the endpoint sends probe datagrams of candidate sizes to the
peer's UDP port with the don't-fragment bit set. A probe is not a QUIC packet:
its first byte is 0x00, so the QUIC fixed bit (RFC 9000 section 17.2) is clear
and QUIC stacks ignore it. The peer answers each probe with an ACK padded to
the same size, so one round trip proves both directions carry that size
without amplification (the answer is never larger than the probe). The
largest acknowledged size becomes the connection's max datagram size; the
prober then sends a small CONFIRM so the listener can use the same size for
its side. No answer within the rounds means the 1,200-byte QUIC minimum.

Wire (all integers big-endian)::

    magic "\\x00p2psMTU" (8) || type (1: probe, 2: ack, 3: confirm)
        || nonce (16) || size (u32) || token (16)
        || zero padding up to ``size`` (probe, ack; a confirm is not padded)

The token is zero in a probe. In an ACK it is the listener's
HMAC(secret, peer address || nonce || size), truncated to 16 bytes; a CONFIRM
must echo it. An off-path attacker who spoofs a peer's address never sees the
ACK, so it cannot make the listener believe a size the peer never acknowledged.

Invariants: a probe is only answered if its length equals its claimed size and
the size lies within [1200, 65527]; replies are exactly as long as the probe. A
size the local stack refuses to send (EMSGSIZE: larger than the interface MTU or
the kernel's cached path MTU) is dropped from the search, so a search ends as soon
as the largest size that can leave this host is acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .config import MAX_DATAGRAM, QUIC_MIN_DATAGRAM

MAGIC = b"\x00p2psMTU"
TYPE_PROBE = 1
TYPE_ACK = 2
TYPE_CONFIRM = 3
_BODY = struct.Struct(">B16sI16s")
HEADER_LEN = len(MAGIC) + _BODY.size
# Common plateaus (RFC 8899 section 5.1.2 suggests searching over likely sizes):
# IPv6 loopback (MTU 65,536 less 48 bytes of headers), 16 KiB, 9000-byte jumbo
# frames, 4 KiB, Ethernet with IPv4+UDP headers (1,500 less 28) and with IPv6+UDP
# headers (less 48; also IPv4 over PPPoE's 1,492), and the IPv6 minimum MTU less
# headers. The configured maximum (65,507 by default: IPv4 loopback) is added. Over
# IPv6 the 1,472-byte probe cannot leave an Ethernet host (EMSGSIZE) and is dropped.
PLATEAUS = (65488, 16384, 8952, 4096, 1472, 1452, 1232)


@dataclass(frozen=True, slots=True)
class ProbePacket:
    kind: int
    nonce: bytes
    size: int
    token: bytes = bytes(16)


def encode(kind: int, nonce: bytes, size: int, token: bytes = bytes(16)) -> bytes:
    head = MAGIC + _BODY.pack(kind, nonce, size, token)
    if kind == TYPE_CONFIRM:
        return head
    return head + bytes(size - len(head))


def is_probe_packet(data: bytes) -> bool:
    return data[:8] == MAGIC


def parse(data: bytes) -> ProbePacket | None:
    """Parse a probe-protocol datagram; None if malformed (never raises)."""
    if len(data) < HEADER_LEN or not is_probe_packet(data):
        return None
    kind, nonce, size, token = _BODY.unpack_from(data, len(MAGIC))
    if kind not in (TYPE_PROBE, TYPE_ACK, TYPE_CONFIRM):
        return None
    if not QUIC_MIN_DATAGRAM <= size <= MAX_DATAGRAM:
        return None
    if kind != TYPE_CONFIRM and len(data) != size:
        return None
    return ProbePacket(kind, nonce, size, token)


def make_token(secret: bytes, addr: tuple[str, int], nonce: bytes, size: int) -> bytes:
    msg = f"{addr[0]}|{addr[1]}|{size}|".encode() + nonce
    return hmac.new(secret, msg, hashlib.sha256).digest()[:16]


def reply_to(pkt: ProbePacket, secret: bytes, addr: tuple[str, int]) -> bytes | None:
    """The ACK for a PROBE (same size, carrying the token), or None for anything else."""
    if pkt.kind != TYPE_PROBE:
        return None
    return encode(TYPE_ACK, pkt.nonce, pkt.size, make_token(secret, addr, pkt.nonce, pkt.size))


def confirmed_size(pkt: ProbePacket, secret: bytes, addr: tuple[str, int]) -> int | None:
    """The size a CONFIRM from ``addr`` proves, or None if its token is wrong."""
    if pkt.kind != TYPE_CONFIRM:
        return None
    if not hmac.compare_digest(pkt.token, make_token(secret, addr, pkt.nonce, pkt.size)):
        return None
    return pkt.size


def candidate_sizes(low: int, high: int) -> list[int]:
    """Sizes to probe, largest first, strictly above ``low`` and at most ``high``."""
    sizes = {s for s in PLATEAUS if low < s <= high}
    if high > low:
        sizes.add(high)
    return sorted(sizes, reverse=True)


class PmtuSearch:
    """One search against one peer: ``start()`` / ``on_packet()`` / ``on_round_timeout()``.

    ``result`` is the largest size acknowledged so far (``low`` if none).
    ``done`` becomes true when the largest candidate is acknowledged or the
    rounds are used up.
    """

    def __init__(
        self,
        *,
        low: int,
        high: int,
        rounds: int,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.low = low
        self.result = low
        self._sizes = candidate_sizes(low, high)
        self._rounds_left = rounds
        self._nonces: dict[bytes, int] = {}
        self._token = bytes(16)
        self._nonce_source = nonce_source
        self.done = not self._sizes

    def _round(self, sizes: Iterable[int]) -> list[bytes]:
        out = []
        for size in sizes:
            nonce = self._nonce_source(16)
            self._nonces[nonce] = size
            out.append(encode(TYPE_PROBE, nonce, size))
        self._rounds_left -= 1
        return out

    def start(self) -> list[bytes]:
        if self.done:
            return []
        return self._round(self._sizes)

    def on_packet(self, pkt: ProbePacket) -> None:
        if pkt.kind != TYPE_ACK:
            return
        size = self._nonces.get(pkt.nonce)
        if size is None or size != pkt.size:
            return  # not ours, or forged
        if size > self.result:
            self.result = size
            self._token = pkt.token
        if not self._sizes or size >= self._sizes[0]:
            self.done = True

    def on_unsendable(self, size: int) -> None:
        """The local stack refused to send a probe of ``size`` (too large for the
        interface): no longer wait for it, nor probe it again."""
        if size not in self._sizes:
            return
        self._sizes.remove(size)
        if not self._sizes or self._sizes[0] <= self.result:
            self.done = True

    def on_round_timeout(self) -> list[bytes]:
        """Next round's probes (sizes above the best so far) or [] when finished."""
        if self.done:
            return []
        remaining = [s for s in self._sizes if s > self.result]
        if not remaining or self._rounds_left <= 0:
            self.done = True
            return []
        return self._round(remaining)

    def confirm(self) -> bytes | None:
        """A CONFIRM telling the listener the agreed size, or None if nothing beat ``low``."""
        if self.result <= self.low:
            return None
        nonce = next((n for n, s in self._nonces.items() if s == self.result), bytes(16))
        return encode(TYPE_CONFIRM, nonce, self.result, self._token)
