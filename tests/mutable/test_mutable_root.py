"""The mutable root: sealing, opening, binding to the signed verify cap, choice."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.immutable import LiteralCap, ReadCap, parse_cap
from p2pstore.mutable import (
    MutableRemoteError,
    WriteCap,
    check_root,
    choose,
    make_root,
    open_root,
)
from p2pstore.storage.slots import SlotRecord, decode_record

W = WriteCap(bytes(range(32)))
CHK = ReadCap(3, 10, 1000, b"K" * 32, b"E" * 32)


def test_a_root_opens_to_its_version() -> None:
    rec = make_root(W, 7, CHK, 1234.5)
    assert decode_record(rec.encode()) == rec
    v = open_root(rec, W.read_cap())
    assert (v.sequence, v.cap, v.time, v.size) == (7, CHK, 1234.5, 1000)
    assert open_root(rec, W).cap == CHK
    root = check_root(rec, W.verify_cap())
    assert root.verify == CHK.verify_cap().to_string()
    assert root.digest() == v.digest()


def test_a_literal_version_has_no_verify_cap() -> None:
    lit = LiteralCap(b"tiny")
    rec = make_root(W, 1, lit, 1.0)
    assert check_root(rec, W.verify_cap()).verify is None
    assert open_root(rec, W.read_cap()).cap == lit


def test_the_verify_cap_never_reveals_the_version_read_cap() -> None:
    rec = make_root(W, 1, CHK, 1.0)
    assert CHK.to_string().encode() not in rec.encode()
    assert b"KKKK" not in rec.encode()


def test_another_files_read_cap_cannot_open_it() -> None:
    other = WriteCap(b"\x01" * 32)
    rec = make_root(W, 1, CHK, 1.0)
    with pytest.raises(MutableRemoteError, match="another key"):
        open_root(rec, other.read_cap())
    # right public key, wrong read key
    from p2pstore.mutable import ReadCap as MutRead

    wrong = MutRead(b"\x02" * 32, W.public_key)
    with pytest.raises(MutableRemoteError, match="wrong read key"):
        open_root(rec, wrong)


def _resign(body: dict[str, object], seq: int = 1) -> SlotRecord:
    return SlotRecord.sign(W.seed, seq, cbor2.dumps(body, canonical=True))


def test_a_sealed_cap_that_does_not_match_the_signed_verify_cap_is_refused() -> None:
    # the key holder signs a body whose clear verify cap names another file
    good = cbor2.loads(make_root(W, 1, CHK, 1.0).body)
    other = ReadCap(3, 10, 1000, b"X" * 32, b"E" * 32).verify_cap().to_string()
    rec = _resign({**good, "verify": other})
    check_root(rec, W.verify_cap())  # a verify cap cannot tell
    with pytest.raises(MutableRemoteError):
        open_root(rec, W.read_cap())  # the sealed cap's AAD is fine, the binding is not


def test_a_body_moved_to_another_sequence_does_not_open() -> None:
    body = make_root(W, 1, CHK, 1.0).body
    moved = SlotRecord.sign(W.seed, 2, body)
    with pytest.raises(MutableRemoteError, match="cannot be opened"):
        open_root(moved, W.read_cap())


def _c(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not cbor\xff", "not CBOR"),
        (_c([1, 2]), "unexpected body fields"),
        (_c({"v": 2, "verify": None, "sealed": b"x" * 40}), "unexpected body fields"),
        (_c({"v": True, "verify": None, "sealed": b"x" * 40}), "unexpected body fields"),
        (_c({"v": 1.0, "verify": None, "sealed": b"x" * 40}), "unexpected body fields"),
        (_c({"v": 1, "verify": None}), "unexpected body fields"),
        (cbor2.dumps({"v": 1, "verify": None, "sealed": b"x" * 40}), "not canonical"),
        (_c({"v": 1, "verify": 5, "sealed": b"x" * 40}), "field types"),
        (_c({"v": 1, "verify": CHK.to_string(), "sealed": b"x" * 40}), "not a verify cap"),
        (_c({"v": 1, "verify": "p2ps:nonsense", "sealed": b"x" * 40}), "verify cap: bad cap"),
        (_c({"v": 1, "verify": None, "sealed": b"short"}), "too short"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    rec = SlotRecord.sign(W.seed, 1, body)
    with pytest.raises(MutableRemoteError, match=why):
        check_root(rec, W.verify_cap())


def test_a_version_cap_that_is_not_a_read_cap_is_refused() -> None:
    vc = CHK.verify_cap()
    rec = make_root(W, 1, vc, 1.0)  # type: ignore[arg-type]  # the key holder seals a verify cap
    check_root(rec, W.verify_cap())
    with pytest.raises(MutableRemoteError, match="not a read cap"):
        open_root(rec, W.read_cap())
    assert parse_cap(vc.to_string()) == vc


def test_at_one_sequence_readers_choose_the_root_more_peers_hold() -> None:
    a = make_root(W, 2, LiteralCap(b"a"), 1.0)
    b = make_root(W, 2, LiteralCap(b"b"), 1.0)
    assert choose([a, a, a, b, b]) == a and choose([b, a, b, a, b]) == b
    lone = choose([a, b])  # one each: the hash decides, the same for every reader
    assert lone == choose([b, a])
    assert choose([a, a, a, make_root(W, 3, CHK, 1.0)]).seq == 3  # type: ignore[union-attr]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8))
def test_choose_is_the_highest_sequence_and_order_free(seqs: list[int]) -> None:
    recs = [make_root(W, s, CHK, float(i)) for i, s in enumerate(seqs)]
    best = choose(recs)
    assert best is not None and best.seq == max(seqs)
    assert choose(reversed(recs)) == best
    assert choose([]) is None
