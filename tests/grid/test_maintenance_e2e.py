"""Maintenance on real node processes (docs/maintenance.md): no command from the user.

A local grid of an introducer and 11 storage nodes (12 nodes), 5 files put; 5
holders stopped for good and 5 fresh nodes started: every file is back on 10
distinct live holders and downloads byte-identical. Then the grid grows to 40
nodes: every file still downloads from a new node, because the shares held outside
the window a download searches moved nearer.

The nodes run with ``check_interval = "2s"``, ``pace = "0s"``, ``min_shares = 10`` and
``min_holders = 10``
(repair as soon as one share is missing; short intervals
must work on a local grid); the growth part is ``make test-slow``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from p2pstore.immutable import ReadCap, parse_cap
from quic_transport.identity import b32encode

from ..realgrid import cli

pytestmark = [pytest.mark.e2e]

FAST = {"check_interval": '"2s"', "pace": '"0s"', "min_shares": "10", "min_holders": "10"}


def _tune(node: Path) -> None:
    cfg = node / "p2pstore.toml"
    text = cfg.read_text(encoding="utf-8")
    for key, value in FAST.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, f"{cfg}: no {key}"
    cfg.write_text(text, encoding="utf-8")


def _grid_up(root: Path, nodes: int) -> list[Path]:
    """Create or grow the grid, tune every node, (re)start the grid."""
    # (grid up also waits until every node sees all the others; with dozens of nodes
    # on two cores that can take longer than its 45 s: the waits below cover it)
    cli("grid", "up", "--nodes", str(nodes), root, timeout=240.0, check=False)
    cli("grid", "down", root, timeout=120.0)
    names = ["introducer", *(f"node{i}" for i in range(1, nodes + 1))]
    for name in names:
        _tune(root / name)
    cli("grid", "up", root, timeout=240.0, check=nodes <= 20)
    return [root / n for n in names]


def _holders(nodes: list[Path], cap: ReadCap) -> dict[Path, set[int]]:
    si = b32encode(cap.storage_index)
    out = {}
    for node in nodes:
        d = node / "storage" / "shares" / si[:2] / si
        shares = {int(p.name) for p in d.glob("[0-9]*")} if d.is_dir() else set()
        if shares:
            out[node] = shares
    return out


def _live(nodes: list[Path], stopped: set[Path]) -> list[Path]:
    return [n for n in nodes if n not in stopped]


def _wait(cond: object, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1.0)
    return time.monotonic() - t0


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(node: Path, cap: str, out: Path) -> bytes:
    cli("get", "--node", node, "-f", cap, out, timeout=120.0)
    return out.read_bytes()


def _figures(nodes: list[Path]) -> dict[Path, dict[str, int]]:
    """Each node's maintenance figures (docs/maintenance.md, "Status")."""
    out = {}
    for node in nodes:
        status = json.loads(cli("status", "--node", node, "--json").stdout)
        out[node] = status["api"]["details"]["maintenance"]
    return out


def _distinct(holders: dict[Path, set[int]]) -> int:
    """Distinct holders of distinct shares (enough for 10 shares on 10 nodes)."""
    shares = set().union(*holders.values()) if holders else set()
    return min(len(holders), len(shares))


def _repair_and_grow(tmp_path: Path, grow: bool) -> None:
    root = tmp_path / "grid"
    try:
        nodes = _grid_up(root, 11)
        files = {}
        for i in range(5):
            src = tmp_path / f"f{i}.bin"
            src.write_bytes(hashlib.sha256(str(i).encode()).digest() * (20_000 + 3_000 * i))
            cap = cli("put", "--node", nodes[1], src, timeout=120.0).stdout.strip()
            files[cap] = src.read_bytes()
        caps = {c: parse_cap(c) for c in files}
        assert all(isinstance(c, ReadCap) for c in caps.values())
        # stop 5 holders for good (never the introducer: it is the seed and the
        # shared drive's node), one of them holding shares of every file if possible
        counts: dict[Path, int] = {}
        for cap in caps.values():
            assert isinstance(cap, ReadCap)
            for node in _holders(nodes, cap):
                counts[node] = counts.get(node, 0) + 1
        victims = sorted((n for n in counts if n.name != "introducer"), key=lambda n: -counts[n])[
            :5
        ]
        for node in victims:
            cli("stop", node, timeout=60.0)
        stopped = set(victims)
        # 5 fresh nodes join
        nodes = _grid_up(root, 16)
        for node in victims:
            cli("stop", node, timeout=60.0)  # grid up started them again: stop for good
        live = _live(nodes, stopped)

        def all_healthy() -> bool:
            for cap in caps.values():
                assert isinstance(cap, ReadCap)
                held = _holders(live, cap)
                if set().union(*held.values()) != set(range(10)) or _distinct(held) < 10:
                    return False
            return True

        took = _wait(all_healthy, 240, "every file on 10 distinct live holders")
        print(f"repaired in {took:.1f} s")
        before = _figures(live)
        assert sum(m.get("repairs", 0) for m in before.values()) >= 1
        # bounded cost, measured: checks per stored storage index per check interval
        t0 = time.monotonic()
        time.sleep(20)
        after = _figures(live)
        intervals = (time.monotonic() - t0) / 2.0
        checks = sum(after[n]["checks"] - before[n]["checks"] for n in live if "checks" in after[n])
        held = sum(m.get("storage_indexes", 0) for m in after.values())
        rate = checks / held / intervals
        print(f"{checks} checks of {held} stored storage indexes in {intervals:.0f} intervals")
        print(f"= {rate:.2f} checks per stored storage index per interval")
        assert rate < 1.0  # the custodian once, other holders a third as often
        fresh = live[-1]
        for i, (cap, data) in enumerate(files.items()):
            assert _digest(_get(fresh, cap, tmp_path / f"back{i}")) == _digest(data)
        if not grow:
            return
        nodes = _grid_up(root, 40)
        for node in victims:
            cli("stop", node, timeout=60.0)
        newest = nodes[-1]

        def all_found_from_new() -> bool:
            for i, (cap, data) in enumerate(files.items()):
                got = cli("get", "--node", newest, "-f", cap, tmp_path / f"g{i}", check=False)
                if got.returncode != 0 or (tmp_path / f"g{i}").read_bytes() != data:
                    return False
            return True

        took = _wait(all_found_from_new, 300, "every file readable from a new node")
        print(f"readable from a node of the grown grid after {took:.1f} s")
    finally:
        cli("grid", "down", root, check=False, timeout=120.0)


@pytest.mark.timeout(600)
def test_files_heal_after_holders_leave_for_good(tmp_path: Path) -> None:
    _repair_and_grow(tmp_path, grow=False)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_files_heal_and_follow_a_grid_grown_to_40_nodes(tmp_path: Path) -> None:
    _repair_and_grow(tmp_path, grow=True)
