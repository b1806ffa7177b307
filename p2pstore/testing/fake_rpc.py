"""An in-memory stand-in for the transport's RPC registry (``Endpoint.register``/``call``).

It mimics the transport contract (docs/transport.md) closely enough for
adapter tests: bodies and results go through a real CBOR round trip, a handler
raising :class:`FakeRpcError` replies that ``(code, message)``, any other handler
exception becomes ``("internal", ...)`` with no details, and an unregistered
method is ``("no-such-method", ...)``. No sockets, no event-loop tricks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from quic_transport.identity import NodeId

Handler = Callable[[Any, Any], Awaitable[Any]]


class FakeRpcError(Exception):
    """What the fake transport raises to the caller; like ``quic_transport.RpcError``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class FakeCallContext:
    peer_id: NodeId
    host: str = "127.0.0.1"
    port: int = 0


class FakeRegistry:
    """Handlers by method name, called in-process with a CBOR round trip each way."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.calls = 0

    def register(self, method: str, handler: Handler) -> None:
        if method in self.handlers:
            raise ValueError(f"method {method!r} registered twice")
        self.handlers[method] = handler

    async def call(self, peer_id: NodeId, method: str, body: Any) -> Any:
        self.calls += 1
        wire_body = cbor2.loads(cbor2.dumps(body))
        handler = self.handlers.get(method)
        if handler is None:
            raise FakeRpcError("no-such-method", f"no method {method!r}")
        try:
            result = await handler(FakeCallContext(peer_id), wire_body)
        except FakeRpcError as e:
            raise FakeRpcError(e.code, e.message) from None
        except Exception:
            raise FakeRpcError("internal", "the handler failed") from None
        return cbor2.loads(cbor2.dumps(result))

    def caller(self, peer_id: NodeId) -> Callable[[str, Any], Awaitable[Any]]:
        """A ``call(method, body)`` bound to one calling peer (for RpcStorageClient)."""

        async def call(method: str, body: Any) -> Any:
            return await self.call(peer_id, method, body)

        return call
