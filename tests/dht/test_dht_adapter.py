"""The endpoint adapter, against a fake endpoint that behaves as docs/transport.md says."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from dht.contact import Contact
from dht.endpoint_adapter import EndpointTransport, ErrorMap
from dht.errors import PeerRejected, PeerTimeout, PeerUnreachable, RequestRejected
from dht.transport import CallerInfo, DhtTransport
from quic_transport.identity import NodeId, NodeKey
from tests.dht_contract import check_network


class FakeTransportError(Exception):
    pass


class FakeRpcError(FakeTransportError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FakeRpcTimeout(FakeTransportError):
    pass


class FakeConnectError(FakeTransportError):
    pass


class FakePeerAuthError(FakeTransportError):
    pass


@dataclass(frozen=True, slots=True)
class FakeAddress:
    node_id: NodeId
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class FakeContext:
    peer_id: NodeId
    host: str
    port: int


FakeHandler = Callable[[Any, Any], Awaitable[Any]]


class FakeEndpoint:
    """In-process stand-in for quic_transport.Endpoint (same call/register semantics)."""

    registry: ClassVar[dict[tuple[str, int], FakeEndpoint]] = {}

    def __init__(self, key: NodeKey, port: int) -> None:
        self.node_id = key.node_id
        self.local_address = ("127.0.0.1", port)
        self.handlers: dict[str, FakeHandler] = {}
        self.closed = False
        FakeEndpoint.registry[self.local_address] = self

    def register(self, method: str, handler: FakeHandler) -> None:
        self.handlers[method] = handler

    async def call(
        self,
        peer: FakeAddress,
        method: str,
        body: Any,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (mirrors Endpoint.call)
    ) -> Any:
        other = FakeEndpoint.registry.get((peer.host, peer.port))
        if other is None or other.closed:
            raise FakeConnectError("unreachable")
        if other.node_id != peer.node_id:
            raise FakePeerAuthError("wrong key")
        handler = other.handlers.get(method)
        if handler is None:
            raise FakeRpcError("no-such-method", method)
        ctx = FakeContext(self.node_id, *self.local_address)
        try:
            async with asyncio.timeout(timeout):
                return await handler(ctx, body)
        except TimeoutError:
            raise FakeRpcTimeout(method) from None
        except FakeRpcError:
            raise
        except Exception:
            raise FakeRpcError("internal", "handler failed") from None

    async def aclose(self) -> None:
        self.closed = True


ERRORS = ErrorMap(
    timeout=(FakeRpcTimeout,),
    rejected=(FakeRpcError,),
    unreachable=(FakeTransportError,),
    make_rejection=FakeRpcError,
)


def adapt(ep: FakeEndpoint) -> DhtTransport:
    return EndpointTransport(ep, make_address=FakeAddress, errors=ERRORS)


async def test_error_translation_both_ways() -> None:
    a = FakeEndpoint(NodeKey.generate(), 1)
    b = FakeEndpoint(NodeKey.generate(), 2)
    ta, tb = adapt(a), adapt(b)
    seen: list[CallerInfo] = []

    async def reject(ctx: CallerInfo, body: Any) -> Any:
        seen.append(ctx)
        raise RequestRejected("stale", "older seq")

    async def slow(ctx: CallerInfo, body: Any) -> Any:
        await asyncio.sleep(10)

    async def boom(ctx: CallerInfo, body: Any) -> Any:
        raise ValueError("bug")

    tb.register("x.reject", reject)
    tb.register("x.slow", slow)
    tb.register("x.boom", boom)
    peer = Contact(b.node_id, "127.0.0.1", 2)
    with pytest.raises(PeerRejected) as ei:
        await ta.call(peer, "x.reject", {}, timeout=1)
    assert ei.value.code == "stale" and seen[0].peer_id == a.node_id
    with pytest.raises(PeerTimeout):
        await ta.call(peer, "x.slow", {}, timeout=0.01)
    with pytest.raises(PeerRejected, match="internal"):
        await ta.call(peer, "x.boom", {}, timeout=1)
    with pytest.raises(PeerRejected, match="no-such-method"):
        await ta.call(peer, "x.none", {}, timeout=1)
    with pytest.raises(PeerUnreachable):
        await ta.call(Contact(a.node_id, "127.0.0.1", 2), "x.reject", {}, timeout=1)
    with pytest.raises(PeerUnreachable):
        await ta.call(Contact(b.node_id, "127.0.0.1", 9), "x.reject", {}, timeout=1)


async def test_twenty_nodes_find_every_record_through_the_adapter() -> None:
    ports = iter(range(100, 1000))

    async def open_transport(
        key: NodeKey,
    ) -> tuple[DhtTransport, Contact, Callable[[], Awaitable[None]]]:
        ep = FakeEndpoint(key, next(ports))
        return adapt(ep), Contact(key.node_id, *ep.local_address), ep.aclose

    stats = await check_network(open_transport, n=20)
    assert stats["gets"] == 20 * 19


def test_the_same_contract_check_passes_on_the_memory_network() -> None:
    from p2pstore.testing.dht_memnet import MemoryNetwork
    from p2pstore.testing.vloop import run_virtual

    net = MemoryNetwork()

    async def open_transport(
        key: NodeKey,
    ) -> tuple[DhtTransport, Contact, Callable[[], Awaitable[None]]]:
        t = net.add(key.node_id)

        async def close() -> None:
            net.kill(key.node_id)

        return t, t.contact, close

    stats = run_virtual(check_network(open_transport, n=20))
    assert stats["gets"] == 20 * 19
