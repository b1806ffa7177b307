"""Sans-I/O reachability decision (docs/nat.md, "Deciding reachability").

:class:`ReachabilityTracker` takes the answers of ``nat.dialback`` (which address
the asked peer observed for us, and which of our addresses it could dial from a
fresh socket) and decides whether this node is publicly reachable, what its
observed address is, and whether its NAT maps ports per destination ("symmetric").
It also says when the next check is due. No sockets, no event loop: the caller
passes ``now``.

Decision rules (auto mode):
- only answers younger than ``answer_ttl`` count, at most one per peer (the latest);
- ``needed = min(confirmations, peers_available)`` (at least 1);
- **public** when at least ``needed`` peers reached us and they are at least as
  many as the peers that did not; **private** when at least ``needed`` peers could
  not reach us and they outnumber the ones that did; otherwise the previous verdict
  stands (initially ``unknown``);
- forced modes ("public"/"private") fix the verdict; answers are still recorded so
  the observed address and NAT type stay visible.
- NAT type: ``none`` if a fresh observed address equals a local address; else
  ``symmetric`` if fresh answers from different peers report the same host with
  different ports; else ``cone`` once two peers agree; else ``unknown``.

Invariants: memory is bounded (``max_answers`` peers); verdict is one of
``public``, ``private``, ``unknown``; events are reported once per change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from quic_transport.identity import NodeId

Addr = tuple[str, int]
VERDICTS: Final = ("public", "private", "unknown")
MODES: Final = ("auto", "public", "private")


@dataclass(frozen=True, slots=True)
class DialbackAnswer:
    """One peer's answer: what it saw and which of our addresses answered its dial."""

    peer_id: NodeId
    observed: Addr
    tried: tuple[Addr, ...]
    reached: tuple[Addr, ...]
    peer_reach: str = "unknown"  # the answering peer's own verdict (anchor choice)

    def __post_init__(self) -> None:
        if not set(self.reached) <= set(self.tried):
            raise ValueError("reached addresses must be among the tried ones")
        if self.peer_reach not in VERDICTS:
            raise ValueError("peer_reach must be public, private or unknown")

    @property
    def success(self) -> bool:
        return bool(self.reached)


@dataclass(frozen=True, slots=True)
class VerdictChanged:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ObservedChanged:
    old: Addr | None
    new: Addr


Event = VerdictChanged | ObservedChanged


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    mode: str = "auto"
    confirmations: int = 2
    answer_ttl: float = 3600.0
    recheck_interval: float = 900.0  # verdict known: re-check this often
    retry_interval: float = 30.0  # verdict unknown (or no peer answered): retry this soon
    max_answers: int = 16

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"reachability mode must be one of {', '.join(MODES)}")
        if self.confirmations < 1 or self.max_answers < self.confirmations:
            raise ValueError("need 1 <= confirmations <= max_answers")
        if min(self.answer_ttl, self.recheck_interval, self.retry_interval) <= 0:
            raise ValueError("intervals must be positive")


@dataclass(slots=True)
class _Entry:
    answer: DialbackAnswer
    at: float


@dataclass(slots=True)
class ReachabilityTracker:
    """See the module docstring."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    local_addresses: frozenset[Addr] = frozenset()
    peers_available: int = 0
    _answers: dict[NodeId, _Entry] = field(default_factory=dict)
    _verdict: str = "unknown"
    _observed: Addr | None = None
    _next_check: float = 0.0
    checks: int = 0

    def __post_init__(self) -> None:
        if self.config.mode != "auto":
            self._verdict = self.config.mode

    # -- inputs ----------------------------------------------------------------------
    def record(self, answer: DialbackAnswer, now: float) -> list[Event]:
        """Take one answer; returns the events it caused (verdict / observed changes)."""
        self._answers.pop(answer.peer_id, None)
        self._answers[answer.peer_id] = _Entry(answer, now)
        while len(self._answers) > self.config.max_answers:
            del self._answers[next(iter(self._answers))]  # oldest first (insertion order)
        return self._update(now)

    def check_finished(self, now: float, *, answered: int) -> list[Event]:
        """A round of checks ended (``answered`` peers replied); schedules the next."""
        self.checks += 1
        events = self._update(now)
        known = self._verdict != "unknown" and answered > 0
        delay = self.config.recheck_interval if known else self.config.retry_interval
        self._next_check = now + delay
        return events

    def request_check(self, now: float) -> None:
        """Make a check due now (e.g. the observed address changed, a relay was lost)."""
        self._next_check = now

    # -- outputs ---------------------------------------------------------------------
    def due(self, now: float) -> bool:
        return now >= self._next_check

    @property
    def next_check(self) -> float:
        return self._next_check

    @property
    def verdict(self) -> str:
        return self._verdict

    @property
    def observed(self) -> Addr | None:
        return self._observed

    def fresh(self, now: float) -> list[DialbackAnswer]:
        ttl = self.config.answer_ttl
        return [e.answer for e in self._answers.values() if now - e.at <= ttl]

    def peer_verdicts(self, now: float) -> dict[NodeId, str]:
        """What the peers that answered recently said about themselves."""
        return {a.peer_id: a.peer_reach for a in self.fresh(now)}

    def reachable_addresses(self, now: float) -> list[Addr]:
        """Our addresses some fresh answer reached, most confirmations first."""
        counts: Counter[Addr] = Counter()
        for a in self.fresh(now):
            counts.update(set(a.reached))
        return [addr for addr, _ in counts.most_common()]

    def nat_type(self, now: float) -> str:
        fresh = self.fresh(now)
        if any(a.observed in self.local_addresses for a in fresh):
            return "none"
        ports: dict[str, set[int]] = {}
        for a in fresh:
            ports.setdefault(a.observed[0], set()).add(a.observed[1])
        if any(len(p) > 1 for p in ports.values()):
            return "symmetric"
        if len(fresh) >= 2:
            return "cone"
        return "unknown"

    def summary(self, now: float) -> dict[str, object]:
        fresh = self.fresh(now)
        return {
            "mode": self.config.mode,
            "verdict": self._verdict,
            "observed": None
            if self._observed is None
            else f"{self._observed[0]}:{self._observed[1]}",
            "nat_type": self.nat_type(now),
            "answers": len(fresh),
            "reached_by": sum(1 for a in fresh if a.success),
            "not_reached_by": sum(1 for a in fresh if not a.success),
            "checks": self.checks,
        }

    # -- internals -------------------------------------------------------------------
    def _update(self, now: float) -> list[Event]:
        events: list[Event] = []
        fresh = self.fresh(now)
        observed = _majority([a.observed for a in fresh])
        if observed is not None and observed != self._observed:
            events.append(ObservedChanged(self._observed, observed))
            self._observed = observed
        if self.config.mode == "auto":
            verdict = self._decide(fresh)
            if verdict != self._verdict:
                events.append(VerdictChanged(self._verdict, verdict))
                self._verdict = verdict
        return events

    def _decide(self, fresh: list[DialbackAnswer]) -> str:
        needed = max(1, min(self.config.confirmations, self.peers_available))
        yes = sum(1 for a in fresh if a.success)
        no = len(fresh) - yes
        if yes >= needed and yes >= no:
            return "public"
        if no >= needed and no > yes:
            return "private"
        return self._verdict


def _majority(addrs: list[Addr]) -> Addr | None:
    if not addrs:
        return None
    counts = Counter(addrs)
    best = max(counts.values())
    # ties: the most recent of the most common (answers are in insertion order)
    for addr in reversed(addrs):
        if counts[addr] == best:
            return addr
    return None  # pragma: no cover
