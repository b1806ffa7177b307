"""Which peers hold shares: the storage-peer filter between a DHT lookup and the grid.

The DHT routing table holds every node of the grid, including introducers and nodes
with ``[storage] enabled = false``; those do not register the ``storage.*`` RPC
methods. Before the grid ranks peers for a storage index, :class:`StoragePeers` asks
each unknown peer ``storage.stat`` once and remembers the answer:

- a reply (any valid ``storage.stat`` map): the peer stores; its ``available`` bytes
  are kept for status pages;
- a typed refusal ``no-such-method`` (or ``unavailable``): the peer does not store;
- anything else (timeout, unreachable): *unknown*; the peer is still offered to the
  grid, whose share listing is the real liveness probe, and asked again next time.

Invariants: answers are cached for ``ttl`` seconds of the injected monotonic clock
(a node may turn storage on or off across a restart); the cache holds at most
``max_entries`` peers (oldest answer dropped first); probes of one lookup run
concurrently, each bounded by ``probe_timeout``. No networking here beyond the
injected ``probe`` coroutine, so it is tested with fakes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from quic_transport.identity import NodeId

from .peers import Peer

P = TypeVar("P", bound=Peer)

#: ``probe(peer)`` returns the ``storage.stat`` reply, or raises.
Probe = Callable[[Any], Awaitable[Any]]
NOT_STORAGE_CODES = frozenset({"no-such-method", "unavailable"})


@dataclass(frozen=True, slots=True)
class Role:
    stores: bool
    checked_at: float
    available: int | None = None


class StoragePeers:
    def __init__(
        self,
        probe: Probe,
        *,
        ttl: float = 600.0,
        probe_timeout: float = 3.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.ttl = ttl
        self.probe_timeout = probe_timeout
        self.max_entries = max_entries
        self._clock = clock
        self._roles: dict[NodeId, Role] = {}

    def role(self, node_id: NodeId) -> Role | None:
        r = self._roles.get(node_id)
        if r is None or self._clock() - r.checked_at > self.ttl:
            return None
        return r

    def known_storage(self) -> list[NodeId]:
        return [n for n, r in self._roles.items() if r.stores]

    def set_role(self, node_id: NodeId, role: Role) -> None:
        self._roles.pop(node_id, None)
        self._roles[node_id] = role
        while len(self._roles) > self.max_entries:
            del self._roles[next(iter(self._roles))]

    async def _ask(self, peer: Any) -> None:
        now = self._clock()
        try:
            reply = await asyncio.wait_for(self._probe(peer), self.probe_timeout)
        except Exception as e:
            code = getattr(e, "code", None)
            if isinstance(code, str) and code in NOT_STORAGE_CODES:
                self.set_role(peer.node_id, Role(False, now))
            return  # unknown: offered to the grid, asked again next time
        available = reply.get("available") if isinstance(reply, dict) else None
        if not isinstance(available, int) or isinstance(available, bool):
            available = None
        self.set_role(peer.node_id, Role(True, now, available))

    async def filter(self, peers: Sequence[P]) -> list[P]:
        """``peers`` minus those known not to store (probing the unknown ones first)."""
        unknown = [p for p in peers if self.role(p.node_id) is None]
        if unknown:
            await asyncio.gather(*(self._ask(p) for p in unknown))
        out = []
        for p in peers:
            r = self.role(p.node_id)
            if r is None or r.stores:
                out.append(p)
        return out
