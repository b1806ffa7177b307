"""Silent-peer detection: a peer that stops answering is found in seconds, not at the
QUIC idle timeout (docs/transport.md, "Silent peers").

aioquic retransmits into silence with exponential back-off until the idle timeout
(60 s); a call waiting for credit or a reply waits its own timeout (10-30 s). On a
grid of home machines peers vanish all the time (a laptop lid, a Wi-Fi drop, a
killed process), and one such wait must not hold an upload or download up.

The rule, for a connection with streams open (someone is waiting on this peer):

- nothing received for ``probe_after`` seconds: send a QUIC PING. A live peer
  acknowledges any ack-eliciting packet within one round trip plus its ACK delay
  (RFC 9000 section 13.2.1), busy or not, whatever its application is doing;
- nothing received for ``silent_after`` seconds after that PING: the peer is gone.
  The connection is closed and every stream on it fails at once, so callers move
  to another peer.

A connection with no streams open is never probed: an idle node sends nothing.
Pure logic; the endpoint's watchdog (endpoint.py) applies it and does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    OK = "ok"  # heard from recently
    PROBE = "probe"  # quiet: send a PING now
    WAIT = "wait"  # PING sent, not yet answered, not yet overdue
    DEAD = "dead"  # PING unanswered for silent_after seconds


@dataclass(frozen=True, slots=True)
class LivenessRule:
    probe_after: float = 1.0
    silent_after: float = 4.0

    def __post_init__(self) -> None:
        if not (self.probe_after > 0 and self.silent_after > 0):
            raise ValueError("probe_after and silent_after must be positive")

    def verdict(self, now: float, last_received: float, probe_sent_at: float | None) -> Verdict:
        """What to do about a busy connection at ``now``. ``probe_sent_at`` is when we
        last sent a PING (None: never, or the peer answered since)."""
        if probe_sent_at is not None and probe_sent_at >= last_received:
            if now - probe_sent_at >= self.silent_after:
                return Verdict.DEAD
            return Verdict.WAIT
        if now - last_received >= self.probe_after:
            return Verdict.PROBE
        return Verdict.OK

    @property
    def tick(self) -> float:
        """How often the watchdog looks while some connection is busy."""
        return min(self.probe_after, self.silent_after) / 2
