"""Mutable files and live directories on a real local grid (docs/mutable.md,
"Measured"; ``make bench-mutable``, part of ``make bench``; JSON lines).

``p2pstore grid up --nodes 4`` (real node processes); node1 writes, node2 reads.

Timings (``--mib``, 1 by default; ``--runs`` rounds after an uncounted warm-up
round). Each round puts fresh random bytes, so nothing deduplicates; the writes of
a round run first, then the reads (each read checks it got the bytes last put
there), and the order within each phase
rotates from round to round so that no operation always follows the same one.
Every operation runs twice: through the CLI (a new ``p2pstore`` process, as a user
runs it: Python start-up included, see ``op: "cli-floor"``) and through the HTTP
API from this process (``front: "http"``: the node's own work plus one local HTTP
request). The operations:

- ``publish``: a new version of a mutable file (``put FILE WRITECAP``;
  ``PUT /api/v1/file/<write cap>``), beside ``put FILE shared:/bench/x`` replacing
  a file of the shared drive and ``put FILE LIVECAP/x`` replacing a file of a live
  directory (``PUT /api/v1/vdrive/file``; over HTTP with ``mode=random`` like a
  mutable version; the CLI's default is convergent, reading the file in place);
- ``mkdir``: the smallest change of a directory (``mkdir LIVECAP/dN`` against
  ``mkdir shared:/bench/dN``): no file content, only the directory's new version;
- ``get``: the latest version on another node (``get READCAP``,
  ``get shared:/bench/x``, ``get LIVE-READCAP/x``).

Each line: median, min and max seconds over the rounds.

Peak memory (``--rss-mib``, 200 by default; ``--rss-runs`` rounds; 0 skips): a new
version of a ``--rss-mib`` mutable file published with ``put FILE WRITECAP``,
beside an immutable random-key upload of the same size, ``put --mode random FILE``
(the node reads the file in place) and ``put --mode random --send-bytes FILE`` (the
bytes travel over HTTP, as a mutable version's always do). Before each upload node1
(the node that encodes: it serves the CLI's API) is restarted and its peak RSS
counter reset (``/proc/PID/clear_refs``), so every figure starts from the same
fresh process; after it, ``VmHWM`` is the node's peak and ``ru_maxrss`` (from
``wait4``) the CLI's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pstore.api_client import NodeClient
from p2pstore.node.nodedir import NodeDir
from p2pstore.node.pidfile import probe

Op = Callable[[int], None]  # one timed operation of round i; raises on a failure


def cli(*args: str | Path, timeout: float = 600) -> tuple[float, int, str]:
    """Run ``p2pstore ARGS``: (wall seconds, the process's peak RSS in KiB, stdout).
    Raises with its output if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pstore.cli", *map(str, args)], stdout=out, stderr=err
        )
        deadline = time.monotonic() + timeout
        while True:  # wait4 gives this child's own rusage (ru_maxrss: its peak RSS)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        if proc.returncode != 0:
            raise RuntimeError(
                f"p2pstore {' '.join(map(str, args))} exited {proc.returncode}: "
                f"{err.read().decode()[-2000:]}{stdout[-500:]}"
            )
    return seconds, usage.ru_maxrss, stdout


def node_pid(node: Path) -> int:
    pid = probe(NodeDir(node).pid_path).pid
    assert pid is not None, f"{node} is not running"
    return pid


def vm(pid: int, field: str) -> int:
    """``VmHWM``/``VmRSS`` of process ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def spread(xs: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "median": round(statistics.median(xs), digits),
        "min": round(min(xs), digits),
        "max": round(max(xs), digits),
    }


Key = tuple[str, str, str]  # (operation, target, front)


class Timings:
    """The timed operations on one grid, their setup and their figures."""

    def __init__(self, root: Path, grid: Path, size: int) -> None:
        self.root, self.size = root, size
        self.w_node, self.r_node = grid / "node1", grid / "node2"
        self.w_api, self.r_api = NodeClient.for_node(self.w_node), NodeClient.for_node(self.r_node)
        self.expect: dict[str, bytes] = {}  # target -> the bytes its last publish wrote
        self.seconds: dict[Key, list[float]] = {}
        self.mismatches = 0

    def setup(self) -> None:
        first = self.root / "first.bin"
        first.write_bytes(os.urandom(self.size))
        made = json.loads(cli("put", "--node", self.w_node, "--mutable", "--json", first)[2])
        live = json.loads(cli("mkdir", "--live", "--json", "--node", self.w_node)[2])
        cli("mkdir", "-p", "--node", self.w_node, "shared:/bench")
        self.write_to = {
            "mutable": made["write_cap"],
            "shared": "shared:/bench/x",
            "live": f"{live['write_cap']}/x",
        }
        self.read_from = {
            "mutable": made["read_cap"],
            "shared": "shared:/bench/x",
            "live": f"{live['read_cap']}/x",
        }
        self.dirs = {"shared": "shared:/bench", "live": live["write_cap"]}
        for target in ("shared", "live"):  # so that every timed put replaces a file
            cli("put", "--node", self.w_node, first, self.write_to[target])

    # -- the operations: each takes the round number and the bytes to write -------------
    def publish_cli(self, target: str, i: int, data: bytes) -> None:
        path = self.root / "data.bin"
        path.write_bytes(data)
        cli("put", "--node", self.w_node, path, self.write_to[target])

    def publish_http(self, target: str, i: int, data: bytes) -> None:
        if target == "mutable":
            self.w_api.put_mutable(
                io.BytesIO(data), write_cap=self.write_to[target], size=len(data)
            )
        else:
            self.w_api.put_path(
                io.BytesIO(data), self.write_to[target], size=len(data), mode="random"
            )

    def mkdir_cli(self, target: str, i: int, data: bytes) -> None:
        cli("mkdir", "--node", self.w_node, f"{self.dirs[target]}/cli{i}")

    def mkdir_http(self, target: str, i: int, data: bytes) -> None:
        self.w_api.mkdir(f"{self.dirs[target]}/http{i}")

    def get_cli(self, target: str, i: int, data: bytes) -> None:
        out = self.root / "out.bin"
        cli("get", "--node", self.r_node, self.read_from[target], out)
        self.mismatches += out.read_bytes() != self.expect[target]
        out.unlink()

    def get_http(self, target: str, i: int, data: bytes) -> None:
        sink = io.BytesIO()
        if target == "mutable":
            self.r_api.get(self.read_from[target], sink)
        else:
            self.r_api.get_path(self.read_from[target], sink)
        self.mismatches += sink.getvalue() != self.expect[target]

    def cli_floor(self, target: str, i: int, data: bytes) -> None:
        cli("--version")

    def phases(self) -> list[list[tuple[Key, Callable[[str, int, bytes], None]]]]:
        """[writes, reads]: each (operation, target, front) with its method."""
        targets = ("mutable", "shared", "live")
        writes = [(("publish", t, f), m) for t in targets for f, m in self._fronts("publish")]
        writes += [
            (("mkdir", t, f), m) for t in ("shared", "live") for f, m in self._fronts("mkdir")
        ]
        writes.append((("cli-floor", "-", "cli"), self.cli_floor))
        reads = [(("get", t, f), m) for t in targets for f, m in self._fronts("get")]
        return [writes, reads]

    def _fronts(self, op: str) -> list[tuple[str, Callable[[str, int, bytes], None]]]:
        return [("cli", getattr(self, f"{op}_cli")), ("http", getattr(self, f"{op}_http"))]

    def round(self, i: int) -> None:
        """Every write with fresh bytes, then every read of the last bytes written;
        the order within each phase rotated by ``i``."""
        for phase in self.phases():
            phase = phase[i % len(phase) :] + phase[: i % len(phase)]
            for key, method in phase:
                data = os.urandom(self.size)
                t0 = time.perf_counter()
                method(key[1], i, data)
                self.seconds.setdefault(key, []).append(time.perf_counter() - t0)
                if key[0] == "publish":
                    self.expect[key[1]] = data

    def lines(self, runs: int) -> list[dict[str, Any]]:
        return [
            {
                "bench": "mutable",
                "op": op,
                "target": target,
                "front": front,
                "mib": self.size / (1 << 20),
                "runs": runs,
                "seconds": spread(xs),
            }
            for (op, target, front), xs in sorted(self.seconds.items(), key=self._order)
        ]

    def _order(self, item: tuple[Key, list[float]]) -> int:
        keys = [key for phase in self.phases() for key, _ in phase]
        return keys.index(item[0])


# -- peak memory of a large upload --------------------------------------------------------
def restart(node: Path, peers: int) -> int:
    """Restart the node; its pid once it knows ``peers`` peers again."""
    cli("--node", node, "restart", timeout=120)
    client = NodeClient.for_node(node)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if int(client.status().get("peers_known") or 0) >= peers:
                break
        except Exception:  # not serving yet
            pass
        time.sleep(0.2)
    return node_pid(node)


def peak_rss(root: Path, grid: Path, mib: int, runs: int, nodes: int) -> list[dict[str, Any]]:
    node = grid / "node1"
    big = root / "big.bin"
    with big.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    write_cap = json.loads(cli("put", "--node", node, "--mutable", "--json", big)[2])["write_cap"]
    uploads = {
        "mutable-publish": ("put", "--node", node, big, write_cap),
        "random": ("put", "--node", node, "--mode", "random", big),
        "random-send-bytes": ("put", "--node", node, "--mode", "random", "--send-bytes", big),
    }
    got: dict[str, dict[str, list[float]]] = {k: {} for k in uploads}
    names = list(uploads)
    for i in range(runs):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            pid = restart(node, peers=nodes)  # the introducer and the other storage nodes
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = vm(pid, "VmRSS")
            seconds, cli_kib, _ = cli(*uploads[name])
            peak = vm(pid, "VmHWM")
            row = got[name]
            for k, v in (
                ("seconds", seconds),
                ("node_rss_before_mib", before / 1024),
                ("node_peak_mib", peak / 1024),
                ("node_growth_mib", (peak - before) / 1024),
                ("cli_peak_mib", cli_kib / 1024),
            ):
                row.setdefault(k, []).append(v)
    return [
        {"bench": "mutable-rss", "upload": name, "mib": mib, "runs": runs}
        | {k: spread(v, 1) for k, v in row.items()}
        for name, row in got.items()
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_mutable")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--mib", type=float, default=1.0, help="size of the timed files")
    ap.add_argument("--runs", type=int, default=7, help="rounds of the timed operations")
    ap.add_argument("--rss-mib", type=int, default=200, help="size of the large upload (0: none)")
    ap.add_argument("--rss-runs", type=int, default=3, help="rounds of the large uploads")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-mutable-") as tmp:
        root = Path(tmp)
        grid = root / "grid"
        cli("grid", "up", "--nodes", str(args.nodes), grid, timeout=300)
        try:
            t = Timings(root, grid, int(args.mib * (1 << 20)))
            t.setup()
            t.round(0)  # a warm-up round, not counted: first connections, caches
            t.seconds.clear()
            for i in range(1, args.runs + 1):
                t.round(i)
            rows = t.lines(args.runs)
            if args.rss_mib:
                rows += peak_rss(root, grid, args.rss_mib, args.rss_runs, args.nodes)
        finally:
            cli("grid", "down", grid, timeout=120)
    load = [round(load0, 1), round(os.getloadavg()[0], 1)]
    for row in rows:
        print(json.dumps(row | {"load": load}), flush=True)
    if t.mismatches:
        raise SystemExit(f"{t.mismatches} reads did not return the bytes last published")


if __name__ == "__main__":
    main(sys.argv[1:])
