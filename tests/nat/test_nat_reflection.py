"""The relay and hole punching cannot be aimed at third parties (docs/relay.md and
docs/nat.md, "Threat model"): each attack reproduced, with the bound asserted."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from p2pstore.nat.relay import wire
from p2pstore.nat.relay.limits import (
    AMPLIFICATION,
    MAX_CHALLENGES,
    RelayBook,
    RelayLimits,
    Verdict,
)
from p2pstore.nat.relay.service import RelayService
from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import TransportConfig, echo
from quic_transport.identity import NodeId

from ..nat_helpers import reserve_body

CFG = TransportConfig(connect_timeout=3.0)
CLIENT = NodeId(b"\x07" * 20)
VICTIM = ("192.0.2.9", 4444)


def test_spoofed_source_lets_the_client_send_at_most_three_times_its_bytes() -> None:
    b = RelayBook(RelayLimits(max_rate=0, circuit_idle=10))
    r = b.reserve(CLIENT, 0)
    assert b.inbound(r.rid, VICTIM, 1, 0) is Verdict.FORWARD  # one spoofed byte
    (ch,) = b.take_challenges()
    assert ch.addr == VICTIM and len(ch.token) == echo.TOKEN_BYTES
    sent = 0
    for i in range(1000):  # the client streams at the "circuit" for 100 s
        if b.outbound(r.rid, VICTIM, 1, i / 10) is Verdict.FORWARD:
            sent += 1
        b.expire(i / 10)
    assert sent == AMPLIFICATION * 1
    # sending alone never kept it alive: it idled out 10 s after the spoofed byte
    assert VICTIM not in r.circuits
    assert b.counters["unvalidated"] >= 1


def test_challenges_are_few_and_only_on_inbound() -> None:
    b = RelayBook(RelayLimits(max_rate=0))
    r = b.reserve(CLIENT, 0)
    for t in range(100):  # the spoofer keeps sending: at most MAX_CHALLENGES, 1 s apart
        b.inbound(r.rid, VICTIM, 1, t * 0.5)
    assert len(b.take_challenges()) == MAX_CHALLENGES


def test_a_validated_circuit_carries_traffic_normally() -> None:
    b = RelayBook(RelayLimits(max_rate=0))
    r = b.reserve(CLIENT, 0)
    src = ("198.51.100.7", 5000)
    b.inbound(r.rid, src, 1200, 0)
    (ch,) = b.take_challenges()
    assert not b.validate(r.rid, src, b"\0" * 16)  # a wrong token validates nothing
    assert not b.validate(r.rid, ("198.51.100.8", 5000), ch.token)  # from elsewhere
    assert b.validate(r.rid, src, ch.token)
    assert all(b.outbound(r.rid, src, 1200, 0.1) is Verdict.FORWARD for _ in range(100))


async def test_spoofed_datagram_to_a_relayed_port_reaches_the_victim_bounded() -> None:
    """Real RelayService on 127.0.0.1. A 'victim' UDP socket (not a p2pstore node, so
    it never answers challenges) sends one datagram to the relayed port, which is what
    a spoofed packet bearing its address looks like to the relay. The relay client
    then streams datagrams to it. Before: 331,200 bytes reached the victim."""
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.setblocking(False)
    vaddr = victim.getsockname()
    async with endpoints(2, CFG) as (r, b):
        svc = RelayService(r, RelayLimits(max_rate=0))
        svc.start()
        try:
            reply = await b.call(address_of(r), "relay.reserve", await reserve_body(r, b))
            rid = {"id": reply["id"]}
            reader = await b.fetch(address_of(r), "relay.recv", rid)
            victim.sendto(b"x", ("127.0.0.1", reply["port"]))  # the "spoofed" byte
            await asyncio.sleep(0.2)
            payload = b"A" * 1200

            async def records() -> Any:
                for _ in range(300):
                    yield wire.encode_data((vaddr[0], vaddr[1]), payload)
                    await asyncio.sleep(0.002)

            await b.call_stream(address_of(r), "relay.send", rid, records())
            await asyncio.sleep(0.3)
            got = []
            while True:
                try:
                    got.append(victim.recv(65536))
                except BlockingIOError:
                    break
            challenges = [d for d in got if echo.is_request(d)]
            data = [d for d in got if not echo.is_request(d)]
            assert sum(map(len, data)) == 0  # 1200 > 3 x 1 byte: nothing at all
            assert 1 <= len(challenges) <= MAX_CHALLENGES
            assert svc.status()["counters"]["unvalidated"] == 300
            await reader.aclose()
        finally:
            await svc.close()
            victim.close()


# -- hole punching -----------------------------------------------------------------------


def _punch_service(clock: list[float]) -> tuple[Any, Any]:
    from p2pstore.nat.punch import PunchService

    from ..nat_helpers import RecordingEndpoint

    ep: Any = RecordingEndpoint()
    ep.local_address = ("0.0.0.0", 1)  # a home machine bound to a wildcard
    return ep, PunchService(ep, rendezvous=lambda nid: True, clock=lambda: clock[0])


def test_an_anchor_aiming_punches_at_one_address_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: an anchor got 8 of 12 requests accepted and the victim received 40
    punch datagrams. Now, per target IP: 2 sequences, then 1 per 10 s."""
    from quic_transport import CallContext, RpcError

    monkeypatch.setattr("p2pstore.nat.punch.PUNCH_SPACING", 0.001)
    clock = [0.0]
    ep, punch = _punch_service(clock)
    anchor = NodeId(b"\x01" * 20)

    async def run() -> int:
        accepted = 0
        for i in range(12):
            body = {"peer": bytes([i + 1]) * 20, "addr": ["203.0.113.5", 53]}  # fresh "peers"
            try:
                await punch._on_punch(CallContext(anchor, "198.51.100.2", 4000), body)
                accepted += 1
            except RpcError as e:
                assert e.code == "busy"
            for _ in range(2000):  # let each 5-datagram sequence finish (a loaded machine
                if not punch._active:  # is slow): one still running is "already punching"
                    break
                await asyncio.sleep(0.005)
            clock[0] += 1.3
        await punch.close()
        return accepted

    accepted = asyncio.run(run())
    # 15.6 s of asking: the burst of 2, plus one more after 10 s
    assert accepted == 3
    assert len(ep.sent) <= 3 * 5 and all(addr[0] == "203.0.113.5" for _, addr in ep.sent)


def test_an_anchor_is_bounded_across_targets() -> None:
    from quic_transport import CallContext, RpcError

    clock = [0.0]
    _ep, punch = _punch_service(clock)
    anchor = NodeId(b"\x01" * 20)

    async def run() -> int:
        accepted = 0
        for i in range(20):
            body = {"peer": b"\x09" * 20, "addr": [f"203.0.113.{i + 1}", 53]}
            try:
                await punch._on_punch(CallContext(anchor, "198.51.100.2", 4000), body)
                accepted += 1
            except RpcError as e:
                assert e.code == "busy"
        await punch.close()
        return accepted

    assert asyncio.run(run()) == 6  # anchor_burst


def test_punch_never_aims_at_loopback_private_or_multicast_from_a_public_node() -> None:
    from p2pstore.nat.punch import PunchService
    from quic_transport import CallContext, RpcError

    from ..nat_helpers import RecordingEndpoint

    ep: Any = RecordingEndpoint()
    ep.local_address = ("198.51.100.10", 1)  # a node with a public address
    punch = PunchService(ep, rendezvous=lambda nid: True)
    anchor = NodeId(b"\x01" * 20)

    async def run() -> None:
        for host in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.1.1", "224.0.0.1", "::1"):
            with pytest.raises(RpcError) as e:
                await punch._on_punch(
                    CallContext(anchor, "198.51.100.2", 4000),
                    {"peer": b"\x09" * 20, "addr": [host, 53]},
                )
            assert e.value.code == "bad_request", host
        await punch.close()

    asyncio.run(run())
    assert ep.sent == []


# -- relay slots -------------------------------------------------------------------------


def test_two_hosts_cannot_keep_every_relay_slot_idle() -> None:
    """Before: two hosts held all 16 reservations for up to a day by answering
    keepalives. Now a new host gets a slot from the host holding the most, taking the
    reservation idle longest (no datagram for 60 s)."""
    from p2pstore.nat.relay.limits import IDLE_EVICT, Refusal

    b = RelayBook(RelayLimits())
    for i in range(16):
        host = "198.51.100.1" if i < 8 else "198.51.100.2"
        b.reserve(NodeId(bytes([i + 1]) * 20), float(i), host)
    busy = b.reservations()[0]
    b.inbound(busy.rid, ("203.0.113.9", 1), 100, IDLE_EVICT + 20)  # one of them in use
    honest = NodeId(b"\xaa" * 20)
    state = b.reserve(honest, IDLE_EVICT + 30, "203.0.113.50")
    assert state.peer == honest
    (ended,) = b.take_ended()
    assert ended.reason == "evicted" and ended.rid != busy.rid
    assert ended.rid == 2  # the longest idle of the (first) biggest holder, not rid 1
    # a host may not grow past a fair share this way: the two holders are now 7 and 8
    more = [
        b.reserve(NodeId(bytes([0xB0 + i]) * 20), IDLE_EVICT + 40, "203.0.113.50") for i in range(5)
    ]
    assert len(more) == 5 and len(b.take_ended()) == 5
    with pytest.raises(Refusal):  # 6 vs 5 and 5: no host holds two more than it
        b.reserve(NodeId(b"\xcc" * 20), IDLE_EVICT + 50, "203.0.113.50")


def test_busy_reservations_are_never_evicted() -> None:
    from p2pstore.nat.relay.limits import Refusal

    b = RelayBook(RelayLimits(max_rate=0))
    for i in range(16):
        r = b.reserve(NodeId(bytes([i + 1]) * 20), 0.0, f"198.51.100.{1 + i // 8}")
        b.inbound(r.rid, ("203.0.113.9", 1), 10, 100.0)  # all forwarding at 100 s
    with pytest.raises(Refusal):
        b.reserve(NodeId(b"\xaa" * 20), 120.0, "203.0.113.50")
