"""RPC and bulk-stream exchanges over one :class:`~quic_transport.streams.Stream`.

Client side: :func:`call` (unary request/response), :func:`call_stream` (upload
a sequence of chunks, get the handler's result), :func:`open_fetch` (ask the
peer to stream data back, read it through a :class:`BulkReader`).
Listener side: :func:`serve` reads the first message of an incoming stream,
dispatches it to the registered handler and writes the reply.

Exchanges (docs/transport.md, "Exchanges"):

    unary:    C: Request + FIN                S: Ok | Err + FIN
    upload:   C: Open(up), DATA*, End + FIN   S: Credit*, Ok | Err + FIN
    download: C: Open(down), Credit* .. FIN   S: DATA*, End | Err + FIN

Invariants: a handler's unexpected exception becomes ``Err("internal")`` with
no traceback on the wire; a handler's RpcError crosses unchanged (message
truncated to 1,024 characters); the stream is always released when an
exchange ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from .config import TransportConfig
from .errors import (
    FrameError,
    MessageTooLarge,
    RpcError,
    RpcTimeout,
    StreamClosedError,
    TransportError,
)
from .identity import NodeId
from .messages import MAX_ERROR_MESSAGE, End, Err, Ok, Open, Request
from .peer_connection import PeerConnection
from .streams import ERR_PROTOCOL, ERR_TIMEOUT, Stream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """How to dial a peer: its node ID and the UDP address of its endpoint."""

    node_id: NodeId
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler learns about its caller."""

    peer_id: NodeId  # verified: the caller proved this key
    host: str  # UDP source address of the caller's endpoint (its listen address,
    port: int  # since one socket listens and dials; absent NAT)

    @property
    def address(self) -> PeerAddress:
        """The caller as a dialable peer (for routing tables)."""
        return PeerAddress(self.peer_id, self.host, self.port)


Handler = Callable[[CallContext, Any], Awaitable[Any]]
StreamHandler = Callable[[CallContext, Any, "BulkReader"], Awaitable[Any]]
FetchHandler = Callable[[CallContext, Any], AsyncIterable[bytes]]
Chunks = AsyncIterable[bytes | bytearray | memoryview] | Iterable[bytes | bytearray | memoryview]


class BulkReader:
    """Bulk bytes arriving on a stream, read piece by piece (never buffered whole).

    ``read()`` returns the next piece (any size up to one DATA frame), or ``b""``
    once the sender's ``End`` arrived and its byte count matched. A remote
    ``Err`` raises :class:`RpcError`; no progress within ``timeout`` seconds
    raises :class:`RpcTimeout`. Iterate with ``async for``; use ``async with``
    (or ``aclose()``) to release the stream early.
    """

    def __init__(self, stream: Stream, timeout: float | None, *, release_at_end: bool) -> None:
        self._stream = stream
        self._release_at_end = release_at_end
        self._timeout = timeout
        self._received = 0
        self._done = False
        self._released = False

    async def read(self) -> bytes:
        if self._done:
            return b""
        try:
            item = await self._stream.next_item(self._timeout)
        except TransportError:
            self.release()
            raise
        if isinstance(item, bytes):
            self._received += len(item)
            return item
        self._done = True
        if isinstance(item, End):
            if item.total != self._received:
                self._stream.abort(ERR_PROTOCOL, FrameError("bulk byte count mismatch"))
                raise FrameError(
                    f"sender announced {item.total} bytes but {self._received} arrived"
                )
            if self._release_at_end:
                self.release()
            return b""
        self.release()
        if isinstance(item, Err):
            raise RpcError(item.code, item.message)
        if item is None:
            raise StreamClosedError("bulk stream ended without End (truncated)")
        self._stream.abort(ERR_PROTOCOL, FrameError("unexpected message in bulk data"))
        raise FrameError(f"unexpected {type(item).__name__} in bulk data")

    async def read_all(self, limit: int) -> bytes:
        """Everything that is left, refusing to hold more than ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                await self.aclose()
                raise FrameError(f"bulk payload exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def release(self) -> None:
        """Caller side: end the exchange (FIN, stop reading). Listener side: no-op,
        the dispatcher releases the stream after the handler's reply."""
        if not self._released and self._release_at_end:
            self._released = True
            self._stream.finish()
            self._stream.release()

    async def aclose(self) -> None:
        self.release()

    async def __aenter__(self) -> BulkReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _reply_error(stream: Stream, code: str, message: str) -> None:
    with contextlib.suppress(TransportError, FrameError):
        stream.send_message(Err(code, message[:MAX_ERROR_MESSAGE]), end=True)


def _reply_ok(stream: Stream, result: Any, limit: int) -> None:
    try:
        stream.send_message(Ok(result), end=True)
    except MessageTooLarge as e:
        _reply_error(stream, "result-too-large", f"result of {e.size} bytes exceeds {limit}")
    except ValueError as e:
        log.warning("handler result not encodable: %s", e)
        _reply_error(stream, "internal", "handler result is not CBOR-encodable")
    except TransportError:
        pass


class Dispatcher(Protocol):
    """What :func:`serve` needs from the endpoint: its config, clock, registered
    handlers and the caller address handlers see (the endpoint satisfies it)."""

    config: TransportConfig
    handlers: dict[str, Handler]
    stream_handlers: dict[str, StreamHandler]
    fetch_handlers: dict[str, FetchHandler]

    def now(self) -> float: ...
    def caller_address(self, addr: tuple[str, int]) -> tuple[str, int]: ...


async def serve(ep: Dispatcher, conn: PeerConnection, stream: Stream) -> None:
    """Handle one incoming stream: read its first message, dispatch, reply, release."""
    cfg = ep.config
    assert conn.peer_id is not None
    host, port = ep.caller_address(conn.addr)  # a relayed caller: its observed address
    ctx = CallContext(conn.peer_id, host, port)
    method = "?"
    try:
        try:
            # one deadline for the whole request: bytes trickling in do not reset it
            async with asyncio.timeout(cfg.request_read_timeout):
                msg = await stream.next_message(None)
        except (RpcTimeout, TimeoutError):
            stream.abort(ERR_TIMEOUT, FrameError("request not received in time"))
            return
        if msg is None:
            return
        conn.last_useful = ep.now()
        if isinstance(msg, Request):
            method = msg.method
            handler = ep.handlers.get(method)
            if handler is None:
                _reply_error(stream, "no-such-method", f"no handler for {method!r}")
                return
            async with asyncio.timeout(cfg.handler_timeout):
                result = await handler(ctx, msg.body)
            _reply_ok(stream, result, cfg.max_message_bytes)
        elif isinstance(msg, Open) and msg.direction == "up":
            method = msg.method
            up = ep.stream_handlers.get(method)
            if up is None:
                _reply_error(stream, "no-such-method", f"no stream handler for {method!r}")
                return
            stream.open_window()
            reader = BulkReader(stream, cfg.request_read_timeout, release_at_end=False)
            # No overall deadline: a large transfer may take long; every wait for
            # data or credit is bounded by request_read_timeout instead.
            result = await up(ctx, msg.header, reader)
            _reply_ok(stream, result, cfg.max_message_bytes)
        elif isinstance(msg, Open):
            method = msg.method
            down = ep.fetch_handlers.get(method)
            if down is None:
                _reply_error(stream, "no-such-method", f"no fetch handler for {method!r}")
                return
            total = 0
            async for chunk in down(ctx, msg.header):
                await stream.send_data(chunk, cfg.request_read_timeout)
                total += len(chunk)
            stream.send_message(End(total), end=True)
        else:
            stream.abort(ERR_PROTOCOL, FrameError(f"{type(msg).__name__} cannot open a stream"))
    except RpcError as e:
        _reply_error(stream, e.code, e.message)
    except TimeoutError:
        _reply_error(stream, "timeout", f"handler for {method!r} took too long")
    except RpcTimeout as e:  # bulk data or credit did not come in time
        _reply_error(stream, "timeout", str(e))
    except (FrameError, StreamClosedError) as e:
        log.debug("stream %d from %s failed: %s", stream.stream_id, ctx.peer_id.short(), e)
    except Exception:
        log.exception("handler for %r failed", method)
        _reply_error(stream, "internal", f"handler for {method!r} failed")
    finally:
        stream.release()


def _result_of(msg: object) -> Any:
    if isinstance(msg, Ok):
        return msg.result
    if isinstance(msg, Err):
        raise RpcError(msg.code, msg.message)
    if msg is None:
        raise StreamClosedError("peer closed the stream without a reply")
    raise FrameError(f"unexpected {type(msg).__name__} as a reply")


async def call(conn: PeerConnection, method: str, body: Any, timeout: float) -> Any:  # noqa: ASYNC109
    stream = conn.open_stream()
    try:
        stream.send_message(Request(method, body), end=True)
        try:
            async with asyncio.timeout(timeout):
                msg = await stream.next_message(None)
        except TimeoutError:
            raise RpcTimeout(f"{method}: no reply within {timeout} s", timeout=timeout) from None
        return _result_of(msg)
    finally:
        stream.release()


async def _iterate(chunks: Chunks) -> AsyncIterator[bytes | bytearray | memoryview]:
    if isinstance(chunks, AsyncIterable):
        async for c in chunks:
            yield c
    else:
        for c in chunks:
            yield c


async def call_stream(
    conn: PeerConnection,
    method: str,
    header: Any,
    chunks: Chunks,
    timeout: float,  # noqa: ASYNC109
) -> Any:
    stream = conn.open_stream()
    try:
        stream.send_message(Open(method, header, "up"))
        total = 0
        stopped = False
        try:
            async for chunk in _iterate(chunks):
                await stream.send_data(chunk, timeout)
                total += len(chunk)
            stream.send_message(End(total), end=True)
        except StreamClosedError:
            if stream.failed is not None:
                raise
            stopped = True  # the handler stopped reading early; its reply tells why
        try:
            async with asyncio.timeout(timeout):
                msg = await stream.next_message(None)
        except TimeoutError:
            raise RpcTimeout(f"{method}: no reply within {timeout} s", timeout=timeout) from None
        result = _result_of(msg)
        if stopped:
            log.debug("%s: peer replied before reading all data", method)
        return result
    finally:
        stream.release()


def open_fetch(conn: PeerConnection, method: str, header: Any, timeout: float) -> BulkReader:
    stream = conn.open_stream()
    try:
        stream.send_message(Open(method, header, "down"))
        stream.open_window()
    except BaseException:
        stream.release()
        raise
    return BulkReader(stream, timeout, release_at_end=True)
