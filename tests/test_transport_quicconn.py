"""Receive windows advance by delivery, not by receipt (no sockets: two state machines)."""

from __future__ import annotations

import ssl

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from quic_transport import auth
from quic_transport.identity import NodeKey
from quic_transport.pacing import CoarseTimerPacer
from quic_transport.quicconn import TransportQuicConnection

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


def pump(client: QuicConnection, server: QuicConnection, rounds: int = 50) -> None:
    """Shuttle datagrams, firing timers when idle, until nothing more happens."""
    now = 0.0
    for _ in range(rounds):
        moved = False
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, A, now)
            moved = True
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, B, now)
            moved = True
        while client.next_event() or server.next_event():
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
