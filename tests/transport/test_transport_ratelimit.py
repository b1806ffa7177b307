"""The bandwidth-cap core without sockets: TokenBucket, SendGate, GatedPacer (fake clock)."""

from __future__ import annotations

import math
import ssl
from typing import Any

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from hypothesis import given
from hypothesis import strategies as st

from quic_transport import TransportConfig, auth
from quic_transport.identity import NodeKey
from quic_transport.quic_tuned import TransportQuicConnection
from quic_transport.ratelimit import (
    EARLY,
    HOLD_BATCH,
    MIN_BURST,
    MIN_RECV_BUFFER,
    GatedPacer,
    SendGate,
    TokenBucket,
    burst_for,
    receive_buffer_for,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_and_allows_one_item_of_debt() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=1000, burst=500, clock=clock)
    assert b.level() == 500 and b.ready()
    b.consume(400)
    assert b.ready() and b.level() == 100
    b.consume(300)  # goes into debt: the item is never split
    assert not b.ready()
    assert b.delay() == pytest.approx(0.2)
    clock.now += 0.1
    assert not b.ready() and b.delay() == pytest.approx(0.1)
    clock.now += 0.1
    assert b.ready() and b.delay() == 0.0


def test_bucket_never_holds_more_than_burst_and_ignores_a_clock_stepping_back() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=1000, burst=500, clock=clock)
    clock.now += 3600
    assert b.level() == 500
    b.consume(500)
    clock.now -= 10  # a clock that steps back adds nothing ...
    assert b.level() == 0
    clock.now += 10.25  # ... and time counts again only from where it was
    assert b.level() == pytest.approx(250)
    b.refund(10_000)
    assert b.level() == 500


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 10), (-1, 10), (math.inf, 10), (math.nan, 10), (10, 0), (10, math.inf)]
)
def test_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, FakeClock())


def test_bucket_rejects_negative_amounts() -> None:
    b = TokenBucket(10, 10, FakeClock())
    with pytest.raises(ValueError):
        b.consume(-1)
    with pytest.raises(ValueError):
        b.refund(-1)


steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.5, allow_nan=False),  # time advance (s)
        st.integers(min_value=1, max_value=20_000),  # item size (bytes)
    ),
    min_size=1,
    max_size=200,
)


@given(
    rate=st.integers(min_value=1_000, max_value=50_000_000),
    burst=st.integers(min_value=1, max_value=1_000_000),
    steps=steps,
)
def test_polite_consumer_never_beats_the_cap(rate: int, burst: int, steps: list[Any]) -> None:
    """Consuming only while ready: total <= burst + rate * T + largest item, and the
    level never exceeds burst."""
    clock = FakeClock()
    b = TokenBucket(rate, burst, clock)
    start = clock.now
    total = 0
    for dt, size in steps:
        clock.now += dt
        if b.ready():
            b.consume(size)
            total += size
        assert b.level() <= burst
    elapsed = clock.now - start
    biggest = max(size for _, size in steps)
    assert total <= burst + rate * elapsed + biggest + 1e-6 * (rate * (elapsed + 1) + burst)


@given(
    rate=st.integers(min_value=1_000, max_value=50_000_000),
    burst=st.integers(min_value=1, max_value=1_000_000),
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=1.0),  # time advance, in burst / rate
            st.floats(min_value=0.02, max_value=3.0),  # item size, in bursts
        ),
        min_size=1,
        max_size=50,
    ),
)
def test_greedy_consumer_reaches_the_cap(rate: int, burst: int, steps: list[Any]) -> None:
    """Consuming whenever ready, waking at least once per burst's worth of time (so
    the bucket never fills and no tokens are forfeited): total is burst + rate * T
    minus the final level, which lies in [-item, 0]."""
    clock = FakeClock()
    b = TokenBucket(rate, burst, clock)
    start = clock.now
    total = 0
    biggest = 0
    for dt, frac in steps:
        size = max(1, int(frac * burst))
        biggest = max(biggest, size)
        while b.ready():
            b.consume(size)
            total += size
        clock.now += dt * burst / rate
    while b.ready():
        b.consume(biggest)
        total += biggest
    elapsed = clock.now - start
    slack = 1e-6 * (rate * elapsed + burst) + rate * 1e-6 + 1e-3
    assert burst + rate * elapsed - slack <= total <= burst + rate * elapsed + biggest + slack


@given(
    rate=st.integers(min_value=1, max_value=10**9),
    debt=st.integers(min_value=1, max_value=10**7),
)
def test_waiting_the_delay_makes_the_bucket_ready(rate: int, debt: int) -> None:
    clock = FakeClock()
    b = TokenBucket(rate, 1, clock)
    b.consume(debt + 1)
    if debt <= rate * EARLY:  # a debt paid off within a microsecond counts as paid
        assert b.ready() and b.delay() == 0.0
        return
    assert not b.ready()
    wait = b.delay()
    assert wait == pytest.approx(debt / rate)
    clock.now += wait
    assert b.ready()


def test_gate_charges_estimates_then_settles_with_real_bytes() -> None:
    clock = FakeClock()
    gate = SendGate(TokenBucket(10_000, 20_000, clock))
    assert gate.approve(16_000)  # a full-size packet is assumed ...
    assert gate.approve(16_000)  # level 4000 >= 0: one more, into debt
    assert not gate.approve(16_000)
    assert gate.deferred == 1
    gate.settle(2_000)  # ... but only 2,000 bytes left: the rest is refunded
    assert gate.bucket.level() == pytest.approx(18_000)
    gate.settle(5_000)  # unpaced bytes (ACKs, handshake) are charged at settle
    assert gate.bucket.level() == pytest.approx(13_000)
    gate.charge(13_500)  # probes and Retries sent outside connections
    assert not gate.bucket.ready()


def test_gated_pacer_defers_packets_until_the_bucket_refills() -> None:
    clock = FakeClock()
    gate = SendGate(TokenBucket(1_000_000, 32_000, clock))
    pacer = GatedPacer(max_datagram_size=16_000, gate=gate)
    # an enormous congestion window over a tiny RTT: aioquic's own pacing never waits
    pacer.update_rate(congestion_window=100_000_000, smoothed_rtt=0.001)
    now = clock.now
    allowed = 0
    while pacer.next_send_time(now) is None:
        pacer.update_after_send(now)
        allowed += 1
    assert allowed == 3  # 32,000 tokens: two packets fit, the third goes into debt
    at = pacer.next_send_time(now)
    # woken once the debt is paid and a batch earned (HOLD_BATCH), not at every packet
    assert at is not None and at == pytest.approx(now + 16_000 / 1_000_000 + HOLD_BATCH)
    gate.settle(3 * 16_000)  # they were full-size
    clock.now = at
    assert pacer.next_send_time(clock.now) is None


def test_sizes_derived_from_a_rate() -> None:
    assert burst_for(1) == MIN_BURST
    assert burst_for(100_000_000) == 5_000_000
    assert receive_buffer_for(1_000, 4 << 20) == MIN_RECV_BUFFER
    assert receive_buffer_for(4_000_000, 4 << 20) == 400_000
    assert receive_buffer_for(10**12, 4 << 20) == 4 << 20


@pytest.mark.parametrize("name", ["upload_rate", "download_rate"])
@pytest.mark.parametrize("value", [0, -5, True])
def test_transport_config_rejects_bad_rates(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        TransportConfig(**{name: value})


def test_transport_config_rates_default_to_unlimited() -> None:
    cfg = TransportConfig()
    assert cfg.upload_rate is None and cfg.download_rate is None
    assert TransportConfig(upload_rate=1, download_rate=2).download_rate == 2


def test_gated_connection_sends_at_the_cap_in_simulated_time() -> None:
    """Two aioquic state machines, no sockets, a fake clock stepped 1 ms at a time:
    a server with an 800 kB/s upload gate streams 20 MB to a plain client. Over 3 s
    the bytes of datagrams it emits stay within the cap (after the 1-burst start)
    and reach it; nothing is lost on the way, so nothing is retransmitted."""
    rate = 800_000
    clock = FakeClock()
    clock.now = 0.0
    gate = SendGate(TokenBucket(rate, burst_for(rate), clock))
    a, b = ("1.1.1.1", 1), ("2.2.2.2", 2)
    cert, private = auth.make_certificate(NodeKey.generate())
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=["t"],
            verify_mode=ssl.CERT_NONE,
            max_data=64 << 20,
            max_stream_data=64 << 20,
        )
    )
    client.connect(b, now=0.0)
    first = client.datagrams_to_send(0.0)
    dcid = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8).destination_cid
    server = TransportQuicConnection(
        stream_window=1 << 20,
        connection_window=4 << 20,
        send_gate=gate,
        configuration=QuicConfiguration(
            is_client=False, alpn_protocols=["t"], certificate=cert, private_key=private
        ),
        original_destination_connection_id=dcid,
    )
    for data, _ in first:
        server.receive_datagram(data, a, 0.0)
    server.send_stream_data(1, b"\x00" * (20 << 20), end_stream=True)
    sent_at: list[tuple[float, int]] = []
    for step in range(3000):
        clock.now = now = step / 1000
        for conn in (client, server):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
        out = server.datagrams_to_send(now)
        gate.settle(sum(len(d) for d, _ in out))
        for data, _ in out:
            sent_at.append((now, len(data)))
            client.receive_datagram(data, b, now)
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, a, now)
        while client.next_event() is not None:
            pass

    def sent_between(t0: float, t1: float) -> int:
        return sum(n for t, n in sent_at if t0 <= t < t1)

    total = sent_between(0.0, 3.0)
    assert total <= burst_for(rate) + rate * 3.0 + 16_384
    window = sent_between(0.5, 3.0)
    assert abs(window - rate * 2.5) <= 0.05 * rate * 2.5, window
    assert gate.deferred > 0
    assert server._loss.bytes_in_flight < 100_000  # deferred data is not in flight
