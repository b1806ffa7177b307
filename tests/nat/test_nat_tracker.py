"""Sans-I/O reachability tracker: decision rules, NAT type, scheduling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.nat.tracker import (
    DialbackAnswer,
    ObservedChanged,
    ReachabilityTracker,
    TrackerConfig,
    VerdictChanged,
)
from quic_transport.identity import NodeId

OBS = ("203.0.113.5", 4000)


def nid(i: int) -> NodeId:
    return NodeId(i.to_bytes(20, "big"))


def ans(i: int, ok: bool, observed: tuple[str, int] = OBS) -> DialbackAnswer:
    return DialbackAnswer(nid(i), observed, (observed,), (observed,) if ok else ())


def tracker(mode: str = "auto", peers: int = 5, **kw: float) -> ReachabilityTracker:
    t = ReachabilityTracker(TrackerConfig(mode=mode, **kw))  # type: ignore[arg-type]
    t.peers_available = peers
    return t


def test_two_confirmations_make_public() -> None:
    t = tracker()
    assert t.verdict == "unknown"
    events = t.record(ans(1, True), 0)
    assert ObservedChanged(None, OBS) in events and t.verdict == "unknown"
    assert t.record(ans(2, True), 1) == [VerdictChanged("unknown", "public")]
    assert t.verdict == "public" and t.reachable_addresses(1) == [OBS]


def test_failures_make_private_and_majority_wins() -> None:
    t = tracker()
    t.record(ans(1, False), 0)
    t.record(ans(2, False), 0)
    assert t.verdict == "private"
    t.record(ans(3, True), 0)
    assert t.verdict == "private"  # 1 yes < needed
    t.record(ans(4, True), 0)
    assert t.verdict == "public"  # 2 yes >= 2 no


def test_one_peer_grid_needs_one_confirmation() -> None:
    t = tracker(peers=1)
    t.record(ans(1, True), 0)
    assert t.verdict == "public"
    t2 = tracker(peers=1)
    t2.record(ans(1, False), 0)
    assert t2.verdict == "private"


def test_latest_answer_per_peer_and_expiry() -> None:
    t = tracker(answer_ttl=100)
    t.record(ans(1, True), 0)
    t.record(ans(1, True), 1)  # same peer twice: still one confirmation
    assert t.verdict == "unknown"
    t.record(ans(2, True), 2)
    assert t.verdict == "public"
    assert len(t.fresh(50)) == 2 and t.fresh(150) == []
    # stale answers no longer count; new failures flip the verdict
    t.record(ans(3, False), 150)
    t.record(ans(4, False), 150)
    assert t.verdict == "private"


@pytest.mark.parametrize("mode", ["public", "private"])
def test_forced_modes_ignore_answers(mode: str) -> None:
    t = tracker(mode)
    assert t.verdict == mode
    for i in range(5):
        t.record(ans(i, mode == "private"), 0)
    assert t.verdict == mode
    assert t.observed == OBS  # still shown


def test_nat_type() -> None:
    t = tracker()
    assert t.nat_type(0) == "unknown"
    t.record(ans(1, False, ("1.2.3.4", 1000)), 0)
    t.record(ans(2, False, ("1.2.3.4", 1000)), 0)
    assert t.nat_type(0) == "cone"
    t.record(ans(3, False, ("1.2.3.4", 1001)), 0)
    assert t.nat_type(0) == "symmetric"
    t.local_addresses = frozenset({("1.2.3.4", 1000)})
    assert t.nat_type(0) == "none"


def test_observed_majority_and_change_event() -> None:
    t = tracker()
    t.record(ans(1, True, ("1.1.1.1", 1)), 0)
    t.record(ans(2, True, ("1.1.1.1", 1)), 0)
    ev = t.record(ans(3, True, ("2.2.2.2", 2)), 0)
    assert t.observed == ("1.1.1.1", 1) and not any(isinstance(e, ObservedChanged) for e in ev)
    ev = t.record(ans(4, True, ("2.2.2.2", 2)), 0)  # a tie: the most recent wins
    assert ObservedChanged(("1.1.1.1", 1), ("2.2.2.2", 2)) in ev
    ev = t.record(ans(1, True, ("2.2.2.2", 2)), 0)
    assert t.observed == ("2.2.2.2", 2) and ev == []


def test_scheduling() -> None:
    t = tracker(recheck_interval=900, retry_interval=30)
    assert t.due(0)
    t.check_finished(0, answered=0)
    assert not t.due(29) and t.due(30)
    t.record(ans(1, True), 30)
    t.record(ans(2, True), 30)
    t.check_finished(30, answered=2)
    assert not t.due(929) and t.due(930)
    t.request_check(100)
    assert t.due(100)
    assert t.summary(100)["verdict"] == "public" and t.checks == 2


def test_bad_config_and_answers() -> None:
    with pytest.raises(ValueError):
        TrackerConfig(mode="sometimes")
    with pytest.raises(ValueError):
        TrackerConfig(confirmations=0)
    with pytest.raises(ValueError):
        DialbackAnswer(nid(1), OBS, (), (OBS,))


@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=200))
def test_memory_bounded_and_verdict_valid(seq: list[tuple[int, bool]]) -> None:
    t = tracker(max_answers=8)
    for i, (peer, ok) in enumerate(seq):
        t.record(ans(peer, ok), float(i))
        assert len(t._answers) <= 8
        assert t.verdict in ("public", "private", "unknown")
    if seq:
        fresh = t.fresh(float(len(seq)))
        yes = sum(a.success for a in fresh)
        if yes >= 2 and yes >= len(fresh) - yes:
            assert t.verdict == "public"
