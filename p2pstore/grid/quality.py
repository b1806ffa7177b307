"""Peer quality for placement: which candidate storage peers to prefer (sans-I/O).

A :class:`PeerQuality` says what this node knows about a peer: whether it is publicly
reachable (``None``: unknown) and the fraction of time this node observed it up
(``None``: not observed long enough). Qualities come from an injected
:data:`QualitySource` (the node combines its reachability knowledge and its own
uptime observations, never the peer's claims about itself).

Rule (docs/grid.md, "Placement preference"): candidates are the peers ``find_peers``
returned for the storage index, the same window a downloader searches, so preferring
some of them never moves a share where downloaders do not look. Within that window
peers are ranked by :func:`quality_tier` first and XOR distance second:

- tier 0: nothing known against the peer (reachable or unknown, uptime good or unknown);
- tier 1: known not publicly reachable (needs hole punching or a relay);
- tier 2: observed uptime below ``min_uptime``;
- tier 3: both.

Placement gives each share to the candidate with the fewest shares first, so a worse
tier only receives shares once every better peer holds as many: the preference never
lowers the number of distinct peers used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from quic_transport.identity import NodeId

DEFAULT_MIN_UPTIME = 0.75


@dataclass(frozen=True, slots=True)
class PeerQuality:
    reachable: bool | None = None  # publicly dialable; None: unknown
    uptime: float | None = None  # fraction of observed time up, 0..1; None: unknown

    def __post_init__(self) -> None:
        if self.reachable is not None and not isinstance(self.reachable, bool):
            raise TypeError("reachable must be a bool or None")
        if self.uptime is not None and (
            not isinstance(self.uptime, int | float)
            or not math.isfinite(self.uptime)
            or not 0.0 <= self.uptime <= 1.0
        ):
            raise ValueError("uptime must be a fraction in 0..1")


#: ``quality(node_id)``: what this node knows about a peer (None: nothing).
QualitySource = Callable[[NodeId], PeerQuality | None]


def quality_tier(q: PeerQuality | None, *, min_uptime: float = DEFAULT_MIN_UPTIME) -> int:
    """0 (prefer) .. 3 (last resort); see the module docstring."""
    if q is None:
        return 0
    tier = 0
    if q.reachable is False:
        tier += 1
    if q.uptime is not None and q.uptime < min_uptime:
        tier += 2
    return tier


def rank_by_quality(
    storage_index: bytes,
    peers: Iterable[bytes],
    quality: QualitySource | None,
    *,
    min_uptime: float = DEFAULT_MIN_UPTIME,
) -> list[bytes]:
    """Distinct raw peer IDs ordered by (quality tier, XOR distance to the index).

    With no ``quality`` source this is plain distance order."""
    target = int.from_bytes(storage_index, "big")
    unique = list(dict.fromkeys(peers))

    def tier(p: bytes) -> int:
        if quality is None:
            return 0
        try:
            q = quality(NodeId(p))
        except Exception:  # a broken source must not break uploads: no preference
            return 0
        return quality_tier(q, min_uptime=min_uptime)

    tiers = {p: tier(p) for p in unique}
    return sorted(unique, key=lambda p: (tiers[p], int.from_bytes(p, "big") ^ target))
