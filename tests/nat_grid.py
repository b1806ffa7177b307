"""A p2pstore grid on the NAT topology (tests/nat_topology.py), for the end-to-end
NAT tests: real node daemons started through the CLI inside the namespaces.

- seed1 (198.51.100.1:4000): an introducer with storage turned on;
- seed2 (198.51.100.2:4001): a storage node;
- storage (10.0.1.2:4001 behind nat1): a storage node;
- client (10.0.2.2:4001 behind nat2): a node without storage that uploads.

Every node joins through seed1's bootstrap line. :func:`set_config` edits a node's
``p2pstore.toml`` (keys in a section, the section appended when missing) so tests
can choose encodings and the NAT options. :meth:`NatGrid.stop` stops every started
node; the topology's teardown then kills anything left in the namespaces.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .nat_topology import Host, NatTopology
from .netns import cli_in, node_status, stop_nodes

TomlValue = str | int | bool | list[str]


def toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a JSON string (or list of them) is valid TOML here


def set_config(node: Path, section: str, values: Mapping[str, TomlValue]) -> None:
    """Set ``values`` in ``[section]`` of the node's p2pstore.toml (checked to parse)."""
    path = node / "p2pstore.toml"
    lines = path.read_text().splitlines()
    header = f"[{section}]"
    if header not in lines:
        lines += ["", header]
    start = lines.index(header) + 1
    end = next(
        (i for i in range(start, len(lines)) if re.match(r"\s*\[", lines[i])),
        len(lines),
    )
    for key, value in values.items():
        line = f"{key} = {toml_value(value)}"
        at = next(
            (i for i in range(start, end) if re.match(rf"\s*{re.escape(key)}\s*=", lines[i])),
            None,
        )
        if at is None:
            lines.insert(start, line)
            end += 1
        else:
            lines[at] = line
    text = "\n".join(lines) + "\n"
    doc = tomllib.loads(text)
    assert all(doc[section][k] == v for k, v in values.items()), (section, values)
    path.write_text(text)


def until(cond: Callable[[], Any], timeout: float, what: Callable[[], str] | str) -> Any:
    """Poll ``cond`` every 0.3 s until it returns something true; that value.
    AssertionError naming ``what`` (a string, or a function giving the state) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s: {what() if callable(what) else what}"
            )
        time.sleep(0.3)


def parallel(fn: Callable[[Path], None], items: list[Path]) -> None:
    """``fn`` on every item at once (threads: each call waits on a subprocess);
    the first exception is raised after all have finished."""
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(fn, item) for item in items]
    for f in futures:
        f.result()


@dataclass
class NatGrid:
    topo: NatTopology
    root: Path
    seed1: Path = field(init=False)
    seed2: Path = field(init=False)
    storage: Path = field(init=False)
    client: Path = field(init=False)
    started: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seed1 = self.root / "seed1-introducer"
        self.seed2 = self.root / "seed2-node"
        self.storage = self.root / "storage-node"
        self.client = self.root / "client-node"

    @property
    def nodes(self) -> list[Path]:
        return [self.seed1, self.seed2, self.storage, self.client]

    def host(self, node: Path) -> Host:
        t = self.topo
        return {
            self.seed1: t.seed1,
            self.seed2: t.seed2,
            self.storage: t.storage,
            self.client: t.client,
        }[node]

    def cli(self, node: Path, *args: str | Path, stdin: bytes | None = None) -> bytes:
        """``p2pstore ARGS --node NODE`` in the node's namespace."""
        return cli_in(self.host(node).ns, *args, "--node", node, stdin=stdin)

    def api_status(self, node: Path) -> dict[str, Any]:
        """What ``p2pstore status --json`` reports (the running node's API included)."""
        doc: dict[str, Any] = json.loads(
            cli_in(self.host(node).ns, "status", "--json", "--node", node)
        )
        return doc

    def status(self, node: Path) -> dict[str, Any]:
        """The node's run/status.json."""
        return node_status(node)

    def node_id(self, node: Path) -> str:
        return str(until(lambda: self.status(node).get("node_id"), 30, f"{node.name} node id"))

    def create(self, configure: Callable[[str, Path], None] | None = None) -> None:
        """Create the four node directories; ``configure(name, dir)`` may edit each."""
        t = self.topo
        cli_in(t.seed1.ns, "create-introducer", self.seed1, "--listen", f"{t.seed1.addr}:4000")
        set_config(self.seed1, "storage", {"enabled": True})
        line = cli_in(t.seed1.ns, "bootstrap", "show", self.seed1).decode()
        assert f"{t.seed1.addr}:4000" in line, line
        extra = {self.seed2: [], self.storage: [], self.client: ["--no-storage"]}

        def make(node: Path) -> None:
            host = self.host(node)
            listen = f"{host.addr}:4001"
            cli_in(
                host.ns, "create-node", node, "--listen", listen, "--bootstrap", line, *extra[node]
            )

        parallel(make, [self.seed2, self.storage, self.client])
        for node in self.nodes:
            # the tests wait on run/status.json: refresh it each second, not every 15 s
            set_config(node, "node", {"status_interval": "1s"})
            if configure is not None:
                configure(self.host(node).name, node)

    def start(self) -> None:
        """Start seed1, then the others at once (``start`` returns when each is up)."""

        def start(node: Path) -> None:
            self.started.append(node)
            cli_in(self.host(node).ns, "start", node, "--timeout", "90")

        start(self.seed1)
        parallel(start, [self.seed2, self.storage, self.client])

    def stop(self) -> None:
        parallel(lambda node: stop_nodes([node]), list(reversed(self.started)))
        self.started.clear()

    def logs(self, node: Path, lines: int = 60) -> str:
        """The tail of a node's log, for failure messages."""
        try:
            text = (node / "logs/node.log").read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def nat_grid(
    topo: NatTopology, root: Path, configure: Callable[[str, Path], None] | None = None
) -> Iterator[NatGrid]:
    """Create and start the grid on ``topo``; always stop its nodes afterwards."""
    grid = NatGrid(topo, root)
    grid.create(configure)
    try:
        grid.start()
        yield grid
    finally:
        grid.stop()
