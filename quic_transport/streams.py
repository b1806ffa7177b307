"""One QUIC bidirectional stream seen as an ordered channel of messages and bulk data.

A :class:`Stream` turns raw stream bytes into an ordered queue of items (decoded
messages and DATA pieces) and offers credit-based bulk sending and receiving.

Flow control (docs/transport.md, "Bulk data"): the data receiver starts with an
implicit grant of ``INITIAL_CREDIT`` bytes and raises it with ``Credit``
messages as the application *consumes* data, keeping at most ``window`` bytes
outstanding. aioquic raises its own QUIC windows as soon as data arrives, not
when it is consumed, so this application-level credit is what bounds memory:

- receiver: bytes buffered <= granted - consumed <= window; a sender that
  exceeds its grant is a protocol violation and the stream is reset;
- sender: bytes handed to aioquic (which buffers without limit) <= grant, so a
  slow receiver bounds the sender's memory too; and bytes handed over but not yet
  sent stay below ``SEND_BACKLOG`` plus one frame, so a slow link holds the caller
  back instead of a window's worth of data queueing inside aioquic.

Invariants: ``Credit`` messages are consumed on arrival and never queued; all
other items stay in arrival order; after a failure every waiter gets the error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .cbor_budget import DecodeBudgetExceeded
from .errors import FrameError, RpcTimeout, StreamClosedError, TransportError
from .framing import KIND_DATA, DataPiece, FrameDecoder, encode_header
from .messages import Credit, Message, decode_message, encode_message

INITIAL_CREDIT = 256 * 1024
MAX_QUEUED_MESSAGES = 4  # no exchange legitimately has more unread messages in flight
SEND_DATA_FRAME = 256 * 1024  # DATA payload size this side sends (receivers accept up to 1 MiB)
# bytes of a stream handed to QUIC and not yet sent, at most (plus one frame): the
# rest waits in the caller, so what a sender has handed over follows what the link
# carries (on a slow uplink shared by many streams, seconds rather than a window)
SEND_BACKLOG = 1 << 20

# QUIC application error codes used in RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE.
ERR_NONE = 0x0
ERR_FRAME = 0x10  # malformed frame or message
ERR_CANCELLED = 0x11  # the local side gave up on the stream
ERR_FLOW = 0x12  # bulk data beyond the granted credit
ERR_TIMEOUT = 0x13  # request not received in time
ERR_AUTH = 0x14  # connection: client proof missing or invalid
ERR_PROTOCOL = 0x15  # connection: message out of place
ERR_SHUTDOWN = 0x16  # connection: endpoint closing
ERR_SILENT = 0x17  # connection: the peer stopped answering (liveness.py)


class StreamOwner(Protocol):
    """What a Stream needs from its connection."""

    def send_stream_data(
        self, stream_id: int, data: bytes | memoryview, end: bool = False
    ) -> None: ...
    def reset_stream(self, stream_id: int, code: int) -> None: ...
    def stop_stream(self, stream_id: int, code: int) -> None: ...
    def stream_released(self, stream_id: int) -> None: ...
    def credit_left(self) -> int: ...
    def credit_delta(self, stream: Stream, delta: int) -> None: ...
    def starving(self, stream: Stream) -> None: ...
    def add_receiver(self, stream: Stream) -> None: ...
    def fair_share(self) -> int: ...
    def misbehaved(self, reason: str) -> None: ...
    def unsent(self, stream_id: int) -> int: ...
    def backlogged(self, stream: Stream) -> None: ...


class Stream:
    __slots__ = (
        "_consumed",
        "_decoder",
        "_error",
        "_granted",
        "_items",
        "_limit",
        "_msg_bytes",
        "_msg_sizes",
        "_on_credit",
        "_outstanding",
        "_queued_msgs",
        "_received",
        "_recv_done",
        "_send_credit",
        "_send_done",
        "_sent",
        "_share",
        "_waiter",
        "_window",
        "owner",
        "stream_id",
    )

    def __init__(
        self,
        owner: StreamOwner,
        stream_id: int,
        *,
        max_message: int,
        max_data_frame: int,
        window: int,
    ) -> None:
        self.owner = owner
        self.stream_id = stream_id
        self._decoder = FrameDecoder(max_message=max_message, max_data=max_data_frame)
        self._limit = max_message
        self._window = window
        self._items: deque[Message | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: TransportError | None = None
        self._queued_msgs = 0
        self._msg_sizes: deque[int] = deque()
        self._msg_bytes = 0
        self._outstanding = 0  # grant not yet consumed, as charged to the connection
        self._recv_done = False  # FIN received
        self._send_done = False  # FIN or reset sent
        # receiving bulk data
        self._granted = INITIAL_CREDIT
        self._received = 0
        self._consumed = 0
        # sending bulk data
        self._send_credit = INITIAL_CREDIT
        self._sent = 0
        self._on_credit: Callable[[], None] | None = None
        self._sync_outstanding()

    # -- called from the connection's event processing (synchronous) ------------
    def on_data(self, data: bytes, end: bool) -> None:
        if self._error is not None:
            return
        try:
            for ev in self._decoder.feed(data) if data else ():
                if isinstance(ev, DataPiece):
                    self._received += len(ev.data)
                    if self._received > self._granted:
                        self.abort(ERR_FLOW, FrameError("bulk data beyond the granted credit"))
                        return
                    self._items.append(ev.data)
                else:
                    msg = decode_message(ev.payload)
                    if isinstance(msg, Credit):
                        self._send_credit += msg.amount
                        self._wake()
                        continue
                    self._queued_msgs += 1
                    self._msg_bytes += len(ev.payload)
                    if self._queued_msgs > MAX_QUEUED_MESSAGES or self._msg_bytes > self._limit:
                        self.abort(ERR_PROTOCOL, FrameError("too many unread messages on a stream"))
                        return
                    self._msg_sizes.append(len(ev.payload))
                    self._items.append(msg)
            if end:
                self._decoder.finish()
                self._recv_done = True
        except DecodeBudgetExceeded as e:
            self.abort(ERR_FRAME, e)
            self.owner.misbehaved(str(e))  # the whole connection goes (liveness.py's sibling)
            return
        except FrameError as e:
            self.abort(ERR_FRAME, e)
            return
        self._sync_outstanding()
        self._wake()

    def on_reset(self, code: int) -> None:
        self.fail(StreamClosedError(f"peer reset the stream (code {code})", error_code=code))

    def on_stop_sending(self, code: int) -> None:
        self._send_done = True
        self._wake()

    def fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
            self._clear()
        self._wake()

    def _clear(self) -> None:
        self._items.clear()
        self._consumed = self._received  # dropped
        self._queued_msgs = 0
        self._msg_sizes.clear()
        self._msg_bytes = 0
        self._sync_outstanding()

    def abort(self, code: int, error: TransportError) -> None:
        """Fail locally and tell the peer (reset our side, stop theirs)."""
        self.fail(error)
        if not self._send_done:
            self._send_done = True
            self.owner.reset_stream(self.stream_id, code)
        if not self._recv_done:
            self._recv_done = True
            self.owner.stop_stream(self.stream_id, code)

    def wake(self) -> None:
        """The connection sent data: a sender waiting on its backlog may go on."""
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            raise RpcTimeout(
                f"no progress on stream {self.stream_id}", timeout=timeout or 0
            ) from None
        finally:
            self._waiter = None

    # -- receiving -----------------------------------------------------------------
    async def next_item(self, timeout: float | None) -> Message | bytes | None:  # noqa: ASYNC109
        """Next message or data piece; None at a clean end of stream."""
        while True:
            if self._error is not None:
                raise self._error
            if self._items:
                item = self._items.popleft()
                if isinstance(item, bytes):
                    self._consume(len(item))
                else:
                    self._queued_msgs -= 1
                    self._msg_bytes -= self._msg_sizes.popleft()
                return item
            if self._recv_done:
                return None
            await self._wait(timeout)

    async def next_message(self, timeout: float | None) -> Message | None:  # noqa: ASYNC109
        item = await self.next_item(timeout)
        if isinstance(item, bytes):
            err = FrameError("bulk data where a message was expected")
            self.abort(ERR_PROTOCOL, err)
            raise err
        return item

    def _consume(self, n: int) -> None:
        self._consumed += n
        self._sync_outstanding()  # return the bytes to the budget first (others may wait)
        self.top_up()

    def _sync_outstanding(self) -> None:
        """Report this stream's unconsumed grant to the connection's budget."""
        if self._error is not None:
            now = 0
        elif self._recv_done:  # nothing more will come: only what is queued counts
            now = self._received - self._consumed
        else:  # what is queued plus what the peer may still send
            now = self._granted - self._consumed
        if now != self._outstanding:
            delta, self._outstanding = now - self._outstanding, now
            self.owner.credit_delta(self, delta)

    def top_up(self) -> None:
        """Keep up to one window granted: ``window``, or the stream's fair share of the
        connection budget if smaller, and never more than the budget has left."""
        target = min(self._window, self.owner.fair_share())
        outstanding = self._granted - self._consumed
        if outstanding <= target // 2 and not self._send_done and self._error is None:
            self.grant(target - outstanding)
        else:
            self._sync_outstanding()

    def grant(self, amount: int) -> None:
        """Allow the peer up to ``amount`` more bulk bytes (less if the budget is short)."""
        if self._send_done or self._error is not None:
            return
        allowed = min(amount, self.owner.credit_left())
        if allowed < amount:
            self.owner.starving(self)
        if allowed > 0:
            self._granted += allowed
            self.send_message(Credit(allowed))
        self._sync_outstanding()

    def open_window(self) -> None:
        """This stream receives bulk data: raise the peer's credit from the implicit
        initial grant to a window (and keep it there as data is consumed)."""
        self.owner.add_receiver(self)
        self.top_up()

    # -- sending ---------------------------------------------------------------------
    def send_message(self, msg: Message, *, end: bool = False) -> None:
        if self._send_done:
            raise StreamClosedError("stream already closed for sending")
        frame = encode_message(msg, limit=self._limit)
        self._send_done = end
        self.owner.send_stream_data(self.stream_id, frame, end)

    def finish(self) -> None:
        if not self._send_done:
            self._send_done = True
            self.owner.send_stream_data(self.stream_id, b"", True)

    async def send_data(self, data: bytes | bytearray | memoryview, timeout: float | None) -> None:  # noqa: ASYNC109
        """Send bulk bytes, waiting for credit; raises if the peer stops or fails."""
        view = memoryview(data).cast("B")
        pos = 0
        max_frame = SEND_DATA_FRAME
        while pos < len(view):
            if self._error is not None:
                raise self._error
            if self._send_done:
                raise StreamClosedError("peer stopped reading this stream")
            avail = self._send_credit - self._sent
            if avail <= 0:
                await self._wait(timeout)
                continue
            if self.owner.unsent(self.stream_id) >= SEND_BACKLOG:
                self.owner.backlogged(self)  # woken when the connection sends some
                await self._wait(timeout)
                continue
            n = min(avail, len(view) - pos, max_frame)
            self.owner.send_stream_data(self.stream_id, encode_header(KIND_DATA, n))
            # aioquic copies what it is given into the stream's send buffer at once,
            # so a view is enough (no intermediate bytes copy)
            self.owner.send_stream_data(self.stream_id, view[pos : pos + n])
            self._sent += n
            pos += n

    @property
    def bytes_sent(self) -> int:
        return self._sent

    @property
    def buffered(self) -> int:
        """Bulk bytes received but not yet consumed (bounded by the window)."""
        return self._received - self._consumed

    @property
    def failed(self) -> TransportError | None:
        return self._error

    def release(self) -> None:
        """The owner is done: reset/stop what is still open and forget the stream."""
        if not self._send_done:
            self._send_done = True
            self.owner.reset_stream(self.stream_id, ERR_CANCELLED)
        if not self._recv_done and self._error is None:
            self.owner.stop_stream(self.stream_id, ERR_CANCELLED)
        self._recv_done = True
        self._clear()
        self.owner.stream_released(self.stream_id)
