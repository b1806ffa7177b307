"""The churn simulation (p2pstore/testing/churn.py), small and fast: the full one
(200 nodes, 1,000 files, 5 years) is ``make bench`` (benchmarks/bench_churn.py)."""

from __future__ import annotations

from p2pstore.grid.maintenance import remember
from p2pstore.testing.churn import ChurnParams, simulate

SMALL = ChurnParams(nodes=60, files=60, years=1.0, seed=7)


def test_maintenance_loses_nothing_where_no_maintenance_loses_files() -> None:
    on = simulate(SMALL, maintenance=True).summary()
    off = simulate(SMALL, maintenance=False).summary()
    assert on["files_lost"] == 0 and on["files_unavailable_at_end"] == 0, on
    assert on["unavailable_file_days"] == 0 and on["min_health"] >= SMALL.k, on
    assert on["repairs"] > 0 and on["checks_per_node_per_day"] > 0
    # the same churn without maintenance: files vanish from the download window
    assert off["files_lost"] + off["files_unavailable_at_end"] > 0, off
    assert off["unavailable_file_days"] > 0 and off["repairs"] == 0


def test_a_holder_seen_recently_still_counts_until_the_grace_runs_out() -> None:
    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    seen: dict[bytes, tuple[frozenset[int], float]] = {}
    window, held = remember(seen, [a, b], {a: {0}, b: {1}}, now=0.0, grace=10.0)
    assert held == {a: {0}, b: {1}}
    # b is off: still counted (after the peers that answered); c answered, empty
    window, held = remember(seen, [a, c], {a: {0}, c: set()}, now=5.0, grace=10.0)
    assert window == [a, c, b] and held[b] == {1}
    window, held = remember(seen, [a, c], {a: {0}, c: set()}, now=11.0, grace=10.0)
    assert b not in held and window == [a, c]
    # a peer that answers without its share is forgotten at once
    remember(seen, [a], {a: set()}, now=12.0, grace=10.0)
    assert a not in seen
