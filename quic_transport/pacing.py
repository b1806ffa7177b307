"""Packet pacing matched to the event loop's timer granularity.

aioquic paces with a token bucket that allows a burst of at most 16 packets and
then asks to be woken ``packet_time`` later (microseconds on a fast path). On
Linux, asyncio sleeps in ``epoll_wait`` whose timeout has whole-millisecond
resolution, so every such wake-up comes up to 1 ms late and the sender is
capped near 16 packets per millisecond: ~23 MB/s with 1,452-byte packets, ~260
MB/s with 16 KiB ones, whatever the window. Measured: with the stock pacer the
sender spent ~75 % of a 1,452-byte transfer in late pacing wake-ups.

:class:`CoarseTimerPacer` keeps aioquic's rate (congestion window / smoothed
RTT) but lets the bucket hold ``GRANULARITY`` seconds of sending, the usual
answer when timers are coarse (Linux TCP's pacing likewise sends ~1 ms bursts).
Bursts stay bounded by the congestion window, which the pacer never raises.

Invariant: installed right after a QuicConnection is created, before any packet
is sent; if aioquic's internals change shape, installation is skipped and the
stock pacer stays (slower, still correct).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer

log = logging.getLogger(__name__)

GRANULARITY = 0.002  # seconds of sending the bucket may hold (>= one epoll tick, plus slack)


class CoarseTimerPacer(QuicPacketPacer):
    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        if self.bucket_max < GRANULARITY:
            self.bucket_max = GRANULARITY


def install(
    quic: QuicConnection,
    max_datagram_size: int,
    make: Callable[..., QuicPacketPacer] = CoarseTimerPacer,
) -> bool:
    """Replace the connection's pacer with ``make(max_datagram_size=...)`` (by default
    :class:`CoarseTimerPacer`; the upload cap passes its gated variant, see
    ratelimit.py); False (and the stock pacer) if that is not possible."""
    loss = getattr(quic, "_loss", None)
    if loss is None or not isinstance(getattr(loss, "_pacer", None), QuicPacketPacer):
        log.warning("aioquic internals changed: keeping the stock pacer")
        return False
    loss._pacer = make(max_datagram_size=max_datagram_size)
    return True
