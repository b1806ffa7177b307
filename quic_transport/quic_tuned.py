"""TransportQuicConnection: aioquic's QuicConnection with receive windows that do not
run away, plus the coarse-timer pacer (pacing.py), gated by the endpoint's upload
cap when one is set (ratelimit.py). It knows nothing of peers or our protocol:
:mod:`.peer_connection` drives it.

Why: aioquic raises a stream's MAX_STREAM_DATA whenever the *highest offset
received* passes half the limit, doubling it, and the connection's MAX_DATA the
same way. Received is not delivered: a peer that leaves a gap (sends bytes far
ahead and never the ones before) makes aioquic buffer ever more out-of-order data,
and the doubling never stops. Here the windows advance by delivery instead:

- stream: limit = delivered in-order offset + ``stream_window`` once less than
  half a window remains;
- connection: limit = bytes received + ``connection_window`` once less than half
  a window remains.

So out-of-order data held by aioquic is at most ``stream_window`` per stream;
in-order data handed to the application is bounded by the application credit
(streams.py). aioquic's own doubling is switched off by hiding, for the duration
of its limit-writing call, the counters its rule reads; the frame itself is still
written by aioquic. Invariant: limits only ever grow (QUIC forbids shrinking).
If aioquic's internals change shape, the stock behaviour stays (logged once).

Datagrams above 16 KiB. aioquic writes every STREAM and CRYPTO frame length, and
the Length field of long-header packets, as a 2-byte varint (at most 16,383), so
with stock code a datagram larger than ~16 KiB produces frames the peer cannot
parse. Here:

- the STREAM frame writer (``_write_stream_frame``) is replaced: a frame whose
  data exceeds 16,383 bytes gets a 4-byte varint length (RFC 9000 section 16);
  shorter ones keep the 2-byte form. Every QUIC stack, aioquic's included,
  parses both. The CRYPTO frame writer caps its data at 16,383 bytes;
- handshake packets (Initial, Handshake: long headers, CRYPTO frames) are built
  with at most ``HANDSHAKE_DATAGRAM_LIMIT`` bytes; only once the handshake is
  confirmed, when no long-header packet is ever sent again, does the connection
  switch to the full ``datagram_size`` (probed by sizing.py), updating the
  congestion controller and the pacer, which count in datagrams.

Invariant: no frame or packet length written by this class exceeds what its
length field can hold; without the hooks, datagrams stay at 16 KiB.

The order in which streams are served (docs/transport.md, "Stream order"). aioquic
serves its streams round-robin, a packet each, so the replies to requests made
together all finish together, at the end: a download that asks each peer for the
blocks of four segments at once gets none of them until it has all of them, and
asks for the next four only then, while the link idles. Here, before each packet,
the stream it serves first is chosen: of the streams whose whole message is handed
over (its end buffered: a request, a reply, the tail of a bulk transfer), a small
one (``SMALL_MESSAGE``), else one already begun (so a message, once started, is
finished), else the oldest; bulk streams keep aioquic's round-robin among
themselves; when both kinds have data they take turns a packet each. Streams that
can send nothing now are passed over.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Any

from aioquic.buffer import size_uint_var
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.stream import QuicStream

from . import pacing
from .ratelimit import GatedPacer, SendGate
from .uplink import AdaptiveGate, UplinkControl

log = logging.getLogger(__name__)

#: a message with at most this many bytes left goes before larger ones (_order_streams)
SMALL_MESSAGE = 4096

# Largest datagram whose long-header packets and CRYPTO frames fit aioquic's 2-byte
# length fields (the whole datagram is below 16,384, so every packet in it is too).
HANDSHAKE_DATAGRAM_LIMIT = 16384
_LEN2_MAX = 0x3FFF  # largest value of a 2-byte varint
_LEN4_MAX = 0x3FFF_FFFF  # largest value of a 4-byte varint

_HOOKS_PRESENT = all(
    hasattr(QuicConnection, name) for name in ("_write_stream_limits", "_write_connection_limits")
)
if not _HOOKS_PRESENT:  # pragma: no cover - depends on the installed aioquic
    log.warning("aioquic internals changed: receive windows follow aioquic's own rule")
_LARGE_HOOKS_PRESENT = all(
    hasattr(QuicConnection, name)
    for name in ("_write_stream_frame", "_write_crypto_frame", "_confirm_handshake")
)
if not _LARGE_HOOKS_PRESENT:  # pragma: no cover - depends on the installed aioquic
    log.warning("aioquic internals changed: datagrams stay at or below 16 KiB")
_probe_stream = QuicStream(0)
# the stream fields the stream order reads (its queue is checked per connection)
_ORDER_HOOKS_PRESENT = (
    _HOOKS_PRESENT
    and all(hasattr(_probe_stream, name) for name in ("is_blocked", "max_stream_data_remote"))
    and all(
        hasattr(_probe_stream.sender, name)
        for name in (
            "buffer_is_empty",
            "next_offset",
            "highest_offset",
            "_buffer_fin",
            "_buffer_stop",
            "_pending_eof",
        )
    )
)
if not _ORDER_HOOKS_PRESENT:  # pragma: no cover - depends on the installed aioquic
    log.warning("aioquic internals changed: streams are served round-robin")


class TransportQuicConnection(QuicConnection):
    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        configuration: Any,
        send_gate: SendGate | None = None,
        uplink: AdaptiveGate | None = None,
        **kwargs: Any,
    ) -> None:
        target = configuration.max_datagram_size
        if target > HANDSHAKE_DATAGRAM_LIMIT:
            configuration = dataclasses.replace(
                configuration, max_datagram_size=HANDSHAKE_DATAGRAM_LIMIT
            )
            if not _LARGE_HOOKS_PRESENT:  # pragma: no cover - depends on aioquic
                target = HANDSHAKE_DATAGRAM_LIMIT
        super().__init__(configuration=configuration, **kwargs)
        self._p2ps_bulk_next = False  # whose turn the next packet is (_order_streams)
        self._p2ps_stream_window = stream_window
        self._p2ps_connection_window = connection_window
        self._p2ps_datagram_target = target
        # the endpoint's upload cap (ratelimit.py) and the uplink's rate (uplink.py)
        # gate every packet we build
        gates = [g for g in (send_gate, uplink) if g is not None]
        self._p2ps_uplink: UplinkControl | None = None  # fed what this connection receives
        if not gates:
            pacing.install(self, self._max_datagram_size)
        elif (
            pacing.install(
                self, self._max_datagram_size, functools.partial(GatedPacer, gates=gates)
            )
            and uplink is not None
        ):
            self._feed_uplink(uplink.control)
            self._p2ps_uplink = uplink.control

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """aioquic's, and the datagram counted for the uplink's control (what it
        receives tells a queue on the way in from its own, uplink.py)."""
        if self._p2ps_uplink is not None:
            self._p2ps_uplink.received(len(data), self)
        super().receive_datagram(data, addr, now)

    def _feed_uplink(self, control: UplinkControl) -> None:
        """Hand the uplink's control (uplink.py) each RTT sample's queueing delay and
        each acknowledged packet's size, from aioquic's loss recovery."""
        loss: Any = getattr(self, "_loss", None)
        cc: Any = getattr(loss, "_cc", None)
        acked = getattr(cc, "on_packet_acked", None)
        if loss is None or acked is None or not hasattr(loss, "_rtt_min"):  # pragma: no cover
            log.warning("aioquic internals changed: the uplink's rate is not steered")
            return

        def on_rtt() -> None:
            base = loss._rtt_min
            if math.isfinite(base):
                control.sample(self, loss._rtt_latest - base)

        def on_acked(*, packet: Any, now: float) -> None:
            acked(packet=packet, now=now)
            control.acked(packet.sent_bytes, self)

        loss._pacer.on_rtt = on_rtt
        cc.on_packet_acked = on_acked

    @property
    def datagram_size(self) -> int:
        """The largest datagram this connection sends now."""
        return int(self._max_datagram_size)

    def _confirm_handshake(self) -> None:
        super()._confirm_handshake()
        if self._p2ps_datagram_target > self._max_datagram_size:
            self._raise_datagram_size(self._p2ps_datagram_target)

    def _raise_datagram_size(self, size: int) -> None:
        """Send datagrams of up to ``size`` bytes from now on (1-RTT packets only)."""
        self._max_datagram_size = size
        loss = getattr(self, "_loss", None)
        for part in (getattr(loss, "_cc", None), getattr(loss, "_pacer", None)):
            if part is not None and hasattr(part, "_max_datagram_size"):
                part._max_datagram_size = size

    def _write_stream_frame(self, builder: Any, space: Any, stream: Any, max_offset: int) -> int:
        """Like aioquic's writer, with a 4-byte length when the data exceeds 16,383 bytes.

        Returns how far the stream's highest sent offset advanced (aioquic's contract:
        the caller charges it to the connection's flow-control credit).
        """
        sender = stream.sender
        head = 1 + size_uint_var(stream.stream_id)
        if sender.next_offset:
            head += size_uint_var(sender.next_offset)
        room = builder.remaining_flight_space - head
        len_size = 2 if room - 2 <= _LEN2_MAX else 4
        previous_highest = sender.highest_offset
        frame = sender.get_frame(min(room - len_size, _LEN4_MAX), max_offset)
        if frame is None:
            return 0
        size = len(frame.data)
        frame_type = QuicFrameType.STREAM_BASE | 2  # LEN bit: the length is present
        if frame.offset:
            frame_type |= 4
        if frame.fin:
            frame_type |= 1
        buf = builder.start_frame(
            frame_type,
            capacity=head + len_size,
            handler=sender.on_data_delivery,
            handler_args=(frame.offset, frame.offset + size, frame.fin),
        )
        buf.push_uint_var(stream.stream_id)
        if frame.offset:
            buf.push_uint_var(frame.offset)
        if size <= _LEN2_MAX:
            buf.push_uint16(size | 0x4000)
        else:
            buf.push_uint32(size | 0x8000_0000)
        buf.push_bytes(frame.data)
        if self._quic_logger is not None:
            builder.quic_logger_frames.append(
                self._quic_logger.encode_stream_frame(frame, stream_id=stream.stream_id)
            )
        self._p2ps_bulk_next = sender._buffer_fin is not None  # a message went: bulk's turn
        return int(sender.highest_offset - previous_highest)

    def _write_crypto_frame(self, builder: Any, space: Any, stream: Any) -> bool:
        """Like aioquic's writer, with at most 16,383 bytes of data per frame (its
        2-byte length). Handshake packets are small anyway; this keeps CRYPTO data
        sent in 1-RTT packets after the datagram size was raised well-formed."""
        sender = stream.sender
        head = 3 + size_uint_var(sender.next_offset)
        frame = sender.get_frame(min(builder.remaining_flight_space - head, _LEN2_MAX))
        if frame is None:
            return False
        size = len(frame.data)
        buf = builder.start_frame(
            QuicFrameType.CRYPTO,
            capacity=head,
            handler=sender.on_data_delivery,
            handler_args=(frame.offset, frame.offset + size, False),
        )
        buf.push_uint_var(frame.offset)
        buf.push_uint16(size | 0x4000)
        buf.push_bytes(frame.data)
        if self._quic_logger is not None:
            builder.quic_logger_frames.append(self._quic_logger.encode_crypto_frame(frame))
        return True

    def opened_by_valid_packet(self) -> bool:
        """Listener side: whether any packet of this connection has been decrypted
        (False after a first datagram that was noise or forged)."""
        spaces = getattr(self, "_spaces", None)
        if not spaces:
            return True  # unknown internals: assume valid, the auth deadline still applies
        return any(getattr(sp, "largest_received_packet", 0) >= 0 for sp in spaces.values())

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        receiver = stream.receiver
        if stream.max_stream_data_local:
            delivered = receiver.starting_offset()
            window = self._p2ps_stream_window
            if stream.max_stream_data_local - delivered <= window // 2:
                stream.max_stream_data_local = max(stream.max_stream_data_local, delivered + window)
        seen = receiver.highest_offset
        receiver.highest_offset = 0  # aioquic's rule: double when highest*2 > limit
        try:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = seen

    def _order_streams(self) -> None:
        """Put the stream this packet serves first at the head of aioquic's service
        queue (module docstring). Of the messages (end buffered): one with at most
        ``SMALL_MESSAGE`` bytes left, then one already partly sent (the fewest bytes
        left first), then the oldest stream; of the bulk streams, the first in
        aioquic's round-robin order; whichever kind's turn it is. A stream that can
        send nothing now (blocked, out of credit, or only waiting for
        acknowledgements) is passed over. The rest keep aioquic's order (a packet is
        nearly always one stream's)."""
        queue = getattr(self, "_streams_queue", None)
        if queue.__class__ is not list or len(queue) < 2:
            return
        message = bulk = -1
        best = (0, 0, 0)
        for i, stream in enumerate(queue):
            sender = stream.sender
            if sender.buffer_is_empty or stream.is_blocked:
                continue
            start = sender.next_offset
            if start >= sender._buffer_stop:
                if not sender._pending_eof:
                    continue  # sent, waiting for acknowledgements
            elif start >= stream.max_stream_data_remote:
                continue  # no credit from the peer for its next bytes
            if sender._buffer_fin is None:
                if bulk < 0:
                    bulk = i
                continue
            left = sender._buffer_stop - sender.highest_offset
            if left <= SMALL_MESSAGE:
                key = (0, 0, stream.stream_id)
            elif sender.highest_offset:
                key = (1, left, stream.stream_id)
            else:
                key = (2, 0, stream.stream_id)
            if message < 0 or key < best:
                message, best = i, key
        pick = bulk if message < 0 or (self._p2ps_bulk_next and bulk >= 0) else message
        if pick > 0:
            queue.insert(0, queue.pop(pick))

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        # aioquic calls this once per 1-RTT packet, before it writes any stream frame
        if _ORDER_HOOKS_PRESENT:
            self._order_streams()
        limit = self._local_max_data
        window = self._p2ps_connection_window
        if limit.value - limit.used <= window // 2:
            limit.value = max(limit.value, limit.used + window)
        used = limit.used
        limit.used = 0  # aioquic's rule: double when used*2 > value
        try:
            super()._write_connection_limits(builder=builder, space=space)
        finally:
            limit.used = used
