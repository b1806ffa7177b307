"""``state/known_peers.json``: the peers this node has met, so it can rejoin the grid
even when every seed of its bootstrap list is gone.

Invariants:
- At most ``max_peers`` entries, one per node ID; when full, the least recently seen
  are dropped first.
- The file is written atomically (temp + fsync + rename); a reader never sees a
  half-written file. A corrupt or oversized file is moved aside to
  ``known_peers.json.corrupt`` and the node starts with an empty store instead of
  refusing to start (the bootstrap list still works).
- Entries from the file or from the DHT are validated (node ID, host, port 1..65535,
  finite timestamp); invalid ones are skipped and counted, never raised.
- This module does no networking: the DHT feeds it through :meth:`KnownPeers.merge`
  and :meth:`KnownPeers.saw`; the runner loads it at start and saves it at stop.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pstore.base.fsutil import read_bounded, write_text_atomic
from quic_transport.identity import IdentityError, NodeId

from .address import HostPort
from .bootstrap import Seed
from .errors import AddressError

FORMAT = "p2pstore-known-peers-v1"
MAX_FILE_BYTES = 8 * 1024 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KnownPeer:
    node_id: NodeId
    host: str
    port: int
    last_seen: float  # Unix time the peer last answered us

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, NodeId):
            raise TypeError("KnownPeer.node_id must be a NodeId")
        HostPort(self.host, self.port)
        if self.port == 0:
            raise AddressError("a peer's port cannot be 0")
        if not isinstance(self.last_seen, int | float) or not math.isfinite(self.last_seen):
            raise ValueError("last_seen must be a finite number")

    def as_seed(self) -> Seed:
        return Seed(self.node_id, self.host, self.port)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id.b32,
            "host": self.host,
            "port": self.port,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_json(cls, obj: Any) -> KnownPeer:
        if not isinstance(obj, dict):
            raise ValueError("entry is not an object")
        node_id, host, port, seen = (obj.get(k) for k in ("node_id", "host", "port", "last_seen"))
        if not isinstance(node_id, str) or not isinstance(host, str):
            raise ValueError("node_id and host must be strings")
        if not isinstance(port, int) or isinstance(port, bool):
            raise ValueError("port must be an integer")
        if not isinstance(seen, int | float) or isinstance(seen, bool):
            raise ValueError("last_seen must be a number")
        return cls(NodeId.from_b32(node_id), host, port, float(seen))


class KnownPeers:
    """A bounded, persistent map node ID -> (address, last seen)."""

    def __init__(
        self, path: Path, *, max_peers: int = 512, clock: Callable[[], float] = time.time
    ) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        self.path = path
        self.max_peers = max_peers
        self._clock = clock
        self._peers: dict[NodeId, KnownPeer] = {}
        self.dirty = False

    @classmethod
    def load(
        cls, path: Path, *, max_peers: int = 512, clock: Callable[[], float] = time.time
    ) -> KnownPeers:
        """Load the store; a missing file gives an empty store, a corrupt one is set aside."""
        store = cls(path, max_peers=max_peers, clock=clock)
        try:
            raw = read_bounded(path, MAX_FILE_BYTES)
        except FileNotFoundError:
            return store
        except OSError as e:
            log.warning("cannot read %s (%s); starting with no known peers", path, e.strerror)
            return store
        except ValueError:
            store._set_aside(f"larger than {MAX_FILE_BYTES} bytes")
            return store
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} document")
            entries = doc.get("peers")
            if not isinstance(entries, list):
                raise ValueError("'peers' is not a list")
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError included
            store._set_aside(str(e))
            return store
        peers, skipped = [], 0
        for obj in entries:
            try:
                peers.append(KnownPeer.from_json(obj))
            except (ValueError, TypeError, IdentityError, AddressError):
                skipped += 1
        if skipped:
            log.warning("%s: skipped %d invalid entries", path, skipped)
        store.merge(peers)
        store.dirty = skipped > 0
        return store

    def _set_aside(self, reason: str) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        log.warning("%s is unusable (%s); moved to %s, starting empty", self.path, reason, aside)
        try:
            os.replace(self.path, aside)
        except OSError as e:
            log.warning("could not move %s aside: %s", self.path, e.strerror)

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._peers

    def get(self, node_id: NodeId) -> KnownPeer | None:
        return self._peers.get(node_id)

    def peers(self) -> list[KnownPeer]:
        """Most recently seen first (ties broken by node ID, so the order is stable)."""
        return sorted(self._peers.values(), key=lambda p: (-p.last_seen, p.node_id))

    def merge(self, peers: Iterable[KnownPeer]) -> int:
        """Add or refresh peers (the newer ``last_seen`` wins); returns how many changed."""
        changed = 0
        for peer in peers:
            old = self._peers.get(peer.node_id)
            if old is not None and old.last_seen >= peer.last_seen:
                continue
            if old != peer:
                self._peers[peer.node_id] = peer
                changed += 1
        if len(self._peers) > self.max_peers:
            for peer in self.peers()[self.max_peers :]:
                del self._peers[peer.node_id]
        if changed:
            self.dirty = True
        return changed

    def saw(self, node_id: NodeId, host: str, port: int, when: float | None = None) -> bool:
        """Record that ``node_id`` answered at ``host:port`` (now, by default).

        Invalid addresses from the network are ignored (returns False), never raised.
        """
        try:
            peer = KnownPeer(node_id, host, port, self._clock() if when is None else when)
        except (ValueError, TypeError, AddressError):
            return False
        return self.merge([peer]) > 0

    def forget(self, node_id: NodeId) -> bool:
        if self._peers.pop(node_id, None) is None:
            return False
        self.dirty = True
        return True

    def to_json_text(self) -> str:
        doc = {"format": FORMAT, "peers": [p.to_json() for p in self.peers()]}
        return json.dumps(doc, indent=1) + "\n"

    def save(self) -> None:
        """Write the store atomically (creating ``state/`` if needed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, self.to_json_text(), mode=0o600)
        self.dirty = False
