"""DHT lookups at scale: real DhtNode logic on an in-memory network in virtual time.

For each network size (default 1,000 and 10,000; ``DHT_BENCH_SIZES=1000,5000`` to
change) nodes join one by one through a single seed; then lookups for random keys are
measured against the true closest live nodes with 0%, 10% and 30% of nodes silently
gone, for two lookup parameter sets: alpha=3 with strict termination (the k closest
must answer) and libp2p's alpha=10 stopping once the 3 closest have answered (plus
alpha=10 strict and alpha=3 with beta=3 on networks of up to 2,000 nodes).
After the join, 100 records are published from random nodes; at each churn level
every record is fetched from a random live node (``op: get``: fraction found with
the right value; requests of the value lookup, and all requests on the network
meanwhile per get, which adds write-backs, record handovers and pings).

Client mode and node announcements (``op: clients``; ``DHT_BENCH_CLIENT_SIZES``,
default 1000): 30% of the nodes join in client mode and announce themselves; then
client IDs found in servers' routing tables (must be 0), lookups from random nodes
for random keys against the true closest *servers*, and for random keys whether the
announcements a lookup collects include the nearest client to the key (and the 3
nearest): how an uploader finds NATed storage nodes near a storage index.
One JSON object per line; ``virtual_s`` is simulated seconds, ``wall_s`` real seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from dht.config import DhtConfig
from dht.records import record_key
from p2pstore.testing.dht_sim import SimGrid
from p2pstore.testing.vloop import run_virtual
from quic_transport.identity import NodeId, NodeKey

RECORDS = 100  # records published after the join and fetched at each churn level

VARIANTS = {
    "alpha3-strict": DhtConfig(alpha=3, beta=None),
    "alpha10-beta3": DhtConfig(alpha=10, beta=3),
}
# Extra points of comparison, run on the smaller networks only (to bound bench time).
EXTRA_VARIANTS = {
    "alpha10-strict": DhtConfig(alpha=10, beta=None),
    "alpha3-beta3": DhtConfig(alpha=3, beta=3),
}


async def _scenario(n: int, lookups: int, seed: int) -> None:
    variants = {**VARIANTS, **EXTRA_VARIANTS} if n <= 2000 else VARIANTS
    grid = SimGrid(seed=seed, config=VARIANTS["alpha3-strict"])
    t0 = time.perf_counter()
    await grid.grow(n)
    join_wall = time.perf_counter() - t0
    sizes = [len(node.table) for node in grid.nodes.values()]
    print(
        json.dumps(
            {
                "bench": "dht",
                "op": "join",
                "nodes": n,
                "wall_s": round(join_wall, 1),
                "msgs_per_join": round(grid.net.messages / n, 1),
                "table_mean": round(sum(sizes) / n, 1),
            }
        ),
        flush=True,
    )
    owners = [NodeKey.generate() for _ in range(RECORDS)]
    ids = list(grid.nodes)
    for owner in owners:
        await grid.nodes[grid.rng.choice(ids)].publish(owner, b"bench", owner.node_id.raw)
    killed = 0.0
    for gone in (0.0, 0.1, 0.3):
        if gone > killed:
            # kill (gone - killed) of the original population among the survivors
            live = grid.net.live_ids()
            extra = round((gone - killed) * n)
            for nid in grid.rng.sample(live, extra):
                grid.net.kill(nid)
            killed = gone
        for name, cfg in variants.items():
            for node in grid.nodes.values():
                node.config = cfg
            t1 = time.perf_counter()
            rep = await grid.measure(lookups, gone=gone)
            row = {"bench": "dht", "op": "lookup", "variant": name, **dataclasses.asdict(rep)}
            for key in list(row):
                if isinstance(row[key], float):
                    row[key] = round(row[key], 4)
            row["wall_s"] = round(time.perf_counter() - t1, 1)
            print(json.dumps(row), flush=True)
        for node in grid.nodes.values():
            node.config = VARIANTS["alpha3-strict"]
        await _measure_gets(grid, owners, gone)
    await grid.close()


async def _measure_gets(grid: SimGrid, owners: list[NodeKey], gone: float) -> None:
    """Fetch every published record from a random live node; count correct answers."""
    live = grid.honest_live()
    before = grid.net.messages
    found = 0
    queries = 0
    for owner in owners:
        reader = grid.nodes[grid.rng.choice(live)]
        out = await reader.get_detailed(record_key(owner.public_key, b"bench"))
        rec = out.record
        found += rec is not None and rec.value == owner.node_id.raw
        queries += out.stats.queries
    row = {
        "bench": "dht",
        "op": "get",
        "nodes": len(grid.nodes),
        "gone": gone,
        "records": len(owners),
        "found": round(found / len(owners), 4),
        "lookup_msgs_mean": round(queries / len(owners), 1),
        # every request on the network meanwhile, per get: write-backs, handovers, pings
        "all_msgs_mean": round((grid.net.messages - before) / len(owners), 1),
    }
    print(json.dumps(row), flush=True)


async def _clients_scenario(n: int, lookups: int, seed: int) -> None:
    grid = SimGrid(seed=seed, config=VARIANTS["alpha3-strict"])
    n_clients = round(0.3 * n)
    t0 = time.perf_counter()
    await grid.grow(n - n_clients)
    servers = list(grid.nodes)
    first = servers[0]
    keys = [NodeKey.generate() for _ in range(n_clients)]
    clients = [grid.add_node(seeds_from=[first], key=k, server=False) for k in keys]
    for c in clients:
        await c.bootstrap()
    held = [await c.announce(c.node_id.raw) for c in clients]
    wall = time.perf_counter() - t0
    client_ids = {c.node_id for c in clients}
    in_tables = sum(1 for s in servers for cid in client_ids if cid in grid.nodes[s].table)
    anns_held = [len(grid.nodes[s].anns) for s in servers]
    everyone = list(grid.nodes)
    succ = found = near1 = near3 = queries = 0
    for _ in range(lookups):
        origin = grid.nodes[grid.rng.choice(everyone)]
        target = NodeId(grid.rng.randbytes(20))
        out = await origin.lookup_detailed(target)
        truth = grid.true_closest(target, 20, servers)
        got = {c.node_id for c in out.contacts}
        if origin.node_id in truth:
            got.add(origin.node_id)
        succ += truth[0] in got
        found += len(got & set(truth))
        queries += out.stats.queries
        ann_ids = {a.node_id for a in out.announcements}
        near = grid.true_closest(target, 3, list(client_ids))
        near1 += near[0] in ann_ids
        near3 += len(ann_ids & set(near))
    row = {
        "bench": "dht",
        "op": "clients",
        "nodes": n,
        "clients": n_clients,
        "client_ids_in_server_tables": in_tables,
        "announce_held_mean": round(sum(held) / len(held), 1),
        "anns_per_server_mean": round(sum(anns_held) / len(anns_held), 1),
        "lookups": lookups,
        "success": round(succ / lookups, 4),
        "found": round(found / (20 * lookups), 4),
        "msgs_mean": round(queries / lookups, 1),
        "nearest_client_announced": round(near1 / lookups, 4),
        "nearest3_clients_announced": round(near3 / (3 * lookups), 4),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(row), flush=True)
    await grid.close()


def main() -> None:
    sizes = [int(s) for s in os.environ.get("DHT_BENCH_SIZES", "1000,10000").split(",") if s]
    for n in sizes:
        lookups = 500 if n <= 2000 else 300
        run_virtual(_scenario(n, lookups, seed=n))
    client_sizes = os.environ.get("DHT_BENCH_CLIENT_SIZES", "1000")
    for n in [int(s) for s in client_sizes.split(",") if s]:
        run_virtual(_clients_scenario(n, 300, seed=n + 1))


if __name__ == "__main__":
    main()
