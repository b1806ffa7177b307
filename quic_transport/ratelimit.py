"""Bandwidth caps: a sans-I/O token bucket and the upload gate the pacers consult.

:class:`TokenBucket` holds up to ``burst`` tokens (bytes) and gains ``rate``
tokens per second from an injected clock. :meth:`TokenBucket.consume` always
succeeds and may leave the level negative (a debt): a datagram is never split,
dropped or queued for lack of tokens. Callers ask :meth:`TokenBucket.ready`
(level >= 0, give or take ``EARLY`` seconds of tokens) before each item, so the
debt is at most one item, and wait :meth:`TokenBucket.delay` seconds when it is
not ready.

Invariants (tested with hypothesis, see docs/limits.md "Token buckets"):
- the level never exceeds ``burst``;
- a caller that only consumes while ready consumes, over any span of T
  seconds starting from a full bucket, at most ``burst + rate * (T + EARLY) +
  largest item``;
- a caller that consumes whenever ready consumes at least ``burst + rate * T``
  over such a span if it never leaves the bucket to fill up (the cap is reached,
  not merely respected).

:class:`SendGate` is one endpoint's upload cap. Every connection's pacer
(:class:`GatedPacer`, installed by :mod:`quic_transport.pacing`) asks the gate
before aioquic builds each application packet, charging the largest packet the
connection may send; after the endpoint has sent what aioquic produced, it
:meth:`SendGate.settle` s the charge with the bytes really sent (handshake, ACK
and probe datagrams, which aioquic does not pace, are charged there too). A
refused packet stays in aioquic's stream buffers and aioquic's pacing timer
(``get_timer``) wakes the connection when the bucket will be ready again, so the
endpoint needs no timer of its own and nothing is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from .pacing import CoarseTimerPacer

#: a debt this small (in seconds of rate) counts as paid: float rounding and event-loop
#: timers firing a hair early must not leave a waiter a few nanoseconds short
EARLY = 1e-6
#: the bucket holds this many seconds of traffic (absorbs late event-loop timers)
BURST_SECONDS = 0.05
#: but never less than this, so a 16 KiB datagram and a few ACKs fit (a 64 KiB loopback
#: datagram is approved whenever the bucket is not empty and may drive it negative)
MIN_BURST = 32 * 1024
#: a held pacer wakes this long after the gates are ready again, so that the
#: connections they hold send a few packets per wake-up rather than one each
HOLD_BATCH = 0.004
#: receive-buffer sizing under a download cap: this many seconds of traffic ...
RECV_QUEUE_SECONDS = 0.1
#: ... but at least this many bytes (a few full-size datagrams, 64 KiB on loopback)
MIN_RECV_BUFFER = 256 * 1024


def burst_for(rate: int) -> int:
    """The bucket size used for a cap of ``rate`` bytes per second."""
    return max(MIN_BURST, int(rate * BURST_SECONDS))


def receive_buffer_for(rate: int, default: int) -> int:
    """SO_RCVBUF under a download cap: a short queue, so a sender that outruns the
    cap loses packets after ~``RECV_QUEUE_SECONDS`` of queueing (and its congestion
    control backs off) instead of seconds of delay building up for every peer."""
    return min(default, max(MIN_RECV_BUFFER, int(rate * RECV_QUEUE_SECONDS)))


class TokenBucket:
    """See the module docstring. ``clock`` returns seconds (monotonic)."""

    __slots__ = ("_at", "_clock", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"token bucket rate must be a positive number, got {rate!r}")
        if not (math.isfinite(burst) and burst > 0):
            raise ValueError(f"token bucket burst must be a positive number, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._level = self.burst
        self._at = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g}, level={self.level():g})"

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:  # a clock that steps back adds nothing
            self._level = min(self.burst, self._level + (now - self._at) * self.rate)
            self._at = now

    def level(self) -> float:
        """Tokens available now; negative while a debt is being paid off."""
        self._refill()
        return self._level

    def ready(self) -> bool:
        """Whether the next item may go now (no debt outstanding)."""
        self._refill()
        return self._level >= -self.rate * EARLY

    def consume(self, n: float) -> None:
        """Take ``n`` tokens; always succeeds, possibly leaving a debt."""
        if n < 0:
            raise ValueError("cannot consume a negative number of tokens")
        self._refill()
        self._level -= n

    def refund(self, n: float) -> None:
        """Give back ``n`` tokens charged too many (never beyond ``burst``)."""
        if n < 0:
            raise ValueError("cannot refund a negative number of tokens")
        self._refill()
        self._level = min(self.burst, self._level + n)

    def delay(self) -> float:
        """Seconds until :meth:`ready` (0 if it is now)."""
        self._refill()
        return 0.0 if self._level >= -self.rate * EARLY else -self._level / self.rate


class SendGate:
    """One endpoint's upload cap, shared by the pacers of all its connections."""

    __slots__ = ("_charged", "bucket", "deferred")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self._charged = 0  # bytes charged by pacers since the last settle
        self.deferred = 0  # packets refused for lack of tokens (a status counter)

    def approve(self, size: int) -> bool:
        """A pacer asks to build one packet of at most ``size`` bytes."""
        if not self.ready():
            self.deferred += 1
            return False
        self.take(size)
        return True

    def ready(self) -> bool:
        return self.bucket.ready()

    def take(self, size: int) -> None:
        """Charge one packet of at most ``size`` bytes (after :meth:`ready`)."""
        self.bucket.consume(size)
        self._charged += size

    def delay(self) -> float:
        return self.bucket.delay()

    def settle(self, sent: int) -> None:
        """The endpoint sent ``sent`` bytes of datagrams since the last settle."""
        diff = sent - self._charged
        self._charged = 0
        if diff > 0:
            self.bucket.consume(diff)
        elif diff < 0:
            self.bucket.refund(-diff)

    def charge(self, sent: int) -> None:
        """Bytes sent outside any connection (datagram-size probes, Retry packets)."""
        self.bucket.consume(sent)


class Gate(Protocol):
    """What a :class:`GatedPacer` asks before each packet: this gate, or the uplink's
    (uplink.py)."""

    deferred: int

    def ready(self) -> bool: ...
    def take(self, size: int) -> None: ...
    def delay(self) -> float: ...


class GatedPacer(CoarseTimerPacer):
    """aioquic's pacer (coarse-timer variant) that also waits for the endpoint's gates
    (the upload cap, the uplink's rate), and hands each RTT sample to ``on_rtt``.

    ``next_send_time`` returning a time makes aioquic stop building packets and
    arm its pacing timer for then; returning None lets one packet be built."""

    def __init__(
        self,
        *,
        max_datagram_size: int,
        gate: Gate | None = None,
        gates: Sequence[Gate] = (),
        on_rtt: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._gates = (*gates, gate) if gate is not None else tuple(gates)
        self.on_rtt = on_rtt

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        if self.on_rtt is not None:  # aioquic calls this once per RTT sample
            self.on_rtt()

    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]
        at: float | None = super().next_send_time(now)
        if at is not None:
            return at
        held = [g for g in self._gates if not g.ready()]
        if not held:
            for g in self._gates:
                g.take(self._max_datagram_size)
            return None
        for g in held:
            g.deferred += 1
        # wake once the gates have earned a batch, not a single packet: every
        # connection the gates hold wakes then, and each wake-up runs aioquic's whole
        # send path for what it may send
        return now + max(g.delay() for g in held) + HOLD_BATCH
