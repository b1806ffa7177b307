"""The coarse-timer pacer (sans-I/O): bursts cover one timer tick, rate stays aioquic's."""

from __future__ import annotations

import ssl

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer

from quic_transport import pacing


def sendable_in_burst(pacer: QuicPacketPacer, now: float) -> int:
    n = 0
    while pacer.next_send_time(now) is None and n < 100_000:
        pacer.update_after_send(now)
        n += 1
    return n


def test_burst_covers_the_timer_granularity() -> None:
    mds = 1452
    stock = QuicPacketPacer(max_datagram_size=mds)
    ours = pacing.CoarseTimerPacer(max_datagram_size=mds)
    cwnd, srtt = 8 << 20, 0.001  # a fast path: far more than 16 packets per millisecond
    for p in (stock, ours):
        p.update_rate(cwnd, srtt)
        p.update_bucket(now=10.0)  # let the bucket fill
    assert sendable_in_burst(stock, 10.0) <= 17
    burst = sendable_in_burst(ours, 10.0)
    assert ours.packet_time is not None  # aioquic floors it at 1 us
    assert burst >= int(pacing.GRANULARITY / ours.packet_time) - 1
    assert ours.packet_time == stock.packet_time  # same pacing rate


def test_slow_paths_keep_stock_behaviour_above_granularity() -> None:
    p = pacing.CoarseTimerPacer(max_datagram_size=1200)
    p.update_rate(congestion_window=12_000, smoothed_rtt=0.5)  # 24 kB/s: bucket > 2 ms anyway
    stock = QuicPacketPacer(max_datagram_size=1200)
    stock.update_rate(congestion_window=12_000, smoothed_rtt=0.5)
    assert p.bucket_max == stock.bucket_max > pacing.GRANULARITY


def test_install_on_a_fresh_connection() -> None:
    quic = QuicConnection(
        configuration=QuicConfiguration(is_client=True, verify_mode=ssl.CERT_NONE)
    )
    assert pacing.install(quic, 1200)
    assert isinstance(quic._loss._pacer, pacing.CoarseTimerPacer)
