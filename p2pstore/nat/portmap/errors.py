"""Exceptions of the port-mapping client (``p2pstore.nat.portmap.mapper*``).

Invariants:
- Everything the port-mapping modules raise on purpose derives from
  :class:`PortmapError`; the :class:`~p2pstore.nat.portmap.mapper.PortMapper` turns every one
  of them into an "unavailable" status with the message as the reason, never into a
  failure of the node.
- :class:`PortmapLocalError`: this machine cannot try (no default gateway, an IPv6
  listen address, a socket error). :class:`PortmapRemoteError`: the router (or
  whoever answered in its name) said no or sent something we refuse; ``method``
  names the protocol (``"pcp"``, ``"nat-pmp"``, ``"upnp"``).
- Messages never contain more than a bounded, printable excerpt of remote input.
"""

from __future__ import annotations

from p2pstore.nat.errors import NatError


class PortmapError(NatError):
    """Base of every error the port-mapping modules raise on purpose."""


class PortmapLocalError(PortmapError):
    """This machine cannot map a port (no gateway, unsupported address, socket error)."""


class PortmapRemoteError(PortmapError):
    """The gateway refused, did not answer, or answered with something we reject."""

    def __init__(self, method: str, reason: str) -> None:
        self.method = method
        self.reason = reason
        super().__init__(f"{method}: {reason}")


class MalformedReply(PortmapRemoteError):
    """A reply failed validation (length, version, nonce, URL, XML...). Datagram
    protocols discard such replies and keep waiting; HTTP ones give up."""


class NoAnswer(PortmapRemoteError):
    """Nothing valid came back before the timeouts ran out (or the port was closed)."""


class GatewayRefused(PortmapRemoteError):
    """A well-formed reply carrying an error result code (``code``, ``name``)."""

    def __init__(self, method: str, code: int, name: str) -> None:
        self.code = code
        self.name = name
        super().__init__(method, f"gateway refused: {name} ({code})")


def excerpt(text: str | bytes, limit: int = 60) -> str:
    """A short printable rendering of remote input for error messages."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else "?" for c in cut)
    return repr(shown + ("..." if len(text) > limit else ""))


class VersionMismatch(PortmapRemoteError):
    """The port-mapping server speaks another protocol version (PCP asked, NAT-PMP
    answered: RFC 6887 section 9); the client falls back to that version."""

    def __init__(self, method: str, server_version: int) -> None:
        self.server_version = server_version
        super().__init__(method, f"server speaks version {server_version}")
