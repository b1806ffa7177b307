"""Peer record (p2pstore.nat.peer_record): round trips, strict validation, fuzzing."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.nat.errors import NatRemoteError
from p2pstore.nat.peer_record import MAX_RECORD_BYTES, PeerRecord, RelayAddress, decode_record
from quic_transport.identity import NodeId, NodeKey

KEY = NodeKey.from_seed(b"\x01" * 32)
OTHER = NodeKey.from_seed(b"\x02" * 32)
RELAY_ID = NodeId(b"\x07" * 20)

# records carry IP literals only (a reader never resolves a name)
hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
ports = st.integers(1, 65535)


def make(**kw: object) -> PeerRecord:
    args: dict[str, object] = {
        "seq": 3,
        "reach": "private",
        "storage": True,
        "direct": (("203.0.113.7", 4000),),
        "relays": (RelayAddress(RELAY_ID, "198.51.100.1", 5000, 5001),),
    }
    args.update(kw)
    return PeerRecord.create(KEY, **args)  # type: ignore[arg-type]


@given(
    seq=st.integers(0, 2**63 - 1),
    reach=st.sampled_from(["public", "private"]),
    nat=st.sampled_from(["none", "cone", "symmetric", "unknown"]),
    storage=st.booleans(),
    direct=st.lists(st.tuples(hosts, ports), max_size=4),
    relays=st.lists(
        st.tuples(st.binary(min_size=20, max_size=20), hosts, ports, st.integers(0, 65535)),
        max_size=3,
    ),
)
def test_round_trip(
    seq: int,
    reach: str,
    nat: str,
    storage: bool,
    direct: list[tuple[str, int]],
    relays: list[tuple[bytes, str, int, int]],
) -> None:
    rels = tuple(RelayAddress(NodeId(r), h, p, q) for r, h, p, q in relays)
    try:
        rec = PeerRecord.create(
            KEY,
            seq=seq,
            reach=reach,
            storage=storage,
            direct=tuple(direct),
            relays=rels,
            nat=nat,
        )
    except NatRemoteError:  # only when the record would exceed the size limit
        return
    back = decode_record(rec.encode(), expected=KEY.node_id)
    assert back == rec
    assert back.node_id == KEY.node_id
    assert back.direct == tuple(direct) and back.relays == rels
    assert len(rec.encode()) <= MAX_RECORD_BYTES


def test_signature_and_owner_are_checked() -> None:
    rec = make()
    outer = cbor2.loads(rec.encode())
    body = cbor2.loads(outer["body"])
    body["seq"] = 4  # tamper
    forged = cbor2.dumps({"body": cbor2.dumps(body, canonical=True), "sig": outer["sig"]})
    with pytest.raises(NatRemoteError, match="signature"):
        decode_record(forged)
    with pytest.raises(NatRemoteError, match="another node"):
        decode_record(rec.encode(), expected=OTHER.node_id)


def test_other_key_cannot_claim_a_record() -> None:
    rec = make()
    outer = cbor2.loads(rec.encode())
    body = cbor2.loads(outer["body"])
    body["pk"] = OTHER.public_key
    raw = cbor2.dumps(body, canonical=True)
    sig = KEY.sign(b"p2ps:peer-record:v1" + raw)
    with pytest.raises(NatRemoteError, match="signature"):
        decode_record(cbor2.dumps({"body": raw, "sig": sig}))


def _resign(body: dict[str, object], canonical: bool = True) -> bytes:
    raw = cbor2.dumps(body, canonical=canonical)
    return cbor2.dumps({"body": raw, "sig": KEY.sign(b"p2ps:peer-record:v1" + raw)})


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("v", 2, "version"),
        ("v", True, "version"),
        ("seq", -1, "seq"),
        ("seq", True, "seq"),
        ("reach", "maybe", "reach"),
        ("nat", "full-cone", "nat"),
        ("nat", None, "nat"),
        ("storage", 1, "storage"),
        ("direct", [["192.0.2.1", 0]], "port"),
        ("direct", [["bad host!", 1]], "host"),
        ("direct", [["3.r7.relay.invalid", 1]], "reserved"),
        ("direct", [["192.0.2.1", 1]] * 5, "at most"),
        ("direct", [["example.org", 1]], "not a name"),
        ("direct", [["192.0.2.1", 1, 2]], "pairs"),
        ("relays", [[b"x", "192.0.2.1", 1, 0]], "20 bytes"),
        ("relays", [[b"x" * 20, "192.0.2.1", 70000, 0]], "port"),
        ("relays", [[b"x" * 20, "192.0.2.1", 1, -1]], "port"),
        ("relays", [[b"x" * 20, "192.0.2.1", 1, False]], "integer"),
        ("relays", [[b"x" * 20, "relay.example", 1, 0]], "not a name"),
        ("relays", [[b"x" * 20, "192.0.2.1", 1, 0.0]], "integer"),
        ("relays", [[b"x" * 20, "192.0.2.1", 1]], "relay_id, host"),
        ("pk", b"short", "32 bytes"),
    ],
)
def test_invalid_fields_are_refused(field: str, value: object, match: str) -> None:
    body = cbor2.loads(cbor2.loads(make().encode())["body"])
    body[field] = value
    with pytest.raises(NatRemoteError, match=match):
        decode_record(_resign(body))


def test_extra_or_missing_keys_and_non_canonical_bodies_are_refused() -> None:
    body = cbor2.loads(cbor2.loads(make().encode())["body"])
    with pytest.raises(NatRemoteError, match="wrong keys"):
        decode_record(_resign({**body, "x": 1}))
    del body["storage"]
    with pytest.raises(NatRemoteError, match="wrong keys"):
        decode_record(_resign(body))
    good = cbor2.loads(cbor2.loads(make().encode())["body"])
    reordered = dict(reversed(list(good.items())))
    with pytest.raises(NatRemoteError, match="canonical"):
        decode_record(_resign(reordered, canonical=False))


def test_size_limit_and_creation_refuses_invalid() -> None:
    with pytest.raises(NatRemoteError):
        decode_record(b"\xa0" * (MAX_RECORD_BYTES + 1))
    with pytest.raises(NatRemoteError):
        make(reach="unknown")
    with pytest.raises(NatRemoteError):
        RelayAddress(RELAY_ID, "", 1)


@given(st.binary(max_size=2000))
def test_fuzz_garbage_only_raises_nat_remote_error(data: bytes) -> None:
    with pytest.raises(NatRemoteError):
        decode_record(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=8),
        max_leaves=20,
    )
)
def test_fuzz_structured_cbor_only_raises_nat_remote_error(value: object) -> None:
    for data in (cbor2.dumps(value), cbor2.dumps({"body": cbor2.dumps(value), "sig": b"s" * 64})):
        with pytest.raises(NatRemoteError):
            decode_record(data)


def test_repr_and_json_show_no_key_material() -> None:
    rec = make()
    assert "sig" not in repr(rec).lower()
    doc = rec.to_json()
    assert doc["node_id"] == KEY.node_id.b32
    assert doc["relays"] == [
        {"relay": RELAY_ID.b32, "address": "198.51.100.1:5000", "relayed": "198.51.100.1:5001"}
    ]
