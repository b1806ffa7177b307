"""Receive windows advance by delivery, not by receipt (no sockets: two state machines)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from hypothesis import given, settings
from hypothesis import strategies as st

from quic_transport import auth
from quic_transport.identity import NodeKey
from quic_transport.pacing import CoarseTimerPacer
from quic_transport.quic_tuned import TransportQuicConnection

WINDOW = 1 << 20
A, B = ("1.1.1.1", 1), ("2.2.2.2", 2)


def pair() -> tuple[QuicConnection, TransportQuicConnection]:
    cert, private = auth.make_certificate(NodeKey.generate())
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["t"], verify_mode=ssl.CERT_NONE
        )
    )
    client.connect(B, now=0.0)
    first = client.datagrams_to_send(0.0)
    dcid = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8).destination_cid
    server = TransportQuicConnection(
        stream_window=WINDOW,
        connection_window=4 * WINDOW,
        configuration=QuicConfiguration(
            is_client=False,
            alpn_protocols=["t"],
            certificate=cert,
            private_key=private,
            max_stream_data=WINDOW,
            max_data=4 * WINDOW,
        ),
        original_destination_connection_id=dcid,
    )
    for data, _ in first:
        server.receive_datagram(data, A, 0.0)
    pump(client, server)
    return client, server


def pump(
    client: QuicConnection,
    server: QuicConnection,
    rounds: int = 50,
    seen: Callable[[events.QuicEvent], None] | None = None,
) -> None:
    """Shuttle datagrams, firing timers when idle, until nothing more happens; each
    event of the client goes to ``seen``."""
    now = 0.0
    for _ in range(rounds):
        moved = False
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, A, now)
            moved = True
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, B, now)
            moved = True
        while (ev := client.next_event()) is not None:
            if seen is not None:
                seen(ev)
        while server.next_event() is not None:
            pass
        if not moved:
            timers = [t for t in (client.get_timer(), server.get_timer()) if t is not None]
            if not timers or min(timers) - now > 1.0:
                return
            now = max(now, min(timers))
            for conn in (client, server):
                t = conn.get_timer()
                if t is not None and t <= now:
                    conn.handle_timer(now)
        now += 0.0001


def test_pacer_installed() -> None:
    _, server = pair()
    assert isinstance(server._loss._pacer, CoarseTimerPacer)


def test_window_advances_with_delivery() -> None:
    client, server = pair()
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"x" * (5 * WINDOW))
    pump(client, server, rounds=3000)
    stream = server._streams[sid]
    delivered = stream.receiver.starting_offset()
    assert delivered == 5 * WINDOW  # the transfer went through windows of 1 MiB
    assert stream.max_stream_data_local <= delivered + WINDOW


def test_out_of_order_data_does_not_grow_the_window() -> None:
    client, server = pair()
    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"y" * 1000)
    pump(client, server)
    stream = server._streams[sid]
    before = stream.max_stream_data_local
    # as if a peer had sent bytes far ahead of a gap it never fills
    stream.receiver.highest_offset = before
    server._local_max_data.used = server._local_max_data.value
    for _ in range(5):
        server.datagrams_to_send(1.0)
    assert stream.max_stream_data_local == before  # stock aioquic would double it
    assert stream.receiver.highest_offset == before  # the counter is restored


# --- datagrams above 16 KiB ----------------------------------------------------------
BIG = 65507


def big_pair(
    *, client_ours: bool = True, server_ours: bool = True, server_size: int = BIG
) -> tuple[QuicConnection, QuicConnection, list[list[int]]]:
    """Client and server configured for ``BIG`` / ``server_size`` datagrams; returns
    them plus, per pump round, the sizes of the datagrams each round carried."""
    cert, private = auth.make_certificate(NodeKey.generate())
    cconf = QuicConfiguration(
        is_client=True,
        alpn_protocols=["t"],
        verify_mode=ssl.CERT_NONE,
        max_datagram_size=BIG if client_ours else 16384,  # stock breaks above 16 KiB
    )
    client: QuicConnection
    if client_ours:
        client = TransportQuicConnection(
            stream_window=8 * WINDOW, connection_window=32 * WINDOW, configuration=cconf
        )
    else:
        client = QuicConnection(configuration=cconf)
    client.connect(B, now=0.0)
    first = client.datagrams_to_send(0.0)
    assert all(len(d) <= 16384 for d, _ in first)  # the Initial is built small
    dcid = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8).destination_cid
    sconf = QuicConfiguration(
        is_client=False,
        alpn_protocols=["t"],
        certificate=cert,
        private_key=private,
        max_stream_data=8 * WINDOW,
        max_data=32 * WINDOW,
        max_datagram_size=server_size,
    )
    server: QuicConnection
    if server_ours:
        server = TransportQuicConnection(
            stream_window=8 * WINDOW,
            connection_window=32 * WINDOW,
            configuration=sconf,
            original_destination_connection_id=dcid,
        )
    else:
        server = QuicConnection(configuration=sconf, original_destination_connection_id=dcid)
    sizes: list[list[int]] = [[len(d) for d, _ in first]]
    for data, _ in first:
        server.receive_datagram(data, A, 0.0)
    now = 0.0
    for _ in range(50):  # handshake only
        moved = []
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, A, now)
            moved.append(len(data))
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, B, now)
            moved.append(len(data))
        if not moved:
            break
        sizes.append(moved)
        now += 0.001
    return client, server, sizes


def transfer(
    sender: QuicConnection, receiver: QuicConnection, sid: int, data: bytes, drop_every: int = 0
) -> tuple[bytes, list[int]]:
    """Send ``data`` on stream ``sid`` and return what the receiver got, plus the
    sizes of the sender's datagrams."""
    src, dst = (A, B) if sender._is_client else (B, A)

    for i in range(0, len(data), 50_000):  # several writes: frames of assorted sizes
        sender.send_stream_data(sid, data[i : i + 50_000])
    sender.send_stream_data(sid, b"", end_stream=True)
    got = bytearray()
    sent: list[int] = []
    now = 1.0
    done = False
    for _ in range(20000):
        for d, _ in sender.datagrams_to_send(now):
            sent.append(len(d))
            if drop_every and len(sent) % drop_every == 0:
                continue  # lost: recovered by retransmission
            receiver.receive_datagram(d, src, now)
        for d, _ in receiver.datagrams_to_send(now):
            sender.receive_datagram(d, dst, now)
        while (ev := receiver.next_event()) is not None:
            if isinstance(ev, events.StreamDataReceived) and ev.stream_id == sid:
                got += ev.data
                done = done or ev.end_stream
        while sender.next_event() is not None:
            pass
        if done:
            break
        now += 0.001
        for conn in (sender, receiver):
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
    assert done, "transfer did not finish"
    return bytes(got), sent


def test_handshake_small_then_large_datagrams_between_our_connections() -> None:
    client, server, sizes = big_pair()
    assert all(s <= 16384 for rnd in sizes for s in rnd)  # long headers stay small
    assert isinstance(client, TransportQuicConnection)
    assert isinstance(server, TransportQuicConnection)
    assert client.datagram_size == BIG and server.datagram_size == BIG
    assert client._loss._pacer._max_datagram_size == BIG
    payload = bytes(range(256)) * 4096  # 1 MiB, position-dependent
    got, sent = transfer(client, server, 0, payload)
    assert got == payload
    assert max(sent) == BIG and len(sent) < 2 * len(payload) // 65000 + 20
    back, sent = transfer(server, client, 1, payload[::-1])
    assert back == payload[::-1] and max(sent) == BIG


def test_stock_aioquic_parses_our_large_stream_frames() -> None:
    client, server, _ = big_pair(server_ours=False, server_size=1200)
    assert isinstance(client, TransportQuicConnection) and client.datagram_size == BIG
    payload = b"".join(i.to_bytes(4, "big") for i in range(300_000))
    got, sent = transfer(client, server, 0, payload)
    assert got == payload and max(sent) == BIG


def test_stock_aioquic_sending_to_us_stays_as_configured() -> None:
    client, server, _ = big_pair(client_ours=False, server_size=BIG)
    assert isinstance(server, TransportQuicConnection) and server.datagram_size == BIG
    payload = b"z" * 100_000
    got, sent = transfer(client, server, 0, payload)
    assert got == payload and max(sent) <= 16384  # stock client never sends more
    back, sent = transfer(server, client, 1, payload)  # our large frames to stock
    assert back == payload and max(sent) == BIG


def test_small_datagram_connection_is_unchanged() -> None:
    client, server, _ = big_pair(server_size=1452)
    assert isinstance(server, TransportQuicConnection) and server.datagram_size == 1452
    got, sent = transfer(server, client, 1, b"q" * 50_000)
    assert got == b"q" * 50_000 and max(sent) <= 1452


def test_large_frames_survive_loss() -> None:
    client, server, _ = big_pair()
    payload = os.urandom(3 << 20)
    got, sent = transfer(client, server, 0, payload, drop_every=7)
    assert got == payload and max(sent) == BIG


@settings(max_examples=15, deadline=None)
@given(size=st.integers(0, 300_000), big=st.sampled_from([16384, 20000, 32768, BIG]))
def test_any_stream_arrives_intact_at_any_large_size(size: int, big: int) -> None:
    client, server, _ = big_pair(server_size=big)
    payload = os.urandom(size)
    got, _ = transfer(server, client, 1, payload)
    assert got == payload


def test_crypto_frames_stay_within_their_two_byte_length() -> None:
    """CRYPTO data sent in 1-RTT packets after the size was raised is split into
    frames of at most 16,383 bytes (aioquic writes their length in 2 bytes)."""
    from aioquic import tls

    client, _, _ = big_pair()
    assert isinstance(client, TransportQuicConnection) and client.datagram_size == BIG
    sender = client._crypto_streams[tls.Epoch.ONE_RTT].sender
    sender.write(b"c" * 40_000)
    datagrams = client.datagrams_to_send(1.0)
    assert max(len(d) for d, _ in datagrams) > 16384  # sent at the raised size
    ranges = [
        args
        for packet in client._loss.spaces[2].sent_packets.values()
        for handler, args in packet.delivery_handlers
        if handler == sender.on_data_delivery
    ]
    assert sum(end - start for start, end, _ in ranges) == 40_000
    assert all(end - start <= 0x3FFF for start, end, _ in ranges)


# --- the order in which streams are served -------------------------------------------
def arrivals(
    client: QuicConnection,
    server: QuicConnection,
    sends: list[tuple[int, bool]],
    setup: Callable[[QuicConnection], None] | None = None,
) -> list[tuple[int, int, bool]]:
    """Queue every ``(bytes, end)`` on a new stream of ``server`` at once (in order:
    streams 1, 5, 9, ...), call ``setup(server)``, then deliver until nothing moves;
    what ``client`` got, in order: ``(stream, bytes, end)`` per event."""
    for size, end in sends:
        sid = server.get_next_available_stream_id()
        server.send_stream_data(sid, b"m" * size, end_stream=end)
    if setup is not None:
        setup(server)
    got: list[tuple[int, int, bool]] = []

    def seen(ev: events.QuicEvent) -> None:
        if isinstance(ev, events.StreamDataReceived) and (ev.data or ev.end_stream):
            got.append((ev.stream_id, len(ev.data), ev.end_stream))

    pump(client, server, rounds=5000, seen=seen)
    return got


def received(got: list[tuple[int, int, bool]], sid: int, until: int) -> int:
    """Bytes of stream ``sid`` among the first ``until`` arrivals."""
    return sum(n for s, n, _ in got[:until] if s == sid)


def ended_at(got: list[tuple[int, int, bool]], sid: int) -> int:
    return next(i for i, (s, _, end) in enumerate(got) if s == sid and end)


def test_replies_queued_together_leave_one_after_the_other() -> None:
    """Two 200 KB replies queued at once: the first is whole before the second
    starts, so its reader can use it a whole transfer earlier (aioquic alone
    interleaves them a packet each, and both end together)."""
    client, server = pair()
    first, second = 1, 5
    got = arrivals(client, server, [(200_000, True), (200_000, True)])
    assert received(got, first, len(got)) == received(got, second, len(got)) == 200_000
    done = ended_at(got, first)
    assert received(got, second, done) == 0

    stock, stock_server = pair()
    # the same connection, served in aioquic's own order
    stock_server.__class__ = QuicConnection  # type: ignore[assignment]
    got = arrivals(stock, stock_server, [(200_000, True), (200_000, True)])
    assert received(got, second, ended_at(got, first)) > 150_000


def test_a_small_reply_overtakes_a_large_one() -> None:
    client, server = pair()
    large, small = 1, 5
    got = arrivals(client, server, [(300_000, True), (300, True)])
    assert ended_at(got, small) < 3  # within the first packets
    assert received(got, large, len(got)) == 300_000


def test_bulk_data_and_messages_take_turns() -> None:
    """A stream still being written (no end yet) and a large message: neither waits
    for the other; they share the packets about evenly until the message is done."""
    client, server = pair()
    bulk, message = 1, 5
    got = arrivals(client, server, [(400_000, False), (200_000, True)])
    done = ended_at(got, message)
    assert 120_000 <= received(got, bulk, done) <= 280_000
    assert received(got, bulk, len(got)) == 400_000


def test_a_large_message_is_not_starved_by_smaller_ones_behind_it() -> None:
    """A 300 KB reply queued before eight of 50 KB: it goes first and, once begun,
    is finished (shortest remainder alone would send all eight smaller ones first,
    and a steady flow of them would hold it back for good)."""
    client, server = pair()
    got = arrivals(client, server, [(300_000, True)] + [(50_000, True)] * 8)
    assert ended_at(got, 1) < min(ended_at(got, sid) for sid in range(5, 37, 4))


def test_a_stream_that_cannot_send_leaves_the_order_alone() -> None:
    """A stream the peer gave no credit keeps its data, and the two replies queued
    with it still leave one after the other."""
    client, server = pair()

    def starve(conn: QuicConnection) -> None:
        conn._streams[9].max_stream_data_remote = 0

    got = arrivals(client, server, [(200_000, True), (200_000, True), (300, True)], starve)
    assert received(got, 5, ended_at(got, 1)) == 0
    assert received(got, 9, len(got)) == 0
