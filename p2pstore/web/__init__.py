"""The node's local HTTP API (docs/http-api.md): ``app`` (the aiohttp application),
``api`` (handlers), ``server`` (binding/serving), ``backend`` (the Protocol the node
implements), ``memory_backend`` (a real in-memory implementation for tests and the
stand-in node), ``ranges``/``vpath`` (sans-I/O parsing), ``errors``.

This ``__init__`` imports nothing so that importing the backend types does not load
aiohttp.
"""
