"""The NAT layer against an attacker: punches only on a rendezvous peer's request, relay
reservations that unanswered circuits or one host cannot exhaust, relayed callers never
dialed back (docs/nat.md, docs/relay.md "Threat model")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from p2pstore.nat.punch import PunchService
from quic_transport import CallContext, RpcError
from quic_transport.identity import NodeId

from ..nat_helpers import RecordingEndpoint

ANCHOR = NodeId(b"\x01" * 20)
STRANGER = NodeId(b"\x03" * 20)
VICTIM = ["192.0.2.7", 53]


def test_punch_only_on_request_of_a_rendezvous_peer() -> None:
    """Any connected peer could otherwise make this node send punch datagrams to a
    third party's address (reflection with a hidden source)."""
    ep: Any = RecordingEndpoint()
    punch = PunchService(ep, rendezvous=lambda nid: nid == ANCHOR)
    body = {"peer": b"\x09" * 20, "addr": VICTIM}

    async def run() -> None:
        with pytest.raises(RpcError) as e:
            await punch._on_punch(CallContext(STRANGER, "198.51.100.1", 4000), body)
        assert e.value.code == "not_rendezvous"
        assert ep.sent == []
        assert await punch._on_punch(CallContext(ANCHOR, "198.51.100.2", 4000), body) == {
            "ok": True
        }
        assert len(ep.sent) == 1
        await punch.close()

    asyncio.run(run())


def test_no_punch_task_starts_after_close() -> None:
    ep: Any = RecordingEndpoint()
    punch = PunchService(ep)

    async def run() -> None:
        await punch.close()
        with pytest.raises(RpcError):
            await punch._on_punch(
                CallContext(ANCHOR, "198.51.100.2", 4000), {"peer": b"\x09" * 20, "addr": VICTIM}
            )
        assert punch._active == {} and ep.sent == []

    asyncio.run(run())


def test_unanswered_circuits_cannot_block_a_relay_reservation() -> None:
    """An attacker sending from max_circuits source ports (no spoofing needed) used to
    lock everybody else out of a reservation for circuit_idle (2 min) per round."""
    from p2pstore.nat.relay.limits import UNANSWERED_GRACE, RelayBook, RelayLimits, Verdict

    b = RelayBook(RelayLimits(max_circuits=2, max_rate=0))
    r = b.reserve(ANCHOR, 0)
    assert b.inbound(r.rid, ("10.0.0.1", 1), 100, 0) is Verdict.FORWARD  # legit, answered
    (challenge,) = b.take_challenges()  # it echoes the relay's path challenge
    assert b.validate(r.rid, ("10.0.0.1", 1), challenge.token)
    assert b.outbound(r.rid, ("10.0.0.1", 1), 100, 0) is Verdict.FORWARD
    assert b.inbound(r.rid, ("10.6.6.6", 1), 100, 0) is Verdict.FORWARD  # junk, unanswered
    # within the grace a newcomer is still dropped
    assert b.inbound(r.rid, ("10.0.0.2", 1), 100, 1) is Verdict.DROP_CIRCUITS
    assert b.take_evicted() == []
    t = UNANSWERED_GRACE + 1
    assert b.inbound(r.rid, ("10.0.0.2", 1), 100, t) is Verdict.FORWARD
    assert set(r.circuits) == {("10.0.0.1", 1), ("10.0.0.2", 1)}  # answered one kept
    evicted = b.take_evicted()
    assert [(c.rid, c.addr) for c in evicted] == [(r.rid, ("10.6.6.6", 1))]
    assert b.take_evicted() == []


def test_one_host_cannot_take_every_relay_reservation_with_fresh_node_ids() -> None:
    from p2pstore.nat.relay.limits import Refusal, RelayBook, RelayLimits

    b = RelayBook(RelayLimits(max_reservations=16, max_reservations_per_host=3))
    for i in range(3):
        b.reserve(NodeId(bytes([i + 10]) * 20), 0, "203.0.113.5")
    with pytest.raises(Refusal) as e:
        b.reserve(NodeId(b"\x20" * 20), 0, "203.0.113.5")
    assert e.value.code == "relay-peer-limit"
    with pytest.raises(Refusal):  # the same host as an IPv4-mapped IPv6 address
        b.reserve(NodeId(b"\x21" * 20), 0, "::ffff:203.0.113.5")
    for i in range(3):  # IPv6: one /64 counts as one host
        b.reserve(NodeId(bytes([i + 40]) * 20), 0, f"2001:db8:1:2::{i + 1}")
    with pytest.raises(Refusal):
        b.reserve(NodeId(b"\x30" * 20), 0, "2001:db8:1:2:ffff::9")
    b.reserve(NodeId(b"\x31" * 20), 0, "203.0.113.6")  # another host still gets one
    assert len(b) == 7


class RelayedCallerEndpoint(RecordingEndpoint):
    """The caller's connection runs over a relay path: ctx.host is what the relay
    claims as its source, the connection's own address is a virtual key."""

    def peer_address(self, node_id: NodeId) -> Any:
        if node_id == STRANGER:
            return ("s1.r1.c1.relay.invalid", 4000)
        return ("127.0.0.1", 9) if node_id == ANCHOR else None


def test_relayed_callers_are_neither_dialed_back_nor_punched_to() -> None:
    from p2pstore.nat.reachability import DialbackLimits, DialbackServer

    ep: Any = RelayedCallerEndpoint()
    server = DialbackServer(ep, DialbackLimits(dial_timeout=0.2))
    punch = PunchService(ep)
    claimed = CallContext(STRANGER, "192.0.2.7", 53)  # a third party, as the relay claims

    async def run() -> None:
        with pytest.raises(RpcError) as e:
            await server._on_dialback(claimed, {"nonce": b"n" * 16, "addrs": []})
        assert e.value.code == "bad_request"
        with pytest.raises(RpcError) as e:
            await punch._on_connect(claimed, {"target": ANCHOR.raw})
        assert e.value.code == "bad_request"
        assert ep.sent == []

    asyncio.run(run())
