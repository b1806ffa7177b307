"""The DHT's exception hierarchy (one base, Local/Remote split docs/architecture.md).

- :class:`DhtLocalError`: this node was asked to do something impossible (publish an
  oversized record, look up with no contacts at all).
- :class:`DhtRemoteError`: a peer misbehaved or failed. Subclasses carry the peer's
  node ID. A remote error only ever affects that one peer (it is marked failed in the
  routing table and dropped from the lookup), never the node.
- :class:`PeerCallError` and its subclasses are what a transport adapter raises from
  ``call`` (see ``dht.transport``); the DHT catches exactly this family.
- :class:`RequestRejected` is raised by a DHT request handler to send a typed error
  reply; an adapter maps it onto the transport's error reply (``RpcError(code, msg)``).
"""

from __future__ import annotations

from quic_transport.identity import NodeId


class DhtError(Exception):
    """Base of every error the ``dht`` package raises."""


class DhtLocalError(DhtError):
    """A local misuse or impossible request (never caused by a peer)."""


class RecordError(DhtError):
    """A record is malformed, forged, expired or too large; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class DhtRemoteError(DhtError):
    """A peer failed or misbehaved."""

    def __init__(self, peer_id: NodeId | None, message: str) -> None:
        who = peer_id.short() if peer_id is not None else "?"
        super().__init__(f"peer {who}: {message}")
        self.peer_id = peer_id
        self.message = message


class PeerCallError(DhtRemoteError):
    """An RPC to a peer did not produce a usable answer."""


class PeerTimeout(PeerCallError):
    """No answer within the per-request timeout."""


class PeerUnreachable(PeerCallError):
    """Could not connect, or the peer could not prove its node ID."""


class PeerRejected(PeerCallError):
    """The peer answered with a typed error reply (``code`` from the peer, untrusted)."""

    def __init__(self, peer_id: NodeId | None, code: str, message: str) -> None:
        super().__init__(peer_id, f"rejected ({code[:40]}): {message[:200]}")
        self.code = code[:40]


class BadResponse(PeerCallError):
    """The peer answered with something that fails the message schema."""


class MessageError(DhtError):
    """A DHT message body fails its schema (raised by ``dht.messages`` decoders)."""


class RequestRejected(DhtError):
    """Raised by a request handler to reply a typed error (``code``, ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
