"""``p2pstore grid up|down|status``: a complete local grid on 127.0.0.1 in one command.

Layout of a grid directory (default ``$XDG_DATA_HOME/p2pstore/local-grid``, i.e.
``~/.local/share/p2pstore/local-grid``)::

    DIR/grid.json        {"format": "p2pstore-local-grid-v1", "nodes": ["introducer", "node1", ...]}
    DIR/introducer/      an introducer (storage off), listening on 127.0.0.1:<fixed free port>
    DIR/node1 .. nodeN/  storage nodes bootstrapped from the introducer's line

Invariants:
- Every node listens on 127.0.0.1 with a port chosen free at creation and written to
  its config, so restarts keep their addresses and remembered peers stay valid.
- ``up`` on an existing grid starts the nodes that are not running (and creates
  extra nodes if ``--nodes`` asks for more); it never recreates or deletes a node.
- ``up`` returns 0 only when every node is running and has joined: each sees at
  least N other nodes (N storage nodes + the introducer - itself; at most k = 20)
  in its routing table; otherwise it says which node is behind and returns 1.
- Upload parameters are 3-of-10 with ``shares_happy = max(3, min(7, N - 1))``, so a
  grid of N >= 4 nodes accepts uploads with one node down. They are written only
  into nodes made in that run: an existing node's config is never rewritten (a
  value the grown grid would suggest differently is printed instead).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .errors import NodeError
from .nodedir import CreateOptions, NodeDir, create_node_dir
from .pidfile import probe
from .status_file import read_status_file

if TYPE_CHECKING:
    from .bootstrap import BootstrapList, Seed

# The bootstrap, config and daemon modules load when a grid command runs, not when
# the CLI registers `grid` (every command builds the whole parser).

FORMAT = "p2pstore-local-grid-v1"
GRID_FILE = "grid.json"
INTRODUCER = "introducer"
DEFAULT_NODES = 5
MAX_NODES = 100
JOIN_PEERS = 20  # the DHT's k
HOST = "127.0.0.1"


class GridProblem(NodeError):
    """A local-grid command cannot go on (message for the user)."""


def default_grid_dir(env: dict[str, str] | None = None) -> Path:
    """``$P2PSTORE_GRID`` if set (every ``grid`` command and ``make run`` honour it),
    else ``$XDG_DATA_HOME/p2pstore/local-grid`` (``~/.local/share/...``)."""
    env = dict(os.environ) if env is None else env
    if env.get("P2PSTORE_GRID"):
        return Path(env["P2PSTORE_GRID"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "p2pstore" / "local-grid"


def happy_for(nodes: int, k: int = 3, n: int = 10) -> int:
    return max(k, min(7, nodes - 1, n))


@dataclass(frozen=True, slots=True)
class Grid:
    root: Path
    names: tuple[str, ...]  # introducer first

    @property
    def storage_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n != INTRODUCER)

    def path(self, name: str) -> Path:
        return self.root / name

    def save(self) -> None:
        doc = {"format": FORMAT, "nodes": list(self.names)}
        tmp = self.root / (GRID_FILE + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / GRID_FILE)

    @classmethod
    def load(cls, root: Path) -> Grid | None:
        path = root / GRID_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise GridProblem(f"{path}: unreadable ({e})") from None
        names = doc.get("nodes") if isinstance(doc, dict) else None
        if (
            not isinstance(doc, dict)
            or doc.get("format") != FORMAT
            or not isinstance(names, list)
            or not names
            or names[0] != INTRODUCER
            or not all(isinstance(n, str) and re.fullmatch(r"node\d{1,3}", n) for n in names[1:])
        ):
            raise GridProblem(f"{path}: not a {FORMAT} file")
        return cls(root.absolute(), tuple(names))


def _tune_config(nd: NodeDir, *, happy: int) -> None:
    """Local-grid settings: a small disk reserve, fast status refresh, happy <= nodes."""
    text = nd.config_path.read_text(encoding="utf-8")
    for key, value in (
        ("reserved_space", '"100MB"'),
        ("status_interval", '"1s"'),
        ("shares_happy", str(happy)),
    ):
        text, count = re.subn(rf"(?m)^(# )?{key} = .*$", f"{key} = {value}", text)
        if count != 1:
            raise GridProblem(f"{nd.config_path}: cannot set {key}")
    nd.config_path.write_text(text, encoding="utf-8")


def _allow_writers(nd: NodeDir, writers: list[str]) -> None:
    """The introducer serves the shared drive; in a local grid every node is the
    user's own, so each storage node is on its writers allowlist (rewritten whenever
    the grid grows)."""
    text = nd.config_path.read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^\[vdrive\] # local grid\n.*\Z", "", text).rstrip("\n")
    listed = ", ".join(f'"{w}"' for w in writers)
    text += f"\n\n[vdrive] # local grid\nwriters = [{listed}]\n"
    if text != nd.config_path.read_text(encoding="utf-8"):  # untouched when unchanged
        nd.config_path.write_text(text, encoding="utf-8")


def _introducer_bootstrap(grid: Grid) -> BootstrapList:
    """Seeds for storage nodes: the introducer's own line, plus the shared drive's
    ``p2ps-vdrive`` line (key and read secret) from the introducer's bootstrap list."""
    from .bootstrap import BootstrapList, parse_bootstrap

    nd = NodeDir(grid.path(INTRODUCER))
    own = parse_bootstrap(
        nd.default_bootstrap_path.read_text(encoding="utf-8"),
        source=str(nd.default_bootstrap_path),
    )
    return BootstrapList(seeds=(_introducer_seed(grid),), vdrive=own.vdrive)


def _introducer_seed(grid: Grid) -> Seed:
    from .advertise import own_seed
    from .config import load_config

    nd = NodeDir(grid.path(INTRODUCER))
    config = load_config(nd.config_path)
    return own_seed(config, nd.load_key(), config.node.listen.port)


def _create(grid_root: Path, name: str, *, introducer: bool, seeds: BootstrapList) -> None:
    options = CreateOptions(
        introducer=introducer,
        nickname=name,
        listen_host=HOST,  # the port: picked (and moved at start if taken) by create-node
        bootstrap=seeds,
    )
    create_node_dir(grid_root / name, options)


def create_or_extend(root: Path, nodes: int | None, out: TextIO) -> Grid:
    """Create the grid at ``root`` with ``nodes`` storage nodes (default 5), or add
    nodes to an existing one up to ``nodes`` (None: keep its size); returns it."""
    from .bootstrap import BootstrapList
    from .config import load_config

    root = root.absolute()
    grid = Grid.load(root)
    fresh = grid is None
    if grid is None:
        if root.exists() and any(root.iterdir()):
            raise GridProblem(f"{root} exists, is not empty and holds no {GRID_FILE}")
        root.mkdir(parents=True, exist_ok=True)
        _create(root, INTRODUCER, introducer=True, seeds=BootstrapList())
        grid = Grid(root, (INTRODUCER,))
        grid.save()
        print(f"created introducer in {grid.path(INTRODUCER)}", file=out)
    have = len(grid.storage_names)
    if nodes is None:
        nodes = have if have else DEFAULT_NODES
    if nodes < have:
        print(f"the grid has {have} storage nodes already (--nodes {nodes} ignored)", file=out)
    seeds = _introducer_bootstrap(grid)
    names = list(grid.names)
    created = [INTRODUCER] if fresh else []
    for i in range(have + 1, nodes + 1):
        name = f"node{i}"
        _create(root, name, introducer=False, seeds=seeds)
        names.append(name)
        created.append(name)
        print(f"created {name} in {grid.path(name)}", file=out)
    grid = Grid(root, tuple(names))
    grid.save()
    happy = happy_for(len(grid.storage_names))
    # Only nodes made now get the local-grid settings: an existing node's config is the
    # user's (they may have edited it) and is never rewritten; a setting the grown grid
    # would suggest differently is reported instead.
    for name in grid.names:  # the introducer uploads directory objects too
        nd = NodeDir(grid.path(name))
        if name in created:
            _tune_config(nd, happy=happy)
            continue
        current = load_config(nd.config_path).client.shares_happy
        if current != happy:
            print(
                f"{name}: [client] shares_happy = {current}; a grid of "
                f"{len(grid.storage_names)} storage nodes suggests {happy} "
                f"(edit {nd.config_path} to change it)",
                file=out,
            )
    writers = [NodeDir(grid.path(n)).load_key().node_id.b32 for n in grid.storage_names]
    _allow_writers(NodeDir(grid.path(INTRODUCER)), writers)
    return grid


def _quiet_start(path: Path) -> tuple[int, str]:
    from .daemon import start

    err = io.StringIO()
    rc = start(path, out=io.StringIO(), err=err).rc
    return rc, err.getvalue()


def start_all(grid: Grid, out: TextIO) -> list[str]:
    """Start every node (introducer first, then the rest in parallel); returns problems."""
    problems: list[str] = []
    rc, err = _quiet_start(grid.path(INTRODUCER))
    if rc != 0:
        return [f"{INTRODUCER}: failed to start (exit {rc}): {err.strip()}"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda n: _quiet_start(grid.path(n)), grid.storage_names))
    for name, (rc, err) in zip(grid.storage_names, results, strict=True):
        if rc != 0:
            problems.append(f"{name}: failed to start (exit {rc}): {err.strip()}")
    print(f"{len(grid.names) - len(problems)} of {len(grid.names)} nodes running", file=out)
    return problems


def node_states(grid: Grid) -> dict[str, dict[str, Any] | None]:
    """name -> status.json of the running node, or None when it is not running."""
    out: dict[str, dict[str, Any] | None] = {}
    for name in grid.names:
        nd = NodeDir(grid.path(name))
        out[name] = read_status_file(nd) if probe(nd.pid_path).running else None
    return out


def wait_joined(
    grid: Grid, timeout: float, *, clock: Callable[[], float] = time.monotonic
) -> list[str]:
    """Wait until each node sees every other one (or, in a grid larger than a
    Kademlia bucket, at least k = 20 of them: a routing table keeps at most k of the
    far half of the grid); returns the names still behind."""
    want = min(len(grid.names) - 1, JOIN_PEERS)
    deadline = clock() + timeout
    while True:
        states = node_states(grid)
        behind = [
            name
            for name, doc in states.items()
            if doc is None or int(doc.get("peers_known") or 0) < want
        ]
        if not behind or clock() >= deadline:
            return behind
        time.sleep(0.25)


def stop_all(grid: Grid, out: TextIO) -> int:
    """Stop storage nodes (in parallel), then the introducer; returns 0 if all stopped."""
    from .daemon import stop

    def one(name: str) -> int:
        return stop(grid.path(name), out=io.StringIO())

    with ThreadPoolExecutor(max_workers=8) as pool:
        rcs = list(pool.map(one, grid.storage_names))
    rcs.append(one(INTRODUCER))
    bad = [n for n, rc in zip((*grid.storage_names, INTRODUCER), rcs, strict=True) if rc]
    if bad:
        print(f"still running: {', '.join(bad)}", file=out)
        return 1
    print(f"stopped {len(grid.names)} nodes in {grid.root}", file=out)
    return 0


def print_usage(grid: Grid, out: TextIO) -> None:
    from .bootstrap_ops import own_line

    states = node_states(grid)
    print(f"local grid in {grid.root}:", file=out)
    for name in grid.names:
        doc = states.get(name)
        if doc is None:
            print(f"  {name:<11} not running", file=out)
            continue
        role = "introducer" if name == INTRODUCER else "storage"
        print(
            f"  {name:<11} {role:<10} {str(doc.get('node_id', ''))[:12]}  "
            f"udp {doc.get('listen_host')}:{doc.get('listen_port')}  "
            f"peers {doc.get('peers_known')}  web {doc.get('api_url', '-')}",
            file=out,
        )
    first = grid.path(grid.storage_names[0]) if grid.storage_names else grid.root
    try:
        lines = own_line(grid.path(INTRODUCER)).strip().replace("\n", "\n  ")
    except (NodeError, OSError):
        lines = "(unknown)"
    print(
        f"""
Bootstrap list (a node elsewhere on this machine joins with it; `p2pstore bootstrap
show {grid.path(INTRODUCER)}` prints it again):
  {lines}
Try it:
  export P2PSTORE_NODE={first}
  p2pstore put FILE                  # prints the file's cap
  p2pstore get CAP OUT               # from any node: --node {grid.root}/node2
  p2pstore info CAP; p2pstore check CAP --verify; p2pstore peers; p2pstore status
  p2pstore shell --node {first}      # the interactive shell
The HTTP API of each node is at its web URL above (bearer token in
<node>/private/api.token; docs/http-api.md).
Stop the grid with: p2pstore grid down {grid.root}""",
        file=out,
    )


def up(
    root: Path, nodes: int | None = None, *, timeout: float = 45.0, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    if nodes is not None and not 1 <= nodes <= MAX_NODES:
        raise GridProblem(f"--nodes must be 1..{MAX_NODES}")
    grid = create_or_extend(root, nodes, out)
    problems = start_all(grid, out)
    if problems:
        for p in problems:
            print(f"p2pstore: {p}", file=sys.stderr)
        return 1
    behind = wait_joined(grid, timeout)
    print_usage(grid, out)
    if behind:
        print(
            f"p2pstore: after {timeout:g} s these nodes still see fewer than "
            f"{min(len(grid.names) - 1, JOIN_PEERS)} peers: {', '.join(behind)} "
            "(see <node>/logs/node.log)",
            file=sys.stderr,
        )
        return 1
    print(f"\nall {len(grid.names)} nodes joined", file=out)
    return 0


def _require(root: Path) -> Grid:
    grid = Grid.load(root.absolute())
    if grid is None:
        raise GridProblem(
            f"no local grid in {root.absolute()} (create one with `p2pstore grid up`)"
        )
    return grid


def down(root: Path, *, out: TextIO | None = None) -> int:
    return stop_all(_require(root), out or sys.stdout)


def status(root: Path, *, out: TextIO | None = None) -> int:
    grid = _require(root)
    print_usage(grid, out or sys.stdout)
    return 0 if all(node_states(grid).values()) else 3


def destroy(root: Path, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    grid = _require(root)
    if stop_all(grid, out) != 0:
        return 1
    shutil.rmtree(grid.root)
    print(f"removed {grid.root}", file=out)
    return 0


def register(sub: Any) -> None:
    """Add ``grid up|down|status|destroy`` to the CLI's subparsers."""
    p = sub.add_parser("grid", help="a complete local grid on 127.0.0.1 (up/down/status)")
    gsub = p.add_subparsers(dest="grid_command", metavar="ACTION")
    gsub.required = True
    where = f"grid directory (default: $P2PSTORE_GRID, else {default_grid_dir({})})"
    q = gsub.add_parser("up", help="create (if needed) and start a local grid, wait for it")
    q.add_argument("dir", metavar="DIR", nargs="?", help=where)
    q.add_argument(
        "--nodes",
        type=int,
        default=None,
        help=f"storage nodes (default {DEFAULT_NODES} for a new grid; an existing grid keeps "
        "its nodes and grows to --nodes if more)",
    )
    q.add_argument("--timeout", type=float, default=45.0, help="seconds to wait for joining")
    q.set_defaults(func=lambda a: up(_dir(a), a.nodes, timeout=a.timeout))
    for name, func, what in (
        ("down", down, "stop every node of the grid"),
        ("status", status, "show the grid's nodes (exit 3 if any is not running)"),
        ("destroy", destroy, "stop the grid and delete its directory"),
    ):
        q = gsub.add_parser(name, help=what)
        q.add_argument("dir", metavar="DIR", nargs="?", help=where)
        q.set_defaults(func=lambda a, f=func: f(_dir(a)))


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else default_grid_dir()
