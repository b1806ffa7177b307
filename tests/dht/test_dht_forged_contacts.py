"""Forged contacts cannot aim a node's packets (docs/dht.md, "Address classes"):
names are refused on the wire, the address-class rule and a per-host cap bound
what a lookup dials, and dialing an address that never answers costs a few small
packets, not the datagram-size probes."""

from __future__ import annotations

import asyncio
import functools
import socket

import pytest

from dht.contact import Contact
from dht.errors import MessageError
from dht.lookup import DISTRUST_AFTER, Lookup
from dht.node import MAX_CONTACTS_PER_HOST
from p2pstore.testing.endpoints import endpoints
from quic_transport import ConnectError, NodeKey, PeerAddress, TransportConfig, addrclass
from quic_transport.identity import NodeId

TARGET = NodeId(b"\x00" * 20)


def _id(i: int) -> NodeId:
    return NodeId(i.to_bytes(20, "big"))


def test_names_are_refused_on_the_wire() -> None:
    for host in ("example.org", "localhost", "evil.example"):
        with pytest.raises(MessageError):
            Contact.from_wire([b"\x01" * 20, host, 4000])
    assert Contact.from_wire([b"\x01" * 20, "198.51.100.1", 4000]).host == "198.51.100.1"


def test_a_reply_full_of_one_victim_adds_at_most_the_cap() -> None:
    seed = Contact(_id(1 << 100), "198.51.100.1", 4000)
    lk = Lookup(TARGET, [seed], k=20, alpha=3, max_per_host=MAX_CONTACTS_PER_HOST)
    (first,) = lk.next_queries(0.0)
    forged = [Contact(_id(i + 2), "203.0.113.66", 4000 + i) for i in range(20)]
    lk.on_response(first.node_id, forged, 0.0)
    asked: list[Contact] = []
    now = 0.0
    while not lk.is_done(now):
        batch = lk.next_queries(now)
        if not batch:
            break
        for c in batch:
            asked.append(c)
            lk.on_failure(c.node_id, now)
    # at most the cap reach the victim; fewer, as the referrer is distrusted once
    # DISTRUST_AFTER of what it named failed
    victim = sum(1 for c in asked if c.host == "203.0.113.66")
    assert victim == min(MAX_CONTACTS_PER_HOST, DISTRUST_AFTER)
    assert lk.refused == 20 - MAX_CONTACTS_PER_HOST


def test_a_referrer_whose_contacts_all_fail_is_not_followed() -> None:
    seed = Contact(_id(1 << 100), "198.51.100.1", 4000)
    lk = Lookup(TARGET, [seed], k=20, alpha=3)
    (first,) = lk.next_queries(0.0)
    invented = [Contact(_id(i + 2), f"198.51.100.{i + 10}", 4000) for i in range(20)]
    lk.on_response(first.node_id, invented, 0.0)
    asked = 0
    while batch := lk.next_queries(0.0):
        for c in batch:
            asked += 1
            lk.on_failure(c.node_id, 0.0)
    assert asked == DISTRUST_AFTER and lk.distrusted == 20 - DISTRUST_AFTER
    # one contact that answers keeps its referrer trusted
    lk = Lookup(TARGET, [seed], k=20, alpha=1)
    (first,) = lk.next_queries(0.0)
    lk.on_response(first.node_id, invented, 0.0)
    (good,) = lk.next_queries(0.0)
    lk.on_response(good.node_id, [], 0.0)
    asked = 1
    while batch := lk.next_queries(0.0):
        for c in batch:
            asked += 1
            lk.on_failure(c.node_id, 0.0)
    assert asked == 20 and lk.distrusted == 0


def test_a_public_node_never_dials_loopback_or_private_contacts() -> None:
    seed = Contact(_id(1 << 100), "198.51.100.1", 4000)
    accept = functools.partial(addrclass.may_send, own="198.51.100.9")
    lk = Lookup(TARGET, [seed], k=20, accept=lambda c: accept(c.host), max_per_host=4)
    (first,) = lk.next_queries(0.0)
    forged = [
        Contact(_id(2), "127.0.0.1", 22),
        Contact(_id(3), "192.168.1.1", 80),
        Contact(_id(4), "169.254.169.254", 80),
        Contact(_id(5), "224.0.0.251", 5353),
        Contact(_id(6), "198.51.100.2", 4000),  # a real public peer
    ]
    lk.on_response(first.node_id, forged, 0.0)
    hosts = {c.host for c in lk.next_queries(0.0)}
    assert hosts == {"198.51.100.2"} and lk.refused == 4


async def test_dialing_a_silent_address_costs_a_few_small_packets() -> None:
    """Before: 20 datagrams, 333,422 bytes in 5.6 s (size probes up to 65,507 bytes,
    two rounds, then Initials). Now one small probe (two tries) and the Initials."""
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.setblocking(False)
    host, port = victim.getsockname()
    cfg = TransportConfig(connect_timeout=3.0)
    got: list[int] = []
    async with endpoints(1, cfg) as (a,):
        with pytest.raises(ConnectError):
            await a.dial(PeerAddress(NodeKey.generate().node_id, host, port), timeout=3.0)
        await asyncio.sleep(0.1)
        while True:
            try:
                got.append(len(victim.recv(65536)))
            except BlockingIOError:
                break
    victim.close()
    print(f"silent address: {len(got)} datagrams, {sum(got)} bytes")
    assert max(got) <= 1500, got  # no large probe ever left
    assert sum(got) <= 12_000, (len(got), sum(got))
