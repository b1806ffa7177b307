"""Peer authentication: TLS certificates from node keys and the client's key proof.

Scheme (argued in docs/transport.md, "Authentication"):

- Server side: every endpoint presents a self-signed X.509 certificate whose
  key *is* its Ed25519 node key. TLS 1.3 CertificateVerify proves possession.
  The dialer pins it: the certificate's raw public key must hash to the node ID
  it dialed (:func:`node_id_of_certificate`), else the connection is refused
  with PeerAuthError.
- Client side: aioquic cannot verify client certificates, so after the
  handshake the client sends an ``Auth`` message on stream 0: its public key
  and an Ed25519 signature over :func:`proof_message`, which binds the proof to
  this TLS session (a secret derived from the master secret and the full
  handshake transcript), to the server's node ID and to the client's node ID.
- Session resumption and 0-RTT are never enabled (no ticket handler, no ticket).

Invariants: the channel binding is only computed after HandshakeCompleted;
nothing here logs key material.
"""

from __future__ import annotations

import datetime
import hashlib

from aioquic.quic.connection import QuicConnection
from aioquic.tls import hkdf_expand_label
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from .errors import PeerAuthError
from .identity import NodeId, NodeKey, verify_signature

PROOF_LABEL = b"p2pstore-transport-v1 client-auth\x00"
_CB_LABEL = b"p2ps cb v1"


def make_certificate(key: NodeKey) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    """A self-signed certificate over the node's own Ed25519 key (validity is not checked)."""
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key.node_id.b32)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(private, None)
    )
    return cert, private


def raw_public_key(cert: x509.Certificate) -> bytes:
    """The raw 32-byte Ed25519 key of ``cert``; PeerAuthError for any other key type."""
    pub = cert.public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise PeerAuthError("peer certificate does not carry an Ed25519 key")
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def peer_public_key(conn: QuicConnection) -> bytes:
    """The server's certificate key as seen by a client after HandshakeCompleted.

    aioquic keeps the verified peer certificate on its TLS context; there is no
    public accessor, hence the attribute read (pinned aioquic major version).
    """
    cert = getattr(conn.tls, "_peer_certificate", None)
    if cert is None:
        raise PeerAuthError("peer presented no certificate")
    return raw_public_key(cert)


def channel_binding(conn: QuicConnection) -> bytes:
    """A per-connection secret both ends derive identically after the handshake.

    HKDF-Expand-Label(master secret, "p2ps cb v1", transcript hash through the
    client Finished) in the style of the RFC 8446 exporter. Two TLS sessions
    never share it: it depends on both sides' fresh randoms and ECDHE shares.
    """
    ks = conn.tls.key_schedule
    if ks is None or ks.generation < 3:
        raise PeerAuthError("handshake not complete: no channel binding")
    return hkdf_expand_label(
        algorithm=ks.algorithm,
        secret=ks.secret,
        label=_CB_LABEL,
        hash_value=ks.hash.copy().finalize(),
        length=32,
    )


def proof_message(binding: bytes, server_id: NodeId, client_id: NodeId) -> bytes:
    """What the client signs: label || server ID || client ID || H(channel binding)."""
    return PROOF_LABEL + server_id.raw + client_id.raw + hashlib.sha256(binding).digest()


def make_proof(key: NodeKey, binding: bytes, server_id: NodeId) -> bytes:
    return key.sign(proof_message(binding, server_id, key.node_id))


def verify_proof(public_key: bytes, signature: bytes, binding: bytes, server_id: NodeId) -> NodeId:
    """Return the client's verified node ID or raise PeerAuthError."""
    try:
        client_id = NodeId.from_public_key(public_key)
    except ValueError:
        raise PeerAuthError("client proof: malformed public key") from None
    if not verify_signature(public_key, proof_message(binding, server_id, client_id), signature):
        raise PeerAuthError("client proof: bad signature", actual=client_id.b32)
    return client_id


def check_server_key(conn: QuicConnection, expected: NodeId) -> None:
    """Raise PeerAuthError unless the server proved the key of ``expected``."""
    actual = NodeId.from_public_key(peer_public_key(conn))
    if actual != expected:
        raise PeerAuthError(
            f"peer at this address is {actual.b32}, not the expected {expected.b32}",
            expected=expected.b32,
            actual=actual.b32,
        )
