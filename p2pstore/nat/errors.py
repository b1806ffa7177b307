"""The connectivity layer's one exception root (docs/architecture.md, "Conventions").

Every error :mod:`p2pstore.nat` raises on purpose derives from :class:`NatError`:
the port-mapping errors (:mod:`.portmap.errors`) and the relay errors
(:mod:`.relay.errors`) too, each with its own Local/Remote split.

:class:`NatLocalError`: this node cannot do what was asked (no rendezvous, no relay,
bad argument). :class:`NatRemoteError`: a peer sent something invalid (a bad peer
record, a malformed RPC body); it only ever concerns that peer.
"""

from __future__ import annotations


class NatError(Exception):
    """Base of every error raised by :mod:`p2pstore.nat` (except RPC refusals, which
    cross the wire as :class:`quic_transport.RpcError`)."""


class NatLocalError(NatError):
    """This node cannot do it (configuration, state, or every path failed)."""


class NatRemoteError(NatError):
    """A peer's data was invalid; ``field`` names the offending part."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field
