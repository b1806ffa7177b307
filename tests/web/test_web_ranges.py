"""Range header selection (p2pstore.web.http_range), sans-I/O, RFC 9110 §14."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.web.http_range import Partial, Unsatisfiable, Whole, select_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, Whole(10)),
        ("bytes=0-0", 10, Partial(0, 1, 10)),
        ("bytes=0-9", 10, Partial(0, 10, 10)),
        ("bytes=2-", 10, Partial(2, 8, 10)),
        ("bytes=2-100", 10, Partial(2, 8, 10)),  # last-pos clamped
        ("bytes=-3", 10, Partial(7, 3, 10)),
        ("bytes=-30", 10, Partial(0, 10, 10)),  # suffix longer than the file: all of it
        ("BYTES = 1-2", 10, Partial(1, 2, 10)),  # unit is case-insensitive; OWS around '='
        ("bytes=1-2, ", 10, Partial(1, 2, 10)),  # empty list elements are allowed
        ("bytes=10-", 10, Unsatisfiable(10)),
        ("bytes=10-20", 10, Unsatisfiable(10)),
        ("bytes=-0", 10, Unsatisfiable(10)),
        ("bytes=0-", 0, Unsatisfiable(0)),
        ("bytes=-5", 0, Unsatisfiable(0)),
        ("bytes=5-4", 10, Whole(10)),  # invalid: ignored
        ("bytes=a-b", 10, Whole(10)),
        ("bytes=", 10, Whole(10)),
        ("bytes=--1", 10, Whole(10)),
        ("bytes=1 - 2", 10, Whole(10)),  # no whitespace inside a range
        ("items=0-1", 10, Whole(10)),  # unknown unit: ignored
        ("0-1", 10, Whole(10)),
        ("bytes=0-1,3-4", 10, Whole(10)),  # multi-range: served whole (documented)
        ("bytes=20-30,40-50", 10, Whole(10)),
        ("bytes=" + "9" * 2000 + "-", 10, Whole(10)),  # over MAX_HEADER: ignored
        ("bytes=" + "9" * 500 + "-", 10, Unsatisfiable(10)),
        ("bytes=0-" + "9" * 500, 10, Partial(0, 10, 10)),
    ],
)
def test_examples(header: str | None, size: int, expected: object) -> None:
    assert select_range(header, size) == expected


def test_content_range_text() -> None:
    assert Partial(5, 10, 100).content_range() == "bytes 5-14/100"
    assert Unsatisfiable(7).content_range() == "bytes */7"


def test_if_range() -> None:
    assert select_range("bytes=0-1", 10, if_range='"abc"', etag='"abc"') == Partial(0, 2, 10)
    assert select_range("bytes=0-1", 10, if_range='"abd"', etag='"abc"') == Whole(10)
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert select_range("bytes=0-1", 10, if_range=date, etag='"abc"') == Whole(10)


@given(st.text(max_size=80), st.integers(0, 10**6))
def test_never_raises_and_partials_are_in_bounds(header: str, size: int) -> None:
    choice = select_range(header, size)
    if isinstance(choice, Partial):
        assert choice.start >= 0 and choice.length >= 1 and choice.start + choice.length <= size
    assert choice.size == size


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9))
def test_int_range_model(first: int, last: int, size: int) -> None:
    choice = select_range(f"bytes={first}-{last}", size)
    if last < first:
        assert choice == Whole(size)
    elif first >= size:
        assert choice == Unsatisfiable(size)
    else:
        end = min(last, size - 1)
        assert choice == Partial(first, end - first + 1, size)


@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_suffix_model(suffix: int, size: int) -> None:
    choice = select_range(f"bytes=-{suffix}", size)
    if suffix == 0 or size == 0:
        assert choice == Unsatisfiable(size)
    else:
        n = min(suffix, size)
        assert choice == Partial(size - n, n, size)
