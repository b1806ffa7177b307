"""TransportQuicConnection: aioquic's QuicConnection with receive windows that do not
run away, plus the coarse-timer pacer (pacing.py), gated by the endpoint's upload
cap when one is set (ratelimit.py).

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
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aioquic.quic.connection import QuicConnection

from . import pacing
from .ratelimit import GatedPacer, SendGate

log = logging.getLogger(__name__)

_HOOKS_PRESENT = all(
    hasattr(QuicConnection, name) for name in ("_write_stream_limits", "_write_connection_limits")
)
if not _HOOKS_PRESENT:  # pragma: no cover - depends on the installed aioquic
    log.warning("aioquic internals changed: receive windows follow aioquic's own rule")


class TransportQuicConnection(QuicConnection):
    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        send_gate: SendGate | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._p2ps_stream_window = stream_window
        self._p2ps_connection_window = connection_window
        if send_gate is None:
            pacing.install(self, self._max_datagram_size)
        else:  # the endpoint's upload cap (ratelimit.py) gates every packet we build
            pacing.install(
                self, self._max_datagram_size, functools.partial(GatedPacer, gate=send_gate)
            )

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

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
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
