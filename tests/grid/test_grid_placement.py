"""Share placement and happiness (sans-I/O): rules and property tests."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.grid.placement import SharePlacer, happiness, rank_peers


def pid(i: int) -> bytes:
    return hashlib.blake2b(f"peer-{i}".encode(), digest_size=20).digest()


SI = hashlib.blake2b(b"si", digest_size=20).digest()


def brute_happiness(holdings: dict[bytes, set[int]]) -> int:
    """Largest set of peers that can each be given a distinct share they hold."""
    peers = list(holdings)
    best = 0
    for r in range(len(peers), 0, -1):
        for combo in itertools.combinations(peers, r):
            for perm in itertools.product(*(sorted(holdings[p]) for p in combo)):
                if len(set(perm)) == r:
                    return r
        if best:
            break
    return best


def test_rank_peers_orders_by_xor_distance_and_drops_duplicates() -> None:
    peers = [pid(i) for i in range(20)] + [pid(3)]
    ranked = rank_peers(SI, peers)
    assert len(ranked) == 20
    d = [int.from_bytes(p, "big") ^ int.from_bytes(SI, "big") for p in ranked]
    assert d == sorted(d)


def test_share_i_goes_to_ith_closest() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(15)])
    placer = SharePlacer(10, ranked)
    assert placer.initial() == {i: ranked[i] for i in range(10)}


def test_fewer_peers_than_shares_wraps_round_robin() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(4)])
    placer = SharePlacer(10, ranked)
    plan = placer.initial()
    assert [plan[i] for i in range(4)] == ranked
    loads = {p: list(plan.values()).count(p) for p in ranked}
    assert sorted(loads.values()) == [2, 2, 3, 3]
    for s, p in plan.items():
        placer.stored(s, p)
    assert placer.happiness() == 4


def test_fallback_moves_to_next_closest_and_excludes_failed_peer() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(12)])
    placer = SharePlacer(10, ranked)
    placer.initial()
    nxt = placer.failed(2, ranked[2], "refused: quota-exceeded")
    assert nxt == ranked[10]  # the closest peer holding nothing
    nxt = placer.failed(5, ranked[5], "timed out")
    assert nxt == ranked[11]
    # share 7's peer fails too: every peer now has a share, so the least loaded
    # (all 1) closest one that was not excluded takes it
    nxt = placer.failed(7, ranked[7], "timed out")
    assert nxt == ranked[0]
    assert ranked[2] in placer.excluded and ranked[7] in placer.excluded


def test_share_specific_refusal_keeps_peer_for_others() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(10)])
    placer = SharePlacer(3, ranked)
    placer.initial()
    placer.failed(0, ranked[0], "refused: already-being-uploaded", exclude_peer=False)
    assert ranked[0] not in placer.excluded
    assert placer.pending[0] == ranked[3]


def test_existing_shares_are_not_reassigned_and_push_new_ones_elsewhere() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(10)])
    placer = SharePlacer(4, ranked, {0: [ranked[0]], 1: [ranked[5], ranked[6]]})
    assert placer.placed == {0: ranked[0], 1: ranked[5]}
    plan = placer.initial()
    assert set(plan) == {2, 3}
    assert ranked[0] not in plan.values() and ranked[5] not in plan.values()
    # peers 0, 5 and 6 hold shares 0, 1 and 1 again: only 2 distinct shares count
    assert placer.happiness() == 2


def test_no_peer_left_reports_reason() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(2)])
    placer = SharePlacer(2, ranked)
    placer.initial()
    assert placer.failed(0, ranked[0], "timed out") == ranked[1]
    assert placer.failed(1, ranked[1], "refused: disk-full") is None
    assert placer.unplaced() == [1]
    assert placer.reasons[1] == "refused: disk-full"


def test_happiness_examples() -> None:
    a, b, c = pid(1), pid(2), pid(3)
    assert happiness({}) == 0
    assert happiness({a: {1}, b: {1}}) == 1
    assert happiness({a: {1, 2}, b: {1}}) == 2
    assert happiness({a: {1, 2, 3}, b: {1}, c: {1}}) == 2
    assert happiness({a: {0}, b: {1}, c: {2}}) == 3


holdings_st = st.dictionaries(
    st.integers(0, 7).map(pid),
    st.sets(st.integers(0, 6), min_size=1, max_size=4),
    max_size=6,
)


@given(holdings_st)
def test_happiness_is_a_maximum_matching(holdings: dict[bytes, set[int]]) -> None:
    h = happiness(holdings)
    assert h == brute_happiness(holdings)
    distinct = set().union(*holdings.values()) if holdings else set()
    assert h <= min(len(holdings), len(distinct))


@given(
    n=st.integers(1, 12),
    npeers=st.integers(0, 16),
    events=st.lists(st.tuples(st.integers(0, 11), st.booleans(), st.booleans()), max_size=60),
)
def test_placer_invariants_under_any_failures(
    n: int, npeers: int, events: list[tuple[int, bool, bool]]
) -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(npeers)])
    placer = SharePlacer(n, ranked)
    placer.initial()
    if npeers >= n:
        assert placer.pending == {i: ranked[i] for i in range(n)}
    attempts = {s: 1 if s in placer.pending else 0 for s in range(n)}
    for share, ok, exclude in events:
        share %= n
        peer = placer.pending.get(share)
        if peer is None:
            continue
        if ok:
            placer.stored(share, peer)
        else:
            nxt = placer.failed(share, peer, "x", exclude_peer=exclude)
            if nxt is not None:
                attempts[share] += 1
                assert nxt not in placer.excluded
        # invariants after every step
        assert not set(placer.placed) & set(placer.pending)
        for s in range(n):
            assert attempts[s] == len(placer.tried[s])  # a pair is never retried
            assert attempts[s] <= npeers
    # every share is placed, pending or has a reason
    for s in placer.unplaced():
        assert s in placer.reasons
    assert placer.happiness() <= min(n, npeers)


@pytest.mark.parametrize("npeers", [3, 10, 20])
def test_all_success_gives_full_happiness(npeers: int) -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(npeers)])
    placer = SharePlacer(10, ranked)
    for s, p in placer.initial().items():
        placer.stored(s, p)
    assert placer.happiness() == min(10, npeers)


def test_lost_share_promotes_another_copy() -> None:
    ranked = rank_peers(SI, [pid(i) for i in range(4)])
    placer = SharePlacer(2, ranked, {0: [ranked[0], ranked[1]]})
    placer.lost(0, "corrupt")
    assert placer.placed[0] == ranked[1]
    assert ranked[0] in placer.excluded
    placer.lost(0, "corrupt too")
    assert 0 in placer.unplaced()


async def test_lookup_peers_adapts_dht_contacts() -> None:
    from dataclasses import dataclass

    from p2pstore.grid import lookup_peers
    from quic_transport import PeerAddress
    from quic_transport.identity import NodeId

    @dataclass(frozen=True)
    class Contact:
        node_id: NodeId
        host: str
        port: int

    asked: list[NodeId] = []
    contacts = [Contact(NodeId(pid(i)), "127.0.0.1", 4000 + i) for i in range(25)]

    async def lookup(target: NodeId) -> list[Contact]:
        asked.append(target)
        return contacts[:20]

    me = PeerAddress(NodeId(pid(99)), "127.0.0.1", 9999)
    find = lookup_peers(lookup, include=[me])
    got = await find(SI, 20)
    assert asked == [NodeId(SI)]
    assert len(got) == 20 and all(isinstance(p, PeerAddress) for p in got)
    assert [p.node_id.raw for p in got] == rank_peers(
        SI, [c.node_id.raw for c in contacts[:20]] + [me.node_id.raw]
    )[:20]
