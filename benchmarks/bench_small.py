"""Small files on a real local grid (JSON lines; ``make bench`` runs it).

The grid of ``make bench-tahoe``'s p2pstore side: an introducer, 10 storage nodes
and a client node without storage, 3-of-10, on loopback. Puts of fresh random
files of a few KB through the client node's HTTP API, one at a time (what one
file of a backup costs), each timed; the CPU-seconds of the client node and of
the storage nodes (summed) per put come from ``/proc``. Every file is read back
and compared at the end.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--size", type=int, default=3000, help="bytes per file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="p2ps-bench-small-") as tmp:
        grid = P2pGrid(Path(tmp), False, "convergent")
        try:
            grid.up()
            api = NodeClient.for_node(grid.client)
            api.put(io.BytesIO(os.urandom(args.size)), size=args.size)  # connections up
            client0 = cpu_s(grid.client_pid)
            storage0 = sum(cpu_s(p) for p in grid.storage_pids)
            times, sent = [], []
            for _ in range(args.files):
                data = os.urandom(args.size)
                t0 = time.perf_counter()
                cap = api.put(io.BytesIO(data), size=len(data))["cap"]
                times.append(time.perf_counter() - t0)
                sent.append((cap, data))
            client_cpu = (cpu_s(grid.client_pid) - client0) / args.files
            storage_cpu = (sum(cpu_s(p) for p in grid.storage_pids) - storage0) / args.files
            bad = 0
            for cap, data in sent:
                out = io.BytesIO()
                api.get(cap, out)
                bad += out.getvalue() != data
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
                "read_back_mismatches": bad,
                "load1": load1(),
            }
        ),
        flush=True,
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
