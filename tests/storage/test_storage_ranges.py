"""RangeSet against a model (a plain set of byte positions)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.storage.written_ranges import RangeLimitError, RangeSet

spans = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=30,
)


@given(spans, st.integers(1, 8))
def test_matches_model(adds: list[tuple[int, int]], limit: int) -> None:
    rs = RangeSet(limit)
    model: set[int] = set()
    for s, e in adds:
        before = rs.spans
        try:
            rs.add(s, e)
        except RangeLimitError:
            assert rs.spans == before  # refused without change
            continue
        model |= set(range(s, e))
    got = rs.spans
    assert len(got) <= limit
    # sorted, disjoint, non-adjacent, non-empty
    for (a, b), (c, _) in itertools.pairwise(got):
        assert a < b < c
    assert {i for a, b in got for i in range(a, b)} == model
    assert rs.total == len(model)
    assert rs.high_water == (max(model) + 1 if model else 0)
    for lo, hi in [(0, 10), (5, 50), (100, 240), (0, 0)]:
        assert rs.covers(lo, hi) == (set(range(lo, hi)) <= model)
    end = 240
    gap = rs.first_gap(end)
    missing = sorted(set(range(end)) - model)
    if not missing:
        assert gap is None
    else:
        assert gap is not None and gap[0] == missing[0]
        assert all(i not in model for i in range(*gap))
        assert gap[1] == end or gap[1] in model


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        RangeSet(0)
    rs = RangeSet(2)
    with pytest.raises(ValueError):
        rs.add(5, 4)
    with pytest.raises(ValueError):
        rs.add(-1, 4)
    rs.add(3, 3)
    assert rs.spans == []
