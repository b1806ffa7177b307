"""``p2pstore put`` of a local file with the node reading it in place (``local_path``)
against the same put sending the bytes over HTTP (``--send-bytes``), on a real
4-node local grid (JSON lines; ``make bench`` runs it).

Each run puts a fresh random file (no deduplication), alternating the two ways;
the figures are the median wall time of the CLI, the node's CPU seconds for the
put (``/proc/<pid>/stat`` of the node the CLI talks to) and the bytes the node
wrote to its spool (``/proc/<pid>/io`` write_bytes, where the kernel counts them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p2pstore.node.nodedir import NodeDir
from p2pstore.node.pidfile import probe


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _written(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    size = args.mib << 20
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-put-") as tmp:
        root = Path(tmp)
        grid = root / "grid"
        _cli("grid", "up", "--nodes", "4", grid, timeout=300)
        node = grid / "node1"
        pid = probe(NodeDir(node).pid_path).pid
        assert pid is not None
        results: dict[str, dict[str, list[float]]] = {}
        try:
            for i in range(args.runs):
                for way in ("send-bytes", "local-path"):
                    f = root / f"{way}-{i}"
                    f.write_bytes(os.urandom(size))
                    extra = ["--send-bytes"] if way == "send-bytes" else []
                    cpu0, w0, t0 = _cpu(pid), _written(pid), time.perf_counter()
                    _cli("put", f, "--node", node, *extra)
                    r = results.setdefault(way, {"s": [], "cpu": [], "spool": []})
                    r["s"].append(time.perf_counter() - t0)
                    r["cpu"].append(_cpu(pid) - cpu0)
                    r["spool"].append(_written(pid) - w0)
                    f.unlink()
        finally:
            _cli("grid", "down", grid, timeout=120)
    for way, r in results.items():
        s = statistics.median(r["s"])
        print(
            json.dumps(
                {
                    "bench": "put_local",
                    "way": way,
                    "mib": args.mib,
                    "runs": args.runs,
                    "median_s": round(s, 2),
                    "mb_per_s": round(size / s / 1e6, 1),
                    "node_cpu_s": round(statistics.median(r["cpu"]), 2),
                    "node_disk_written_mb": round(statistics.median(r["spool"]) / 1e6, 1),
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1:])
