"""QUIC transport: node identity, mutually authenticated connections, RPC and bulk streams.

This package knows nothing of DHTs or files. Layers above (``dht``, ``p2pstore``)
import from here; nothing here imports from them. The public surface is listed in
``__all__``; docs/transport.md describes the wire protocol.
"""

from .config import TransportConfig
from .endpoint import Endpoint, open_endpoint
from .errors import (
    ConnectError,
    EndpointClosed,
    FrameError,
    LocalError,
    MessageTooLarge,
    PeerAuthError,
    RemoteError,
    RpcError,
    RpcTimeout,
    StreamClosedError,
    TransportError,
)
from .identity import NodeId, NodeKey
from .rpc import BulkReader, CallContext, FetchHandler, Handler, PeerAddress, StreamHandler

__all__ = [
    "BulkReader",
    "CallContext",
    "ConnectError",
    "Endpoint",
    "EndpointClosed",
    "FetchHandler",
    "FrameError",
    "Handler",
    "LocalError",
    "MessageTooLarge",
    "NodeId",
    "NodeKey",
    "PeerAddress",
    "PeerAuthError",
    "RemoteError",
    "RpcError",
    "RpcTimeout",
    "StreamClosedError",
    "StreamHandler",
    "TransportConfig",
    "TransportError",
    "open_endpoint",
]
