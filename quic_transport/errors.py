"""Exceptions of the transport package.

One base, :class:`TransportError`. Two branches say whose fault a failure is
(docs/architecture.md, "Conventions"):

- :class:`LocalError`: this node refused or could not do something (a message
  we were asked to send is too large, the endpoint is closed, a limit is hit).
- :class:`RemoteError`: the peer did something wrong or reported a failure
  (malformed frames, failed authentication, an error reply from its handler).

:class:`RpcTimeout` and :class:`ConnectError` sit directly under the base:
silence cannot be attributed to either side.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every exception raised by ``quic_transport``."""


class LocalError(TransportError):
    """This node refused an operation (limit, closed endpoint, bad argument)."""


class RemoteError(TransportError):
    """The peer misbehaved or reported a failure."""


class RpcError(RemoteError):
    """A remote handler failed. ``code`` is a short machine-readable string.

    Handlers raise it to send a typed error reply; callers receive it unchanged.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PeerAuthError(RemoteError):
    """The peer did not prove the expected node key (or sent a bad proof)."""

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class FrameError(RemoteError):
    """Bytes from the peer do not form a valid frame or message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamClosedError(RemoteError):
    """The peer reset a stream or closed the connection mid-exchange."""

    def __init__(self, message: str, *, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


class MessageTooLarge(LocalError):
    """A message this node was asked to send exceeds the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class EndpointClosed(LocalError):
    """The endpoint was closed; no further calls can be made."""


class RpcTimeout(TransportError):
    """No answer (or no progress on a bulk stream) within the timeout."""

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class ConnectError(TransportError):
    """The peer could not be reached (no handshake within the timeout, refused, closed)."""
