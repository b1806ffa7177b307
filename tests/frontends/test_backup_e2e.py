"""``p2pstore backup`` / ``restore`` end to end on real node processes (a local
grid of 3 storage nodes, the CLI as a subprocess): a first run, an unchanged run
that reads nothing, a snapshot that differs by exactly what changed, a restore on
another node (through the shared drive) byte for byte with modes and mtimes, and a
backup killed part-way that, run again, sends only what was missing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from p2pstore.api_client import NodeClient
from p2pstore.api_drive import walk_files
from p2pstore.backup.db import DB_NAME
from p2pstore.immutable import ReadCap, parse_cap
from p2pstore.storage.disk_layout import si_b32
from p2pstore.testing.backup_tree import assert_same_tree, backdate, change_tree, make_tree
from tests.realgrid import REPO, cli, cli_env, local_grid


def backup(src: Path, dest: str, node: Path, *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        cli("backup", src, dest, "--json", "--node", node, *extra, timeout=300).stdout
    )
    return doc


def listing(dest: str, node: Path) -> dict[str, str]:
    """Every file below ``dest`` -> its cap (the node's API, in process)."""
    base = len(dest.rstrip("/")) + 1
    return {p[base:]: str(e["cap"]) for p, e in walk_files(NodeClient.for_node(node), dest)}


def recorded(node: Path) -> int:
    with sqlite3.connect(node / DB_NAME) as db:
        return int(db.execute("SELECT count(*) FROM files").fetchone()[0])


def test_backup_restore_and_an_interrupted_run(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 40, seed=11)
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        a, b = grid.node(1), grid.node(2)
        first = backup(src, "shared:/alice", a)
        assert first["uploaded"] == 40 and not first["failed"]
        second = backup(src, "shared:/alice", a)
        assert (second["uploaded"], second["bytes_read"], second["dirs_made"]) == (0, 0, 0)
        before = listing("shared:/alice/Latest", a)
        changes = change_tree(src, changed=5, added=3, removed=2)
        third = backup(src, "shared:/alice", a)
        assert third["uploaded"] == 8
        after = listing("shared:/alice/Latest", a)
        diff = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
        assert diff == sorted(changes["changed"])
        assert sorted(after.keys() - before.keys()) == sorted(changes["added"])
        assert sorted(before.keys() - after.keys()) == sorted(changes["removed"])
        assert listing(second["snapshot"], a) == before  # an old snapshot never changes
        # another node restores it (the shared drive): same bytes, modes, mtimes
        cli("restore", "shared:/alice/Latest", tmp_path / "restored", "--node", b, timeout=300)
        subprocess.run(["diff", "-r", str(src), str(tmp_path / "restored")], check=True)
        assert_same_tree(src, tmp_path / "restored")  # and modes, mtimes

        # every share of one file lost from the grid: a run that checks finds it and
        # uploads it again from the local copy (same cap); it restores again
        lost = next((p, c) for p, c in sorted(after.items()) if isinstance(parse_cap(c), ReadCap))
        si = si_b32(parse_cap(lost[1]).storage_index)  # type: ignore[union-attr]
        gone = [s for s in grid.root.glob(f"*/storage/shares/{si[:2]}/{si}/[0-9]*")]
        assert gone
        for share in gone:
            share.unlink()
        broken = cli(
            "restore",
            "shared:/alice/Latest",
            tmp_path / "broken",
            "--node",
            b,
            check=False,
            timeout=300,
        )
        assert broken.returncode == 1 and not (tmp_path / "broken" / lost[0]).exists()
        checked = backup(src, "shared:/alice", a, "--check-all")
        assert (checked["reuploaded"], checked["uploaded"], checked["failed"]) == (1, 0, [])
        coded = sum(isinstance(parse_cap(c), ReadCap) for c in after.values())
        assert checked["checked"] == coded - 1  # literal files are never checked
        assert listing("shared:/alice/Latest", a) == after
        cli("restore", "shared:/alice/Latest", tmp_path / "again", "--node", b, timeout=300)
        assert_same_tree(src, tmp_path / "again")

        # a backup killed part-way: the next run sends only what is missing
        big = tmp_path / "big"
        big.mkdir()
        for i in range(30):
            (big / f"f{i:02d}").write_bytes(bytes([i]) * 150_000)
            backdate(big / f"f{i:02d}")
        base = recorded(a)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "p2pstore.cli",
                "backup",
                str(big),
                "private:/big",
                "--node",
                str(a),
            ],
            env=cli_env(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and recorded(a) < base + 5:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        done = recorded(a) - base
        assert 5 <= done < 30, done
        rerun = backup(big, "private:/big", a)
        assert (rerun["uploaded"], rerun["unchanged"]) == (30 - done, done)
        cli("restore", "private:/big/Latest", tmp_path / "big-back", "--node", a, timeout=300)
        assert_same_tree(big, tmp_path / "big-back")
