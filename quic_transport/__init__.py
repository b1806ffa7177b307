"""QUIC transport: node identity, mutually authenticated connections, RPC and bulk streams.

This package knows nothing of DHTs or files. Layers above (``dht``, ``p2pstore``)
import from here; nothing here imports from them.
"""
