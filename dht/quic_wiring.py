"""The DHT on the real QUIC transport: maps ``quic_transport.Endpoint`` onto ``DhtTransport``.

How the three differ: :mod:`dht.transport` declares what the DHT needs (Protocols),
:mod:`dht.endpoint_adapter` translates any endpoint-shaped RPC object into it, and
this module only says which QUIC exceptions mean what. ``PeerAuthError`` and
``ConnectError`` are ``TransportError``s, so a peer that cannot prove its key, or
cannot be reached, counts as unreachable: the lookup moves on and the routing table
treats it as a failed contact.
"""

from __future__ import annotations

from dht.endpoint_adapter import EndpointTransport, ErrorMap
from quic_transport import Endpoint, PeerAddress, RpcError, RpcTimeout, TransportError

QUIC_ERRORS = ErrorMap(
    timeout=(RpcTimeout,),
    rejected=(RpcError,),
    unreachable=(TransportError, OSError),
    make_rejection=RpcError,
)


def dht_transport(endpoint: Endpoint) -> EndpointTransport:
    """A ``DhtTransport`` that carries DHT RPCs over ``endpoint``."""
    return EndpointTransport(endpoint, make_address=PeerAddress, errors=QUIC_ERRORS)
