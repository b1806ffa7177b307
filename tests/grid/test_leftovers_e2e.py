"""After a failure nothing is left behind, and health means the configured happiness
(docs/grid.md "Upload errors", docs/storage.md, docs/maintenance.md "Scrub"). Real
node processes on a local grid of 6 storage nodes:

- a failed upload (one peer refuses every share: happiness cannot be met after
  shares were stored) leaves no share on any disk;
- a file packed onto 3 nodes is reported unhealthy at the configured happiness, and
  ``check --repair`` spreads it;
- a corrupt copy found by ``check --verify --repair`` is deleted by its holder;
- a client node killed mid-upload and restarted leaves no upload in progress on
  any peer within the QUIC idle timeout, and the shares it completed keep only a
  provisional lease.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pstore.storage.leases import decode_leases
from tests.nat_grid import set_config, until
from tests.realgrid import REPO, Grid, cli, cli_env, local_grid

YEAR = 365 * 86400
PROVISIONAL = 6 * 3600


def storage_nodes(grid: Grid) -> list[Path]:
    return [grid.node(i) for i in range(1, grid.nodes + 1)]


def incoming(grid: Grid) -> list[Path]:
    return [f for n in storage_nodes(grid) for f in (n / "storage" / "incoming").glob("*")]


def share_files(grid: Grid, si: str) -> list[Path]:
    return [
        f for n in storage_nodes(grid) for f in (n / "storage" / "shares").glob(f"*/{si}/[0-9]*")
    ]


def all_sis(grid: Grid) -> set[str]:
    return {d.name for n in storage_nodes(grid) for d in (n / "storage" / "shares").glob("*/*")}


def storage_index(node: Path, cap: str) -> str:
    return str(json.loads(cli("info", "--node", node, cap, "--json").stdout)["storage_index"])


def restart(node: Path) -> None:
    cli("stop", node)
    cli("start", node)


@pytest.mark.timeout(600)
def test_failures_leave_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "one.bin"
    data.write_bytes(os.urandom(1 << 20))
    with local_grid(tmp_path / "grid", nodes=6) as grid:
        client = grid.node(1)
        cli("grid", "down", grid.root)
        for node in storage_nodes(grid):  # no custodian acts on its own during the test
            set_config(node, "maintenance", {"check_interval": YEAR})
        set_config(client, "client", {"shares_happy": 3})
        set_config(grid.node(3), "storage", {"quota": "1"})  # refuses every share
        cli("grid", "up", grid.root, timeout=90.0)
        for i in (4, 5, 6):
            cli("stop", grid.node(i))

        # 1. failed upload: node3 refuses, shares land on 2 peers < happiness 3
        before = all_sis(grid)
        failed = cli("put", "--node", client, data, check=False, timeout=120.0)
        assert failed.returncode == 1 and "distinct peers" in failed.stderr, failed.stderr
        assert all_sis(grid) == before and not incoming(grid)

        # 2. packed onto 3 nodes: unhealthy at shares_happy = 5, repaired by spreading
        set_config(grid.node(3), "storage", {"quota": "unlimited"})
        restart(grid.node(3))
        cap = cli("put", "--node", client, data, timeout=120.0).stdout.strip()
        si = storage_index(client, cap)
        assert len({f.parts[-6] for f in share_files(grid, si)}) <= 3
        for i in (4, 5, 6):
            cli("start", grid.node(i))
        set_config(client, "client", {"shares_happy": 5})
        restart(client)
        until(
            lambda: json.loads(cli("status", client, "--json").stdout).get("peers_known", 0) >= 5,
            60,
            "the client sees every node again",
        )
        packed = cli("check", "--node", client, cap, check=False)
        assert packed.returncode == 1 and "fewer than shares_happy = 5" in packed.stdout, packed
        cli("check", "--node", client, "--repair", cap, check=False)
        assert len({f.parts[-6] for f in share_files(grid, si)}) >= 5
        assert cli("check", "--node", client, cap).returncode == 0

        # 3. a corrupt copy: repaired from the others, deleted by its holder
        victim = sorted(share_files(grid, si))[0]
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))
        cli("check", "--node", client, "--verify", "--repair", cap, check=False)
        until(
            lambda: not victim.exists() or victim.read_bytes() != bytes(raw),
            60,
            f"the holder of {victim} deletes its corrupt copy",
        )
        assert cli("check", "--node", client, "--verify", cap).returncode == 0
        got = tmp_path / "back.bin"
        cli("get", "--node", client, cap, got)
        assert got.read_bytes() == data.read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_client_leaves_no_upload_behind(tmp_path: Path) -> None:
    """The client node killed mid-upload and restarted: no upload in progress stays on
    any peer past the QUIC idle timeout plus STALE_UPLOAD, and the shares it
    completed keep only the provisional lease (slow: about a minute of waiting)."""
    with local_grid(tmp_path / "grid", nodes=6) as grid:
        client = grid.node(1)
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(48 << 20))
        before = all_sis(grid)
        pid = int(json.loads(cli("status", client, "--json").stdout)["pid"])
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pstore.cli", "put", "--node", str(client), str(big)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=cli_env(),
            cwd=REPO,
        )
        try:
            until(
                lambda: [f for f in incoming(grid) if client not in f.parents],
                60,
                "shares being written",
            )
            time.sleep(0.5)
            os.kill(pid, signal.SIGKILL)
            cli("start", client)
        finally:
            proc.wait(timeout=120)
        started = time.monotonic()
        until(lambda: not incoming(grid), 90, lambda: f"uploads left: {incoming(grid)}")
        print(f"uploads in progress gone {time.monotonic() - started:.1f} s after the restart")
        now = time.time()
        for new in all_sis(grid) - before:
            for leases in (
                n / "storage" / "shares" / new[:2] / new / "leases" for n in storage_nodes(grid)
            ):
                if not leases.exists():
                    continue
                for lease in decode_leases(leases.read_bytes(), limit=1000):
                    assert lease.expires <= now + PROVISIONAL + 60, (leases, lease)
