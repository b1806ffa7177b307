"""Keeping the uplink's queue short: one send rate for all of an endpoint's
connections, steered by the queueing delay they measure (docs/limits.md, "The
uplink's queue").

Why: an upload goes to N peers over N connections at once, each with its own
loss-based congestion control. Through a home router's uplink, N such controllers
fill the router's queue (often hundreds of milliseconds deep), and when it
overflows the drops fall unevenly: one connection can lose every packet for
seconds while its loss timer backs off, and the silent-peer rule (liveness.py) and
the storage server's read timeout then take a starved connection for a vanished
peer. Measured over a 20 Mbit/s link with a 500 ms queue (benchmarks/bench_links):
every upload of 10 MiB failed.

The rule, after LEDBAT (RFC 6817), applied to the endpoint as a whole:

- every RTT sample of a connection gives a queueing delay: that sample minus the
  connection's smallest RTT (its base delay). Over each ``INTERVAL`` the smallest
  delay of each connection counts (one late sample is CPU noise; a standing queue
  delays them all), and the largest of those is the queue (a connection opened
  while a queue stood took part of it for its base);
- while no rate is set and the delay stays below ``target``, nothing is limited;
- when the delay reaches ``target`` and at least ``ENGAGE_MIN`` is being
  acknowledged (else the queue is not ours; for a queue on the way in, see below),
  the rate is set to ``DRAIN`` x the rate
  at which the peers acknowledge data (while a queue stands, the uplink's
  capacity), or less to drain a longer queue in about ``DRAIN_TIME`` (down to
  ``MIN_SHARE`` of it); while the delay stays there the rate is set again;
- below ``target`` the rate grows by up to ``GROWTH`` per second, in proportion to
  how far below, to follow a link that gets faster; a rate that held no packet back
  for ``SLACK`` seconds limits nothing and is dropped, and so is the rate after
  ``IDLE_RESET`` seconds without acknowledgements (another network, perhaps).

An RTT sample also waits in the queues on the way back. During a download the
downlink's queue fills (a home router's holds hundreds of milliseconds too), the
acknowledgements of the little the endpoint sends (requests, flow-control credit)
wait in it, and the delay looks like an uplink queue: measured over a 20/100
Mbit/s link (benchmarks/bench_links), the home node set its rate to ~126 kB/s, 0.9
x what it sent, and held back the very credit its download waited for; back-to-back
downloads took up to 2.7x the link's time instead of 1.2x. A queue of ours fills
while we send far more than we receive (an upload receives acknowledgements only,
a few per cent); one the endpoint receives ``1 / REVERSE_SHARE`` times more than
it sends through is on the way in. So each connection's acknowledged and received
bytes are counted per interval, and the samples of a connection that received more
than ``1 / REVERSE_SHARE`` times what it had acknowledged do not count as the
queue (a LAN peer's bulk sending to us included); a rate set before (by an upload)
then stays as it is until it holds nothing back for ``SLACK``. Every connection's
acknowledgements come back through the downlink, though, so a connection that
sends a little beside a download (DHT traffic, an upload) sees the download's
queue too: while the endpoint as a whole receives more than ``1 / REVERSE_SHARE``
times what is acknowledged, a standing delay sets no rate and drops one. An upload
beside a download then swings between set and dropped instead of falling to the
floor (RTT samples cannot tell the two directions apart; LEDBAT measures one-way
delay, which QUIC does not carry).

A rate is lowered only on evidence: while less than ``ENGAGE_MIN`` of ours is being
acknowledged, a standing delay sets no rate and lowers none; a set rate under
``ENGAGE_MIN / DRAIN``, which could itself be what keeps the acknowledgements that
low, is dropped instead (else it would stay there, lowered, grown and dropped by
nothing while the delay stands). So a set rate is never under ``MIN_SHARE *
ENGAGE_MIN`` (64 KiB/s), and below about 1 Mbit/s of ours the connections' own
congestion control alone governs. A sender that paused (a storage node between
the blocks of a download) and resumes into someone else's queue sees
acknowledgements of almost nothing; a rate set from them was the floor, which lets
through too little to measure more. Measured over the 20/100 Mbit/s link: one of
a download's senders went from 6.4 MB/s to the floor 0.28 s into a get (8,900
bytes/s acknowledged, a 70 ms delay), and the 30 MiB get took 11.2 s instead of
~3.4 s (of 67 such gets in six runs, five took 4.5-11.2 s).

Invariants (tests/transport/test_transport_uplink.py): the rate is None or at least
``MIN_RATE``; without delay samples at or above ``target`` it is never set.
Pure logic with an injected clock: :mod:`.quic_tuned` feeds it from each
connection's loss recovery, and :class:`AdaptiveGate` holds packets to the rate.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from .ratelimit import TokenBucket, burst_for

INTERVAL = 0.05  # seconds between rate updates (the delay filter's span)
DRAIN = 0.9  # the rate set under a short standing queue, as a fraction of the capacity
DRAIN_TIME = 1.0  # seconds: a longer queue is drained in about this long ...
MIN_SHARE = 0.5  # ... at no less than this fraction of the capacity
GROWTH = 0.5  # per second, at most, while the queue is empty
ENGAGE_MIN = 128 * 1024  # bytes per second acknowledged, at least, for a queue to be ours
SLACK = 2.0  # seconds in which a set rate held nothing back: it is dropped
IDLE_RESET = 5.0  # seconds without acknowledgements after which the rate is forgotten
MIN_RATE = 16 * 1024  # bytes per second: the floor of a set rate
#: a queue is ours only while we send at least this fraction of what we receive
REVERSE_SHARE = 0.05
WINDOW = 0.5  # seconds of acknowledgements the delivery rate is measured over
_BIN = 0.05  # seconds per bin of acknowledged bytes


class UplinkControl:
    """See the module docstring. ``clock`` returns seconds (monotonic)."""

    def __init__(self, target: float, clock: Callable[[], float]) -> None:
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"queueing delay target must be positive, got {target!r}")
        self.target = target
        self._clock = clock
        self.rate: float | None = None
        self.engaged = 0  # times a standing queue set the rate (a status counter)
        self._bins: deque[list[float]] = deque()  # [start time, bytes acknowledged]
        self._in_bins: deque[list[float]] = deque()  # [start time, bytes received]
        # per connection, this interval: [bytes acknowledged, bytes received]
        self._flows: dict[object, list[int]] = {}
        self._delays: dict[object, float] = {}  # per connection: smallest delay this interval
        self._updated = clock()
        self._last_ack = self._updated
        self._held_at = self._updated  # when the rate last held a packet back

    def acked(self, nbytes: int, conn: object = None) -> None:
        """``conn``'s peer acknowledged a packet of ``nbytes``."""
        now = self._clock()
        self._last_ack = now
        _count(self._bins, now, nbytes)
        if conn is not None:
            self._flows.setdefault(conn, [0, 0])[0] += nbytes

    def received(self, nbytes: int, conn: object = None) -> None:
        """``conn`` (a gated connection) received a datagram of ``nbytes``."""
        _count(self._in_bins, self._clock(), nbytes)
        if conn is not None:
            self._flows.setdefault(conn, [0, 0])[1] += nbytes

    def capacity(self) -> float:
        """The rate at which the peers acknowledge data, over the last ``WINDOW``
        seconds (0: nothing acknowledged): the uplink's capacity while a queue stands
        (what was sent waits in the queue, so acknowledgements come at the link's pace)."""
        return _rate(self._bins, self._clock())

    def inbound(self) -> float:
        """The rate at which the gated connections receive, over the last ``WINDOW``."""
        return _rate(self._in_bins, self._clock())

    def sample(self, conn: object, queue_delay: float) -> None:
        """One RTT sample's queueing delay (seconds above ``conn``'s base delay)."""
        now = self._clock()
        queue_delay = max(0.0, queue_delay)
        seen = self._delays.get(conn)
        self._delays[conn] = queue_delay if seen is None else min(seen, queue_delay)
        if now - self._updated >= INTERVAL:
            self._update(now)

    def held(self) -> None:
        """The rate held a packet back (it is binding)."""
        self._held_at = self._clock()

    def current(self) -> float | None:
        """The rate now (None: unlimited), forgetting it after ``IDLE_RESET`` quiet s."""
        if self.rate is not None and self._clock() - self._last_ack > IDLE_RESET:
            self.rate = None
        return self.rate

    def _update(self, now: float) -> None:
        dt = min(now - self._updated, 1.0)
        self._updated = now
        # the connections share the queue: the one that sees it best (a connection
        # opened while a queue stood took part of it for its base delay); one that
        # mostly receives sees the queue on the way in, not ours
        flows, self._flows = self._flows, {}
        delay = max((d for c, d in self._delays.items() if _sends(flows.get(c))), default=None)
        self._delays.clear()
        if delay is None:
            if self.rate is not None and now - self._held_at > SLACK:
                self.rate = None  # a download's samples only: a rate holding nothing
            return
        capacity = self.capacity()
        if delay >= self.target:
            if capacity < REVERSE_SHARE * self.inbound():
                self.rate = None  # we receive far more than we send: a download's queue
                return
            if capacity < ENGAGE_MIN:
                # little of ours acknowledged: no evidence the queue is ours. A rate
                # that itself keeps it below ENGAGE_MIN could never gather any: it is
                # dropped; a higher one (a sender that paused) is kept.
                if self.rate is not None and self.rate < ENGAGE_MIN / DRAIN:
                    self.rate = None
                return
            if self.rate is None:
                self.engaged += 1
                self._held_at = now
            # below the capacity by enough to empty the queue in about DRAIN_TIME
            share = min(DRAIN, max(MIN_SHARE, 1 - (delay - self.target) / DRAIN_TIME))
            self.rate = max(MIN_RATE, share * capacity)
            return
        if self.rate is None:
            return
        if now - self._held_at > SLACK:  # it holds nothing back: we send less than it
            self.rate = None
            return
        grown = self.rate * (1 + GROWTH * (self.target - delay) / self.target * dt)
        self.rate = max(MIN_RATE, DRAIN * capacity, grown)


def _sends(flow: list[int] | None) -> bool:
    """Whether a connection's traffic this interval (``[acknowledged, received]``) is
    mostly its own sending: its RTT samples then speak for our queue."""
    return flow is None or flow[0] >= REVERSE_SHARE * flow[1]


def _count(bins: deque[list[float]], now: float, nbytes: int) -> None:
    """Add ``nbytes`` at ``now`` to ``bins`` (``_BIN`` seconds each, ``WINDOW`` kept)."""
    if bins and now - bins[-1][0] < _BIN:
        bins[-1][1] += nbytes
    else:
        bins.append([now, float(nbytes)])
        while bins and now - bins[0][0] > WINDOW:
            bins.popleft()


def _rate(bins: deque[list[float]], now: float) -> float:
    """Bytes per second in ``bins`` over the last ``WINDOW`` (0: none)."""
    while bins and now - bins[0][0] > WINDOW:
        bins.popleft()
    if not bins:
        return 0.0
    return sum(b[1] for b in bins) / max(now - bins[0][0], _BIN)


class AdaptiveGate:
    """Holds the packets of the connections it gates to :class:`UplinkControl`'s
    rate: a token bucket re-rated as the control moves, open while no rate is set."""

    __slots__ = ("_bucket", "_clock", "control", "deferred")

    def __init__(self, control: UplinkControl, clock: Callable[[], float]) -> None:
        self.control = control
        self._clock = clock
        self._bucket: TokenBucket | None = None
        self.deferred = 0  # packets held back (a status counter)

    def _current(self) -> TokenBucket | None:
        rate = self.control.current()
        if rate is None:
            self._bucket = None
            return None
        bucket = self._bucket
        if bucket is None:
            bucket = self._bucket = TokenBucket(rate, burst_for(int(rate)), self._clock)
        elif bucket.rate != rate:
            bucket.level()  # settle what the old rate earned before the change
            bucket.rate = rate
            bucket.burst = float(burst_for(int(rate)))
        return bucket

    def ready(self) -> bool:
        bucket = self._current()
        if bucket is None or bucket.ready():
            return True
        self.control.held()
        return False

    def take(self, size: int) -> None:
        bucket = self._bucket
        if bucket is not None:
            bucket.consume(size)

    def delay(self) -> float:
        bucket = self._current()
        return 0.0 if bucket is None else bucket.delay()
