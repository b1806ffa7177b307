"""PeerConnection: one aioquic QuicConnection, its streams, its authentication state.

How it differs from :mod:`.quic_tuned`: that module tunes aioquic's own QUIC
state machine (windows, pacing); this one is our layer over it, which
authenticates the peer and runs our streams, and reports to its owner
(:class:`ConnectionOwner`, the endpoint) without importing it.

Owns the per-connection state machine (see docs/transport.md, "Authentication")::

    HANDSHAKE --HandshakeCompleted--> AUTH --proof verified / AuthOk--> READY
        any state --ConnectionTerminated--> CLOSED

Invariants:
- Stream 0 carries only the authentication exchange; before READY any other
  stream is a protocol violation that closes the connection.
- ``peer_id`` is set only from a verified proof (listener) or a pinned
  certificate (dialer); it never changes afterwards.
- Incoming streams handled at once are bounded by ``max_concurrent_streams``;
  extra streams get an ``Err("busy")`` reply.
- Every task it starts is in ``tasks`` and is cancelled when the connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from aioquic import tls
from aioquic.quic import events

from . import auth
from .config import TransportConfig
from .errors import (
    ConnectError,
    FrameError,
    PeerAuthError,
    StreamClosedError,
    TransportError,
)
from .framing import FrameDecoder, MessageFrame
from .identity import NodeId, NodeKey
from .messages import Auth, AuthOk, Err, decode_message, encode_message
from .quic_tuned import TransportQuicConnection
from .streams import ERR_AUTH, ERR_PROTOCOL, Stream

log = logging.getLogger(__name__)

HANDSHAKE, AUTH, READY, CLOSED = "handshake", "auth", "ready", "closed"
_AUTH_MESSAGE_LIMIT = 1024
_EARLY_LIMIT = 1 << 20  # listener stream bytes a dialer holds while awaiting auth-ok


class ConnectionOwner(Protocol):
    """What a connection needs from the endpoint that owns it (the endpoint
    satisfies it; this module never imports the endpoint): its identity and
    config, the clock, and the notices a connection sends up: ready, closed, a
    connection ID issued or retired, data to flush, a stream to serve, a peer to
    penalize, streams open (arm the liveness watchdog)."""

    key: NodeKey
    node_id: NodeId
    config: TransportConfig

    def now(self) -> float: ...
    def watch(self) -> None: ...
    def schedule_flush(self, conn: PeerConnection) -> None: ...
    def connection_ready(self, conn: PeerConnection) -> None: ...
    def connection_closed(self, conn: PeerConnection) -> None: ...
    def add_cid(self, conn: PeerConnection, cid: bytes) -> None: ...
    def remove_cid(self, conn: PeerConnection, cid: bytes) -> None: ...
    async def serve_stream(self, conn: PeerConnection, stream: Stream) -> None: ...
    def penalize(self, addr: tuple[str, int], reason: str) -> None: ...


class PeerConnection:
    def __init__(
        self,
        endpoint: ConnectionOwner,
        quic: TransportQuicConnection,
        addr: tuple[str, int],
        *,
        expected: NodeId | None,
    ) -> None:
        self.endpoint = endpoint
        self.quic = quic
        self.addr = addr
        self.is_client = expected is not None
        self.expected = expected
        self.peer_id: NodeId | None = None
        self.state = HANDSHAKE
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Listener-side futures are never awaited; mark their errors retrieved.
        self.ready.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self.streams: dict[int, Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.cids: set[bytes] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.auth_deadline: asyncio.TimerHandle | None = None
        self.close_reason = ""
        self.closing = False  # close() called; not reused for new calls
        self.last_used = asyncio.get_running_loop().time()
        self.last_received = self.last_used  # loop time of the last datagram from the peer
        self.probe_sent_at: float | None = None  # liveness PING not yet answered (liveness.py)
        # last time it was of use: a whole request arrived or we made a call on it
        # (Endpoint._make_room evicts connections that only trickle bytes)
        self.last_useful = self.last_used
        self._incoming = 0
        # Receive budget: bulk bytes queued or granted-but-unconsumed, all streams.
        self.buffered = 0
        self._starving: set[Stream] = set()
        self._backlogged: set[Stream] = set()  # senders waiting for the backlog to drain
        self._receivers: set[Stream] = set()
        # Peer-initiated bidi streams already seen, as "all indexes below the floor"
        # plus a set above it (QUIC's MAX_STREAMS keeps the set small).
        self._seen_floor = 0
        self._seen_above: set[int] = set()
        self._auth_decoder = FrameDecoder(max_message=_AUTH_MESSAGE_LIMIT, max_data=1)
        self._binding = b""
        self._early: list[tuple[int, bytes, bool]] = []
        self._early_bytes = 0

    def __repr__(self) -> str:
        who = self.peer_id or self.expected
        return f"PeerConnection({who!r}, {self.addr}, {self.state})"

    # -- StreamOwner -------------------------------------------------------------------
    def send_stream_data(self, stream_id: int, data: bytes | memoryview, end: bool = False) -> None:
        if self.state == CLOSED:
            raise StreamClosedError(f"connection closed: {self.close_reason}")
        try:
            # aioquic appends ``data`` to a bytearray at once: any buffer will do
            self.quic.send_stream_data(stream_id, cast(bytes, data), end)
        except (RuntimeError, AssertionError, ValueError) as e:
            raise StreamClosedError(f"cannot send on stream {stream_id}: {e}") from None
        self.endpoint.schedule_flush(self)

    def reset_stream(self, stream_id: int, code: int) -> None:
        if self.state != CLOSED:
            with contextlib.suppress(RuntimeError, AssertionError, ValueError):
                self.quic.reset_stream(stream_id, code)
            self.endpoint.schedule_flush(self)

    def stop_stream(self, stream_id: int, code: int) -> None:
        if self.state != CLOSED:
            with contextlib.suppress(RuntimeError, AssertionError, ValueError):
                self.quic.stop_stream(stream_id, code)
            self.endpoint.schedule_flush(self)

    def stream_released(self, stream_id: int) -> None:
        st = self.streams.pop(stream_id, None)
        if st is not None:
            self._starving.discard(st)
            self._receivers.discard(st)
            self._backlogged.discard(st)
        if st is not None and self._is_peer_stream(stream_id):
            self._incoming -= 1

    def unsent(self, stream_id: int) -> int:
        """Bytes of the stream handed to aioquic and not yet sent (retransmissions
        aside); 0 if aioquic's internals changed shape."""
        sender = getattr(getattr(self.quic, "_streams", {}).get(stream_id), "sender", None)
        try:
            return int(sender._buffer_stop - sender.highest_offset)  # type: ignore[union-attr]
        except (AttributeError, TypeError):
            return 0

    def backlogged(self, stream: Stream) -> None:
        self._backlogged.add(stream)

    def sent_some(self) -> None:
        """Datagrams left: wake the streams waiting for their backlog to drain."""
        if self._backlogged:
            waiting, self._backlogged = self._backlogged, set()
            for st in waiting:
                st.wake()

    def credit_left(self) -> int:
        return self.endpoint.config.connection_buffer_bytes - self.buffered

    def credit_delta(self, stream: Stream, delta: int) -> None:
        self.buffered += delta
        if delta < 0 and self._starving:
            # Budget freed: let streams that were granted less than their window top up.
            waiting, self._starving = self._starving, set()
            waiting.discard(stream)
            for st in waiting:
                if self.streams.get(st.stream_id) is st:
                    st.top_up()

    def starving(self, stream: Stream) -> None:
        self._starving.add(stream)

    def add_receiver(self, stream: Stream) -> None:
        self._receivers.add(stream)

    def misbehaved(self, reason: str) -> None:
        """The peer sent something only a hostile or broken peer sends (a message over
        the decoding budget): close the connection and refuse its address briefly."""
        log.info("%r: %s: closing the connection", self, reason)
        self.endpoint.penalize(self.addr, reason)
        self.close(ERR_PROTOCOL, reason[:200])

    def fair_share(self) -> int:
        """Window each bulk receiver may keep granted: the budget split evenly."""
        budget = self.endpoint.config.connection_buffer_bytes
        return max(budget // max(len(self._receivers), 1), 64 * 1024)

    # -- streams -----------------------------------------------------------------------
    def new_stream(self, stream_id: int) -> Stream:
        cfg = self.endpoint.config
        st = Stream(
            self,
            stream_id,
            max_message=cfg.max_message_bytes,
            max_data_frame=cfg.max_data_frame_bytes,
            window=cfg.bulk_window,
        )
        self.streams[stream_id] = st
        self.endpoint.watch()
        return st

    def send_mark(self) -> int | None:
        """The number of the next packet this connection will send (None if aioquic's
        internals changed shape): :meth:`acked_since` tells whether the peer has
        acknowledged anything sent from then on."""
        mark = getattr(self.quic, "_packet_number", None)
        return mark if isinstance(mark, int) else None

    def acked_since(self, mark: int | None) -> bool | None:
        """Whether the peer acknowledged a 1-RTT packet numbered ``mark`` or later: a
        live peer acknowledges what it receives within its ack delay, a dead one never
        does, and a datagram it sent before it died cannot acknowledge a packet sent
        after. None if that cannot be told (no mark, or aioquic's internals changed)."""
        spaces = getattr(self.quic, "_spaces", None)
        space = spaces.get(tls.Epoch.ONE_RTT) if isinstance(spaces, dict) else None
        largest = getattr(space, "largest_acked_packet", None)
        if mark is None or not isinstance(largest, int):
            return None
        return largest >= mark

    def open_stream(self) -> Stream:
        if self.state != READY:
            raise StreamClosedError(f"connection not usable ({self.state}): {self.close_reason}")
        self.last_used = self.last_useful = self.endpoint.now()
        return self.new_stream(self.quic.get_next_available_stream_id())

    def _is_peer_stream(self, stream_id: int) -> bool:
        return (stream_id & 1) == (1 if self.is_client else 0)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- events ------------------------------------------------------------------------
    def process_events(self) -> None:
        while (ev := self.quic.next_event()) is not None:
            if isinstance(ev, events.StreamDataReceived):
                self._on_stream_data(ev.stream_id, ev.data, ev.end_stream)
            elif isinstance(ev, events.StreamReset):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.on_reset(ev.error_code)
            elif isinstance(ev, events.StopSendingReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.on_stop_sending(ev.error_code)
            elif isinstance(ev, events.HandshakeCompleted):
                self._on_handshake()
            elif isinstance(ev, events.ConnectionIdIssued):
                self.endpoint.add_cid(self, ev.connection_id)
            elif isinstance(ev, events.ConnectionIdRetired):
                self.endpoint.remove_cid(self, ev.connection_id)
            elif isinstance(ev, events.ConnectionTerminated):
                self.terminated(ev.error_code, ev.reason_phrase)
                return

    def _on_handshake(self) -> None:
        try:
            self._binding = auth.channel_binding(self.quic)
            if self.is_client:
                assert self.expected is not None
                auth.check_server_key(self.quic, self.expected)
                proof = auth.make_proof(self.endpoint.key, self._binding, self.expected)
                sid = self.quic.get_next_available_stream_id()
                frame = encode_message(
                    Auth(self.endpoint.key.public_key, proof), limit=_AUTH_MESSAGE_LIMIT
                )
                self.quic.send_stream_data(sid, frame, True)
        except PeerAuthError as e:
            self.fail_auth(e)
            return
        self.state = AUTH

    def fail_auth(self, error: PeerAuthError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        self.close(ERR_AUTH, str(error)[:200])

    def _on_auth_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if stream_id != 0 and self.is_client and self._early_bytes + len(data) <= _EARLY_LIMIT:
            # The listener is READY once it sent auth-ok and may call us at once; its
            # stream can overtake auth-ok (loss, reordering). Hold it until we are READY.
            self._early.append((stream_id, data, end))
            self._early_bytes += len(data)
            return
        if stream_id != 0 or self.state != AUTH:
            self.close(ERR_PROTOCOL, "stream opened before authentication")
            return
        try:
            frames = self._auth_decoder.feed(data)
            if not frames:
                if end:
                    raise FrameError("auth stream ended without a message")
                return
            if len(frames) != 1 or not isinstance(frames[0], MessageFrame):
                raise FrameError("auth stream must carry exactly one message")
            msg = decode_message(frames[0].payload)
        except FrameError as e:
            self.fail_auth(PeerAuthError(f"malformed authentication message: {e}"))
            return
        if self.is_client:
            if isinstance(msg, AuthOk):
                self.peer_id = self.expected
                self._become_ready()
            elif isinstance(msg, Err):
                self.fail_auth(PeerAuthError(f"peer refused our proof: {msg.code}: {msg.message}"))
            else:
                self.fail_auth(PeerAuthError("unexpected reply to authentication"))
            return
        if not isinstance(msg, Auth) or msg.version != 1:
            self.fail_auth(PeerAuthError("first message must be Auth version 1"))
            return
        try:
            self.peer_id = auth.verify_proof(
                msg.public_key, msg.signature, self._binding, self.endpoint.node_id
            )
        except PeerAuthError as e:
            reply = encode_message(Err("auth-failed", str(e)), limit=_AUTH_MESSAGE_LIMIT)
            self.quic.send_stream_data(0, reply, True)
            self.fail_auth(e)
            return
        self.quic.send_stream_data(0, encode_message(AuthOk(), limit=_AUTH_MESSAGE_LIMIT), True)
        self._become_ready()

    def _become_ready(self) -> None:
        self.state = READY
        if self.auth_deadline is not None:
            self.auth_deadline.cancel()
            self.auth_deadline = None
        self.endpoint.connection_ready(self)
        if not self.ready.done():
            self.ready.set_result(None)
        early, self._early = self._early, []
        self._early_bytes = 0
        for stream_id, data, end in early:
            self._on_stream_data(stream_id, data, end)

    def _on_stream_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.state != READY:
            if self.state == AUTH:
                self._on_auth_data(stream_id, data, end)
            return
        st = self.streams.get(stream_id)
        if st is not None:
            st.on_data(data, end)
            return
        if stream_id == 0 or not self._is_peer_stream(stream_id):
            return  # late bytes for a stream we already released
        if stream_id & 2:  # unidirectional: not part of the protocol
            self.stop_stream(stream_id, ERR_PROTOCOL)
            return
        if not self._first_sight(stream_id):
            return  # released earlier
        st = self.new_stream(stream_id)
        self.last_used = self.endpoint.now()
        self._incoming += 1
        st.on_data(data, end)
        if self._incoming > self.endpoint.config.max_concurrent_streams:
            with contextlib.suppress(TransportError):
                st.send_message(Err("busy", "too many concurrent streams"), end=True)
            st.release()
            return
        handler: Callable[[PeerConnection, Stream], Coroutine[Any, Any, None]]
        handler = self.endpoint.serve_stream
        self.spawn(handler(self, st))

    def auth_timed_out(self) -> None:
        """Listener side: the caller did not authenticate within the connect timeout."""
        self.auth_deadline = None
        if self.state in (HANDSHAKE, AUTH):
            self.close(ERR_AUTH, "no authentication within the connect timeout")

    def _first_sight(self, stream_id: int) -> bool:
        """True the first time a peer stream ID shows up (streams may arrive out of order)."""
        idx = stream_id >> 2
        if idx < self._seen_floor or idx in self._seen_above:
            return False
        self._seen_above.add(idx)
        while self._seen_floor in self._seen_above:
            self._seen_above.discard(self._seen_floor)
            self._seen_floor += 1
        return True

    def close(self, code: int, reason: str) -> None:
        if self.state == CLOSED:
            return
        self.closing = True
        if not self.close_reason:
            self.close_reason = reason
        self.quic.close(error_code=code, reason_phrase=reason)
        self.endpoint.schedule_flush(self)

    def terminated(self, code: int, reason: str) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.close_reason = self.close_reason or reason or f"code {code}"
        if self.auth_deadline is not None:
            self.auth_deadline.cancel()
            self.auth_deadline = None
        err = StreamClosedError(f"connection closed: {self.close_reason}", error_code=code)
        for st in list(self.streams.values()):
            st.fail(err)
        if not self.ready.done():
            if code == ERR_AUTH:
                refused = f"peer refused our proof: {self.close_reason}"
                self.ready.set_exception(PeerAuthError(refused))
            else:
                self.ready.set_exception(ConnectError(f"connection closed: {self.close_reason}"))
        for task in list(self.tasks):
            task.cancel()
        self.endpoint.connection_closed(self)
