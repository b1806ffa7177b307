"""Node operations: bootstrap-list parsing rate, and wall time of the real CLI commands
``create-node``, ``start`` (until the node reports running), ``status`` and ``stop``
(JSON lines). The CLI figures include Python start-up and imports, which dominate."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p2pstore.node.bootstrap import MAX_SEEDS, BootstrapList, Seed, parse_bootstrap
from quic_transport.identity import NodeId


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "p2pstore.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    seeds = tuple(
        Seed(NodeId(i.to_bytes(20, "big")), f"10.0.{i // 256}.{i % 256}", 3456, f"seed {i}")
        for i in range(MAX_SEEDS)
    )
    text = BootstrapList(seeds).to_text()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        parse_bootstrap(text)
        runs.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "bench": "node",
                "op": "parse_bootstrap",
                "seeds": MAX_SEEDS,
                "best_ms": round(min(runs) * 1000, 2),
                "lines_per_s": round(MAX_SEEDS / min(runs)),
            }
        )
    )
    timings: dict[str, list[float]] = {"create-node": [], "start": [], "status": [], "stop": []}
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-") as tmp:
        for i in range(3):
            node = str(Path(tmp) / f"n{i}")
            timings["create-node"].append(_cli("create-node", node, "--listen", "127.0.0.1:0"))
            timings["start"].append(_cli("start", node))
            timings["status"].append(_cli("status", node))
            timings["stop"].append(_cli("stop", node))
    for op, values in timings.items():
        print(
            json.dumps(
                {
                    "bench": "node",
                    "op": f"cli {op}",
                    "best_ms": round(min(values) * 1000),
                    "median_ms": round(statistics.median(values) * 1000),
                    "runs": len(values),
                }
            )
        )


if __name__ == "__main__":
    main()
