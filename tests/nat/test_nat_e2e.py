"""End to end behind NAT (docs/nat-tests.md): real node daemons, started through the
CLI, in the NAT topology of tests/nat_topology.py: two public seeds, a storage node
behind nat1 and a client behind nat2 (tests/nat_grid.py).

The storage node runs with the default ``[network] reachability = "auto"`` and must
find out by itself that it is not reachable: ``status --json`` says ``private`` and
DHT ``client`` mode, and the seeds say ``public``/``server``. The client, set to
``reachability = "private"`` (a user who knows they are behind a NAT, so it never
enters routing tables and nobody dials it by accident), uploads a file encoded
3-of-3 with happiness 3: with exactly three storage nodes, one share must land on
the NATed storage node, and the download needs that share back. ``info`` shows the
NATed node among the holders, its own status counts the share, and ``peers`` on
the client says how it got there:

- ``masquerade`` routers keep ports, so hole punching through a seed works
  (``punched``);
- ``random-fully`` routers pick a port per destination, so punching fails and the
  client must go through the storage node's relay on a seed (``relayed``).

Needs root, ``ip netns`` and nftables; skipped with the reason otherwise. Each
variant takes 20-25 s on the shared 2-core machine (the grid's start and stop
included; private verdict ~5 s, put 1-5 s, get ~4 s).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from p2pstore.node.nodedir import NodeDir

from ..nat_grid import NatGrid, nat_grid, set_config, until
from ..nat_topology import NatMode, nat_topology, nat_unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FILE_SIZE = 300_000


def configure(name: str, node: Path) -> None:
    if os.environ.get("P2PS_NAT_DEBUG"):
        set_config(node, "logging", {"level": "DEBUG"})
    if name == "client":
        set_config(node, "client", {"shares_needed": 3, "shares_total": 3, "shares_happy": 3})
        set_config(node, "network", {"reachability": "private"})


@pytest.fixture(scope="module")
def nat_reason() -> str | None:
    return nat_unavailable()


@contextmanager
def running_grid(
    mode: NatMode,
    root: Path,
    reason: str | None,
    configure: Callable[[str, Path], None] = configure,
) -> Iterator[NatGrid]:
    if reason:
        pytest.skip(reason)
    with nat_topology((mode, mode)) as topo, nat_grid(topo, root, configure) as g:
        try:
            yield g
        except BaseException:
            for node in g.nodes:  # shown with the failure (captured output)
                print(f"---- {node.name} log tail\n{g.logs(node, 40)}")
            raise


def nat_of(grid: NatGrid, node: Path) -> dict[str, Any]:
    """``details.nat`` of the node's run/status.json ({} until it is there)."""
    nat: dict[str, Any] = grid.status(node).get("details", {}).get("nat") or {}
    return nat


class Phases:
    """Wall-clock time of each phase, printed at the end (and shown on failure)."""

    def __init__(self) -> None:
        self.t = time.monotonic()
        self.times: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.times[name] = round(now - self.t, 2)
        self.t = now
        print(f"phase {name}: {self.times[name]} s")


@pytest.mark.parametrize("mode", ["masquerade", "random-fully"])
def test_natted_storage_node_stores_and_serves_a_natted_client(
    mode: NatMode, tmp_path: Path, nat_reason: str | None
) -> None:
    with running_grid(mode, tmp_path, nat_reason) as grid:
        scenario(grid)


def configure_helper(name: str, node: Path) -> None:
    """The NATed storage node serves as an upload helper; the NATed client sends every
    upload through it (its node ID is read from its key: it is in no bootstrap list)."""
    configure(name, node)
    if name == "storage":  # a helper encodes with its own settings: the client's 3-of-3
        set_config(node, "helper", {"enabled": True})
        set_config(node, "client", {"shares_needed": 3, "shares_total": 3, "shares_happy": 3})
    if name == "client":
        helper = NodeDir(node.parent / "storage-node").load_key().node_id.b32
        set_config(node, "helper", {"use": "always", "helpers": [helper]})


def test_natted_client_uploads_through_a_natted_helper(
    tmp_path: Path, nat_reason: str | None
) -> None:
    """A helper behind a NAT that only its relay gets through (``random-fully``) is
    found through its announced peer record and reached through the connector, as a
    storage peer is: the client pushes the ciphertext to it and it places the shares
    (one on itself); the client checks them and reads the file back (docs/helper.md)."""
    with running_grid("random-fully", tmp_path, nat_reason, configure_helper) as grid:
        phases = Phases()
        until_private_and_anchored(grid, phases)
        data = os.urandom(FILE_SIZE)
        doc = json.loads(grid.cli(grid.client, "put", "-", "--json", stdin=data))
        phases.done("put through the helper")
        storage_id = grid.node_id(grid.storage)
        assert doc["details"].get("helper") == storage_id, doc
        assert not doc["details"].get("helper_failures"), doc
        info = json.loads(grid.cli(grid.client, "info", doc["cap"], "--json"))["storage"]
        holders = {p for ps in info["shares"].values() for p in ps}
        assert storage_id in holders and len(holders) == 3, info
        assert grid.cli(grid.client, "get", doc["cap"], "-") == data
        peers = json.loads(grid.cli(grid.client, "peers", "--json"))
        (entry,) = [p for p in peers if p["node_id"] == storage_id]
        assert entry.get("details", {}).get("connection") == "relayed", entry
        print("phases:", phases.times)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["masquerade", "random-fully"])
def test_natted_storage_node_stays_reachable_past_nat_timeouts(
    mode: NatMode, tmp_path: Path, nat_reason: str | None
) -> None:
    """Soak: idle for longer than conntrack keeps UDP mappings (30 s unreplied,
    120 s for a stream), then read the file and write another: the NATed node's
    keepalives (and relay renewals) must have held its way in open."""
    with running_grid(mode, tmp_path, nat_reason) as grid:
        cap, data = scenario(grid)
        time.sleep(150)
        assert grid.cli(grid.client, "get", cap, "-") == data
        more = os.urandom(FILE_SIZE)
        cap2 = grid.cli(grid.client, "put", "-", stdin=more).decode().strip()
        assert grid.cli(grid.client, "get", cap2, "-") == more
        assert until(lambda: shares_of(grid, grid.storage) == 2, 30, "second share held")


def shares_of(grid: NatGrid, node: Path) -> int:
    """Shares the node's status counts."""
    return int((grid.status(node).get("details", {}).get("storage") or {}).get("shares") or 0)


def until_private_and_anchored(grid: NatGrid, phases: Phases) -> dict[str, Any]:
    """The storage node finds out it is behind a NAT and anchors on the seeds (with a
    relayed port where only a relay gets in); its ``details.nat``."""
    t = grid.topo
    mode = t.nat1.mode

    def storage_verdict() -> dict[str, Any] | None:
        nat = nat_of(grid, grid.storage)
        if nat.get("reachability") == "private" and nat.get("dht_mode") == "client":
            return nat
        return None

    nat = until(storage_verdict, 60, lambda: f"storage nat status: {nat_of(grid, grid.storage)}")
    phases.done("private verdict")
    api = grid.api_status(grid.storage)["api"]["nat"]  # what `status --json` shows
    assert (api["reachability"], api["dht_mode"]) == ("private", "client"), api
    assert str(nat["observed"]).startswith(f"{t.nat1.public}:"), nat
    # the type needs two agreeing (or disagreeing) answers, which may come later
    assert nat["nat_type"] in (
        {"cone", "unknown"} if mode == "masquerade" else {"symmetric", "unknown"}
    ), nat
    for seed in (grid.seed1, grid.seed2):  # each needs its own dial-backs answered
        until(
            lambda s=seed: nat_of(grid, s).get("reachability") == "public",
            60,
            lambda s=seed: f"{s.name} nat status: {nat_of(grid, s)}",
        )
        assert nat_of(grid, seed).get("dht_mode") == "server", nat_of(grid, seed)

    if mode == "random-fully":  # only a relay gets in through this NAT
        assert nat["use_relays"] and nat["relay_support"], nat

    # anchors on the seeds (with a relayed port each where a relay is needed), and
    # its peer record announced
    def anchored() -> dict[str, Any] | None:
        nat = nat_of(grid, grid.storage)
        relays = nat.get("relays") or []
        if not relays or not nat.get("announced_at"):
            return None
        if mode == "random-fully" and not any(r.get("relayed") for r in relays):
            return None
        return nat

    nat = until(anchored, 60, lambda: f"storage anchors: {nat_of(grid, grid.storage)}")
    seed_addrs = {f"{t.seed1.addr}:4000", f"{t.seed2.addr}:4001"}
    assert {r["address"] for r in nat["relays"]} <= seed_addrs, nat["relays"]
    phases.done("anchored")
    return nat


def scenario(grid: NatGrid) -> tuple[str, bytes]:
    """The test in the module doc; the uploaded cap and data."""
    mode = grid.topo.nat1.mode
    phases = Phases()
    until_private_and_anchored(grid, phases)

    # -- upload from the NATed client; one of the 3 shares must go to storage ---
    data = os.urandom(FILE_SIZE)
    cap = grid.cli(grid.client, "put", "-", stdin=data).decode().strip()
    phases.done("put")
    info = json.loads(grid.cli(grid.client, "info", cap, "--json"))["storage"]
    holders = {p for ps in info["shares"].values() for p in ps}
    storage_id = grid.node_id(grid.storage)
    assert storage_id in holders, info
    assert len(holders) == 3, info
    until(
        lambda: shares_of(grid, grid.storage) == 1,
        30,
        "the storage node's status counting its share",
    )

    # -- and the download needs that share back ---------------------------------
    assert grid.cli(grid.client, "get", cap, "-") == data
    phases.done("get")

    # -- how the client reached it ----------------------------------------------
    peers = json.loads(grid.cli(grid.client, "peers", "--json"))
    (entry,) = [p for p in peers if p["node_id"] == storage_id]
    want = "punched" if mode == "masquerade" else "relayed"
    assert entry.get("details", {}).get("connection") == want, entry
    print("phases:", phases.times)
    return cap, data
