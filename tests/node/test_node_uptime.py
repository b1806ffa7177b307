"""Observed peer uptime (sans-I/O slots) and the DHT transport wrapper that feeds it."""

from __future__ import annotations

from typing import Any

import pytest

from dht.contact import Contact
from dht.errors import PeerRejected, PeerTimeout, PeerUnreachable
from dht.transport import Handler
from p2pstore.grid.uptime import ObservingTransport, UptimeTracker
from quic_transport.identity import NodeId

A, B = NodeId(b"a" * 20), NodeId(b"b" * 20)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def tracker(clock: Clock, **kw: Any) -> UptimeTracker:
    return UptimeTracker(slot_seconds=10, window_slots=6, min_slots=3, clock=clock, **kw)


def test_unknown_until_enough_slots_observed() -> None:
    c = Clock()
    u = tracker(c)
    assert u.uptime(A) is None
    for _ in range(5):  # many observations in one slot count once
        u.observe(A, True)
    c.t = 10
    u.observe(A, True)
    assert u.uptime(A) is None and u.counts(A) == (2, 2)
    c.t = 20
    u.observe(A, False)
    assert u.uptime(A) == pytest.approx(2 / 3)


def test_any_answer_makes_a_slot_up_and_silent_slots_do_not_count() -> None:
    c = Clock()
    u = tracker(c)
    for slot in range(3):
        c.t = slot * 10
        u.observe(A, False)
        u.observe(A, True)  # answered later in the same slot
        u.observe(A, False)
    assert u.uptime(A) == 1.0
    c.t = 200  # long silence, then three failures: only observed slots count
    for slot in range(3):
        c.t = 200 + slot * 10
        u.observe(A, False)
    assert u.uptime(A) == 0.0  # the old successes left the 6-slot window


def test_window_slides() -> None:
    c = Clock()
    u = tracker(c)
    for slot in range(6):
        c.t = slot * 10
        u.observe(B, slot >= 3)  # down 3 slots, then up
    assert u.uptime(B) == 0.5
    for slot in range(6, 9):
        c.t = slot * 10
        u.observe(B, True)
    assert u.uptime(B) == 1.0


def test_bounded_peers_least_recent_dropped() -> None:
    c = Clock()
    u = tracker(c, max_peers=3)
    ids = [NodeId(bytes([i]) * 20) for i in range(5)]
    for n in ids[:3]:
        u.observe(n, True)
    u.observe(ids[0], True)  # refreshes 0
    u.observe(ids[3], True)
    u.observe(ids[4], True)
    assert len(u) == 3
    assert u.counts(ids[1]) == (0, 0) and u.counts(ids[2]) == (0, 0)
    assert u.counts(ids[0]) == (1, 1)
    u.forget(ids[0])
    assert len(u) == 2


def test_bad_parameters() -> None:
    for kw in ({"slot_seconds": 0}, {"window_slots": 2, "min_slots": 3}, {"max_peers": 0}):
        with pytest.raises(ValueError):
            UptimeTracker(**kw)  # type: ignore[arg-type]


class FakeTransport:
    def __init__(self) -> None:
        self.outcome: Exception | None = None
        self.registered: list[str] = []

    async def call(self, peer: Contact, method: str, body: Any, *, timeout: float) -> Any:  # noqa: ASYNC109
        if self.outcome is not None:
            raise self.outcome
        return {"ok": method}

    def register(self, method: str, handler: Handler) -> None:
        self.registered.append(method)


async def test_observing_transport_classifies_outcomes() -> None:
    c = Clock()
    u = tracker(c)
    inner = FakeTransport()
    t = ObservingTransport(inner, u)
    peer = Contact(A, "10.0.0.1", 4000)
    outcomes: list[Exception | None] = [
        None,
        PeerRejected(A, "bad-request", "x"),  # refused: it was up
        PeerTimeout(A, "t"),
        PeerUnreachable(A, "u"),
    ]
    ups = []
    for i, outcome in enumerate(outcomes):
        c.t = i * 10
        inner.outcome = outcome
        if outcome is None:
            assert await t.call(peer, "dht.ping", {}, timeout=1) == {"ok": "dht.ping"}
        else:
            with pytest.raises(type(outcome)):
                await t.call(peer, "dht.ping", {}, timeout=1)
        ups.append(u.counts(A)[0])
    assert ups == [1, 2, 2, 2]
    assert u.uptime(A) == 0.5
    t.register("dht.ping", lambda ctx, body: None)  # type: ignore[arg-type,return-value]
    assert inner.registered == ["dht.ping"]
