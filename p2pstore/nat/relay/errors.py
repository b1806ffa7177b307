"""Exceptions of the relay (docs/relay.md, "Errors").

Invariants: every error the relay modules raise on purpose derives from
:class:`RelayError`; :class:`RelayLocalError` is about this node (closed client,
bad config), :class:`RelayRemoteError` about the other side (a refusal, a
malformed record, a lost relay, a bad proof of work:
:class:`~p2pstore.nat.relay.work.WorkError`). The relay's own accounting refuses
with :class:`~p2pstore.nat.relay.limits.Refusal`, a plain :class:`RelayError`: a
full relay is neither side's fault. Messages never contain secrets. On the relay
server a refusal crosses the wire as a transport ``RpcError`` whose code is one
of :data:`CODES`; the client turns it back into :class:`RelayRefused`.
"""

from __future__ import annotations

from p2pstore.nat.errors import NatError

# RpcError codes the relay server answers with (docs/relay.md, "Errors").
CODES = (
    "bad-request",  # malformed body or header
    "relay-full",  # max_reservations reached
    "relay-peer-limit",  # this peer holds max_reservations_per_peer already
    "relay-unknown",  # no such reservation for this peer (expired, released, never)
    "relay-busy",  # the reservation already has that stream attached
    "relay-max-duration",  # renewal past max_duration
    "relay-bind-failed",  # the relay could not open a UDP socket
    "relay-work-required",  # the reserve lacked a valid proof of work (relay/work.py)
    "relay-closed",  # the reservation ended (reason in the message)
    "relay-byte-limit",  # the reservation used up max_bytes and ended
    "relay-expired",  # the lifetime ran out without renewal
)


class RelayError(NatError):
    """Base of every error the relay modules raise on purpose."""


class RelayLocalError(RelayError):
    """Misuse on this node: a closed client, an unknown reservation handle."""


class RelayRemoteError(RelayError):
    """The other side refused, misbehaved or went away."""


class RelayWireError(RelayRemoteError):
    """A malformed record or RPC body from the peer."""


class RelayRefused(RelayRemoteError):
    """The relay answered a reserve/renew with an error code (see :data:`CODES`)."""

    def __init__(self, relay: str, code: str, message: str) -> None:
        self.relay = relay
        self.code = code
        self.message = message
        super().__init__(f"relay {relay} refused: {code}: {message}")


class RelayUnavailable(RelayRemoteError):
    """The relay could not be reached or the connection to it broke."""

    def __init__(self, relay: str, reason: str) -> None:
        self.relay = relay
        self.reason = reason
        super().__init__(f"relay {relay} unavailable: {reason}")
