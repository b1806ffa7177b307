"""Relay accounting (p2pstore/nat/relay/limits.py): sans-I/O units and invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.nat.relay.limits import Refusal, RelayBook, RelayLimits, Verdict
from quic_transport.identity import NodeId

P1, P2, P3 = (NodeId(bytes([i]) * 20) for i in (1, 2, 3))
SRC = ("198.51.100.7", 4000)


def book(**kw: float) -> RelayBook:
    return RelayBook(RelayLimits(**kw))  # type: ignore[arg-type]


def test_reservation_limits_total_and_per_peer() -> None:
    b = book(max_reservations=3, max_reservations_per_peer=2)
    b.reserve(P1, 0)
    b.reserve(P1, 0)
    with pytest.raises(Refusal) as e:
        b.reserve(P1, 0)
    assert e.value.code == "relay-peer-limit"
    b.reserve(P2, 0)
    with pytest.raises(Refusal) as e:
        b.reserve(P3, 0)
    assert e.value.code == "relay-full"
    assert "3 reservations" in e.value.message
    assert b.counters["refused:relay-full"] == 1


def test_only_the_owner_sees_a_reservation() -> None:
    b = book()
    r = b.reserve(P1, 0)
    assert b.get(P1, r.rid) is r
    with pytest.raises(Refusal) as e:
        b.get(P2, r.rid)
    assert e.value.code == "relay-unknown"
    with pytest.raises(Refusal):
        b.renew(P2, r.rid, 1)


def test_circuits_are_limited_and_replies_need_a_circuit() -> None:
    b = book(max_circuits=2, max_rate=0)
    r = b.reserve(P1, 0)
    assert b.inbound(r.rid, ("10.0.0.1", 1), 100, 0) is Verdict.FORWARD
    assert b.inbound(r.rid, ("10.0.0.2", 1), 100, 0) is Verdict.FORWARD
    assert b.inbound(r.rid, ("10.0.0.3", 1), 100, 0) is Verdict.DROP_CIRCUITS
    assert b.inbound(r.rid, ("10.0.0.1", 1), 100, 0) is Verdict.FORWARD  # known source
    assert b.outbound(r.rid, ("10.0.0.3", 1), 100, 0) is Verdict.DROP_UNKNOWN
    assert b.outbound(r.rid, ("10.0.0.2", 1), 100, 0) is Verdict.FORWARD
    assert r.dropped == {"circuits": 1, "unknown-destination": 1}
    assert (r.bytes_in, r.bytes_out) == (300, 100)


def test_byte_cap_drops_and_ends_the_reservation() -> None:
    b = book(max_bytes=1000, max_rate=0)
    r = b.reserve(P1, 0)
    assert b.inbound(r.rid, SRC, 600, 0) is Verdict.FORWARD
    assert b.outbound(r.rid, SRC, 400, 0) is Verdict.FORWARD
    assert b.inbound(r.rid, SRC, 1, 0) is Verdict.DROP_BYTES
    assert r.ended == "byte-limit"
    assert len(b) == 0
    assert b.inbound(r.rid, SRC, 1, 0) is Verdict.DROP_CLOSED


def test_rate_limit_token_bucket() -> None:
    b = book(max_rate=100_000, max_bytes=0)
    r = b.reserve(P1, 0)
    sent = sum(1200 for _ in range(200) if b.inbound(r.rid, SRC, 1200, 0.0) is Verdict.FORWARD)
    assert sent <= 100_000  # burst = one second of rate
    assert r.dropped["rate"] > 0
    # a second later another second's worth passes
    later = sum(1200 for _ in range(200) if b.inbound(r.rid, SRC, 1200, 1.0) is Verdict.FORWARD)
    assert 90_000 <= later <= 100_000


def test_lifetime_renewal_and_max_duration() -> None:
    b = book(lifetime=10, max_duration=25)
    r = b.reserve(P1, 0)
    assert r.expires == 10
    r.attached = True
    assert b.renew(P1, r.rid, 5) == 10  # expires 15
    assert b.renew(P1, r.rid, 16) == pytest.approx(9)  # capped at 25
    with pytest.raises(Refusal) as e:
        b.renew(P1, r.rid, 20)
    assert e.value.code == "relay-max-duration"
    b.heard(r.rid, 24)
    ended, _ = b.expire(25)
    assert [x.reason for x in ended] == ["expired"]


def test_expiry_reasons_and_idle_circuits() -> None:
    b = book(attach_timeout=5, client_silence=20, circuit_idle=8, lifetime=100)
    unattached = b.reserve(P1, 0)
    silent = b.reserve(P2, 0)
    silent.attached = True
    ended, _ = b.expire(5)
    assert [(e.rid, e.reason) for e in ended] == [(unattached.rid, "not-attached")]
    b.inbound(silent.rid, SRC, 10, 6)
    b.heard(silent.rid, 6)
    assert b.next_deadline() == 14  # the circuit idles out first
    ended, closed = b.expire(14)
    assert ended == [] and [c.addr for c in closed] == [SRC]
    ended, _ = b.expire(26)
    assert [e.reason for e in ended] == ["client-silent"]
    assert b.next_deadline() is None


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        RelayLimits(max_circuits=0)
    with pytest.raises(ValueError):
        RelayLimits(max_bytes=-1)
    with pytest.raises(ValueError):
        RelayLimits(lifetime=0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 3)),
        st.tuples(st.just("in"), st.integers(0, 6), st.integers(0, 5), st.integers(1, 3000)),
        st.tuples(st.just("out"), st.integers(0, 6), st.integers(0, 5), st.integers(1, 3000)),
        st.tuples(st.just("renew"), st.integers(0, 3), st.integers(0, 6)),
        st.tuples(st.just("release"), st.integers(0, 6)),
        st.tuples(st.just("tick"), st.floats(0, 5)),
    ),
    max_size=120,
)


@settings(max_examples=300)
@given(ops, st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(0, 20_000))
def test_invariants_hold_for_any_operation_sequence(
    seq: list[tuple[object, ...]], total: int, per_peer: int, circuits: int, rate: int
) -> None:
    lim = RelayLimits(
        max_reservations=total,
        max_reservations_per_peer=per_peer,
        max_circuits=circuits,
        max_bytes=30_000,
        max_rate=rate,
        lifetime=10,
        max_duration=30,
        circuit_idle=4,
        attach_timeout=1000,
        client_silence=1000,
    )
    b = RelayBook(lim)
    peers = [NodeId(bytes([i + 1]) * 20) for i in range(4)]
    now = 0.0
    offered = 0
    forwarded: dict[int, list[tuple[float, int]]] = {}
    created: dict[int, float] = {}
    for op in seq:
        kind = op[0]
        if kind == "reserve":
            try:
                r = b.reserve(peers[op[1]], now)  # type: ignore[index]
                created[r.rid] = now
            except Refusal as e:
                assert e.code in ("relay-full", "relay-peer-limit")
        elif kind in ("in", "out"):
            rid, src, size = op[1], ("10.0.0.1", 1 + op[2]), op[3]  # type: ignore[operator]
            fn = b.inbound if kind == "in" else b.outbound
            offered += 1
            v = fn(rid, src, size, now)  # type: ignore[arg-type]
            if v is Verdict.FORWARD:
                forwarded.setdefault(rid, []).append((now, size))  # type: ignore[arg-type]
        elif kind == "renew":
            for r in b.reservations():
                if r.rid == op[2]:
                    try:
                        b.renew(r.peer, r.rid, now)
                    except Refusal as e:
                        assert e.code == "relay-max-duration"
        elif kind == "release":
            b.end(op[1], "released")  # type: ignore[arg-type]
        else:
            now += op[1]  # type: ignore[operator]
            b.expire(now)
        # invariants
        live = b.reservations()
        assert len(live) <= total
        for p in peers:
            assert b.count_for(p) <= per_peer
        for r in live:
            assert len(r.circuits) <= circuits
            assert r.bytes_total <= 30_000
            assert now < r.expires <= created[r.rid] + 30
    assert sum(b.counters[v.value] for v in Verdict) == offered
    if rate:
        burst = max(rate, 65536)
        for events in forwarded.values():
            for i, (t0, _) in enumerate(events):
                window = sum(s for t, s in events[i:] if t - t0 <= 2.0)
                assert window <= burst + rate * 2.0 + 1e-6
