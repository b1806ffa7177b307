"""A storage peer killed mid-upload (docs/grid.md, "Peers that vanish"): wall time of
``p2pstore put`` of a 200 MB file on a real 10-node local grid, undisturbed and
with one storage node killed (SIGKILL) a third of the way through its share, in
alternation, for both key modes. Prints one JSON line per mode with every timing
and the ratio of the medians (the goal: at most 1.5). ``P2PSTORE_BENCH_VANISH_MB``
and ``P2PSTORE_BENCH_VANISH_RUNS`` change the size (default 200) and the runs (3).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cli(*args: str | Path, timeout: float = 300.0) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(f"p2pstore {' '.join(map(str, args))}: {proc.stderr.strip()}")
    return proc.stdout


def _incoming(node: Path) -> int:
    total = 0
    for p in (node / "storage" / "incoming").iterdir():
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            continue
    return total


def _put(node: Path, src: Path, mode: str, victim: Path | None, share: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pstore.cli", "put", "--mode", mode, "--node", node, src],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if victim is not None:
        while _incoming(victim) < share // 3 and proc.poll() is None:
            time.sleep(0.01)
        pid = int((victim / "run" / "node.pid").read_text())
        os.kill(pid, signal.SIGKILL)
    _out, err = proc.communicate(timeout=600)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"put failed ({mode}, victim {victim}): {err.strip()}")
    return took


def main() -> None:
    size = int(os.environ.get("P2PSTORE_BENCH_VANISH_MB", "200")) * 1_000_000
    runs = int(os.environ.get("P2PSTORE_BENCH_VANISH_RUNS", "3"))
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-vanish-") as tmp:
        root = Path(tmp) / "grid"
        _cli("grid", "up", "--nodes", "10", root, timeout=120)
        try:
            node1 = root / "node1"
            src = Path(tmp) / "f.bin"
            for mode in ("convergent", "random"):
                plain: list[float] = []
                killed: list[float] = []
                for _ in range(runs):
                    for victim in (None, root / f"node{rng.randint(2, 10)}"):
                        src.write_bytes(os.urandom(size))  # new bytes: nothing deduplicates
                        t = _put(node1, src, mode, victim, size // 3)
                        (plain if victim is None else killed).append(round(t, 2))
                        if victim is not None:
                            _cli("start", victim, timeout=60)
                ratio = statistics.median(killed) / statistics.median(plain)
                print(
                    json.dumps(
                        {
                            "bench": "vanish",
                            "op": "put, one storage node killed at 1/3",
                            "mode": mode,
                            "bytes": size,
                            "nodes": 10,
                            "undisturbed_s": plain,
                            "killed_s": killed,
                            "ratio_of_medians": round(ratio, 2),
                        }
                    ),
                    flush=True,
                )
        finally:
            _cli("grid", "down", root, timeout=120)


if __name__ == "__main__":
    main()
