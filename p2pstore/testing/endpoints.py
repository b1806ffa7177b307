"""Helpers for tests in any layer: real endpoints on 127.0.0.1 inside one process.

``async with endpoints(3) as (a, b, c): await a.call(address_of(b), ...)``
opens endpoints on 127.0.0.1 port 0 with fresh keys and closes them all on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from quic_transport.config import TransportConfig
from quic_transport.endpoint import Endpoint, open_endpoint
from quic_transport.identity import NodeKey
from quic_transport.rpc import PeerAddress


def address_of(ep: Endpoint) -> PeerAddress:
    host, port = ep.local_address
    return PeerAddress(ep.node_id, host, port)


@asynccontextmanager
async def endpoints(
    n: int = 2, config: TransportConfig | None = None
) -> AsyncIterator[list[Endpoint]]:
    async with AsyncExitStack() as stack:
        eps: list[Endpoint] = []
        for _ in range(n):
            ep = await open_endpoint(NodeKey.generate(), "127.0.0.1", 0, config)
            stack.push_async_callback(ep.aclose)
            eps.append(ep)
        yield eps
