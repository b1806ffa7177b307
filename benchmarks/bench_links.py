"""Uploads and downloads over a shaped home link (``make bench-links``; JSON lines).

Two Linux network namespaces joined by one veth pair: ``home`` (10.78.0.2), a
client node with no storage, and ``dc``, an introducer (10.78.0.1), 10 storage
nodes, each on its own address (10.78.0.10-19), and an upload helper (10.78.0.9,
``[helper] enabled``, no storage: a well-connected node that only encodes and
places, so both uploads land on the same 10 storage nodes). ``tc tbf`` shapes the
link like a home connection: 20 Mbit/s up (home -> dc) and 100 Mbit/s down
(dc -> home); the nodes in ``dc`` talk to each other over its loopback, unshaped.
The home node runs ``p2pstore put`` and ``get`` of a random file with the CLI,
directly; then it restarts with ``[helper] use = "always"`` and puts and gets
another random file of the same size through the helper (docs/helper.md). Each
figure is set beside its physical limit:

- direct upload: N/k x size / uplink (every share crosses the uplink);
- helper upload: size / uplink (only the ciphertext crosses it, once);
- download: size / downlink (k shares' worth of data comes down).

Beside each operation, the CPU-seconds (user + system, from ``/proc/PID/stat``)
that the home node, the helper and each storage node spent during it; before the
first, what each spends per second while nothing runs (``--idle`` seconds of it,
``idle_cpu_per_s``).

``BENCH_LINKS_UPLOAD_RATE=2.2MB`` sets the home node's ``[limits] upload_rate``;
``BENCH_LINKS_QUEUE`` the router's queue (tbf latency, default 500ms);
``BENCH_LINKS_UPLINK_QUEUE_MS`` the home node's ``[limits] uplink_queue_ms`` (0: off);
``BENCH_LINKS_STORAGE_UPLINK_QUEUE_MS`` the same for the storage nodes and the helper;
``BENCH_LINKS_DC_MTU`` the MTU among the nodes in ``dc`` (default 1500, 0: the
loopback's 65,536, where QUIC probes up to 64 KiB datagrams). Needs root,
iproute2 and tc; prints a reason and exits 0 where namespaces cannot be made.

``--pin`` runs the home node and the CLI on one CPU and every node in ``dc`` on the
others (CPU affinity, inherited by their threads), so that the home node does not
share a core with the grid: on one small machine every process otherwise shares every
core, and a download's time then follows the machine's load as much as the link. On
two cores the grid then has one, which bounds a helper upload (docs/grid.md). The figures
name the CPUs they ran on (``pinned``); without ``--pin`` nothing is pinned.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nat_grid import set_config
from tests.netns import (
    cli_in,
    delete_namespaces,
    netns_unavailable,
    node_status,
    run,
    stop_nodes,
)

HOME, DC = "10.78.0.2", "10.78.0.1"
#: the upload helper's own address in ``dc`` (below the storage nodes')
HELPER = "10.78.0.9"


def dc_addr(i: int) -> str:
    """Storage node i's own address in ``dc`` (happiness counts distinct hosts)."""
    return f"10.78.0.{10 + i}"


K, N, HAPPY = 3, 10, 7
#: the queue a home router keeps before dropping (tbf latency)
LATENCY = os.environ.get("BENCH_LINKS_QUEUE", "500ms")
#: the MTU between the nodes in ``dc`` (0: the loopback's own, 65,536)
DC_MTU = int(os.environ.get("BENCH_LINKS_DC_MTU", "1500"))


def _shape(ns: str, rate_mbit: int) -> None:
    """Shape ``ns``'s egress with ``tbf``: a token bucket with a LATENCY queue, as a
    home router (this kernel has no netem for delays)."""
    dev = ("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root")
    # burst: a few ms at the rate, at least a full-size datagram
    burst = max(rate_mbit * 1000 * 1000 // 8 // 250, 16_000)
    run(*dev, "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", LATENCY)


def topology(tag: str, up: int, down: int, storage: int, made: list[str]) -> tuple[str, str]:
    """Make the two namespaces (each appended to ``made`` as soon as it exists, so a
    failure part-way still deletes it) and shape their link."""
    home, dc = f"p2ps-{tag}-home", f"p2ps-{tag}-dc"
    for ns in (home, dc):
        run("ip", "netns", "add", ns)
        made.append(ns)
    run(
        "ip", "-n", home, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", dc
    )
    for ns, addr in ((home, HOME), (dc, DC)):
        run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
    for addr in (HELPER, *map(dc_addr, range(storage))):
        run("ip", "-n", dc, "addr", "add", f"{addr}/24", "dev", "eth0")
    # the nodes in dc reach each other over its loopback: give it a network's MTU,
    # or the helper's placement would use 64 KiB datagrams, as no real path does
    if DC_MTU:
        run("ip", "-n", dc, "link", "set", "lo", "mtu", str(DC_MTU))
    _shape(home, up)  # home -> dc: the uplink
    _shape(dc, down)  # dc -> home: the downlink
    return home, dc


def limits(size: int, up_mbit: int, down_mbit: int, k: int, n: int) -> tuple[float, float, float]:
    """The physical limits, in seconds, of moving ``size`` bytes over the link: a direct
    upload (every share crosses the uplink), an upload through a helper (the
    ciphertext crosses it once) and a download (size / downlink)."""
    uplink, downlink = up_mbit * 1e6 / 8, down_mbit * 1e6 / 8
    return size * n / k / uplink, size / uplink, size / downlink


def _encoding(node: Path, k: int, n: int, happy: int) -> None:
    conf = node / "p2pstore.toml"
    text = conf.read_text()
    for key, value in (("shares_needed", k), ("shares_total", n), ("shares_happy", happy)):
        text = re.sub(rf"(?m)^(# )?{key} = \d+$", f"{key} = {value}", text)
    conf.write_text(text)


def _append(node: Path, text: str) -> None:
    with (node / "p2pstore.toml").open("a") as f:
        f.write(text)


@dataclass
class Grid:
    """The nodes of one run."""

    intro: Path
    storage: list[Path]
    helper: Path
    client: Path
    #: --pin: the CPUs of the home node and its CLI (None: not pinned)
    home_cpus: frozenset[int] | None = None
    #: --pin: the CPUs of every node in ``dc``
    grid_cpus: frozenset[int] | None = None

    def pin(self) -> None:
        """Set each running node's CPU affinity (``--pin``; nothing without it)."""
        if self.home_cpus is None or self.grid_cpus is None:
            return
        set_affinity(int(node_status(self.client)["pid"]), self.home_cpus)
        for node in (self.intro, *self.storage, self.helper):
            set_affinity(int(node_status(node)["pid"]), self.grid_cpus)


def split_cpus() -> tuple[frozenset[int], frozenset[int]]:
    """``--pin``'s split of this process's CPUs: the first for the home node, the rest
    for the grid; SystemExit on a machine with a single one."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(f"--pin needs two CPUs or more; this process may use {cpus}")
    return frozenset(cpus[:1]), frozenset(cpus[1:])


def set_affinity(pid: int, cpus: frozenset[int]) -> None:
    """Run every thread of process ``pid`` on ``cpus`` (threads it starts later
    inherit the affinity of the thread that starts them). The threads are listed
    again until a pass finds none not yet moved: one started meanwhile by a thread
    not yet moved would otherwise keep the old CPUs."""
    moved: set[int] = set()
    while True:
        tids = {int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()} - moved
        if not tids:
            return
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(tid, cpus)
        moved |= tids


def _wait_peers(client: Path, want: int) -> None:
    deadline = time.monotonic() + 120
    while (node_status(client).get("peers_known") or 0) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"the home node knows {node_status(client).get('peers_known')} peers")
        time.sleep(0.5)


def _grid(
    root: Path, home: str, dc: str, storage: int, enc: tuple[int, int, int], started: list[Path]
) -> Grid:
    """Make and start the nodes (each appended to ``started`` as soon as it runs)."""
    intro = root / "introducer"
    cli_in(dc, "create-introducer", intro, "--listen", f"{DC}:4000")
    line = cli_in(dc, "bootstrap", "show", intro).decode()
    nodes = []
    for i in range(storage):
        node = root / f"s{i}"
        cli_in(dc, "create-node", node, "--listen", f"{dc_addr(i)}:4001", "--bootstrap", line)
        nodes.append(node)
    helper = root / "helper"
    cli_in(
        dc, "create-node", helper, "--listen", f"{HELPER}:4001", "--bootstrap", line, "--no-storage"
    )
    _append(helper, "\n[helper]\nenabled = true\n")
    client = root / "home"
    cli_in(
        home, "create-node", client, "--listen", f"{HOME}:4001", "--bootstrap", line, "--no-storage"
    )
    for node in [*nodes, helper, client]:
        _encoding(node, *enc)
    cap = os.environ.get("BENCH_LINKS_UPLOAD_RATE")  # the home node's [limits] upload_rate
    if cap:
        set_config(client, "limits", {"upload_rate": cap})
    queue = os.environ.get("BENCH_LINKS_UPLINK_QUEUE_MS")  # [limits] uplink_queue_ms
    if queue:
        set_config(client, "limits", {"uplink_queue_ms": int(queue)})
    queue = os.environ.get("BENCH_LINKS_STORAGE_UPLINK_QUEUE_MS")  # the same, storage + helper
    if queue:
        for node in [*nodes, helper]:
            set_config(node, "limits", {"uplink_queue_ms": int(queue)})
    grid = Grid(intro, nodes, helper, client)
    for node in [intro, *nodes, helper]:
        cli_in(dc, "start", node)
        started.append(node)
    cli_in(home, "start", client)
    started.append(client)
    _wait_peers(client, storage + 1)  # the storage nodes and the helper
    return grid


def cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wire_bytes(ns: str) -> tuple[int, int]:
    """Bytes received and sent so far by ``ns``'s end of the shaped link, as the link
    counts them (whole frames: what ``tbf`` meters)."""
    out = run("ip", "-n", ns, "-j", "-s", "link", "show", "eth0").stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU-seconds per second each process spends while no operation runs (the part
    of each operation's CPU-seconds that is not the operation's); none for 0 s."""
    if seconds <= 0:
        return {}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {
        name: round((cpu_seconds(pid) - before[name]) / seconds, 3) for name, pid in pids.items()
    }


def _pids(grid: Grid) -> dict[str, int]:
    """The home node's, the helper's and each storage node's pid, by name."""
    nodes = {"home": grid.client, "helper": grid.helper}
    nodes |= {f"s{i}": node for i, node in enumerate(grid.storage)}
    return {name: int(node_status(node)["pid"]) for name, node in nodes.items()}


@dataclass
class Op:
    """One measured command: its time, output, CPU-seconds of each node and of the
    command during it, and the bytes the home side's link received and sent."""

    seconds: float
    out: str
    err: str
    cpu: dict[str, Any]
    wire: tuple[int, int]

    def figures(self, name: str, rate_mbit: int, direction: int) -> dict[str, Any]:
        """JSON figures: ``NAME_cpu_s``, and the megabytes that crossed the link one
        way (``direction`` 0: in, 1: out) with the time the link needs for them at
        ``rate_mbit`` (``NAME_wire_limit_s``: the floor below the physical limit,
        what every protocol's headers leave of it)."""
        moved = self.wire[direction]
        return {
            f"{name}_cpu_s": self.cpu,
            f"{name}_wire_mb": round(moved / 1e6, 1),
            f"{name}_wire_limit_s": round(moved * 8 / (rate_mbit * 1e6), 2),
        }


def measure(
    ns: str,
    argv: list[str],
    pids: dict[str, int],
    what: str,
    cpus: frozenset[int] | None = None,
) -> Op:
    """``argv`` run in namespace ``ns`` (on ``cpus``, if given), measured: its time, the
    CPU-seconds of each process in ``pids`` (``s*``: storage nodes, summed too) and of
    the command, and the bytes ``ns``'s end of the link moved; AssertionError naming
    ``what`` when it failed. Both shaped-link benches measure their commands with it."""
    wire0 = wire_bytes(ns)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cli0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pin = None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus)
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        capture_output=True,
        timeout=3600,
        check=False,
        preexec_fn=pin,  # affinity is inherited through exec
    )
    took = time.perf_counter() - t0
    cli1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wire1 = wire_bytes(ns)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"{what} -> {proc.returncode}: {err}")
    cpu: dict[str, Any] = {k: round(after[k] - before[k], 1) for k in pids}
    storage = [after[k] - before[k] for k in pids if k.startswith("s")]
    cpu["storage_total"] = round(sum(storage), 1)
    cpu["cli"] = round(
        cli1.ru_utime + cli1.ru_stime - cli0.ru_utime - cli0.ru_stime, 1
    )  # the command itself
    wire = (wire1[0] - wire0[0], wire1[1] - wire0[1])
    return Op(took, proc.stdout.decode().strip(), err, cpu, wire)


def _measured(ns: str, grid: Grid, args: list[str]) -> Op:
    """``p2pstore ARGS`` from the home node, measured; AssertionError when it failed."""
    cmd = [sys.executable, "-m", "p2pstore.cli", *args, "--node", str(grid.client)]
    return measure(ns, cmd, _pids(grid), args[0], grid.home_cpus)


def _put(ns: str, grid: Grid, src: Path) -> Op:
    """``put SRC`` from the home node (its ``out`` is the cap); AssertionError when it
    failed."""
    return _measured(ns, grid, ["put", str(src)])


def _get(ns: str, cap: str, out: Path, grid: Grid, src: Path) -> tuple[Op, bool]:
    """``get CAP OUT`` from the home node, and whether the bytes match SRC (busy
    storage nodes slow a download too: their CPU-seconds are in it)."""
    op = _measured(ns, grid, ["get", cap, str(out)])
    return op, out.read_bytes() == src.read_bytes()


def _restart_with_helper(ns: str, grid: Grid, storage: int) -> str:
    """Stop the home node, give it ``[helper] use = "always"`` with the helper's
    node ID, start it again and wait until it knows its peers; the helper's ID."""
    helper_id = str(node_status(grid.helper)["node_id"])
    cli_in(ns, "stop", grid.client)
    _append(grid.client, f'\n[helper]\nuse = "always"\nhelpers = ["{helper_id}"]\n')
    cli_in(ns, "start", grid.client)
    grid.pin()  # the home node's new process
    _wait_peers(grid.client, storage + 1)
    return helper_id


def arguments() -> argparse.ArgumentParser:
    """The options of a shaped-link run (this bench's and bench_links_tahoe's)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--up", type=int, default=20, help="uplink, Mbit/s")
    ap.add_argument("--down", type=int, default=100, help="downlink, Mbit/s")
    ap.add_argument("--storage", type=int, default=10)
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--happy", type=int, default=HAPPY)
    ap.add_argument("--idle", type=float, default=20, help="seconds of idle CPU measured")
    return ap


def report(args: argparse.Namespace, size: int, ops: dict[str, Op]) -> dict[str, Any]:
    """A run's figures from its operations, named ``put``, ``get``, ``before`` (the
    second get before the restart), ``put_helper``, ``get_helper``, ``again`` and
    ``helper_again`` (each file once more at the end)."""
    up_limit, helper_limit, down_limit = limits(size, args.up, args.down, args.k, args.n)
    put, get, hput, hget = ops["put"], ops["get"], ops["put_helper"], ops["get_helper"]
    return {
        "k": args.k,
        "n": args.n,
        "storage_nodes": args.storage,
        "put_direct_s": round(put.seconds, 1),
        "put_limit_s": round(up_limit, 1),
        "put_over_limit": round(put.seconds / up_limit, 3),
        **put.figures("put_direct", args.up, 1),
        "get_s": round(get.seconds, 1),
        "get_limit_s": round(down_limit, 1),
        "get_over_limit": round(get.seconds / down_limit, 3),
        **get.figures("get", args.down, 0),
        "get_before_restart_again_s": round(ops["before"].seconds, 1),
        "put_helper_s": round(hput.seconds, 1),
        "put_helper_limit_s": round(helper_limit, 1),
        "put_helper_over_limit": round(hput.seconds / helper_limit, 3),
        **hput.figures("put_helper", args.up, 1),
        "get_helper_s": round(hget.seconds, 1),
        "get_helper_over_limit": round(hget.seconds / down_limit, 3),
        **hget.figures("get_helper", args.down, 0),
        "get_again_s": round(ops["again"].seconds, 1),
        **ops["again"].figures("get_again", args.down, 0),
        "get_helper_again_s": round(ops["helper_again"].seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = arguments()
    ap.add_argument(
        "--pin", action="store_true", help="home node and CLI on one CPU, the grid on the rest"
    )
    args = ap.parse_args(argv)
    reason = netns_unavailable()
    if reason:
        print(json.dumps({"bench": "links", "skipped": reason}))
        return 0
    size = args.mib << 20
    tag = str(os.getpid() % 100000)
    made: list[str] = []
    head: dict[str, Any] = {
        "bench": "links",
        "mib": args.mib,
        "up_mbit": args.up,
        "down_mbit": args.down,
    }
    cpus = split_cpus() if args.pin else None
    head["pinned"] = None if cpus is None else {"home": sorted(cpus[0]), "grid": sorted(cpus[1])}
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-links-") as tmp:
        root = Path(tmp)
        started: list[Path] = []
        grid: Grid | None = None
        try:
            home, dc = topology(tag, args.up, args.down, args.storage, made)
            enc = (args.k, args.n, args.happy)
            grid = _grid(root, home, dc, args.storage, enc, started)
            if cpus is not None:
                grid.home_cpus, grid.grid_cpus = cpus
                grid.pin()
            idle = idle_cpu(_pids(grid), args.idle)
            direct, helped = root / "direct", root / "helped"
            direct.write_bytes(os.urandom(size))
            helped.write_bytes(os.urandom(size))
            try:
                put = _put(home, grid, direct)
            except AssertionError as e:  # the upload failed: say why, as a figure
                print(json.dumps({**head, "put_direct": "failed", "error": str(e)[-600:]}))
                return 1
            get, same = _get(home, put.out, root / "direct.back", grid, direct)
            # the same file again before the restart: a slower get after the helper
            # phase is then not merely a second get's
            before, _ = _get(home, put.out, root / "direct.before", grid, direct)
            helper_id = _restart_with_helper(home, grid, args.storage)
            try:
                hput = _put(home, grid, helped)
            except AssertionError as e:
                print(json.dumps({**head, "put_helper": "failed", "error": str(e)[-600:]}))
                return 1
            if f"sent through upload helper {helper_id[:16]}" not in hput.err:  # put's note
                print(json.dumps({**head, "put_helper": "failed", "error": hput.err[-600:]}))
                return 1
            hget, hsame = _get(home, hput.out, root / "helped.back", grid, helped)
            # each file once more, over connections the first gets opened: a slower
            # first get of the helper's file is then the cost of opening them
            again, _ = _get(home, put.out, root / "direct.again", grid, direct)
            hagain, _ = _get(home, hput.out, root / "helped.again", grid, helped)
        finally:
            if os.environ.get("BENCH_LINKS_DEBUG") and grid is not None:
                tail = int(os.environ.get("BENCH_LINKS_DEBUG_TAIL", "4000"))  # characters
                for node in (grid.client, grid.helper):
                    for log in sorted(node.rglob("*.log")):
                        print(log, log.read_text()[-tail:], file=sys.stderr)
                    details = node_status(node).get("details")
                    print(node, "status details", json.dumps(details), file=sys.stderr)
            stop_nodes(reversed(started))
            delete_namespaces(made)
    ops = {"put": put, "get": get, "before": before, "put_helper": hput, "get_helper": hget}
    ops |= {"again": again, "helper_again": hagain}
    doc = {**head, "idle_cpu_per_s": idle, **report(args, size, ops)}
    print(json.dumps({**doc, "bytes_match": same, "helper_bytes_match": hsame}))
    return 0 if same and hsame else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
