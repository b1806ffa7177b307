"""Simulation harness: real ``DhtNode`` logic on a ``MemoryNetwork`` in virtual time.

Used by tests (small networks) and ``benchmarks/bench_dht.py`` (1,000 and 10,000
nodes). Nodes join one after another through a single seed (bootstrap = self-lookup),
exactly as real nodes do; then a fraction of nodes can be silently killed and lookups
measured against the true closest live nodes, computed by brute force.

Metrics per scenario (:class:`LookupReport`):
- ``success``: fraction of lookups whose result contains the closest live node;
- ``found``: mean fraction of the true k closest live nodes present in the result;
- ``hops``: mean and 99th percentile of the lookup's round depth (``LookupStats.hops``);
- ``msgs``: mean and 99th percentile of requests sent per lookup.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.node import DhtNode
from p2pstore.testing.dht_memnet import Behaviour, MemoryNetwork
from quic_transport.identity import NodeId, NodeKey

SIM_EPOCH = 1_800_000_000.0  # wall-clock origin of virtual time (Unix seconds)


@dataclass(frozen=True, slots=True)
class LookupReport:
    nodes: int
    gone: float
    lookups: int
    success: float
    found: float
    hops_mean: float
    hops_p99: float
    msgs_mean: float
    msgs_p99: float
    virtual_s_mean: float


def random_id(rng: random.Random) -> NodeId:
    return NodeId(rng.randbytes(20))


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return 0.0
    return float(s[min(len(s) - 1, int(q * len(s)))])


class SimGrid:
    """A network of ``DhtNode``s on one ``MemoryNetwork`` (run inside ``run_virtual``)."""

    def __init__(
        self, *, seed: int = 0, config: DhtConfig | None = None, net: MemoryNetwork | None = None
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config or DhtConfig()
        self.net = net or MemoryNetwork(rng=random.Random(seed + 1))
        self.clock = LoopClock(epoch=SIM_EPOCH)
        self.nodes: dict[NodeId, DhtNode] = {}

    def add_node(
        self,
        *,
        seeds_from: Sequence[NodeId] = (),
        key: NodeKey | None = None,
        server: bool = True,
    ) -> DhtNode:
        """A new node (random ID, or ``key``'s ID with ``key`` as its announcement signer)
        with handlers registered; not yet joined."""
        nid = random_id(self.rng) if key is None else key.node_id
        t = self.net.add(nid)
        seeds = [self.net.nodes[s].contact for s in seeds_from]
        node = DhtNode(
            nid,
            t,
            clock=self.clock,
            seeds=seeds,
            config=self.config,
            rng=random.Random(self.rng.getrandbits(64)),
            server=server,
            signer=key,
        )
        node.register_handlers()
        self.nodes[nid] = node
        return node

    async def grow(self, n: int, *, parallel: int = 1) -> None:
        """Add nodes until there are ``n``; each joins via the first node as its seed."""
        if not self.nodes:
            self.add_node()
        first = next(iter(self.nodes))
        while len(self.nodes) < n:
            batch = [
                self.add_node(seeds_from=[first]) for _ in range(min(parallel, n - len(self.nodes)))
            ]
            await asyncio.gather(*(node.bootstrap() for node in batch))

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes.values()))

    def kill_fraction(self, fraction: float) -> None:
        ids = list(self.nodes)
        for nid in self.rng.sample(ids, round(fraction * len(ids))):
            self.net.kill(nid)

    def set_behaviour_fraction(
        self, fraction: float, behaviour: Behaviour, *, spare: Sequence[NodeId] = ()
    ) -> list[NodeId]:
        live = [n for n in self.net.live_ids() if n not in spare]
        chosen = self.rng.sample(live, round(fraction * len(live)))
        for nid in chosen:
            self.net.set_behaviour(nid, behaviour)
        return chosen

    def honest_live(self) -> list[NodeId]:
        return [n for n, t in self.net.nodes.items() if t.alive and t.behaviour is Behaviour.HONEST]

    def true_closest(self, target: NodeId, k: int, among: Sequence[NodeId]) -> list[NodeId]:
        t = int(target)
        return sorted(among, key=lambda n: int(n) ^ t)[:k]

    async def measure(self, lookups: int, *, gone: float = 0.0) -> LookupReport:
        """Run ``lookups`` lookups for random keys from random honest live nodes."""
        honest = self.honest_live()
        eligible = set(honest)  # the nodes a correct lookup can return
        k = self.config.k
        succ = 0
        found: list[float] = []
        hops: list[float] = []
        msgs: list[float] = []
        durations: list[float] = []
        loop = asyncio.get_running_loop()
        for _ in range(lookups):
            origin = self.nodes[self.rng.choice(honest)]
            target = random_id(self.rng)
            truth = self.true_closest(target, k, list(eligible))
            t0 = loop.time()
            out = await origin.lookup_detailed(target)
            durations.append(loop.time() - t0)
            got = {c.node_id for c in out.contacts}
            if origin.node_id in truth:
                got.add(origin.node_id)  # the origin knows itself; lookups exclude it
            succ += truth[0] in got
            found.append(len(got & set(truth)) / len(truth))
            hops.append(out.stats.hops)
            msgs.append(out.stats.queries)
        n = max(1, lookups)
        return LookupReport(
            nodes=len(self.nodes),
            gone=gone,
            lookups=lookups,
            success=succ / n,
            found=sum(found) / n,
            hops_mean=sum(hops) / n,
            hops_p99=percentile(hops, 0.99),
            msgs_mean=sum(msgs) / n,
            msgs_p99=percentile(msgs, 0.99),
            virtual_s_mean=sum(durations) / n,
        )
