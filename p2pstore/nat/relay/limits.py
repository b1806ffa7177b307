"""Relay accounting, sans-I/O: reservations, circuits, byte and rate limits, expiry.

:class:`RelayBook` decides, given ``now``, whether a reservation may be made or
renewed and whether each relayed datagram is forwarded or dropped; the I/O layer
(relay.py) only acts on its answers. No sockets, no event loop.

A *reservation* belongs to the peer that made it. A *circuit* is one remote
source address that sent a datagram to the reservation's relayed port; replies
from the client may only go to an existing circuit.

A source address proves nothing: one spoofed datagram bearing a victim's address
would open a circuit toward the victim. So a new circuit starts *unvalidated*:
the relay sends the source a path challenge (a random token,
quic_transport/echo.py) and the circuit is *validated* only when the token comes
back from that address. Until then the client may send it at most
:data:`AMPLIFICATION` times the bytes that came from it (QUIC's own
anti-amplification bound, RFC 9000 section 8.1), and only traffic *from* the
source keeps it alive: the client's sending neither opens nor refreshes a circuit
(docs/relay.md, "Threat model").

Invariants (hypothesis-tested in tests/nat/test_nat_relay_limits.py):
- at most ``max_reservations`` live reservations, at most
  ``max_reservations_per_peer`` per peer;
- at most ``max_circuits`` circuits per reservation;
- the bytes forwarded for one reservation (both directions, datagram payloads)
  never exceed ``max_bytes``; the datagram that would cross it is dropped and
  ends the reservation (reason ``byte-limit``);
- with ``max_rate`` set, bytes forwarded in any interval of t seconds stay within
  ``burst + max_rate * t`` (token bucket, burst = one second of rate, at least
  64 KiB);
- every offered datagram is counted exactly once, as forwarded or under one
  drop reason;
- toward an unvalidated circuit the client's forwarded bytes never exceed
  ``AMPLIFICATION`` times the bytes that source sent;
- a reservation never outlives ``expires`` (extended by renewal up to
  ``created + max_duration``).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pstore.nat.relay.errors import RelayError
from quic_transport.identity import NodeId

Addr = tuple[str, int]
#: a circuit the client never answered, open at least this long, may be evicted
#: for a new source when ``max_circuits`` is reached (else anyone could block a
#: reservation by sending from ``max_circuits`` source ports every ``circuit_idle``)
UNANSWERED_GRACE = 3.0
#: toward an unvalidated circuit: at most this many bytes per byte received from it
AMPLIFICATION = 3
#: path challenges per unvalidated circuit, and the least time between two
MAX_CHALLENGES = 5
CHALLENGE_INTERVAL = 1.0
TOKEN_BYTES = 16
#: a reservation that forwarded nothing this long counts as idle: when the relay is
#: full it may be ended for a host holding fewer reservations (fair shares)
IDLE_EVICT = 60.0


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Relay server limits (config ``[relay]``, docs/relay.md, "Limits"). 0 = no limit
    for ``max_bytes``, ``max_rate`` and ``max_duration``."""

    max_reservations: int = 16
    max_reservations_per_peer: int = 2
    # per caller IP address (IPv6: per /64): node IDs cost nothing, so without this
    # one host could take every reservation
    max_reservations_per_host: int = 8
    max_circuits: int = 16
    max_bytes: int = 1 << 30  # per reservation, both directions
    max_rate: int = 1_000_000  # bytes/s per reservation, both directions
    lifetime: float = 600.0  # seconds granted by reserve and by each renew
    max_duration: float = 86400.0  # a reservation's total age, renewals included
    circuit_idle: float = 120.0  # a source silent (both ways) this long is forgotten
    attach_timeout: float = 20.0  # the client must open relay.recv within this time
    client_silence: float = 30.0  # relay.send quiet (no PING, no data) this long ends it
    queue_bytes: int = 1 << 20  # records buffered per reservation towards the client
    #: leading zero bits of proof of work a reserve must carry (relay/work.py); 0 = none
    work_bits: int = 18

    def __post_init__(self) -> None:
        for name in (
            "max_reservations",
            "max_reservations_per_peer",
            "max_reservations_per_host",
            "max_circuits",
            "queue_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"RelayLimits.{name} must be positive")
        for name in ("max_bytes", "max_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"RelayLimits.{name} must be >= 0")
        for name in ("lifetime", "circuit_idle", "attach_timeout", "client_silence"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RelayLimits.{name} must be positive")
        if self.max_duration < 0:
            raise ValueError("RelayLimits.max_duration must be >= 0")
        if not 0 <= self.work_bits <= 28:
            raise ValueError("RelayLimits.work_bits must be 0..28")

    def advertised(self) -> dict[str, int | float]:
        """What the reserve reply tells the client."""
        return {
            "max_circuits": self.max_circuits,
            "max_bytes": self.max_bytes,
            "max_rate": self.max_rate,
            "lifetime": self.lifetime,
            "max_duration": self.max_duration,
            "circuit_idle": self.circuit_idle,
            "client_silence": self.client_silence,
            "work_bits": self.work_bits,
        }


def host_key(host: str) -> str:
    """What ``max_reservations_per_host`` counts: the IP (an IPv6 address by its /64,
    which one host usually has whole); a non-IP host as is."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Verdict(enum.Enum):
    FORWARD = "forward"
    DROP_CLOSED = "closed"  # the reservation is over
    DROP_CIRCUITS = "circuits"  # a new source beyond max_circuits
    DROP_UNKNOWN = "unknown-destination"  # client sent to an address that is no circuit
    DROP_UNVALIDATED = "unvalidated"  # beyond the amplification bound of an unproven source
    DROP_RATE = "rate"  # over max_rate
    DROP_BYTES = "bytes"  # max_bytes reached (the reservation ends)


class Refusal(RelayError):
    """A reserve/renew/lookup the book refuses; ``code`` is a
    :data:`~p2pstore.nat.relay.errors.CODES` entry. The relay service answers it as
    an ``RpcError`` with that code (the client then raises ``RelayRefused``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(slots=True)
class Circuit:
    addr: Addr
    opened: float
    last_active: float  # last datagram *from* the source (or, once validated, to it)
    bytes_in: int = 0  # source -> client
    bytes_out: int = 0  # client -> source
    token: bytes = b""  # the path challenge the source must echo
    validated: bool = False
    challenges: int = 0
    challenged_at: float = float("-inf")


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``echo.request(token)`` from reservation ``rid``'s relayed port to ``addr``."""

    rid: int
    addr: Addr
    token: bytes


@dataclass(slots=True)
class ReservationState:
    rid: int
    peer: NodeId
    created: float
    expires: float
    tokens: float
    refilled: float
    host: str | None = None  # the reserving caller's host_key
    attached: bool = False  # relay.recv is open
    last_heard: float = 0.0  # last record from the client on relay.send (or creation)
    last_traffic: float = 0.0  # last datagram forwarded either way (or creation)
    ended: str | None = None  # reason, once over
    bytes_in: int = 0
    bytes_out: int = 0
    circuits: dict[Addr, Circuit] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def bytes_total(self) -> int:
        return self.bytes_in + self.bytes_out


@dataclass(frozen=True, slots=True)
class Ended:
    rid: int
    peer: NodeId
    reason: str  # "expired", "byte-limit", "released", "not-attached", "client-silent", ...


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    rid: int
    addr: Addr


class RelayBook:
    """See the module docstring. ``now`` is a monotonic clock in seconds."""

    def __init__(self, limits: RelayLimits, token: Callable[[int], bytes] = os.urandom) -> None:
        self.limits = limits
        self._res: dict[int, ReservationState] = {}
        self._next_rid = 1
        self.counters: Counter[str] = Counter()  # forwarded/dropped totals, refusals
        self._evicted: list[CircuitClosed] = []  # circuits inbound() evicted (take_evicted)
        self._token = token
        self._challenges: list[Challenge] = []  # to send (take_challenges)
        self._ended: list[Ended] = []  # reservations reserve() ended for fairness

    # -- reservations --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._res)

    def reservations(self) -> list[ReservationState]:
        return list(self._res.values())

    def count_for(self, peer: NodeId) -> int:
        return sum(1 for r in self._res.values() if r.peer == peer)

    def reserve(self, peer: NodeId, now: float, host: str | None = None) -> ReservationState:
        """``host``: the caller's IP address (counted against
        ``max_reservations_per_host``; None: not counted)."""
        lim = self.limits
        hkey = None if host is None else host_key(host)
        if len(self._res) >= lim.max_reservations:
            victim = self._fair_victim(hkey, now)
            if victim is None:
                self.counters["refused:relay-full"] += 1
                raise Refusal(
                    "relay-full",
                    f"this relay holds its maximum of {lim.max_reservations} reservations",
                )
            ended = self.end(victim.rid, "evicted")
            if ended is not None:
                self._ended.append(ended)
        if self.count_for(peer) >= lim.max_reservations_per_peer:
            self.counters["refused:relay-peer-limit"] += 1
            raise Refusal(
                "relay-peer-limit",
                f"you hold {lim.max_reservations_per_peer} reservations here already (the maximum)",
            )
        if hkey is not None and (
            sum(1 for r in self._res.values() if r.host == hkey) >= lim.max_reservations_per_host
        ):
            self.counters["refused:relay-peer-limit"] += 1
            raise Refusal(
                "relay-peer-limit",
                f"your address holds {lim.max_reservations_per_host} reservations here already"
                " (the maximum)",
            )
        rid = self._next_rid
        self._next_rid += 1
        state = ReservationState(
            rid=rid,
            peer=peer,
            created=now,
            expires=self._cap(now, now + lim.lifetime),
            tokens=self._burst(),
            refilled=now,
            last_heard=now,
            last_traffic=now,
            host=hkey,
        )
        self._res[rid] = state
        self.counters["reserved"] += 1
        return state

    def _fair_victim(self, hkey: str | None, now: float) -> ReservationState | None:
        """The relay is full and ``hkey`` asks: a reservation of a host holding at
        least two more than ``hkey`` does, idle for :data:`IDLE_EVICT` (the longest
        idle first, then the oldest), or None. So hosts share the slots fairly, and
        only reservations nobody uses give way."""
        counts = Counter(r.host for r in self._res.values())
        mine = counts.get(hkey, 0) if hkey is not None else 0
        best: ReservationState | None = None
        for r in self._res.values():
            if r.host == hkey or counts[r.host] < mine + 2:
                continue
            if now - r.last_traffic < IDLE_EVICT:
                continue
            if best is None or (r.last_traffic, r.created) < (best.last_traffic, best.created):
                best = r
        return best

    def take_ended(self) -> list[Ended]:
        """Reservations :meth:`reserve` ended to make room (close their ports)."""
        out, self._ended = self._ended, []
        return out

    def _cap(self, created: float, expires: float) -> float:
        if self.limits.max_duration > 0:
            return min(expires, created + self.limits.max_duration)
        return expires

    def _burst(self) -> float:
        return float(max(self.limits.max_rate, 65536)) if self.limits.max_rate else 0.0

    def get(self, peer: NodeId, rid: int) -> ReservationState:
        state = self._res.get(rid)
        if state is None or state.peer != peer:
            raise Refusal("relay-unknown", f"no reservation {rid} of yours on this relay")
        return state

    def renew(self, peer: NodeId, rid: int, now: float) -> float:
        """Extend by ``lifetime`` (capped at ``max_duration``); returns the new ttl."""
        state = self.get(peer, rid)
        expires = self._cap(state.created, now + self.limits.lifetime)
        if expires <= state.expires:  # already at created + max_duration
            raise Refusal(
                "relay-max-duration",
                f"reservation {rid} reached the maximum duration of {self.limits.max_duration} s;"
                " reserve a new one",
            )
        state.expires = max(state.expires, expires)
        self.counters["renewed"] += 1
        return state.expires - now

    def end(self, rid: int, reason: str) -> Ended | None:
        """End a reservation (idempotent); None if it was not live."""
        state = self._res.pop(rid, None)
        if state is None:
            return None
        state.ended = reason
        self.counters[f"ended:{reason}"] += 1
        return Ended(rid, state.peer, reason)

    def heard(self, rid: int, now: float) -> None:
        state = self._res.get(rid)
        if state is not None:
            state.last_heard = now

    # -- datagrams -----------------------------------------------------------------------
    def inbound(self, rid: int, source: Addr, size: int, now: float) -> Verdict:
        """A datagram from ``source`` arrived on the relayed port."""
        state = self._res.get(rid)
        if state is None:
            return self._count(None, Verdict.DROP_CLOSED)
        circuit = state.circuits.get(source)
        victim = None
        if circuit is None and len(state.circuits) >= self.limits.max_circuits:
            victim = self._evictable(state, now)
            if victim is None:
                return self._count(state, Verdict.DROP_CIRCUITS)
        verdict = self._charge(state, size, now)
        if verdict is not Verdict.FORWARD:
            return verdict
        if victim is not None and state.circuits.pop(victim, None) is not None:
            self._evicted.append(CircuitClosed(state.rid, victim))
            self.counters["circuit-evicted"] += 1
        if circuit is None:
            circuit = state.circuits[source] = Circuit(
                source, now, now, token=self._token(TOKEN_BYTES)
            )
        circuit.last_active = now
        circuit.bytes_in += size
        state.bytes_in += size
        if (
            not circuit.validated
            and circuit.challenges < MAX_CHALLENGES
            and now - circuit.challenged_at >= CHALLENGE_INTERVAL
        ):
            circuit.challenges += 1
            circuit.challenged_at = now
            self._challenges.append(Challenge(state.rid, source, circuit.token))
            self.counters["challenges"] += 1
        return verdict

    def take_challenges(self) -> list[Challenge]:
        """Path challenges :meth:`inbound` asked for since the last call (send them)."""
        out, self._challenges = self._challenges, []
        return out

    def validate(self, rid: int, source: Addr, token: bytes) -> bool:
        """``source`` echoed a token to the relayed port: validate its circuit if the
        token is that circuit's. True if it was validated now."""
        state = self._res.get(rid)
        circuit = None if state is None else state.circuits.get(source)
        if circuit is None or circuit.validated or not circuit.token:
            return False
        if not hmac.compare_digest(circuit.token, token):
            self.counters["challenge-mismatch"] += 1
            return False
        circuit.validated = True
        self.counters["circuit-validated"] += 1
        return True

    @staticmethod
    def _evictable(state: ReservationState, now: float) -> Addr | None:
        """The least recently active circuit that is unvalidated or that the client
        never replied to (open for at least :data:`UNANSWERED_GRACE`), or None."""
        best: Circuit | None = None
        for c in state.circuits.values():
            if (c.validated and c.bytes_out) or now - c.opened < UNANSWERED_GRACE:
                continue
            if best is None or c.last_active < best.last_active:
                best = c
        return None if best is None else best.addr

    def take_evicted(self) -> list[CircuitClosed]:
        """Circuits :meth:`inbound` evicted since the last call (tell the client)."""
        out, self._evicted = self._evicted, []
        return out

    def outbound(self, rid: int, dest: Addr, size: int, now: float) -> Verdict:
        """The client asks to send a datagram to ``dest`` from the relayed port."""
        state = self._res.get(rid)
        if state is None:
            return self._count(None, Verdict.DROP_CLOSED)
        circuit = state.circuits.get(dest)
        if circuit is None:
            return self._count(state, Verdict.DROP_UNKNOWN)
        if not circuit.validated and circuit.bytes_out + size > AMPLIFICATION * circuit.bytes_in:
            return self._count(state, Verdict.DROP_UNVALIDATED)
        verdict = self._charge(state, size, now)
        if verdict is Verdict.FORWARD:
            if circuit.validated:  # an unproven source is kept alive only by what it sends
                circuit.last_active = now
            circuit.bytes_out += size
            state.bytes_out += size
        return verdict

    def _charge(self, state: ReservationState, size: int, now: float) -> Verdict:
        lim = self.limits
        if lim.max_bytes and state.bytes_total + size > lim.max_bytes:
            verdict = self._count(state, Verdict.DROP_BYTES)
            self.end(state.rid, "byte-limit")
            return verdict
        if lim.max_rate:
            elapsed = max(now - state.refilled, 0.0)
            state.tokens = min(self._burst(), state.tokens + elapsed * lim.max_rate)
            state.refilled = max(now, state.refilled)
            if state.tokens < size:
                return self._count(state, Verdict.DROP_RATE)
            state.tokens -= size
        state.last_traffic = now
        return self._count(state, Verdict.FORWARD)

    def _count(self, state: ReservationState | None, verdict: Verdict) -> Verdict:
        self.counters[verdict.value] += 1
        if state is not None and verdict is not Verdict.FORWARD:
            state.dropped[verdict.value] += 1
        return verdict

    # -- time ----------------------------------------------------------------------------
    def expire(self, now: float) -> tuple[list[Ended], list[CircuitClosed]]:
        """End what is due: lifetimes, unattached and silent clients, idle circuits."""
        lim = self.limits
        ended: list[Ended] = []
        closed: list[CircuitClosed] = []
        for state in list(self._res.values()):
            reason = None
            if now >= state.expires:
                reason = "expired"
            elif not state.attached and now >= state.created + lim.attach_timeout:
                reason = "not-attached"
            elif now >= state.last_heard + lim.client_silence:
                reason = "client-silent"
            if reason is not None:
                e = self.end(state.rid, reason)
                if e is not None:
                    ended.append(e)
                continue
            for addr, c in list(state.circuits.items()):
                if now >= c.last_active + lim.circuit_idle:
                    del state.circuits[addr]
                    closed.append(CircuitClosed(state.rid, addr))
        return ended, closed

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`expire` could do something."""
        lim = self.limits
        times: list[float] = []
        for s in self._res.values():
            times.append(s.expires)
            times.append(s.last_heard + lim.client_silence)
            if not s.attached:
                times.append(s.created + lim.attach_timeout)
            times.extend(c.last_active + lim.circuit_idle for c in s.circuits.values())
        return min(times) if times else None
