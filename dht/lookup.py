"""Iterative Kademlia lookup as a sans-I/O state machine (paper section 2.3).

A :class:`Lookup` is driven by its caller: ``next_queries(now)`` says whom to ask,
``on_response`` / ``on_failure`` report outcomes, ``expire(now)`` fails requests that
outlived ``timeout`` (for drivers without their own timers), ``done`` says when to
stop and ``result()`` gives the answer. Nothing here touches a socket or an event loop.

Parameters:
- ``k``: result size and the width of the window of closest candidates considered.
- ``alpha``: at most this many requests in flight.
- ``beta``: stop once the ``beta`` closest non-failed candidates have all answered
  (``beta == k`` is the strict paper termination; libp2p uses ``beta = 3`` with
  ``alpha = 10``). docs/dht.md records the measurement behind the defaults.
- ``max_queries``: a hard cap on requests, so no peer can keep a lookup alive forever.
- ``accept``: contacts learned from replies that fail it are dropped (the node's
  address-class rule, quic_transport/addrclass.py), and at most ``max_per_host``
  candidates per IP address are kept (loopback excepted: a local grid shares one),
  so forged contacts cannot aim a lookup's dials at one victim more than that
  (docs/dht.md, "Address classes").
- ``slow_after``: a request unanswered for this long is *presumed failed*: it stops
  counting against ``alpha`` and leaves the window of closest candidates (it may still
  answer until ``timeout`` and then rejoins), so a dead or slow peer delays a lookup
  by ``slow_after`` rather than the full timeout. At most ``3 * alpha`` requests are
  ever in flight.

Invariants:
- Only candidates among the ``k`` closest non-failed ones are ever queried, so a peer
  answering with far-away nodes cannot steer the lookup away from the target while
  closer candidates remain; a peer answering garbage (the driver reports it as a
  failure) just drops out.
- ``result()`` contains only nodes that answered (live), closest first, at most ``k``.
- Each node is queried at most once per lookup.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dht.contact import Contact
from quic_transport.identity import NodeId


class _State(enum.Enum):
    NEW = 0
    INFLIGHT = 1
    OK = 2
    FAILED = 3


@dataclass(slots=True)
class _Cand:
    contact: Contact
    dist: int
    hop: int  # the sequential round in which this node is (or would be) asked
    state: _State = _State.NEW
    sent_at: float = 0.0
    via: bytes | None = None  # the raw ID of the node whose reply named it


#: a node that named this many contacts that all failed, and none that answered,
#: is presumed to be inventing them: the rest of what it named is not asked
DISTRUST_AFTER = 3


@dataclass(frozen=True, slots=True)
class LookupStats:
    queries: int  # requests sent (answered, failed or abandoned)
    answered: int
    failed: int
    hops: int  # deepest round among the result nodes (1 = answered by a seed)
    candidates: int


def _dist(c: _Cand) -> int:
    return c.dist


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"


class Lookup:
    """One iterative lookup for ``target``. See the module docstring."""

    def __init__(
        self,
        target: NodeId,
        seeds: Iterable[Contact],
        *,
        k: int = 20,
        alpha: int = 3,
        beta: int | None = None,
        timeout: float = 5.0,
        max_queries: int = 400,
        slow_after: float | None = None,
        self_id: NodeId | None = None,
        accept: Callable[[Contact], bool] | None = None,
        max_per_host: int | None = None,
    ) -> None:
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be positive")
        self.target = target
        self.k = k
        self.alpha = alpha
        self.beta = k if beta is None else max(1, min(beta, k))
        self.timeout = timeout
        self.max_queries = max_queries
        self.slow_after = timeout if slow_after is None else min(slow_after, timeout)
        self._t = int(target)
        self._self_id = self_id
        # keyed by raw ID bytes (their hash is cached; NodeId's is recomputed)
        self._cands: dict[bytes, _Cand] = {}
        self._order: list[_Cand] = []  # sorted by distance to the target
        self._inflight = 0
        self.queries = 0
        self.answered = 0
        self.failures = 0
        self._accept = accept
        self._max_per_host = max_per_host
        self._per_host: Counter[str] = Counter()
        self.refused = 0  # contacts from replies dropped by accept / max_per_host
        # per referrer: how many of the contacts it named failed / answered
        self._named_failed: Counter[bytes] = Counter()
        self._named_ok: Counter[bytes] = Counter()
        self.distrusted = 0  # contacts dropped because their referrer named only dead ones
        for c in seeds:
            self._add(c, 1)

    def _add(self, contact: Contact, hop: int, via: bytes | None = None) -> None:
        nid = contact.node_id
        if nid == self._self_id:
            return
        cand = self._cands.get(nid.raw)
        if cand is not None:
            if cand.state is _State.NEW and hop < cand.hop:
                cand.hop = hop
            return
        if hop > 1 and not self._admit(contact):  # learned from a reply: check it
            self.refused += 1
            return
        cand = _Cand(contact, int(nid) ^ self._t, hop, via=via)
        self._cands[nid.raw] = cand
        bisect.insort(self._order, cand, key=_dist)

    def _admit(self, contact: Contact) -> bool:
        if self._accept is not None and not self._accept(contact):
            return False
        if self._max_per_host is not None and not _is_loopback(contact.host):
            if self._per_host[contact.host] >= self._max_per_host:
                return False
            self._per_host[contact.host] += 1
        return True

    def _window(self, now: float) -> list[_Cand]:
        """The k closest candidates not failed nor presumed failed, nearest first."""
        out: list[_Cand] = []
        slow_before = now - self.slow_after
        for c in self._order:
            if c.state is _State.FAILED:
                continue
            if c.state is _State.INFLIGHT and c.sent_at <= slow_before:
                continue
            out.append(c)
            if len(out) == self.k:
                break
        return out

    def is_done(self, now: float) -> bool:
        window = self._window(now)
        head = window[: self.beta]
        if head and all(c.state is _State.OK for c in head):
            return True
        if self._active(now):
            return False
        if self.queries >= self.max_queries or self._inflight >= 3 * self.alpha:
            return not self._inflight
        return not any(c.state is _State.NEW for c in window) and not self._inflight

    def next_queries(self, now: float) -> list[Contact]:
        """Contacts to send a request to now (marked in flight)."""
        if self.is_done(now):
            return []
        out: list[Contact] = []
        active = self._active(now)
        for c in self._window(now):
            if (
                active >= self.alpha
                or self._inflight >= 3 * self.alpha
                or self.queries >= self.max_queries
            ):
                break
            if c.state is _State.NEW:
                c.state = _State.INFLIGHT
                c.sent_at = now
                self._inflight += 1
                active += 1
                self.queries += 1
                out.append(c.contact)
        return out

    def _active(self, now: float) -> int:
        """Requests in flight that are not yet slow."""
        if not self._inflight:
            return 0
        return sum(
            1
            for c in self._cands.values()
            if c.state is _State.INFLIGHT and now - c.sent_at < self.slow_after
        )

    def next_wakeup(self, now: float) -> float | None:
        """When the driver should call ``next_queries``/``expire`` again even if no
        answer arrives: the next moment a request becomes slow or times out."""
        times = []
        for c in self._cands.values():
            if c.state is _State.INFLIGHT:
                for t in (c.sent_at + self.slow_after, c.sent_at + self.timeout):
                    if t > now:
                        times.append(t)
        return min(times) if times else None

    def slow_ids(self, now: float) -> list[NodeId]:
        """Requests still in flight that are presumed failed (for the driver's
        bookkeeping when it abandons them)."""
        return [
            c.contact.node_id
            for c in self._order
            if c.state is _State.INFLIGHT and now - c.sent_at >= self.slow_after
        ]

    def on_response(self, node_id: NodeId, contacts: Iterable[Contact], now: float) -> None:
        """``node_id`` answered with ``contacts`` (already schema-checked by the driver)."""
        cand = self._cands.get(node_id.raw)
        if cand is None or cand.state is not _State.INFLIGHT:
            return  # late or unsolicited: ignore
        cand.state = _State.OK
        self._inflight -= 1
        self.answered += 1
        if cand.via is not None:
            self._named_ok[cand.via] += 1
        for c in contacts:
            if c.node_id != node_id:
                self._add(c, cand.hop + 1, node_id.raw)

    def on_failure(self, node_id: NodeId, now: float) -> None:
        cand = self._cands.get(node_id.raw)
        if cand is None or cand.state is not _State.INFLIGHT:
            return
        cand.state = _State.FAILED
        self._inflight -= 1
        self.failures += 1
        via = cand.via
        if via is not None:
            self._named_failed[via] += 1
            if self._named_failed[via] == DISTRUST_AFTER and not self._named_ok[via]:
                self._distrust(via)

    def _distrust(self, via: bytes) -> None:
        """Drop the contacts ``via`` named that were not asked yet (a liar flooding the
        lookup with invented close IDs would otherwise spend its query budget)."""
        for c in self._order:
            if c.via == via and c.state is _State.NEW:
                c.state = _State.FAILED
                self.distrusted += 1

    def expire(self, now: float) -> list[NodeId]:
        """Fail every request in flight for ``timeout`` or longer; returns their IDs."""
        late = [
            c.contact.node_id
            for c in self._order
            if c.state is _State.INFLIGHT and now - c.sent_at >= self.timeout
        ]
        for nid in late:
            self.on_failure(nid, now)
        return late

    def result(self) -> list[Contact]:
        """Up to k nodes that answered, closest to the target first."""
        out: list[Contact] = []
        for c in self._order:
            if c.state is _State.OK:
                out.append(c.contact)
                if len(out) == self.k:
                    break
        return out

    def stats(self) -> LookupStats:
        res = self.result()
        hops = max((self._cands[c.node_id.raw].hop for c in res), default=0)
        return LookupStats(self.queries, self.answered, self.failures, hops, len(self._cands))
