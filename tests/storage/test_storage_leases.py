"""The lease-file codec: round trips, and malformed files only ever raise LeaseFileError."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.storage.leases import Lease, LeaseFileError, decode_leases, encode_leases, upsert

owners = st.binary(min_size=20, max_size=20)
lease_lists = st.dictionaries(
    owners, st.floats(allow_nan=False, allow_infinity=False), max_size=10
).map(lambda d: [Lease(o, e) for o, e in d.items()])


@given(lease_lists)
def test_round_trip(leases: list[Lease]) -> None:
    assert decode_leases(encode_leases(leases), limit=10) == leases


@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    with contextlib.suppress(LeaseFileError):
        decode_leases(data, limit=10)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**1100), 2**1100)
    | st.floats()
    | st.binary(max_size=24)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["v", "leases", "owner", "expires", "x"]), inner, max_size=4
        )
    ),
    max_leaves=16,
)


@given(cbor_values)
def test_structured_garbage(obj: object) -> None:
    for candidate in (obj, {"v": 1, "leases": obj}, {"v": 1, "leases": [obj]}):
        with contextlib.suppress(LeaseFileError):
            decode_leases(cbor2.dumps(candidate), limit=10)


def test_specific_refusals() -> None:
    good = {"owner": b"o" * 20, "expires": 5.0}
    for bad in (
        {"v": 2, "leases": []},
        {"v": 1, "leases": [good, good]},
        {"v": 1, "leases": [good] * 11},
        {"v": 1, "leases": [{"owner": b"o" * 19, "expires": 1.0}]},
        {"v": 1, "leases": [{"owner": b"o" * 20, "expires": 10**400}]},
        {"v": 1, "leases": [{"owner": b"o" * 20, "expires": float("inf")}]},
        {"v": 1, "leases": [{"owner": b"o" * 20, "expires": True}]},
        {"v": 1, "leases": [{**good, "extra": 1}]},
    ):
        with pytest.raises(LeaseFileError):
            decode_leases(cbor2.dumps(bad), limit=10)


def test_upsert_never_shortens() -> None:
    a, b = b"a" * 20, b"b" * 20
    leases = upsert([Lease(a, 100.0)], a, 50.0)
    assert leases == [Lease(a, 100.0)]
    leases = upsert(leases, b, 70.0)
    assert leases == [Lease(a, 100.0), Lease(b, 70.0)]
    assert upsert(leases, b, 80.0)[1] == Lease(b, 80.0)
