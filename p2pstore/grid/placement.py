"""Share placement: which peer gets which share, fallback, and happiness (sans-I/O).

No sockets, no event loop: the uploader and the repairer tell a :class:`SharePlacer`
what happened (a share was stored, a peer refused or vanished) and ask it where to go
next. Peers are identified by their raw 20-byte node IDs.

Rules (docs/grid.md, "Placement"):
- Candidate peers are ranked by XOR distance of their node ID to the storage index,
  nearest first (duplicates dropped); with a quality source, by quality tier first
  (``p2pstore.grid.quality``: reachable peers with good observed uptime before the
  others), distance second. The candidates are exactly what ``find_peers`` returned,
  the same window downloaders search, so the preference never hides a share.
- Share i is offered to the i-th closest peer. In general a share goes to the
  live candidate with the fewest shares (held, placed or being placed), ties broken
  by closeness; with no failures and at least N peers this is exactly "share i to
  the i-th closest", and shares already present somewhere push new shares to peers
  that hold none.
- A (share, peer) pair is tried at most once, so fallback always terminates; a peer
  that failed in a way that is not specific to one share (refusal for space,
  timeout, disconnect) is excluded for every share.
- Happiness is the size of a maximum matching between peers and the distinct shares
  they hold: the number of peers that could each be lost with one distinct share
  still elsewhere. It is at most min(peers holding shares, distinct shares).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .quality import DEFAULT_MIN_UPTIME, QualitySource, rank_by_quality

PeerKey = bytes  # a raw 20-byte node ID
K = TypeVar("K", bound=Hashable)  # a holder, however named


def rank_peers(
    storage_index: bytes,
    peers: Iterable[PeerKey],
    *,
    quality: QualitySource | None = None,
    min_uptime: float = DEFAULT_MIN_UPTIME,
) -> list[PeerKey]:
    """Distinct peers ordered by XOR distance to ``storage_index``, nearest first;
    with ``quality``, by quality tier first (``p2pstore.grid.quality``)."""
    return rank_by_quality(storage_index, peers, quality, min_uptime=min_uptime)


def holdings_of(existing: Mapping[int, Iterable[K]]) -> dict[K, set[int]]:
    """``{share: [holders]}`` turned round: ``{holder: {shares}}``, what
    :func:`happiness` takes."""
    out: dict[K, set[int]] = {}
    for share, holders in existing.items():
        for holder in holders:
            out.setdefault(holder, set()).add(share)
    return out


def happiness(holdings: Mapping[K, Iterable[int]]) -> int:
    """Size of a maximum peer/share matching (each peer and each share used once).

    Kuhn's augmenting-path algorithm; at most 256 shares and a few hundred peers, so
    the O(V*E) bound is small."""
    shares_of = {p: sorted(set(s)) for p, s in holdings.items()}
    owner: dict[int, K] = {}

    def augment(p: K, seen: set[int]) -> bool:
        for s in shares_of[p]:
            if s in seen:
                continue
            seen.add(s)
            if s not in owner or augment(owner[s], seen):
                owner[s] = p
                return True
        return False

    return sum(1 for p in shares_of if augment(p, set()))


@dataclass
class SharePlacer:
    """Tracks where each of ``n`` shares is (or is being) placed.

    ``ranked`` are the candidate peers nearest first; ``existing`` maps share number
    -> peers that already hold it (found by listing before the upload). Shares in
    ``existing`` are not assigned anywhere new unless :meth:`lost` is called for them.
    """

    n: int
    ranked: list[PeerKey]
    existing: Mapping[int, Iterable[PeerKey]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rank = {p: i for i, p in enumerate(self.ranked)}
        self.placed: dict[int, PeerKey] = {}  # share -> peer that holds it
        self.extra: dict[PeerKey, set[int]] = {}  # further copies already present
        self.pending: dict[int, PeerKey] = {}  # share -> peer being tried now
        self.tried: dict[int, set[PeerKey]] = {s: set() for s in range(self.n)}
        self.excluded: set[PeerKey] = set()
        self.reasons: dict[int, str] = {}  # share -> why its last attempt failed
        for s, peers in self.existing.items():
            if not 0 <= s < self.n:
                continue
            for p in peers:
                if s not in self.placed:
                    self.placed[s] = p
                else:
                    self.extra.setdefault(p, set()).add(s)
                self.tried[s].add(p)

    # -- queries ------------------------------------------------------------------
    def load(self, peer: PeerKey) -> int:
        """Shares this peer holds, or is being sent, in this placement."""
        held = sum(1 for p in self.placed.values() if p == peer)
        return held + sum(1 for p in self.pending.values() if p == peer)

    def holdings(self) -> dict[PeerKey, set[int]]:
        out: dict[PeerKey, set[int]] = {p: set(s) for p, s in self.extra.items()}
        for s, p in self.placed.items():
            out.setdefault(p, set()).add(s)
        return out

    def happiness(self) -> int:
        return happiness(self.holdings())

    def unplaced(self) -> list[int]:
        return [s for s in range(self.n) if s not in self.placed and s not in self.pending]

    # -- decisions ----------------------------------------------------------------
    def _choose(self, share: int) -> PeerKey | None:
        candidates = [
            p for p in self.ranked if p not in self.excluded and p not in self.tried[share]
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda p: (self.load(p), self._rank[p]))

    def assign(self, share: int) -> PeerKey | None:
        """Pick the next peer for an unplaced share (None if no candidate is left)."""
        if share in self.placed or share in self.pending:
            raise ValueError(f"share {share} is already placed or pending")
        peer = self._choose(share)
        if peer is None:
            self.reasons.setdefault(share, "no peer left to try")
            return None
        self.tried[share].add(peer)
        self.pending[share] = peer
        return peer

    def initial(self) -> dict[int, PeerKey]:
        """Assign every share that is neither present nor pending, in share order."""
        out = {}
        for s in self.unplaced():
            p = self.assign(s)
            if p is not None:
                out[s] = p
        return out

    def stored(self, share: int, peer: PeerKey) -> None:
        """The pending attempt of ``share`` on ``peer`` succeeded."""
        if self.pending.get(share) != peer:
            raise ValueError(f"share {share} is not pending on that peer")
        del self.pending[share]
        self.placed[share] = peer
        self.reasons.pop(share, None)

    def found_present(self, share: int, peer: PeerKey) -> None:
        """The pending attempt found the share already there (counts as stored)."""
        self.stored(share, peer)

    def failed(
        self,
        share: int,
        peer: PeerKey,
        reason: str,
        *,
        exclude_peer: bool = True,
        reassign: bool = True,
    ) -> PeerKey | None:
        """The pending attempt failed; returns the next peer to try (now pending) or
        None when no candidate is left (or ``reassign`` is False: the share stays
        unplaced). ``exclude_peer`` keeps the peer out of every later choice (use
        False only for share-specific refusals)."""
        if self.pending.get(share) != peer:
            raise ValueError(f"share {share} is not pending on that peer")
        del self.pending[share]
        self.reasons[share] = reason
        if exclude_peer:
            self.excluded.add(peer)
        return self.assign(share) if reassign else None

    def lost(self, share: int, reason: str, *, exclude_peer: bool = True) -> None:
        """A placed share turned out not to be stored after all (failed verification,
        or the peer vanished before closing it). It becomes unplaced."""
        peer = self.placed.pop(share, None)
        self.reasons[share] = reason
        if peer is not None and exclude_peer:
            self.excluded.add(peer)
        for p, extra in list(self.extra.items()):
            if share in extra and p not in self.excluded:
                extra.discard(share)
                self.placed[share] = p  # another copy exists: promote it
                break
