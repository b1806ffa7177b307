"""Multi-host end to end (docs/nat-tests.md): three "hosts" as Linux network namespaces on one
machine, each with its own address on a bridge (10.77.0.0/24), form a grid from a
bootstrap list and move a file between hosts. Every node runs as a daemon inside its
namespace (``ip netns exec``); the CLI talks to each node's API inside that namespace.

Needs root and iproute2 (``ip netns``); skipped with the reason otherwise. Part of
the default run (about 17 s), so CI checks it wherever it can create namespaces.
Namespaces, veths and the bridge are removed in a finally.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..nat_grid import set_config
from ..netns import cli_in, delete_namespaces, netns_unavailable, run, stop_nodes
from ..netns import node_status as status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HOSTS = 3
SUBNET = "10.77.0"


class Hosts:
    """A bridge in the root namespace and one namespace per host, veth-attached."""

    def __init__(self, count: int) -> None:
        tag = f"{os.getpid() % 100000}"
        self.bridge = f"p2psbr{tag}"
        self.names = [f"p2ps-{tag}-h{i}" for i in range(1, count + 1)]
        self.veths = [f"p2psv{tag}h{i}" for i in range(1, count + 1)]
        self.addrs = [f"{SUBNET}.{i}" for i in range(1, count + 1)]

    def create(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "link", "set", self.bridge, "up")
        for ns, veth, addr in zip(self.names, self.veths, self.addrs, strict=True):
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "link", "set", veth, "master", self.bridge)
            run("ip", "link", "set", veth, "up")
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        delete_namespaces(self.names)  # also removes their veth pairs
        run("ip", "link", "del", self.bridge, check=False)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    h = Hosts(HOSTS)
    try:
        h.create()
        yield h
    finally:
        h.destroy()


def test_three_hosts_form_a_grid_and_move_a_file(hosts: Hosts, tmp_path: Path) -> None:
    intro = tmp_path / "h1-introducer"
    nodes = [tmp_path / f"h{i + 1}-node" for i in range(HOSTS)]
    h1 = hosts.names[0]
    cli_in(h1, "create-introducer", intro, "--listen", f"{hosts.addrs[0]}:4000")
    line = cli_in(h1, "bootstrap", "show", intro).decode()
    assert f"{hosts.addrs[0]}:4000" in line
    for ns, addr, node in zip(hosts.names, hosts.addrs, nodes, strict=True):
        cli_in(ns, "create-node", node, "--listen", f"{addr}:4001", "--bootstrap", line)
        conf = node / "p2pstore.toml"
        conf.write_text(
            re.sub(r"(?m)^(# )?shares_happy = 7$", "shares_happy = 3", conf.read_text())
        )
    for node in [intro, *nodes]:  # the wait below reads run/status.json: refresh it each second
        set_config(node, "node", {"status_interval": "1s"})
    started: list[Path] = []
    try:
        cli_in(h1, "start", intro)
        started.append(intro)
        for ns, node in zip(hosts.names, nodes, strict=True):
            cli_in(ns, "start", node)
            started.append(node)
        deadline = time.monotonic() + 60
        while not all(status(n).get("peers_known") == HOSTS for n in [intro, *nodes]):
            assert time.monotonic() < deadline, [status(n).get("peers_known") for n in nodes]
            time.sleep(0.5)

        # each node sees the others at their own hosts' addresses
        peers = json.loads(cli_in(hosts.names[1], "peers", "--json", "--node", nodes[1]))
        addresses = {p["address"] for p in peers}
        assert addresses == {f"{hosts.addrs[0]}:4000", f"{hosts.addrs[0]}:4001"} | {
            f"{hosts.addrs[2]}:4001"
        }

        data = os.urandom(2_000_000)
        cap = cli_in(hosts.names[1], "put", "-", "--node", nodes[1], stdin=data).decode().strip()
        got = cli_in(hosts.names[2], "get", cap, "-", "--node", nodes[2])
        assert got == data
        info = json.loads(cli_in(hosts.names[0], "info", cap, "--json", "--node", nodes[0]))
        holders = {p for ps in info["storage"]["shares"].values() for p in ps}
        assert len(holders) == HOSTS  # shares on every host

        # host 2 goes away entirely; host 3 still reads the file from hosts 1 and 3
        cli_in(hosts.names[1], "stop", nodes[1])
        run("ip", "-n", hosts.names[1], "link", "set", "eth0", "down")
        assert cli_in(hosts.names[2], "get", cap, "-", "--node", nodes[2]) == data
    finally:
        stop_nodes(reversed(started))
