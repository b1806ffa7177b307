"""Relay record framing and RPC bodies (p2pstore/nat/relay/wire.py): round trips, fuzz."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.nat.relay import wire
from p2pstore.nat.relay.errors import RelayWireError

ipv4 = st.ip_addresses(v=4).map(str)
# the decoder reports IPv6 in inet_ntop's canonical text form
ipv6 = st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed))
addrs = st.tuples(st.one_of(ipv4, ipv6), st.integers(1, 65535))
records = st.one_of(
    st.builds(wire.Data, addrs, st.binary(min_size=1, max_size=300)),
    st.builds(wire.Closed, addrs),
    st.just(wire.Ping()),
)


@given(st.lists(records, max_size=20), st.lists(st.integers(1, 400), max_size=20))
def test_records_round_trip_in_any_split(recs: list[wire.Record], cuts: list[int]) -> None:
    blob = b"".join(wire.encode(r) for r in recs)
    dec = wire.RecordDecoder()
    out: list[wire.Record] = []
    pos = 0
    for c in cuts:
        out += dec.feed(blob[pos : pos + c])
        pos += c
    out += dec.feed(blob[pos:])
    assert out == recs
    assert dec.pending == 0


@given(st.binary(max_size=2000))
def test_decoder_fuzz_never_crashes_and_stays_bounded(junk: bytes) -> None:
    dec = wire.RecordDecoder()
    try:
        for i in range(0, len(junk), 97):
            for rec in dec.feed(junk[i : i + 97]):
                assert isinstance(rec, wire.Data | wire.Closed | wire.Ping)
            assert dec.pending < wire.MAX_RECORD
    except RelayWireError:
        pass


def test_max_size_datagram_round_trips_and_larger_is_refused() -> None:
    big = bytes(wire.MAX_DATAGRAM)
    dec = wire.RecordDecoder()
    assert dec.feed(wire.encode_data(("10.0.0.1", 9), big)) == [wire.Data(("10.0.0.1", 9), big)]
    with pytest.raises(RelayWireError):
        wire.encode_data(("10.0.0.1", 9), big + b"x")
    with pytest.raises(RelayWireError):
        wire.encode_data(("10.0.0.1", 9), b"")
    # a forged length above the maximum is refused from the header alone
    forged = b"\x01\x04" + bytes(4) + b"\x00\x09" + (wire.MAX_DATAGRAM + 1).to_bytes(2, "big")
    with pytest.raises(RelayWireError, match="length"):
        wire.RecordDecoder().feed(forged)


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"\x09", "kind"),
        (b"\x01\x05", "family"),
        (b"\x02\x04\x7f\x00\x00\x01\x00\x00", "port 0"),
        (b"\x01\x04\x7f\x00\x00\x01\x00\x09\x00\x00", "length"),
    ],
)
def test_malformed_records_are_refused(blob: bytes, match: str) -> None:
    with pytest.raises(RelayWireError, match=match):
        wire.RecordDecoder().feed(blob)


def test_encode_addr_refuses_names_and_bad_ports() -> None:
    with pytest.raises(RelayWireError):
        wire.encode_addr(("example.org", 1))
    with pytest.raises(RelayWireError):
        wire.encode_addr(("1.2.3.4", 0))


@given(
    st.integers(1, wire.MAX_RID),
    st.integers(1, 65535),
    st.floats(0.5, 1e6),
    st.one_of(st.none(), st.text(min_size=1, max_size=50)),
)
def test_reserve_reply_round_trip(rid: int, port: int, ttl: float, host: str | None) -> None:
    r = wire.ReserveReply(rid, port, ttl, host, {"max_bytes": 5, "max_rate": 0})
    assert wire.ReserveReply.from_body(r.to_body()) == r


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"id": 1, "port": 0, "ttl": 1, "limits": {}},
        {"id": 0, "port": 1, "ttl": 1, "limits": {}},
        {"id": 1, "port": 1, "ttl": -1, "limits": {}},
        {"id": 1, "port": 1, "ttl": 1, "limits": []},
        {"id": 1, "port": 1, "ttl": 1, "limits": {}, "extra": 1},
        {"id": True, "port": 1, "ttl": 1, "limits": {}},
    ],
)
def test_bad_reserve_replies_are_refused(body: object) -> None:
    with pytest.raises(RelayWireError):
        wire.ReserveReply.from_body(body)


@pytest.mark.parametrize("body", [None, {}, {"id": 0}, {"id": "1"}, {"id": 1, "x": 2}, [1]])
def test_bad_reservation_ids_are_refused(body: object) -> None:
    with pytest.raises(RelayWireError):
        wire.reservation_id(body)
