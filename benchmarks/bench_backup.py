"""``p2pstore backup`` on a real local grid (``make bench-backup``; JSON lines).

A generated folder of 2,000 files (nested, mixed sizes: a sixth literal, most a few
KB, a few up to 1 MiB) is backed up with the real CLI to a 4-node grid; then again
with nothing changed (the run must read no file contents and take under a tenth
of the first); then after changing 5 files, adding 3 and deleting 2 (the new
snapshot must differ from the previous one by exactly those); then the snapshot
is restored twice, one file at a time (``-j 1``) and with ``--jobs`` downloads at
once, and each copy compared byte for byte, with modes and mtimes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from p2pstore.api_client import NodeClient
from p2pstore.api_drive import walk_files
from p2pstore.testing.backup_tree import change_tree, make_tree, regular_files


def _cli(
    *args: str | Path, timeout: float = 3600
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "p2pstore.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return time.perf_counter() - t0, proc


def _backup(src: Path, node: Path, dest: str, jobs: int = 4) -> tuple[float, dict[str, Any]]:
    seconds, proc = _cli("backup", src, dest, "--json", "--node", node, "-j", str(jobs))
    if proc.returncode != 0:
        raise SystemExit(f"backup failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return seconds, json.loads(proc.stdout)


def _files(node: Path, path: str) -> dict[str, str]:
    client = NodeClient.for_node(node)
    base = len(path.rstrip("/")) + 1
    return {p[base:]: str(e["cap"]) for p, e in walk_files(client, path)}


def _compare(a: Path, b: Path) -> list[str]:
    bad = []
    fa = [p.relative_to(a) for p in regular_files(a)]
    fb = [p.relative_to(b) for p in regular_files(b)]
    if fa != fb:
        bad.append("different file lists")
    for rel in fa:
        sa, sb = (a / rel).stat(), (b / rel).stat()
        if (a / rel).read_bytes() != (b / rel).read_bytes():
            bad.append(f"{rel}: bytes differ")
        if (sa.st_mode & 0o777, int(sa.st_mtime)) != (sb.st_mode & 0o777, int(sb.st_mtime)):
            bad.append(f"{rel}: mode or mtime differ")
    return bad


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=4, help="uploads at once (backup -j)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-backup-") as tmp:
        root = Path(tmp)
        src = root / "src"
        total = make_tree(src, args.files)
        grid = root / "grid"
        _s, up = _cli("grid", "up", "--nodes", str(args.nodes), grid, timeout=300)
        if up.returncode != 0:
            raise SystemExit(f"grid up failed: {up.stderr}")
        node = grid / "node1"
        dest = "private:/bench"
        try:
            first_s, first = _backup(src, node, dest, args.jobs)
            second_s, second = _backup(src, node, dest)
            before = _files(node, second["snapshot"])
            changes = change_tree(src, changed=5, added=3, removed=2)
            third_s, third = _backup(src, node, dest)
            after = _files(node, third["snapshot"])
            changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
            diff_ok = (
                changed == sorted(changes["changed"])
                and sorted(after.keys() - before.keys()) == sorted(changes["added"])
                and sorted(before.keys() - after.keys()) == sorted(changes["removed"])
            )
            restores: dict[int, float] = {}
            bad = []
            for jobs in (1, args.jobs):  # one download at a time, then as a backup's
                into = root / f"restored-{jobs}"
                t, proc = _cli("restore", f"{dest}/Latest", into, "-j", str(jobs), "--node", node)
                restores[jobs] = t
                bad += _compare(src, into) if proc.returncode == 0 else [proc.stderr]
        finally:
            _cli("grid", "down", grid, timeout=120)
    out = {
        "bench": "backup",
        "files": args.files,
        "bytes": total,
        "nodes": args.nodes,
        "jobs": args.jobs,
        "first_s": round(first_s, 2),
        "first_uploaded": first["uploaded"],
        "second_s": round(second_s, 2),
        "second_uploaded": second["uploaded"],
        "second_bytes_read": second["bytes_read"],
        "second_dirs_made": second["dirs_made"],
        "second_over_first": round(second_s / first_s, 3),
        "third_s": round(third_s, 2),
        "third_uploaded": third["uploaded"],
        "snapshot_diff_exact": diff_ok,
        "restore_j1_s": round(restores[1], 2),
        "restore_s": round(restores[args.jobs], 2),
        "restore_mismatches": len(bad),
    }
    print(json.dumps(out))
    ok = (
        second["bytes_read"] == 0
        and second["uploaded"] == 0
        and second_s < first_s / 10
        and diff_ok
        and not bad
        and os.environ.get("P2PSTORE_BENCH_NO_CHECK") is None
    )
    if not ok:
        raise SystemExit(f"backup benchmark goals not met: {bad[:5]}")


if __name__ == "__main__":
    main(sys.argv[1:])
