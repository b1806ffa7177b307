"""Tahoe-LAFS 1.20 over the same shaped home link as ``bench_links``, for comparison
(``make bench-links-tahoe``; one JSON line; docs/grid.md, "Tahoe-LAFS over the same
link").

The topology is bench_links's own (its ``topology()``): ``home`` behind ``tc tbf``
(20 Mbit/s up, 100 Mbit/s down, a 500 ms router queue by default) and ``dc`` with an
introducer (10.78.0.1:4000), 10 storage nodes on addresses of their own
(10.78.0.10-19) and an upload helper (10.78.0.9, ``tahoe create-node --helper
--no-storage``). The home node is a Tahoe client with no storage, its web port on
10.78.0.2:3456. Every node encodes 3-of-10 with happy 7; all else is Tahoe's default
(the HTTPS storage protocol over TCP, Foolscap to the helper, convergent keys, 1 MiB
segments as p2pstore's).

The steps are bench_links's: ``tahoe put`` of a random file directly and ``tahoe get``
of it twice; then the home node restarts with ``[client] helper.furl`` set to the
helper's furl, puts a second random file of the same size (the run fails unless the
helper's ``/helper_status?t=json`` counts one more upload it had to encode and the
file's size fetched from the client) and gets
it back. Each time is set beside the same physical limit as in bench_links, each
operation beside the CPU-seconds (user + system, ``/proc/PID/stat``) of the home node,
the helper and each storage node during it, and the bytes are compared. Before the
first, each node's CPU-seconds per second while nothing runs (``--idle`` seconds of
it, ``idle_cpu_per_s``): Tahoe's nodes poll each other, so part of every operation's
CPU is that. A failed run prints every node's log tail to stderr.

Run it on its own, not beside bench_links: on two cores Tahoe's idle grid (its HTTP
storage client asks every server for its version every second: 40-55 % of a core on
this project's machines) would slow p2pstore's nodes, and the other way round.

Needs root, iproute2, tc and a ``tahoe`` executable (``make bench-links-tahoe``
installs Tahoe-LAFS into ``.venv-tahoe/`` as ``make bench-tahoe`` does); prints a skip
line and exits 0 without them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_links import (
    DC,
    HELPER,
    HOME,
    Op,
    arguments,
    dc_addr,
    idle_cpu,
    measure,
    report,
    topology,
)
from benchmarks.bench_tahoe import wait_until
from tests.netns import delete_namespaces, netns_unavailable

REPO = Path(__file__).resolve().parent.parent
INTRO_PORT, TUB_PORT = 4000, 4001
#: the home node's web port (``tahoe put``/``get`` talk to it) and the helper's
WEB_PORT, HELPER_WEB_PORT = 3456, 3457
#: a GET from inside a namespace (the web ports listen there only)
_FETCH = (
    "import sys, urllib.request as u; "
    "sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())"
)


def fetch(ns: str, url: str) -> str:
    """The body of ``url`` fetched from inside namespace ``ns``; "" when it failed."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _FETCH, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else ""


def connected_servers(welcome_json: str) -> int:
    """How many storage servers a Tahoe welcome page (``/?t=json``) lists as connected."""
    try:
        servers = json.loads(welcome_json)["servers"]
        status = [str(s.get("connection_status", "")).lower() for s in servers]
    except (ValueError, KeyError, TypeError, AttributeError):  # no page, or not this one
        return 0
    return sum(s.startswith("connected") for s in status)


def helper_connected(welcome_html: str) -> bool:
    """Whether a Tahoe welcome page (HTML) says its node is connected to its helper:
    the page names the helper "Helper not connected" until it is (its JSON does not
    say)."""
    return bool(welcome_html) and "Helper not connected" not in welcome_html


class TahoeLinks:
    """Tahoe's nodes on the two namespaces: made, started, measured and stopped."""

    def __init__(
        self, root: Path, tahoe: str, home: str, dc: str, storage: int, enc: tuple[int, int, int]
    ) -> None:
        self.root, self.tahoe, self.home_ns, self.dc_ns = root, tahoe, home, dc
        self.storage, self.enc = storage, enc
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str) -> None:
        """``tahoe run`` node ``name`` in its namespace (``ip netns exec`` execs into it,
        so the pid is the node's own)."""
        ns = self.home_ns if name == "home" else self.dc_ns
        node = self.root / name
        with open(node.with_suffix(".log"), "ab") as log:
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, self.tahoe, "run", "--allow-stdin-close", str(node)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def down(self) -> None:
        for name in list(self.procs):
            self._stop(name)

    def up(self) -> None:
        """Make every node, start them, and wait until the home node sees every
        storage server."""
        tahoe = [self.tahoe]
        intro = self.root / "introducer"
        where = [f"--port=tcp:{INTRO_PORT}:interface={DC}", f"--location=tcp:{DC}:{INTRO_PORT}"]
        make = [*tahoe, "create-introducer", "--listen=tcp", *where, str(intro)]
        subprocess.run(make, check=True, capture_output=True, timeout=120)
        self._start("introducer")
        furl_file = intro / "private" / "introducer.furl"
        wait_until(furl_file.exists, 60, "the Tahoe introducer wrote no furl")
        furl = furl_file.read_text().strip()
        k, n, happy = self.enc
        encoding = [f"--shares-needed={k}", f"--shares-total={n}", f"--shares-happy={happy}"]

        def listening(addr: str) -> list[str]:
            port = f"--port=tcp:{TUB_PORT}:interface={addr}"
            return ["--listen=tcp", port, f"--location=tcp:{addr}:{TUB_PORT}"]

        makers = {f"s{i}": [*listening(dc_addr(i)), "--webport=none"] for i in range(self.storage)}
        helper_web = f"--webport=tcp:{HELPER_WEB_PORT}:interface={HELPER}"
        makers["helper"] = ["--helper", "--no-storage", *listening(HELPER), helper_web]
        home_web = f"--webport=tcp:{WEB_PORT}:interface={HOME}"
        makers["home"] = ["--no-storage", "--listen=none", home_web]
        procs = []
        for name, opts in makers.items():
            cmd = [*tahoe, "create-node", *opts, *encoding, "-i", furl, f"--nickname={name}"]
            procs.append(subprocess.Popen([*cmd, str(self.root / name)], stdout=subprocess.DEVNULL))
        codes = []
        for proc in procs:  # every one ends before anything else happens
            try:
                codes.append(proc.wait(timeout=120))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        if any(codes):
            raise RuntimeError(f"tahoe create-node failed: exit codes {codes}")
        for name in makers:
            self._start(name)
        self.wait_ready(helper=False)

    def wait_ready(self, *, helper: bool) -> None:
        base = f"http://{HOME}:{WEB_PORT}/"

        def ready() -> bool:
            self.check_running()
            if connected_servers(fetch(self.home_ns, base + "?t=json")) < self.storage:
                return False
            return not helper or helper_connected(fetch(self.home_ns, base))

        what = "the helper" if helper else "every storage server"
        wait_until(ready, 120, f"Tahoe's home node did not see {what} within 120 s")

    def check_running(self) -> None:
        """RuntimeError naming the first node whose process has ended."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"Tahoe node {name} exited with {proc.returncode}")

    def log_tails(self, chars: int = 2000) -> str:
        """The end of every node's log (``tahoe run``'s output), for a failed run."""
        logs = sorted(self.root.glob("*.log"))
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}" for log in logs
        )

    def _pids(self) -> dict[str, int]:
        """Every node's pid but the introducer's, by name (bench_links' names)."""
        return {name: p.pid for name, p in self.procs.items() if name != "introducer"}

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """CPU-seconds per second of each node but the introducer while nothing runs:
        Tahoe's storage client asks every server for its version once a second, from
        every node, so part of each operation's CPU-seconds is this."""
        return idle_cpu(self._pids(), seconds)

    def helper_stats(self) -> dict[str, int]:
        url = f"http://{HELPER}:{HELPER_WEB_PORT}/helper_status?t=json"
        body = fetch(self.dc_ns, url)
        if not body:
            raise SystemExit("the Tahoe helper's /helper_status did not answer")
        stats: dict[str, int] = json.loads(body)
        return stats

    def use_helper(self) -> None:
        """Restart the home node with ``[client] helper.furl`` set to the helper's furl
        and wait until it is connected to the helper and to every storage server."""
        furl = (self.root / "helper" / "private" / "helper.furl").read_text().strip()
        self._stop("home")
        cfg = self.root / "home" / "tahoe.cfg"
        text, count = re.subn(r"(?m)^helper\.furl =.*$", f"helper.furl = {furl}", cfg.read_text())
        if count != 1:
            raise RuntimeError("the home node's tahoe.cfg has no helper.furl line")
        cfg.write_text(text)
        self._start("home")
        self.wait_ready(helper=True)

    def measured(self, *args: str) -> Op:
        """``tahoe ARGS`` from the home node, measured as bench_links measures
        p2pstore's commands; AssertionError when it failed."""
        # the node writes 127.0.0.1 into its node.url whatever interface it listens on
        url = f"--node-url=http://{HOME}:{WEB_PORT}/"
        cmd = [self.tahoe, "-d", str(self.root / "home"), args[0], url, *args[1:]]
        return measure(self.home_ns, cmd, self._pids(), f"tahoe {args[0]}")

    def get(self, cap: str, out: Path, src: Path) -> tuple[Op, bool]:
        op = self.measured("get", cap, str(out))
        return op, out.read_bytes() == src.read_bytes()


def tahoe_version(tahoe: str) -> str:
    proc = subprocess.run(
        [tahoe, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "unknown"


def _runs(grid: TahoeLinks, root: Path, size: int) -> tuple[dict[str, Op], dict[str, Any]]:
    """Direct put, two gets; then through the helper: put, get; each file once more.
    The operations by name (bench_links.report's), and the checks' outcomes."""
    direct, helped = root / "direct", root / "helped"
    direct.write_bytes(os.urandom(size))
    helped.write_bytes(os.urandom(size))
    put = grid.measured("put", str(direct))
    get, same = grid.get(put.out, root / "direct.back", direct)
    before, _ = grid.get(put.out, root / "direct.before", direct)
    grid.use_helper()
    stats0 = grid.helper_stats()
    hput = grid.measured("put", str(helped))
    stats1 = grid.helper_stats()

    def grew(key: str) -> int:
        return stats1.get(f"chk_upload_helper.{key}", 0) - stats0.get(f"chk_upload_helper.{key}", 0)

    if grew("upload_need_upload") != 1 or grew("fetched_bytes") != size:
        raise AssertionError(f"the helper did not take the whole upload: {stats0} -> {stats1}")
    hget, hsame = grid.get(hput.out, root / "helped.back", helped)
    again, _ = grid.get(put.out, root / "direct.again", direct)
    hagain, _ = grid.get(hput.out, root / "helped.again", helped)
    ops = {"put": put, "get": get, "before": before, "put_helper": hput, "get_helper": hget}
    ops |= {"again": again, "helper_again": hagain}
    return ops, {
        "bytes_match": same,
        "helper_bytes_match": hsame,
        "helper_fetched_bytes": grew("fetched_bytes"),
        "helper_encoded_bytes": grew("encoded_bytes"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = arguments()
    default_tahoe = os.environ.get("BENCH_TAHOE", str(REPO / ".venv-tahoe" / "bin" / "tahoe"))
    ap.add_argument("--tahoe", default=default_tahoe)
    args = ap.parse_args(argv)
    head = {"bench": "links-tahoe", "mib": args.mib, "up_mbit": args.up, "down_mbit": args.down}
    reason = netns_unavailable()
    if reason is None and not os.access(args.tahoe, os.X_OK):
        reason = f"no tahoe at {args.tahoe} (make bench-links-tahoe installs it)"
    if reason:
        print(json.dumps({**head, "skipped": reason}))
        return 0
    size = args.mib << 20
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-links-tahoe-") as tmp:
        root = Path(tmp)
        grid: TahoeLinks | None = None
        try:
            home, dc = topology(f"t{os.getpid() % 100000}", args.up, args.down, args.storage, made)
            enc = (args.k, args.n, args.happy)
            grid = TahoeLinks(root, args.tahoe, home, dc, args.storage, enc)
            grid.up()
            idle = grid.idle_cpu(args.idle)
            try:
                ops, checks = _runs(grid, root, size)
            except (AssertionError, subprocess.TimeoutExpired) as e:  # say which, as a figure
                print(json.dumps({**head, "failed": str(e)[-800:]}))
                print(grid.log_tails(), file=sys.stderr)
                return 1
        except BaseException:
            if grid is not None:
                print(grid.log_tails(), file=sys.stderr)
            raise
        finally:
            if grid is not None:
                grid.down()
            delete_namespaces(made)
    system = tahoe_version(args.tahoe)
    doc = {**head, "system": system, "idle_cpu_per_s": idle, **report(args, size, ops), **checks}
    print(json.dumps(doc))
    return 0 if checks["bytes_match"] and checks["helper_bytes_match"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
