"""Observed peer uptime: how often a peer answered when this node talked to it (sans-I/O).

Placement prefers storage peers with good uptime (``p2pstore.grid.quality``); the
figure must come from this node's own observations, never from what a peer claims.
:class:`UptimeTracker` is fed outcomes (``observe(node_id, ok)``): every DHT request
this node sends (through :class:`ObservingTransport`) and the periodic known-peers feed
(an authenticated connection open now counts as "up").

Model: time is cut into slots of ``slot_seconds`` (default 10 min). A slot in which a
peer answered at least once counts as *up*; a slot in which it was asked and never
answered counts as *down*; slots without contact do not count. ``uptime(node_id)`` is
up / (up + down) over the last ``window_slots`` slots (default 24 h), or None while
fewer than ``min_slots`` slots were observed (no judgement on too little data).

Invariants: at most ``max_peers`` peers (least recently observed dropped first) and at
most ``window_slots`` slots per peer are kept, so memory is bounded whatever the
network does; the clock is injected; nothing here does I/O or raises on bad input
from the network (observations carry only IDs this node's transport verified).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from dht.contact import Contact
from dht.errors import PeerCallError, PeerRejected
from dht.transport import DhtTransport, Handler
from quic_transport.identity import NodeId


class UptimeTracker:
    def __init__(
        self,
        *,
        slot_seconds: float = 600.0,
        window_slots: int = 144,
        min_slots: int = 3,
        max_peers: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slot_seconds <= 0 or window_slots < 1 or not 1 <= min_slots <= window_slots:
            raise ValueError("need slot_seconds > 0 and 1 <= min_slots <= window_slots")
        if max_peers < 1:
            raise ValueError("max_peers must be positive")
        self.slot_seconds = slot_seconds
        self.window_slots = window_slots
        self.min_slots = min_slots
        self.max_peers = max_peers
        self._clock = clock
        # node -> [(slot index, up?)] oldest first; the dict is in least-recent order
        self._peers: OrderedDict[NodeId, deque[tuple[int, bool]]] = OrderedDict()

    def _slot(self) -> int:
        return int(self._clock() // self.slot_seconds)

    def observe(self, node_id: NodeId, ok: bool) -> None:
        """A request to ``node_id`` was answered (``ok``) or not."""
        slot = self._slot()
        slots = self._peers.get(node_id)
        if slots is None:
            slots = self._peers[node_id] = deque(maxlen=self.window_slots)
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(node_id)
        if slots and slots[-1][0] == slot:
            if ok and not slots[-1][1]:
                slots[-1] = (slot, True)  # any answer in a slot makes it "up"
        else:
            slots.append((slot, ok))

    def counts(self, node_id: NodeId) -> tuple[int, int]:
        """(up slots, observed slots) within the window."""
        slots = self._peers.get(node_id)
        if not slots:
            return 0, 0
        first = self._slot() - self.window_slots + 1
        recent = [up for s, up in slots if s >= first]
        return sum(recent), len(recent)

    def uptime(self, node_id: NodeId) -> float | None:
        up, seen = self.counts(node_id)
        if seen < self.min_slots:
            return None
        return up / seen

    def forget(self, node_id: NodeId) -> None:
        self._peers.pop(node_id, None)

    def __len__(self) -> int:
        return len(self._peers)


class ObservingTransport:
    """A ``DhtTransport`` that reports every call's outcome to an :class:`UptimeTracker`.

    A typed refusal (``PeerRejected``) still means the peer was up; a timeout or an
    unreachable peer counts as down. Everything is passed through unchanged."""

    def __init__(self, inner: DhtTransport, tracker: UptimeTracker) -> None:
        self.inner = inner
        self.tracker = tracker

    async def call(
        self,
        peer: Contact,
        method: str,
        body: Any,
        *,
        timeout: float,  # noqa: ASYNC109 (the contract takes a per-call timeout)
    ) -> Any:
        try:
            reply = await self.inner.call(peer, method, body, timeout=timeout)
        except PeerRejected:
            self.tracker.observe(peer.node_id, True)
            raise
        except PeerCallError:
            self.tracker.observe(peer.node_id, False)
            raise
        self.tracker.observe(peer.node_id, True)
        return reply

    def register(self, method: str, handler: Handler) -> None:
        self.inner.register(method, handler)
