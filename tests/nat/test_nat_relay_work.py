"""Proof of work for relay reservations (p2pstore/nat/relay/work.py)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.nat.relay import work as rw
from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport.identity import NodeId

from ..nat_helpers import reserve_body

RELAY = NodeId(b"\x01" * 20)
CLIENT = NodeId(b"\x02" * 20)
NOW = 1_800_000_000.0


def test_a_stamp_is_good_for_one_client_at_one_relay_once() -> None:
    s = rw.make_stamp(RELAY, CLIENT, NOW, bits=12)
    rw.check_stamp(s, RELAY, CLIENT, NOW + 30, need=12)
    with pytest.raises(rw.WorkError):
        rw.check_stamp(s, RELAY, NodeId(b"\x03" * 20), NOW, need=12)  # another identity
    with pytest.raises(rw.WorkError):
        rw.check_stamp(s, NodeId(b"\x04" * 20), CLIENT, NOW, need=12)  # another relay
    with pytest.raises(rw.WorkError):
        rw.check_stamp(s, RELAY, CLIENT, NOW + 600, need=12)  # stale
    with pytest.raises(rw.WorkError):
        rw.check_stamp(s, RELAY, CLIENT, NOW, need=13)  # too little work
    ledger = rw.StampLedger()
    ledger.use(CLIENT, s)
    with pytest.raises(rw.WorkError):
        ledger.use(CLIENT, s)


def test_a_claim_without_the_work_is_refused() -> None:
    s = rw.make_stamp(RELAY, CLIENT, NOW, bits=4)
    lie = rw.Stamp(20, s.minute, s.nonce)
    with pytest.raises(rw.WorkError):
        rw.check_stamp(lie, RELAY, CLIENT, NOW, need=20)


@given(st.one_of(st.none(), st.integers(), st.binary(), st.dictionaries(st.text(), st.integers())))
def test_malformed_work_is_a_work_error(body: object) -> None:
    with pytest.raises(rw.WorkError):
        rw.Stamp.from_body(body)


def test_default_work_costs_well_under_a_second_here() -> None:
    t0 = time.perf_counter()
    for i in range(5):
        rw.make_stamp(RELAY, NodeId(bytes([i + 10]) * 20), NOW)
    per = (time.perf_counter() - t0) / 5
    print(f"proof of work, {rw.DEFAULT_BITS} bits: {per:.2f} s per stamp (mean of 5)")
    assert per < 5.0  # a loose sanity bound (2**18 hashes); figures in docs/relay.md


async def test_reserve_without_work_is_refused_with_a_clear_code() -> None:
    from p2pstore.nat.relay.service import RelayService
    from quic_transport import RpcError

    async with endpoints(2) as (r, b):
        svc = RelayService(r)
        svc.start()
        try:
            with pytest.raises(RpcError) as e:
                await b.call(address_of(r), "relay.reserve", {})
            assert e.value.code == "relay-work-required" and "18 bits" in e.value.message
            body = await reserve_body(r, b)
            assert (await b.call(address_of(r), "relay.reserve", body))["id"] >= 1
            with pytest.raises(RpcError) as e:  # the same stamp again
                await b.call(address_of(r), "relay.reserve", body)
            assert e.value.code == "relay-work-required" and "used already" in e.value.message
        finally:
            await svc.close()
