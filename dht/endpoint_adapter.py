"""Generic adapter from an RPC endpoint (``quic_transport.Endpoint``'s shape) to ``DhtTransport``.

Its one job is translation at the boundary, so the DHT never imports transport types:

- outgoing: ``Contact`` -> the endpoint's address type (``make_address(node_id, host,
  port)``, e.g. ``quic_transport.PeerAddress``); transport exceptions -> the DHT's
  ``PeerTimeout`` / ``PeerRejected`` / ``PeerUnreachable`` per :class:`ErrorMap`;
- incoming: a DHT handler raising ``RequestRejected(code, message)`` ->
  ``errors.make_rejection(code, message)`` (e.g. ``quic_transport.RpcError``), which the
  endpoint sends back as a typed error reply. The endpoint's call context is passed to
  DHT handlers unchanged (it must have ``peer_id``, ``host``, ``port``).

The QUIC wiring is then a few lines (see docs/dht.md, "Wiring onto QUIC").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dht.contact import Contact
from dht.errors import PeerRejected, PeerTimeout, PeerUnreachable, RequestRejected
from dht.transport import CallerInfo, Handler
from quic_transport.identity import NodeId


class RpcEndpoint(Protocol):
    def register(self, method: str, handler: Callable[[Any, Any], Awaitable[Any]]) -> None: ...

    async def call(
        self,
        peer: Any,
        method: str,
        body: Any,
        *,
        timeout: float = ...,  # noqa: ASYNC109 (mirrors Endpoint.call)
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class ErrorMap:
    """Which transport exceptions mean what. Checked in this order: timeout, rejected,
    unreachable (so ``unreachable`` may be the transport's base class)."""

    timeout: tuple[type[Exception], ...]
    rejected: tuple[type[Exception], ...]  # instances carry ``code`` and ``message``
    unreachable: tuple[type[Exception], ...]
    make_rejection: Callable[[str, str], Exception]


class EndpointTransport:
    """Satisfies ``dht.transport.DhtTransport`` over an :class:`RpcEndpoint`."""

    def __init__(
        self,
        endpoint: RpcEndpoint,
        *,
        make_address: Callable[[NodeId, str, int], Any],
        errors: ErrorMap,
    ) -> None:
        self._endpoint = endpoint
        self._make_address = make_address
        self._errors = errors

    async def call(
        self,
        peer: Contact,
        method: str,
        body: Any,
        *,
        timeout: float,  # noqa: ASYNC109 (the contract takes a per-call timeout)
    ) -> Any:
        errs = self._errors
        addr = self._make_address(peer.node_id, peer.host, peer.port)
        try:
            return await self._endpoint.call(addr, method, body, timeout=timeout)
        except errs.timeout as e:
            raise PeerTimeout(peer.node_id, f"{method}: {e}") from e
        except errs.rejected as e:
            code = getattr(e, "code", "error")
            message = getattr(e, "message", str(e))
            raise PeerRejected(peer.node_id, str(code), str(message)) from e
        except errs.unreachable as e:
            raise PeerUnreachable(peer.node_id, f"{type(e).__name__}: {e}") from e

    def register(self, method: str, handler: Handler) -> None:
        make_rejection = self._errors.make_rejection

        async def wrapped(ctx: CallerInfo, body: Any) -> Any:
            try:
                return await handler(ctx, body)
            except RequestRejected as e:
                raise make_rejection(e.code, e.message) from None

        self._endpoint.register(method, wrapped)
