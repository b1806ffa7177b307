"""``make bench-scale``: N real node processes on 127.0.0.1 (N = 25, 50, 100 by
default), each a daemon started as ``p2pstore grid up`` starts them, measured as a
user's machine would see them (docs/local-grid.md, "At scale").

For each N it prints one JSON line:

- ``start_s``: creating the node directories and starting every process;
- ``join_s``: from the start until every node has joined (its join round reached
  the grid and its routing table holds min(N, k=20) peers);
- ``put_s`` / ``get_s``: 10 MB uploaded at a random node and read back at another
  (``puts_ok``/``gets_ok`` count the successes, every byte compared);
- ``locate_p50_ms`` / ``locate_p99_ms``: 40 ``info`` calls for those files at
  random nodes once the grid is quiet (a DHT lookup of the storage index plus one
  ``storage.list`` round: what starts every download), median and worst;
- ``lookup_p50_ms`` / ``lookup_p99_ms``: DHT lookups as the nodes timed them
  (``details.dht.lookups``, the last 200 of each node, joining included), the
  median over the nodes of their median and of their 99th percentile;
- ``rss_total_mb``, ``rss_node_mb`` (median), and, over ``--idle`` seconds of a
  quiet grid after ``--settle`` seconds, ``idle_cpu_pct`` (percent of one core per
  node: median and max) and ``idle_bytes_per_s`` (UDP bytes sent + received per
  node, from the node's own counters read through its API: median and max).

Nodes run with the home defaults for their background work (the local grid's
1-second status refresh is turned back to the default) so the idle figures are
what a home daemon costs. ``python -m benchmarks.scale --nodes 25 --idle 60``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from p2pstore.api_client import NodeClient
from p2pstore.node import localgrid
from p2pstore.node.nodedir import NodeDir
from p2pstore.node.status_file import read_status_file

TICKS = os.sysconf("SC_CLK_TCK")
K = 20


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def statuses(grid: localgrid.Grid) -> dict[str, dict[str, Any]]:
    out = {}
    for name in grid.storage_names:
        doc = read_status_file(NodeDir(grid.path(name)))
        if doc:
            out[name] = doc
    return out


def joined(doc: dict[str, Any], want: int) -> bool:
    join = (doc.get("details") or {}).get("join") or {}
    return join.get("joined_at") is not None and int(doc.get("peers_known") or 0) >= want


def traffic(doc: dict[str, Any]) -> int:
    t = (doc.get("details") or {}).get("traffic") or {}
    return int(t.get("bytes_in", 0)) + int(t.get("bytes_out", 0))


def home_defaults(grid: localgrid.Grid) -> None:
    """Undo the local grid's fast status refresh (status_interval = 1s)."""
    for name in grid.names:
        path = NodeDir(grid.path(name)).config_path
        text = path.read_text()
        path.write_text(text.replace('status_interval = "1s"', '# status_interval = "15s"'))


def transfers(grid: localgrid.Grid, size: int, rounds: int, rng: random.Random) -> dict[str, Any]:
    names = list(grid.storage_names)
    puts, gets, ok_put, ok_get, caps = [], [], 0, 0, []
    for _ in range(rounds):
        a, b = rng.sample(names, 2)
        data = rng.randbytes(size)
        try:
            t = time.monotonic()
            cap = NodeClient.for_node(grid.path(a)).put(io.BytesIO(data), size=size)["cap"]
            puts.append(time.monotonic() - t)
            ok_put += 1
            caps.append(cap)
            sink = io.BytesIO()
            t = time.monotonic()
            NodeClient.for_node(grid.path(b)).get(cap, sink)
            gets.append(time.monotonic() - t)
            ok_get += sink.getvalue() == data
        except Exception as e:
            print(f"# transfer failed: {e}", file=sys.stderr)
    took = sorted(locate(grid, caps, 40, rng))
    return {
        "locate_p50_ms": round(took[len(took) // 2] * 1000, 1) if took else None,
        "locate_p99_ms": round(took[-1] * 1000, 1) if took else None,
        "put_s": round(statistics.median(puts), 2) if puts else None,
        "get_s": round(statistics.median(gets), 2) if gets else None,
        "puts_ok": f"{ok_put}/{rounds}",
        "gets_ok": f"{ok_get}/{rounds}",
    }


def live_traffic(grid: localgrid.Grid, names: list[str]) -> dict[str, int]:
    """UDP bytes so far, asked of each node's API (the status file may be a minute old)."""
    return {n: traffic(NodeClient.for_node(grid.path(n)).status()) for n in names}


def locate(grid: localgrid.Grid, caps: list[str], calls: int, rng: random.Random) -> list[float]:
    """Seconds per ``GET /api/v1/info/<cap>`` at random nodes: a DHT lookup of the
    storage index plus one ``storage.list`` round, as every download starts."""
    names, out = list(grid.storage_names), []
    for _ in range(calls if caps else 0):
        client = NodeClient.for_node(grid.path(rng.choice(names)))
        t = time.monotonic()
        client.info(rng.choice(caps))
        out.append(time.monotonic() - t)
    return out


def idle(grid: localgrid.Grid, seconds: float) -> dict[str, Any]:
    docs = statuses(grid)
    pids = {n: int(d["pid"]) for n, d in docs.items()}
    cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
    net0 = live_traffic(grid, list(pids))
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = [100 * (cpu_seconds(p) - cpu0[n]) / elapsed for n, p in pids.items()]
    net1 = live_traffic(grid, list(pids))
    net = [(net1[n] - net0[n]) / elapsed for n in pids]
    rss = [rss_mb(p) for p in pids.values()]
    return {
        "rss_total_mb": round(sum(rss)),
        "rss_node_mb": round(statistics.median(rss), 1),
        "idle_cpu_pct": [round(statistics.median(cpu), 3), round(max(cpu), 3)],
        "idle_bytes_per_s": [round(statistics.median(net)), round(max(net))],
    }


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(n)
    root = Path(tempfile.mkdtemp(prefix=f"p2ps-scale-{n}-"))
    out = io.StringIO()
    result: dict[str, Any] = {"bench": "scale", "nodes": n}
    try:
        t0 = time.monotonic()
        grid = localgrid.create_or_extend(root, n, out)
        home_defaults(grid)
        problems = localgrid.start_all(grid, out)
        result["start_s"] = round(time.monotonic() - t0, 1)
        if problems:
            result["problems"] = problems[:5]
        want = min(n, K)  # the introducer and the other storage nodes
        deadline = time.monotonic() + args.join_timeout
        while time.monotonic() < deadline:
            docs = statuses(grid)
            if len(docs) == n and all(joined(d, want) for d in docs.values()):
                break
            time.sleep(0.5)
        docs = statuses(grid)
        behind = [name for name in grid.storage_names if not joined(docs.get(name, {}), want)]
        result["join_s"] = round(time.monotonic() - t0, 1) if not behind else None
        result["behind"] = len(behind)
        result.update(transfers(grid, args.size, args.rounds, rng))
        lookups = [
            (d.get("details") or {}).get("dht", {}).get("lookups", {})
            for d in statuses(grid).values()
        ]
        p50 = [x["p50_ms"] for x in lookups if x.get("count")]
        p99 = [x["p99_ms"] for x in lookups if x.get("count")]
        result["lookup_p50_ms"] = round(statistics.median(p50), 1) if p50 else None
        result["lookup_p99_ms"] = round(statistics.median(p99), 1) if p99 else None
        time.sleep(args.settle)
        result.update(idle(grid, args.idle))
    finally:
        localgrid.stop_all(localgrid.Grid.load(root) or grid, io.StringIO())
        shutil.rmtree(root, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    ap.add_argument("--nodes", default="25,50,100", help="comma-separated grid sizes")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of quiet measured")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds before measuring")
    ap.add_argument("--size", type=int, default=10 * 1000 * 1000, help="bytes per put/get")
    ap.add_argument("--rounds", type=int, default=5, help="put/get pairs")
    ap.add_argument("--join-timeout", type=float, default=600.0)
    args = ap.parse_args(argv)
    for n in (int(x) for x in args.nodes.split(",")):
        print(json.dumps(run(n, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
