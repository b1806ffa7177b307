"""Proof of work for a relay reservation (sans-I/O; docs/relay.md, "Threat model").

Node IDs cost nothing, so per-ID limits alone let one machine take every relay slot
with fresh identities. A reservation therefore carries a *stamp*: a nonce such that

    SHA-256("p2ps-relay-work-v1" | relay ID | client ID | minute | nonce)

has at least ``bits`` leading zero bits, ``minute`` being the client's clock in
whole minutes since the epoch. The stamp names both node IDs, so it is good for
that client at that relay only; the relay accepts minutes within
:data:`SKEW_MINUTES` of its own clock and each stamp once (:class:`StampLedger`).

Cost: 2**bits hashes on average. At the default 18 bits that is about 0.2 s of
one core of the project's machines (hashlib, measured in tests/nat/test_nat_relay_work.py)
and a few seconds on a small board, paid once per reservation (renewals are free),
in a worker thread. Verifying costs one hash.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from p2pstore.nat.relay.errors import RelayRemoteError
from quic_transport.identity import NodeId

TAG = b"p2ps-relay-work-v1"
DEFAULT_BITS = 18
MAX_BITS = 28
SKEW_MINUTES = 2
NONCE_BYTES = 16


class WorkError(RelayRemoteError):
    """A stamp that is malformed, stale, reused or short of the required work (the
    caller's data: the relay answers ``relay-work-required``)."""


@dataclass(frozen=True, slots=True)
class Stamp:
    bits: int
    minute: int
    nonce: bytes

    def to_body(self) -> dict[str, Any]:
        return {"bits": self.bits, "minute": self.minute, "nonce": self.nonce}

    @classmethod
    def from_body(cls, body: Any) -> Stamp:
        if not isinstance(body, dict) or set(body) != {"bits", "minute", "nonce"}:
            raise WorkError("work: expected a map of bits, minute, nonce")
        bits, minute, nonce = body["bits"], body["minute"], body["nonce"]
        if not (isinstance(bits, int) and not isinstance(bits, bool) and 0 <= bits <= MAX_BITS):
            raise WorkError(f"work: bits must be an integer 0..{MAX_BITS}")
        if not (isinstance(minute, int) and not isinstance(minute, bool) and 0 <= minute < 2**40):
            raise WorkError("work: minute must be a non-negative integer")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise WorkError(f"work: nonce must be {NONCE_BYTES} bytes")
        return cls(bits, minute, nonce)


def _digest(relay: NodeId, client: NodeId, minute: int, nonce: bytes) -> bytes:
    return hashlib.sha256(TAG + relay.raw + client.raw + struct.pack(">Q", minute) + nonce).digest()


def _zero_bits(digest: bytes) -> int:
    n = int.from_bytes(digest, "big")
    return len(digest) * 8 - n.bit_length()


def make_stamp(relay: NodeId, client: NodeId, now: float, bits: int = DEFAULT_BITS) -> Stamp:
    """Search a nonce (CPU-bound: run it in a worker thread)."""
    minute = int(now // 60)
    prefix = TAG + relay.raw + client.raw + struct.pack(">Q", minute)
    base = hashlib.sha256(prefix)
    salt = os.urandom(NONCE_BYTES - 8)
    limit = 1 << (256 - bits)
    counter = 0
    while True:
        nonce = salt + counter.to_bytes(8, "big")
        h = base.copy()
        h.update(nonce)
        if int.from_bytes(h.digest(), "big") < limit:
            return Stamp(bits, minute, nonce)
        counter += 1


def check_stamp(stamp: Stamp, relay: NodeId, client: NodeId, now: float, need: int) -> None:
    """Raise :class:`WorkError` unless the stamp is fresh and carries ``need`` bits."""
    if stamp.bits < need:
        raise WorkError(f"this relay needs {need} bits of work, the stamp claims {stamp.bits}")
    if abs(stamp.minute - int(now // 60)) > SKEW_MINUTES:
        raise WorkError("the stamp's minute is too far from this relay's clock (check the time)")
    if _zero_bits(_digest(relay, client, stamp.minute, stamp.nonce)) < need:
        raise WorkError("the stamp does not carry the work it claims")


class StampLedger:
    """Stamps accepted within the freshness window, so each is used once (bounded:
    the oldest forgotten first; a forgotten one is stale by then or the table is
    under a flood that the work itself makes slow)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[bytes, int, bytes], None] = OrderedDict()

    def use(self, client: NodeId, stamp: Stamp) -> None:
        key = (client.raw, stamp.minute, stamp.nonce)
        if key in self._seen:
            raise WorkError("this stamp was used already")
        self._seen[key] = None
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
