"""QUIC transport: node identity, mutually authenticated connections, RPC and bulk streams.

This package knows nothing of DHTs or files. Layers above (``dht``, ``p2pstore``)
import from here; nothing here imports from them. The public surface is listed in
``__all__``; docs/transport.md describes the wire protocol.

The names load on first use (PEP 562), so importing ``quic_transport.identity``
(keys and node IDs, which the file format and storage use) loads neither aioquic
nor the rest of the transport.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .deferred_tls import defer

defer()  # before anything here imports aioquic (deferred_tls.py)

if TYPE_CHECKING:
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

_MODULE_OF = {
    "TransportConfig": "config",
    "Endpoint": "endpoint",
    "open_endpoint": "endpoint",
    "NodeId": "identity",
    "NodeKey": "identity",
    "BulkReader": "rpc",
    "CallContext": "rpc",
    "FetchHandler": "rpc",
    "Handler": "rpc",
    "PeerAddress": "rpc",
    "StreamHandler": "rpc",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_MODULE_OF.get(name, 'errors')}", __name__)
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value
