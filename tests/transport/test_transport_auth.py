"""Authentication without sockets: two aioquic state machines wired back to back."""

from __future__ import annotations

import ssl

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header

from quic_transport import auth
from quic_transport.errors import PeerAuthError
from quic_transport.identity import NodeId, NodeKey

CLIENT_ADDR = ("1.2.3.4", 1234)
SERVER_ADDR = ("2.3.4.5", 4433)


def handshake(server_key: NodeKey) -> tuple[QuicConnection, QuicConnection]:
    cert, private = auth.make_certificate(server_key)
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["t"], verify_mode=ssl.CERT_NONE
        )
    )
    now = 0.0
    client.connect(SERVER_ADDR, now=now)
    first = client.datagrams_to_send(now)
    dcid = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8).destination_cid
    server = QuicConnection(
        configuration=QuicConfiguration(
            is_client=False, alpn_protocols=["t"], certificate=cert, private_key=private
        ),
        original_destination_connection_id=dcid,
    )
    for data, _ in first:
        server.receive_datagram(data, CLIENT_ADDR, now)
    done = {"c": False, "s": False}
    for _ in range(20):
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT_ADDR, now)
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER_ADDR, now)
        for name, conn in (("c", client), ("s", server)):
            while (ev := conn.next_event()) is not None:
                if isinstance(ev, events.HandshakeCompleted):
                    assert not ev.session_resumed and not ev.early_data_accepted
                    done[name] = True
        if all(done.values()):
            return client, server
        now += 0.01
    raise AssertionError("handshake did not complete")


def test_certificate_key_is_the_node_key() -> None:
    key = NodeKey.generate()
    cert, _ = auth.make_certificate(key)
    assert auth.raw_public_key(cert) == key.public_key


def test_pinning_and_channel_binding_agree() -> None:
    server_key = NodeKey.generate()
    client, server = handshake(server_key)
    auth.check_server_key(client, server_key.node_id)
    with pytest.raises(PeerAuthError, match="not the expected"):
        auth.check_server_key(client, NodeKey.generate().node_id)
    cb_c = auth.channel_binding(client)
    cb_s = auth.channel_binding(server)
    assert cb_c == cb_s and len(cb_c) == 32


def test_proof_verifies_only_on_its_own_connection() -> None:
    server_key = NodeKey.generate()
    client_key = NodeKey.generate()
    c1, s1 = handshake(server_key)
    c2, _s2 = handshake(server_key)
    b1, b2 = auth.channel_binding(c1), auth.channel_binding(c2)
    assert b1 != b2 and b1 == auth.channel_binding(s1)
    proof = auth.make_proof(client_key, b1, server_key.node_id)
    assert auth.verify_proof(client_key.public_key, proof, b1, server_key.node_id) == (
        client_key.node_id
    )
    # Relayed to another connection (a man in the middle's own TLS session): refused.
    with pytest.raises(PeerAuthError, match="bad signature"):
        auth.verify_proof(client_key.public_key, proof, b2, server_key.node_id)
    # Made for another server (the MITM dialled by the client): refused.
    other = NodeKey.generate().node_id
    proof_for_other = auth.make_proof(client_key, b1, other)
    with pytest.raises(PeerAuthError):
        auth.verify_proof(client_key.public_key, proof_for_other, b1, server_key.node_id)
    # Claiming another key with this signature: refused.
    with pytest.raises(PeerAuthError):
        auth.verify_proof(NodeKey.generate().public_key, proof, b1, server_key.node_id)


def test_channel_binding_needs_completed_handshake() -> None:
    client = QuicConnection(
        configuration=QuicConfiguration(is_client=True, verify_mode=ssl.CERT_NONE)
    )
    client.connect(SERVER_ADDR, now=0.0)
    with pytest.raises(PeerAuthError, match="not complete"):
        auth.channel_binding(client)


def test_proof_message_layout() -> None:
    s, c = NodeId(bytes(20)), NodeId(b"\x01" * 20)
    msg = auth.proof_message(b"b" * 32, s, c)
    assert msg.startswith(auth.PROOF_LABEL) and len(msg) == len(auth.PROOF_LABEL) + 72
