"""Slots (docs/storage.md, "Slots (signed mutable records)"): the record format and
the server rule (pure, with hypothesis), and the slot store of a server on a temp
directory: replacement, refusals, quota, leases, expiry, restart, corruption."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cbor2
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.storage import (
    NoSuchLease,
    QuotaExceeded,
    StorageConfig,
    StorageServer,
    Unavailable,
)
from p2pstore.storage.crawler import LeaseCrawler
from p2pstore.storage.errors import ERROR_CODES, BadRecord, BadRequest
from p2pstore.storage.slots import (
    MAX_BODY,
    MAX_RECORD,
    MAX_SEQ,
    SLOT_PERSON,
    SlotRecord,
    accepts,
    decode_record,
    slot_index,
)
from p2pstore.testing.storage_grid import FakeClock
from quic_transport.identity import NodeKey, verify_signature

ALICE = NodeKey.from_seed(b"a" * 32).node_id
BOB = NodeKey.from_seed(b"b" * 32).node_id
SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
PK = bytes(nacl.signing.SigningKey(SEED).verify_key)
SI = slot_index(PK)
DAY = 86400.0


def rec(seq: int, body: bytes = b"body", seed: bytes = SEED) -> SlotRecord:
    return SlotRecord.sign(seed, seq, body)


# -- the format (pure) ------------------------------------------------------------------


def test_slot_index_is_personalized_blake2b() -> None:
    assert hashlib.blake2b(PK, digest_size=20, person=b"p2ps:slot-si:v1").digest() == SI
    assert SLOT_PERSON == b"p2ps:slot-si:v1"
    assert rec(1).storage_index == SI
    # an immutable storage index of the same bytes is a different name
    assert hashlib.blake2b(PK, digest_size=20).digest() != SI


def test_signed_bytes_and_signature_follow_the_spec() -> None:
    r = rec(7, b"hello")
    expected = b"p2pstore slot v1\x00" + PK + (7).to_bytes(8, "big") + (5).to_bytes(4, "big")
    assert r.signed_bytes() == expected + b"hello"
    assert verify_signature(PK, r.signed_bytes(), r.sig)
    # the same record from a NodeKey or a SigningKey (Ed25519 is deterministic)
    assert SlotRecord.sign(NodeKey.from_seed(SEED), 7, b"hello") == r
    assert SlotRecord.sign(nacl.signing.SigningKey(SEED), 7, b"hello") == r


def test_encoding_is_the_canonical_map_and_max_record_is_the_bound() -> None:
    r = rec(3, b"x")
    assert cbor2.loads(r.encode()) == {"pk": PK, "seq": 3, "body": b"x", "sig": r.sig}
    biggest = rec(MAX_SEQ, bytes(MAX_BODY))
    assert len(biggest.encode()) == MAX_RECORD == 8321
    assert decode_record(biggest.encode()) == biggest


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"pk": b"short"}, "pk"),
        ({"seq": 0}, "seq"),
        ({"seq": MAX_SEQ + 1}, "seq"),
        ({"seq": True}, "seq"),
        ({"body": bytes(MAX_BODY + 1)}, "body"),
        ({"body": "text"}, "body"),
        ({"sig": bytes(63)}, "sig"),
    ],
)
def test_construction_checks_fields(fields: dict[str, object], why: str) -> None:
    good = rec(1)
    args = {"pk": good.pk, "seq": good.seq, "body": good.body, "sig": good.sig, **fields}
    with pytest.raises(BadRecord) as info:
        SlotRecord(**args)  # type: ignore[arg-type]
    assert why in info.value.message and info.value.code == "bad-record"


def test_bad_record_is_a_registered_code() -> None:
    assert ERROR_CODES["bad-record"] is BadRecord


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ([1, 2], "map"),
        ({"pk": PK, "seq": 1, "body": b""}, "map"),
        ({"pk": PK, "seq": 1, "body": b"", "sig": bytes(64), "x": 1}, "map"),
        ({"pk": PK, "seq": 1.0, "body": b"", "sig": bytes(64)}, "seq"),
        ({"pk": PK, "seq": 1, "body": b"", "sig": bytes(64)}, "signature"),
    ],
)
def test_decode_refuses_wrong_shapes(doc: object, why: str) -> None:
    with pytest.raises(BadRecord) as info:
        decode_record(cbor2.dumps(doc, canonical=True))
    assert why in info.value.message


def test_decode_refuses_non_canonical_trailing_and_oversized_input() -> None:
    r = rec(2)
    doc = {"sig": r.sig, "body": r.body, "seq": r.seq, "pk": r.pk}  # not canonical order
    with pytest.raises(BadRecord, match="canonical"):
        decode_record(cbor2.dumps(doc))
    with pytest.raises(BadRecord, match="canonical"):
        decode_record(r.encode() + b"\x00")
    with pytest.raises(BadRecord, match="at most"):
        decode_record(bytes(MAX_RECORD + 1))
    with pytest.raises(BadRecord, match="CBOR"):
        decode_record(b"\xff")


def test_decode_refuses_another_keys_signature() -> None:
    mine, theirs = rec(4), rec(4, seed=OTHER_SEED)
    forged = SlotRecord(mine.pk, mine.seq, mine.body, theirs.sig)
    with pytest.raises(BadRecord, match="signature"):
        decode_record(forged.encode())


records = st.builds(
    rec,
    st.integers(1, MAX_SEQ),
    st.binary(max_size=300),
    st.sampled_from([SEED, OTHER_SEED]),
)


@given(records)
def test_round_trip(r: SlotRecord) -> None:
    data = r.encode()
    assert decode_record(data) == r
    assert len(data) <= MAX_RECORD


@given(records, st.data())
def test_any_single_byte_change_is_refused(r: SlotRecord, data: st.DataObject) -> None:
    encoded = bytearray(r.encode())
    i = data.draw(st.integers(0, len(encoded) - 1))
    encoded[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(BadRecord):
        decode_record(bytes(encoded))


@given(st.none() | records, records)
def test_accepts_is_the_server_rule(held: SlotRecord | None, new: SlotRecord) -> None:
    expected = held is None or new.seq > held.seq or new.encode() == held.encode()
    assert accepts(held, new) is expected


def test_accepts_examples() -> None:
    assert accepts(None, rec(1))
    assert accepts(rec(1), rec(2))
    assert accepts(rec(2), rec(2))  # the identical record: a retry
    assert not accepts(rec(2), rec(2, b"other"))  # same seq, other content
    assert not accepts(rec(3), rec(2))


# -- the server ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> StorageServer:
    s = StorageServer.open(tmp_path / "s", clock=clock)
    yield s  # type: ignore[misc]
    s.close()


def test_create_replace_and_refuse(server: StorageServer) -> None:
    assert server.slot_read(SI) is None
    one, two = rec(1).encode(), rec(2, b"newer").encode()
    assert server.slot_write(SI, one, ALICE) == (True, one)
    assert server.slot_read(SI) == one
    assert server.slot_write(SI, two, BOB) == (True, two)
    assert server.slot_read(SI) == two
    assert server.slot_write(SI, one, ALICE) == (False, two)  # lower seq
    assert server.slot_write(SI, rec(2, b"rival").encode(), ALICE) == (False, two)  # equal seq
    assert server.slot_read(SI) == two
    assert server.list_shares(SI) == {}  # a slot is not a share
    assert server.stat().shares == 0


def test_identical_retry_is_stored_and_renews_the_writers_lease(
    server: StorageServer, clock: FakeClock
) -> None:
    one = rec(1).encode()
    server.slot_write(SI, one, ALICE)
    (first,) = server.leases(SI)
    clock.advance(DAY)
    assert server.slot_write(SI, one, ALICE) == (True, one)
    (renewed,) = server.leases(SI)
    assert renewed.owner == ALICE.raw and renewed.expires == first.expires + DAY
    assert server.slot_write(SI, one, BOB) == (True, one)  # a retry by another writer
    assert {le.owner for le in server.leases(SI)} == {ALICE.raw, BOB.raw}


def test_a_refused_write_gives_no_lease_and_writes_nothing(server: StorageServer) -> None:
    two = rec(2).encode()
    server.slot_write(SI, two, ALICE)
    before = server.stat().used
    assert server.slot_write(SI, rec(1, b"a much longer body" * 10).encode(), BOB) == (False, two)
    assert [le.owner for le in server.leases(SI)] == [ALICE.raw]
    assert server.stat().used == before


def test_the_writer_gets_a_lease_like_closing_a_share(
    server: StorageServer, clock: FakeClock
) -> None:
    server.slot_write(SI, rec(1).encode(), ALICE)
    (lease,) = server.leases(SI)
    assert lease.owner == ALICE.raw
    assert lease.expires == clock() + server.config.lease_duration
    server.slot_write(SI, rec(2).encode(), BOB, lease=3600)  # a carried-over term
    bob = next(le for le in server.leases(SI) if le.owner == BOB.raw)
    assert bob.expires == clock() + 3600
    with pytest.raises(BadRequest):
        server.slot_write(SI, rec(3).encode(), BOB, lease=0)
    # add_lease and renew_lease work on a storage index that holds only a slot
    assert server.add_lease(SI, BOB) == clock() + server.config.lease_duration
    assert server.renew_lease(SI, ALICE) == clock() + server.config.lease_duration


def test_wrong_storage_index_and_bad_records(server: StorageServer) -> None:
    other_si = slot_index(rec(1, seed=OTHER_SEED).pk)
    with pytest.raises(BadRecord, match="does not match the storage index"):
        server.slot_write(other_si, rec(1).encode(), ALICE)
    r = rec(1)
    bad_sig = SlotRecord(r.pk, r.seq, b"tampered", r.sig).encode()
    with pytest.raises(BadRecord, match="signature"):
        server.slot_write(SI, bad_sig, ALICE)
    with pytest.raises(BadRecord):
        server.slot_write(SI, b"not a record", ALICE)
    with pytest.raises(BadRequest):
        server.slot_write(b"short", rec(1).encode(), ALICE)
    assert server.slot_read(SI) is None and server.leases(SI) == []
    assert not server.layout.si_dir(SI).exists()


def test_slot_bytes_count_in_used_and_replacement_counts_the_difference(
    server: StorageServer,
) -> None:
    small, big = rec(1, b"x").encode(), rec(2, bytes(1000)).encode()
    server.slot_write(SI, small, ALICE)
    assert server.stat().used == len(small)
    server.slot_write(SI, big, ALICE)
    assert server.stat().used == len(big)
    server.slot_write(SI, rec(3, b"").encode(), ALICE)
    assert server.stat().used == len(rec(3, b"").encode())


def test_quota(tmp_path: Path) -> None:
    one = rec(1, bytes(100)).encode()
    server = StorageServer.open(tmp_path / "s", StorageConfig(max_bytes=len(one) + 50))
    try:
        assert server.slot_write(SI, one, ALICE)[0]
        grown = rec(2, bytes(140)).encode()  # 40 more bytes: fits
        assert server.slot_write(SI, grown, ALICE) == (True, grown)
        with pytest.raises(QuotaExceeded):
            server.slot_write(SI, rec(3, bytes(200)).encode(), ALICE)
        assert server.slot_read(SI) == grown
        other = slot_index(rec(1, seed=OTHER_SEED).pk)
        with pytest.raises(QuotaExceeded):
            server.slot_write(other, rec(1, bytes(100), OTHER_SEED).encode(), ALICE)
        assert not server.layout.si_dir(other).exists()  # no directory, no lease
        assert server.stat().used == len(grown)
    finally:
        server.close()


def test_reserved_space_counts_too(tmp_path: Path) -> None:
    server = StorageServer.open(
        tmp_path / "s", StorageConfig(reserved_space=1000), free_space=lambda _: 1200
    )
    try:
        with pytest.raises(QuotaExceeded, match="usable on disk"):
            server.slot_write(SI, rec(1, bytes(200)).encode(), ALICE)
        assert server.slot_write(SI, rec(1, bytes(10)).encode(), ALICE)[0]
    finally:
        server.close()


def test_cancel_lease_deletes_the_slot(server: StorageServer) -> None:
    server.slot_write(SI, rec(1).encode(), ALICE)
    server.slot_write(SI, rec(2).encode(), BOB)
    assert server.cancel_lease(SI, ALICE) == 0  # Bob's lease keeps it
    assert server.slot_read(SI) is not None
    assert server.cancel_lease(SI, BOB) == 0  # no shares deleted, but the slot goes
    assert server.slot_read(SI) is None
    assert not server.layout.si_dir(SI).exists()
    assert server.stat().used == 0
    with pytest.raises(NoSuchLease):
        server.cancel_lease(SI, BOB)


def test_expiry_keeps_a_leased_slot_and_deletes_an_expired_one(
    server: StorageServer, clock: FakeClock
) -> None:
    server.slot_write(SI, rec(1).encode(), ALICE)
    crawler = LeaseCrawler(server, clock=clock)
    crawler.tick()
    assert server.slot_read(SI) is not None  # a slot-only SI is not "empty"
    clock.advance(server.config.lease_duration + 1)
    crawler.tick()
    crawler.tick()
    assert server.slot_read(SI) is None
    assert not server.layout.si_dir(SI).exists()
    assert server.stat().used == 0


def test_a_slot_with_no_lease_file_gets_a_grace_lease(server: StorageServer) -> None:
    server.slot_write(SI, rec(1).encode(), ALICE)
    server.layout.lease_path(SI).unlink()
    assert server.expire(SI, server.clock() + 10 * 365 * DAY) == 0
    assert server.slot_read(SI) is not None


def test_removing_the_last_share_keeps_the_slot(server: StorageServer) -> None:
    server.slot_write(SI, rec(1).encode(), ALICE)
    server.allocate(SI, 0, ALICE, 3)
    server.write(SI, 0, ALICE, 0, b"abc")
    server.close_share(SI, 0, ALICE)
    assert server.list_shares(SI) == {0: 3}
    assert server.remove_share(SI, 0)
    assert server.slot_read(SI) is not None


def test_restart_keeps_the_slot_and_recounts_used(tmp_path: Path, clock: FakeClock) -> None:
    root = tmp_path / "s"
    server = StorageServer.open(root, clock=clock)
    one = rec(1, bytes(500)).encode()
    server.slot_write(SI, one, ALICE)
    server.allocate(b"\x07" * 20, 0, ALICE, 10)
    server.write(b"\x07" * 20, 0, ALICE, 0, bytes(10))
    server.close_share(b"\x07" * 20, 0, ALICE)
    used = server.stat().used
    assert used == len(one) + 10
    server.close()
    with pytest.raises(Unavailable):
        server.slot_read(SI)
    again = StorageServer.open(root, clock=clock)
    try:
        assert again.slot_read(SI) == one
        assert again.stat().used == used and again.stat().shares == 1
        assert again.slot_write(SI, one, ALICE) == (True, one)
    finally:
        again.close()


def test_a_corrupted_slot_file_is_treated_as_absent(
    server: StorageServer, caplog: pytest.LogCaptureFixture
) -> None:
    one = rec(1, b"x" * 100).encode()
    server.slot_write(SI, one, ALICE)
    path = server.layout.slot_path(SI)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    caplog.clear()
    assert server.slot_read(SI) is None
    assert server.slot_read(SI) is None
    assert sum("unusable" in r.getMessage() for r in caplog.records) == 1  # logged once
    # any valid record replaces it, even a lower seq than the damaged one held
    assert server.slot_write(SI, rec(1, b"y").encode(), ALICE)[0]
    assert server.stat().used == len(rec(1, b"y").encode())


def test_a_slot_file_of_another_storage_index_is_not_served(server: StorageServer) -> None:
    theirs = rec(1, seed=OTHER_SEED).encode()
    server.slot_write(SI, rec(5).encode(), ALICE)
    server.layout.slot_path(SI).write_bytes(theirs)
    assert server.slot_read(SI) is None


def test_a_symlinked_slot_is_never_followed(server: StorageServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(rec(1).encode())
    server.slot_write(SI, rec(1).encode(), ALICE)
    path = server.layout.slot_path(SI)
    path.unlink()
    os.symlink(outside, path)
    assert server.slot_read(SI) is None
    assert server.slot_write(SI, rec(2).encode(), ALICE)[0]
    assert not path.is_symlink() and outside.read_bytes() == rec(1).encode()
