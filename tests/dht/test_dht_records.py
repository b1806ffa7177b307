"""Record format, key derivation, signature validation and the record store."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.errors import RecordError
from dht.records import (
    MAX_NAME,
    MAX_RECORD_WIRE,
    MAX_TTL,
    MAX_VALUE,
    Record,
    record_key,
    record_order,
    sign_record,
    signed_bytes,
    validate,
)
from dht.store import RecordStore
from quic_transport.identity import NodeId, NodeKey

NOW = 1_800_000_000
KEY = NodeKey.from_seed(bytes(range(32)))
OTHER = NodeKey.from_seed(bytes(range(1, 33)))


def rec(seq: int = 1, value: bytes = b"v", name: bytes = b"root", ttl: int = 3600) -> Record:
    return sign_record(KEY, name, seq, value, expires=NOW + ttl)


names = st.binary(max_size=MAX_NAME)
values = st.binary(max_size=MAX_VALUE)
seqs = st.integers(min_value=0, max_value=2**63 - 1)


@given(names, values, seqs, st.integers(min_value=1, max_value=MAX_TTL))
def test_wire_round_trip_and_validity(name: bytes, value: bytes, seq: int, ttl: int) -> None:
    r = sign_record(KEY, name, seq, value, expires=NOW + ttl)
    wire = cbor2.dumps(r.to_wire())
    assert len(wire) <= MAX_RECORD_WIRE
    back = Record.from_wire(cbor2.loads(wire))
    assert back == r
    validate(back, now=NOW, key=record_key(KEY.public_key, name))


_FIELDS = ["public_key", "name", "seq", "expires", "value", "signature"]


@given(st.sampled_from(_FIELDS), st.data())
def test_any_change_breaks_the_signature(field: str, data: st.DataObject) -> None:
    r = rec(seq=5, value=b"hello", ttl=7200)
    values = {f: getattr(r, f) for f in _FIELDS}
    old = values[field]
    if isinstance(old, int):
        new: object = data.draw(
            st.integers(min_value=0, max_value=NOW + 3600).filter(lambda x: x != old)
        )
        if field == "expires":
            new = NOW + 1 + data.draw(st.integers(0, 5000).filter(lambda x: x != old - NOW - 1))
    elif field == "public_key":
        new = OTHER.public_key
    elif field == "signature":
        new = data.draw(st.binary(min_size=64, max_size=64).filter(lambda b: b != old))
    else:
        new = data.draw(st.binary(max_size=60).filter(lambda b: b != old))
    values[field] = new
    forged = Record(**values)  # type: ignore[arg-type]
    with pytest.raises(RecordError):
        validate(forged, now=NOW, key=r.key)


def test_key_derivation_binds_public_key_and_name() -> None:
    assert record_key(KEY.public_key, b"a") != record_key(KEY.public_key, b"b")
    assert record_key(KEY.public_key, b"a") != record_key(OTHER.public_key, b"a")
    # never the node ID, even with an empty name (different personalization)
    assert record_key(KEY.public_key, b"") != KEY.node_id
    # a record signed by another key cannot be served under our key
    theirs = sign_record(OTHER, b"root", 9, b"x", expires=NOW + 10)
    with pytest.raises(RecordError, match="wrong-key"):
        validate(theirs, now=NOW, key=rec().key)


def test_known_answer_signed_bytes_layout() -> None:
    b = signed_bytes(b"P" * 32, b"nm", 7, 9, b"val")
    assert b == (
        b"p2pstore dht record v1\x00"
        + b"P" * 32
        + b"\x02nm"
        + (7).to_bytes(8, "big")
        + (9).to_bytes(8, "big")
        + (3).to_bytes(4, "big")
        + b"val"
    )


def test_limits_and_lifetimes() -> None:
    with pytest.raises(RecordError, match="too-large"):
        rec(value=b"x" * (MAX_VALUE + 1))
    with pytest.raises(RecordError, match="bad-name"):
        rec(name=b"n" * (MAX_NAME + 1))
    with pytest.raises(RecordError, match="bad-seq"):
        rec(seq=-1)
    with pytest.raises(RecordError, match="expired"):
        validate(rec(ttl=10), now=NOW + 10)
    with pytest.raises(RecordError, match="ttl-too-long"):
        validate(rec(ttl=MAX_TTL + 3600), now=NOW)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=80) | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["pk", "name", "seq", "exp", "value", "sig", "x"]),
                inner,
                max_size=7,
            )
        ),
        max_leaves=12,
    )
)
def test_from_wire_fuzz_only_raises_record_error(obj: object) -> None:
    with contextlib.suppress(RecordError):
        Record.from_wire(obj)


def test_ordering_highest_seq_then_deterministic() -> None:
    a, b = rec(seq=1), rec(seq=2)
    assert max([a, b], key=record_order) == b
    c = sign_record(KEY, b"root", 2, b"other", expires=NOW + 3600)
    assert max([b, c], key=record_order) == max([c, b], key=record_order)


def test_store_sequence_rules() -> None:
    s = RecordStore()
    assert s.put(rec(seq=3), NOW) is True
    assert s.put(rec(seq=3), NOW) is False  # identical: republish no-op
    for bad in (rec(seq=3, value=b"other"), rec(seq=2)):
        with pytest.raises(RecordError, match="stale"):
            s.put(bad, NOW)
    assert s.put(rec(seq=4, value=b"new"), NOW) is True
    got = s.get(rec().key, NOW)
    assert got is not None and got.value == b"new"
    forged = Record(**{**{f: getattr(rec(seq=9), f) for f in _FIELDS}, "value": b"evil"})  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="bad-signature"):
        s.put(forged, NOW)
    assert s.get(rec().key, NOW + 3599) is not None
    assert s.get(rec().key, NOW + 3600) is None  # expired: never served
    assert len(s) == 0 and s.bytes_used == 0


def test_store_limits_refuse_new_keys_but_keep_old() -> None:
    s = RecordStore(max_records=2)
    s.put(rec(name=b"a"), NOW)
    s.put(rec(name=b"b"), NOW)
    with pytest.raises(RecordError, match="full"):
        s.put(rec(name=b"c"), NOW)
    s.put(rec(name=b"a", seq=2), NOW)  # updates to held keys still work
    s2 = RecordStore(max_bytes=5000)
    s2.put(rec(name=b"a", value=b"x" * 4000), NOW)
    with pytest.raises(RecordError, match="full"):
        s2.put(rec(name=b"b", value=b"x" * 4000), NOW)
    # expired records make room
    s3 = RecordStore(max_records=1)
    s3.put(rec(name=b"a", ttl=5), NOW)
    s3.put(rec(name=b"b"), NOW + 6)
    assert s3.key_list() == [rec(name=b"b").key]


def test_record_repr_has_no_value_bytes() -> None:
    r = rec(value=b"secret-looking")
    assert "secret" not in repr(r)
    assert isinstance(r.key, NodeId)


def test_a_flooding_publisher_displaces_only_its_own_records() -> None:
    """Before: one key put 8,256 records of 4 KiB (the whole 32 MiB store), and an
    honest first publish then failed with 'full'. Now one publisher holds at most
    64 records / 1 MiB here, and over that it displaces its own farthest record."""
    me = NodeKey.from_seed(b"\x11" * 32).node_id
    s = RecordStore(self_id=me)
    flooder = NodeKey.from_seed(b"\x66" * 32)
    refused = 0
    for i in range(600):
        r = sign_record(flooder, b"f%d" % i, 1, b"x" * 4000, expires=NOW + 7 * 86400)
        try:
            s.put(r, NOW)
        except RecordError as e:
            assert e.reason == "full"
            refused += 1
    flooded = [k for k in s.key_list()]
    assert len(flooded) <= 64 and s.bytes_used <= 1024 * 1024 + 64 * 200
    assert refused > 0 and s.evicted > 0
    honest = sign_record(KEY, b"private-drive", 1, b"head", expires=NOW + 3600)
    assert s.put(honest, NOW) is True  # a first publish under a new key works


def test_a_full_store_keeps_the_keys_nearest_this_node() -> None:
    me = NodeKey.from_seed(b"\x22" * 32).node_id
    s = RecordStore(self_id=me, max_records=20)
    keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(60)]
    held = []
    for k in keys:  # 60 publishers, one record each, into 20 slots
        r = sign_record(k, b"n", 1, b"v", expires=NOW + 3600)
        with contextlib.suppress(RecordError):
            s.put(r, NOW)
        held.append(r.key)
    nearest = sorted(held, key=lambda key: int(key) ^ int(me))[:20]
    assert sorted(s.key_list(), key=int) == sorted(nearest, key=int)
