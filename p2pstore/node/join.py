"""Joining the grid: which addresses to try, in what order, skipping the ones that are down.

Invariants:
- :func:`join_candidates` puts bootstrap seeds first (file order), then remembered
  peers (most recently seen first), one entry per node ID, never this node itself.
- :func:`contact_any` tries candidates with at most ``parallel`` probes in flight,
  each bounded by ``probe_timeout``; a probe that raises or times out is recorded as
  failed and skipped. It stops early once ``enough`` probes succeeded and cancels
  the rest, so no task outlives the call.
- The probe is injected (the DHT passes "ping / find_node this peer over QUIC"),
  so this module does no networking and is tested with fake probes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from quic_transport.identity import NodeId

from .bootstrap import BootstrapList, Seed
from .known_peers import KnownPeers

Probe = Callable[[Seed], Awaitable[None]]


def join_candidates(
    bootstrap: BootstrapList, known: KnownPeers | None, own_id: NodeId | None = None
) -> list[Seed]:
    seen: set[NodeId] = set() if own_id is None else {own_id}
    out: list[Seed] = []
    for seed in bootstrap.seeds:
        if seed.node_id not in seen:
            seen.add(seed.node_id)
            out.append(seed)
    if known is not None:
        for peer in known.peers():
            if peer.node_id not in seen:
                seen.add(peer.node_id)
                out.append(peer.as_seed())
    return out


@dataclass(frozen=True, slots=True)
class JoinReport:
    reached: tuple[Seed, ...]
    failed: tuple[tuple[Seed, str], ...]  # (seed, reason)
    untried: tuple[Seed, ...]

    @property
    def joined(self) -> bool:
        return bool(self.reached)


async def contact_any(
    candidates: Sequence[Seed],
    probe: Probe,
    *,
    enough: int = 1,
    parallel: int = 3,
    probe_timeout: float = 5.0,
) -> JoinReport:
    """Probe candidates in order until ``enough`` answered or all were tried."""
    if enough < 1 or parallel < 1:
        raise ValueError("enough and parallel must be at least 1")
    reached: list[Seed] = []
    failed: list[tuple[Seed, str]] = []
    queue = list(candidates)
    next_index = 0
    running: dict[asyncio.Task[None], Seed] = {}

    async def one(seed: Seed) -> None:
        await asyncio.wait_for(probe(seed), probe_timeout)

    try:
        while len(reached) < enough and (running or next_index < len(queue)):
            while len(running) < parallel and next_index < len(queue):
                seed = queue[next_index]
                next_index += 1
                running[asyncio.ensure_future(one(seed))] = seed
            done, _pending = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                seed = running.pop(task)
                exc = task.exception()
                if exc is None:
                    reached.append(seed)
                elif isinstance(exc, TimeoutError):
                    failed.append((seed, f"no answer within {probe_timeout:g} s"))
                else:
                    failed.append((seed, f"{type(exc).__name__}: {exc}"))
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    untried = tuple(running.values()) + tuple(queue[next_index:])
    return JoinReport(tuple(reached), tuple(failed), untried)
