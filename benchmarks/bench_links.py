"""Uploads and downloads over a shaped home link (``make bench-links``; JSON lines).

Two Linux network namespaces joined by one veth pair: ``home`` (10.78.0.2), a
client node with no storage, and ``dc``, an introducer (10.78.0.1) and 10 storage
nodes, each on its own address (10.78.0.10-19). ``tc tbf`` shapes the link like a
home connection: 20 Mbit/s up (home -> dc) and 100 Mbit/s down (dc -> home); the
storage nodes talk to each other over
``dc``'s loopback, unshaped. The home node runs ``p2pstore put`` and ``get`` of a
random file with the CLI; each figure is set beside its physical limit:

- direct upload: N/k x size / uplink (every share crosses the uplink);
- download: size / downlink (k shares' worth of data comes down).

(The upload helper of issue #17, size / uplink, is not built yet.)
``BENCH_LINKS_UPLOAD_RATE=2.2MB`` sets the home node's ``[limits] upload_rate``;
``BENCH_LINKS_QUEUE`` the router's queue (tbf latency, default 500ms);
``BENCH_LINKS_UPLINK_QUEUE_MS`` the home node's ``[limits] uplink_queue_ms`` (0: off). Needs root,
iproute2 and tc; prints a reason and exits 0 where namespaces cannot be made.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns import (
    cli_in,
    delete_namespaces,
    netns_unavailable,
    node_status,
    run,
    stop_nodes,
)

HOME, DC = "10.78.0.2", "10.78.0.1"


def _dc_addr(i: int) -> str:
    """Storage node i's own address in ``dc`` (happiness counts distinct hosts)."""
    return f"10.78.0.{10 + i}"


K, N, HAPPY = 3, 10, 7
#: the queue a home router keeps before dropping (tbf latency)
LATENCY = os.environ.get("BENCH_LINKS_QUEUE", "500ms")


def _shape(ns: str, rate_mbit: int) -> None:
    """Shape ``ns``'s egress with ``tbf``: a token bucket with a LATENCY queue, as a
    home router (this kernel has no netem for delays)."""
    dev = ("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root")
    # burst: a few ms at the rate, at least a full-size datagram
    burst = max(rate_mbit * 1000 * 1000 // 8 // 250, 16_000)
    run(*dev, "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", LATENCY)


def _topology(tag: str, up: int, down: int, storage: int, made: list[str]) -> tuple[str, str]:
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
    for i in range(storage):
        run("ip", "-n", dc, "addr", "add", f"{_dc_addr(i)}/24", "dev", "eth0")
    _shape(home, up)  # home -> dc: the uplink
    _shape(dc, down)  # dc -> home: the downlink
    return home, dc


def _encoding(node: Path, k: int, n: int, happy: int) -> None:
    conf = node / "p2pstore.toml"
    text = conf.read_text()
    for key, value in (("shares_needed", k), ("shares_total", n), ("shares_happy", happy)):
        text = re.sub(rf"(?m)^(# )?{key} = \d+$", f"{key} = {value}", text)
    conf.write_text(text)


def _grid(
    root: Path, home: str, dc: str, storage: int, enc: tuple[int, int, int]
) -> tuple[list[Path], Path]:
    intro = root / "introducer"
    cli_in(dc, "create-introducer", intro, "--listen", f"{DC}:4000")
    line = cli_in(dc, "bootstrap", "show", intro).decode()
    nodes = []
    for i in range(storage):
        node = root / f"s{i}"
        cli_in(dc, "create-node", node, "--listen", f"{_dc_addr(i)}:4001", "--bootstrap", line)
        nodes.append(node)
    client = root / "home"
    cli_in(
        home, "create-node", client, "--listen", f"{HOME}:4001", "--bootstrap", line, "--no-storage"
    )
    for node in [*nodes, client]:
        _encoding(node, *enc)
    conf = client / "p2pstore.toml"
    cap = os.environ.get("BENCH_LINKS_UPLOAD_RATE")  # the home node's [limits] upload_rate
    if cap:
        conf.write_text(
            re.sub(r"(?m)^upload_rate = .*$", f'upload_rate = "{cap}"', conf.read_text())
        )
    queue = os.environ.get("BENCH_LINKS_UPLINK_QUEUE_MS")  # [limits] uplink_queue_ms
    if queue:
        conf.write_text(
            re.sub(r"(?m)^uplink_queue_ms = .*$", f"uplink_queue_ms = {queue}", conf.read_text())
        )
    started = [intro]
    cli_in(dc, "start", intro)
    for node in nodes:
        cli_in(dc, "start", node)
        started.append(node)
    cli_in(home, "start", client)
    started.append(client)
    deadline = time.monotonic() + 120
    while (node_status(client).get("peers_known") or 0) < storage:
        if time.monotonic() > deadline:
            raise SystemExit(f"the home node knows {node_status(client).get('peers_known')} peers")
        time.sleep(0.5)
    return started, client


def _timed(ns: str, *args: str | Path, stdin: bytes | None = None) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    out = cli_in(ns, *args, stdin=stdin, timeout=3600)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--up", type=int, default=20, help="uplink, Mbit/s")
    ap.add_argument("--down", type=int, default=100, help="downlink, Mbit/s")
    ap.add_argument("--storage", type=int, default=10)
    ap.add_argument("--k", type=int, default=K)
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--happy", type=int, default=HAPPY)
    args = ap.parse_args(argv)
    reason = netns_unavailable()
    if reason:
        print(json.dumps({"bench": "links", "skipped": reason}))
        return 0
    size = args.mib << 20
    tag = str(os.getpid() % 100000)
    made: list[str] = []
    started: list[Path] = []
    head = {"bench": "links", "mib": args.mib, "up_mbit": args.up, "down_mbit": args.down}
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-links-") as tmp:
        try:
            home, dc = _topology(tag, args.up, args.down, args.storage, made)
            enc = (args.k, args.n, args.happy)
            started, client = _grid(Path(tmp), home, dc, args.storage, enc)
            src = Path(tmp) / "file"
            src.write_bytes(os.urandom(size))
            try:
                put_s, out = _timed(home, "put", src, "--node", client)
            except AssertionError as e:  # the upload failed: say why, as a figure
                print(json.dumps({**head, "put_direct": "failed", "error": str(e)[-600:]}))
                return 1
            cap = out.decode().strip()
            get_s, _ = _timed(home, "get", cap, Path(tmp) / "back", "--node", client)
            same = (Path(tmp) / "back").read_bytes() == src.read_bytes()
        finally:
            if os.environ.get("BENCH_LINKS_DEBUG") and started:
                logs = sorted((Path(tmp) / "home").rglob("*.log"))
                tail = int(os.environ.get("BENCH_LINKS_DEBUG_TAIL", "4000"))  # characters
                for log in logs:
                    print(log, log.read_text()[-tail:], file=sys.stderr)
            stop_nodes(reversed(started))
            delete_namespaces(made)
    up_limit = size * args.n / args.k / (args.up * 1e6 / 8)
    down_limit = size / (args.down * 1e6 / 8)
    print(
        json.dumps(
            {
                **head,
                "k": args.k,
                "n": args.n,
                "storage_nodes": args.storage,
                "put_direct_s": round(put_s, 1),
                "put_limit_s": round(up_limit, 1),
                "put_over_limit": round(put_s / up_limit, 3),
                "get_s": round(get_s, 1),
                "get_limit_s": round(down_limit, 1),
                "get_over_limit": round(get_s / down_limit, 3),
                "bytes_match": same,
            }
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
