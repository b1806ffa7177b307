"""node.helper_wiring.usable_helpers: how a configured helper is found and called,
with the DHT, the NAT manager and the endpoint faked (the real thing, behind real
NATs: tests/nat/test_nat_e2e.py, which needs network namespaces)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from p2pstore.node import helper_wiring
from quic_transport import PeerAddress
from quic_transport.identity import NodeId

READY = {"enabled": True, "accepts": True}


def node_id() -> NodeId:
    return NodeId(os.urandom(20))


@dataclass
class FakeEndpoint:
    """Answers ``helper.status``; remembers whom it called (or never answers)."""

    hang: bool = False
    called: list[PeerAddress] = field(default_factory=list)

    async def call(self, peer: PeerAddress, method: str, body: Any, *, timeout: float) -> Any:  # noqa: ASYNC109
        assert method == "helper.status"
        self.called.append(peer)
        if self.hang:
            await asyncio.Event().wait()
        return READY


@dataclass
class FakeNat:
    """Learns a record only from the value ``b"record-of-" + node ID``; a learned
    node is reached through ``via``, as the connector would."""

    via: FakeEndpoint
    learned: list[tuple[bytes, NodeId | None]] = field(default_factory=list)
    records: dict[NodeId, Any] = field(default_factory=dict)

    def learn(self, value: bytes, expected: NodeId | None) -> Any:
        self.learned.append((value, expected))
        if expected is None or value != b"record-of-" + expected.raw:
            return None
        rec = SimpleNamespace(node_id=expected)
        self.records[expected] = rec
        return rec

    def address_of(self, rec: Any) -> PeerAddress:
        return PeerAddress(rec.node_id, "10.9.0.1", 4001)

    def storage_endpoint(self, nid: NodeId) -> FakeEndpoint | None:
        return self.via if nid in self.records else None


def service(
    helpers: list[NodeId], contacts: list[Any], announcements: list[Any], nat: FakeNat | None
) -> tuple[Any, FakeEndpoint]:
    endpoint = FakeEndpoint()

    async def lookup_detailed(target: NodeId) -> Any:
        return SimpleNamespace(contacts=contacts, announcements=announcements)

    ctx = SimpleNamespace(
        bootstrap=SimpleNamespace(seeds=[]),
        config=SimpleNamespace(helper=SimpleNamespace(helpers=tuple(h.b32 for h in helpers))),
        key=SimpleNamespace(node_id=node_id()),
    )
    dht = SimpleNamespace(lookup_detailed=lookup_detailed)
    return SimpleNamespace(context=ctx, endpoint=endpoint, dht=dht, nat=nat), endpoint


def ann(nid: NodeId, value: bytes) -> Any:
    return SimpleNamespace(node_id=nid, value=value)


async def test_a_helper_in_the_routing_table_is_called_directly() -> None:
    helper = node_id()
    nat = FakeNat(FakeEndpoint())
    contact = SimpleNamespace(node_id=helper, host="10.0.0.7", port=4001)
    svc, endpoint = service([helper], [contact], [], nat)
    (client,) = await helper_wiring.usable_helpers(svc)
    assert client.peer == PeerAddress(helper, "10.0.0.7", 4001)
    assert endpoint.called == [client.peer] and nat.via.called == []


async def test_a_natted_helper_is_found_by_its_record_and_called_through_the_connector() -> None:
    helper, other = node_id(), node_id()
    nat = FakeNat(FakeEndpoint())
    anns = [ann(other, b"record-of-" + other.raw), ann(helper, b"record-of-" + helper.raw)]
    svc, endpoint = service([helper], [], anns, nat)
    (client,) = await helper_wiring.usable_helpers(svc)
    assert client.peer == PeerAddress(helper, "10.9.0.1", 4001)
    assert nat.learned == [(b"record-of-" + helper.raw, helper)]  # only its own, tied to it
    assert nat.via.called == [client.peer] and endpoint.called == []


@pytest.mark.parametrize(
    "anns",
    [
        pytest.param(lambda h, o: [ann(o, b"record-of-" + o.raw)], id="only-another-nodes"),
        pytest.param(lambda h, o: [ann(h, b"forged")], id="an-invalid-record"),
        pytest.param(lambda h, o: [ann(h, b"")], id="a-withdrawn-announcement"),
    ],
)
async def test_a_helper_without_a_valid_record_of_its_own_is_not_usable(anns: Any) -> None:
    helper, other = node_id(), node_id()
    nat = FakeNat(FakeEndpoint())
    svc, endpoint = service([helper], [], anns(helper, other), nat)
    assert await helper_wiring.usable_helpers(svc) == []
    assert endpoint.called == [] and nat.via.called == []


async def test_without_nat_a_helper_in_no_routing_table_is_not_usable() -> None:
    helper = node_id()
    svc, endpoint = service([helper], [], [ann(helper, b"record-of-" + helper.raw)], None)
    assert await helper_wiring.usable_helpers(svc) == []
    assert endpoint.called == []


async def test_a_probe_is_bounded_as_a_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # the connector's set-up is outside the call's own timeout: a helper whose
    # connection never comes up is given up after PROBE_TIMEOUT
    monkeypatch.setattr(helper_wiring, "PROBE_TIMEOUT", 0.2)
    monkeypatch.setattr(helper_wiring, "STATUS_TIMEOUT", 30.0)
    helper = node_id()
    nat = FakeNat(FakeEndpoint(hang=True))
    svc, _ = service([helper], [], [ann(helper, b"record-of-" + helper.raw)], nat)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await helper_wiring.usable_helpers(svc) == []
    assert loop.time() - t0 < 5
