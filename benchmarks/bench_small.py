"""Small files on a real local grid (JSON lines; ``make bench`` runs it).

The grid of ``make bench-tahoe``'s p2pstore side: an introducer, 10 storage nodes
and a client node without storage, 3-of-10, on loopback. Puts of fresh random
files of a few KB through the client node's HTTP API, one at a time (what one
file of a backup costs), each timed; the CPU-seconds of the client node and of
the storage nodes (summed) per put come from ``/proc``, less what the same
processes spend idle (measured first for ``--idle`` seconds: each refreshes its
status file once a second). Then every file is read back the same way, one get
at a time, timed and costed alike, and compared with what was put.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_tahoe import P2pGrid, cpu_s, load1
from p2pstore.api_client import NodeClient


def _idle(grid: P2pGrid, seconds: float) -> tuple[float, float]:
    """CPU-seconds per second of the client node and of the storage nodes (summed)
    while nothing is asked of them."""
    client0, storage0 = cpu_s(grid.client_pid), sum(cpu_s(p) for p in grid.storage_pids)
    time.sleep(seconds)
    client1, storage1 = cpu_s(grid.client_pid), sum(cpu_s(p) for p in grid.storage_pids)
    return (client1 - client0) / seconds, (storage1 - storage0) / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--size", type=int, default=3000, help="bytes per file")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured")
    args = ap.parse_args(argv)
    if args.files < 1 or args.size < 1:
        ap.error("--files and --size must be at least 1")
    with tempfile.TemporaryDirectory(prefix="p2ps-bench-small-") as tmp:
        grid = P2pGrid(Path(tmp), False, "convergent")
        try:
            grid.up()
            api = NodeClient.for_node(grid.client)
            api.put(io.BytesIO(os.urandom(args.size)), size=args.size)  # connections up
            client_idle, storage_idle = _idle(grid, args.idle)
            client0 = cpu_s(grid.client_pid)
            storage0 = sum(cpu_s(p) for p in grid.storage_pids)
            start = time.perf_counter()
            times, sent = [], []
            for _ in range(args.files):
                data = os.urandom(args.size)
                t0 = time.perf_counter()
                cap = api.put(io.BytesIO(data), size=len(data))["cap"]
                times.append(time.perf_counter() - t0)
                sent.append((cap, data))
            took = time.perf_counter() - start
            client_cpu = (cpu_s(grid.client_pid) - client0 - client_idle * took) / args.files
            storage = sum(cpu_s(p) for p in grid.storage_pids) - storage0 - storage_idle * took
            storage_cpu = storage / args.files
            bad, get_times = 0, []
            client0 = cpu_s(grid.client_pid)
            storage0 = sum(cpu_s(p) for p in grid.storage_pids)
            start = time.perf_counter()
            for cap, data in sent:
                out = io.BytesIO()
                t0 = time.perf_counter()
                api.get(cap, out)
                get_times.append(time.perf_counter() - t0)
                bad += out.getvalue() != data
            took = time.perf_counter() - start
            client_get = (cpu_s(grid.client_pid) - client0 - client_idle * took) / args.files
            storage = sum(cpu_s(p) for p in grid.storage_pids) - storage0 - storage_idle * took
            storage_get = storage / args.files
        finally:
            grid.down()
    print(
        json.dumps(
            {
                "bench": "small_files",
                "files": args.files,
                "bytes_each": args.size,
                "put_ms_median": round(statistics.median(times) * 1000, 1),
                "put_ms_min": round(min(times) * 1000, 1),
                "put_ms_max": round(max(times) * 1000, 1),
                "client_node_cpu_ms_per_put": round(client_cpu * 1000, 1),
                "storage_nodes_cpu_ms_per_put": round(storage_cpu * 1000, 1),
                "get_ms_median": round(statistics.median(get_times) * 1000, 1),
                "get_ms_min": round(min(get_times) * 1000, 1),
                "get_ms_max": round(max(get_times) * 1000, 1),
                "client_node_cpu_ms_per_get": round(client_get * 1000, 1),
                "storage_nodes_cpu_ms_per_get": round(storage_get * 1000, 1),
                "idle_cpu_per_s": {
                    "client": round(client_idle, 4),
                    "storage": round(storage_idle, 4),
                },
                "read_back_mismatches": bad,
                "load1": load1(),
            }
        ),
        flush=True,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
