"""The upload helper over the transport (docs/helper.md, "Wire"): ``helper.status``,
``helper.start``, ``helper.finish`` (unary) and ``helper.push`` (an upload
exchange), served by :func:`register_helper_rpc` and called by
:class:`RpcHelperClient`.

Every body is a CBOR map with exactly the documented keys, each checked for type
and range before any work; the caller is the transport's verified node ID. A
:class:`HelperError` crosses as an :class:`RpcError` with its code; the client
turns it back into a :class:`HelperError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, Protocol

from p2pstore.immutable import EncodingParams
from p2pstore.immutable.errors import ParameterError
from p2pstore.storage.bulk import StreamEndpoint
from quic_transport import PeerAddress
from quic_transport.errors import RpcError
from quic_transport.identity import ID_BYTES

from .helper import HelperError, HelperService

MAX_UINT = 2**62
#: ``finish`` encodes and places the whole file: its reply may take this long per MB
FINISH_SECONDS_PER_MB = 1.0


class Registry(Protocol):
    def register(self, method: str, handler: Callable[[Any, Any], Awaitable[Any]]) -> None: ...

    def register_stream(
        self, method: str, handler: Callable[[Any, Any, Any], Awaitable[Any]]
    ) -> None: ...


def _body(body: object, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) != set(keys):
        raise HelperError("bad-request", f"body must be a map of exactly {', '.join(keys)}")
    for key, value in body.items():
        if key == "si":
            if not isinstance(value, bytes) or len(value) != ID_BYTES:
                raise HelperError("bad-request", f"si must be {ID_BYTES} bytes")
        elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_UINT:
            raise HelperError("bad-request", f"{key} must be an integer 0..2**62")
    return body


def register_helper_rpc(registry: Registry, service: HelperService[Any]) -> None:
    """Serve ``helper.*`` on an Endpoint (only when the node is a helper)."""

    def typed(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handler(*args: Any) -> Any:
            try:
                return await call(*args)
            except HelperError as e:
                raise RpcError(e.code, e.message) from None

        return handler

    async def status(ctx: Any, body: object) -> object:
        _body(body, ())
        return service.status(ctx.peer_id)

    async def start(ctx: Any, body: object) -> object:
        f = _body(body, ("si", "k", "n", "segment_size", "size"))
        try:
            params = EncodingParams(f["k"], f["n"], f["segment_size"])
        except ParameterError as e:
            raise HelperError("bad-request", str(e)) from None
        return await service.start(ctx.peer_id, f["si"], params, f["size"])

    async def push(ctx: Any, header: object, reader: AsyncIterable[bytes]) -> object:
        f = _body(header, ("si", "offset"))
        return {"have": await service.push(ctx.peer_id, f["si"], f["offset"], reader)}

    async def finish(ctx: Any, body: object) -> object:
        f = _body(body, ("si",))
        return await service.finish(ctx.peer_id, f["si"])

    registry.register("helper.status", typed(status))
    registry.register("helper.start", typed(start))
    registry.register("helper.finish", typed(finish))
    registry.register_stream("helper.push", typed(push))


class RpcHelperClient:
    """One helper through an Endpoint (``HelperAPI``); ``name`` is its node ID."""

    def __init__(
        self, endpoint: StreamEndpoint, peer: PeerAddress, *, timeout: float = 30.0
    ) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self.name = peer.node_id.b32
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RpcHelperClient({self.name[:12]})"

    async def _call(self, method: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        try:
            r = await self.endpoint.call(self.peer, method, body, timeout=timeout)
        except RpcError as e:
            raise HelperError(e.code[:64], e.message[:1000]) from None
        if not isinstance(r, dict):
            raise HelperError("bad-response", f"{method} answered no map")
        return r

    async def status(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        return await self._call("helper.status", {}, timeout or self.timeout)

    async def start(self, si: bytes, params: EncodingParams, size: int) -> dict[str, Any]:
        body = {"si": si, "k": params.k, "n": params.n, "segment_size": params.segment_size}
        return await self._call("helper.start", {**body, "size": size}, self.timeout)

    async def push(self, si: bytes, offset: int, chunks: AsyncIterable[bytes]) -> int:
        header = {"si": si, "offset": offset}
        try:
            r = await self.endpoint.call_stream(
                self.peer, "helper.push", header, chunks, timeout=self.timeout
            )
        except RpcError as e:
            raise HelperError(e.code[:64], e.message[:1000]) from None
        have = r.get("have") if isinstance(r, dict) else None
        if not isinstance(have, int) or isinstance(have, bool):
            raise HelperError("bad-response", "helper.push answered no byte count")
        return have

    async def finish(self, si: bytes, size: int) -> dict[str, Any]:
        timeout = self.timeout + FINISH_SECONDS_PER_MB * size / 1e6
        return await self._call("helper.finish", {"si": si}, timeout)
