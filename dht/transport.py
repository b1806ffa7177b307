"""What the DHT needs from a transport (the Protocol lives with its user).

:class:`DhtTransport` is satisfied by the in-memory network of the testing package
(``p2pstore.testing.dht_memnet.MemoryTransport``: simulations and fast tests)
and, through a thin adapter, by ``quic_transport.Endpoint``. The contract:

- ``call(peer, method, body, *, timeout)`` sends one request to ``peer`` and returns
  the decoded reply body (CBOR-encodable values). It raises only subclasses of
  :class:`dht.errors.PeerCallError`: ``PeerTimeout`` when no reply came within
  ``timeout`` seconds, ``PeerUnreachable`` when the peer could not be reached or could
  not prove ``peer.node_id``, ``PeerRejected(code, message)`` when the remote handler
  replied an error (including the handler raising ``RequestRejected``).
- ``register(method, handler)``: ``handler(ctx, body)`` is awaited for each incoming
  request; ``ctx.peer_id`` is the caller's node ID *as verified by the transport* and
  ``ctx.host``/``ctx.port`` its dialable address. A handler raising
  :class:`dht.errors.RequestRejected` must produce an error reply with that code and
  message; any other exception an opaque internal error reply.

The DHT adds callers to its routing table from ``ctx`` only because the ID is verified.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dht.contact import Contact
from quic_transport.identity import NodeId


class CallerInfo(Protocol):
    @property
    def peer_id(self) -> NodeId: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


Handler = Callable[[CallerInfo, Any], Awaitable[Any]]


class DhtTransport(Protocol):
    # The per-call timeout mirrors quic_transport.Endpoint.call (docs/transport.md).
    async def call(
        self,
        peer: Contact,
        method: str,
        body: Any,
        *,
        timeout: float,  # noqa: ASYNC109 (the contract takes a per-call timeout)
    ) -> Any: ...

    def register(self, method: str, handler: Handler) -> None: ...
