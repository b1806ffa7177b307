"""Mutable files on a real local grid (``p2pstore grid up``: every node its own
daemon process), through the CLI only: user A makes a mutable file on node1, B
publishes a new version with the write cap on node2, C reads every version with the
read cap on node3 and is refused when it tries to write; a publish expecting an old
version is a conflict; info and check report the root's holders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..realgrid import cli, local_grid

pytestmark = [pytest.mark.timeout(150), pytest.mark.e2e]


def test_mutable_file_across_real_node_processes(tmp_path: Path) -> None:
    v1, v2, v3 = os.urandom(120_000), os.urandom(70_000), b"tiny third version"
    files = []
    for i, data in enumerate((v1, v2, v3)):
        f = tmp_path / f"v{i + 1}.bin"
        f.write_bytes(data)
        files.append(f)
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        a, b, c = grid.node(1), grid.node(2), grid.node(3)
        made = json.loads(cli("put", "--node", a, "--mutable", "--json", files[0]).stdout)
        write_cap, read_cap = made["write_cap"], made["read_cap"]
        assert write_cap.startswith("p2ps:mut:") and read_cap.startswith("p2ps:mut-ro:")
        assert made["sequence"] == 1 and made["size"] == len(v1)

        out = tmp_path / "out1.bin"
        cli("get", "--node", c, read_cap, out)
        assert out.read_bytes() == v1
        si = made["details"]["storage_index"]
        slots = sorted((tmp_path / "grid").glob(f"*/storage/shares/{si[:2]}/{si}/slot"))
        assert len(slots) >= 3, slots
        first_root = slots[0].read_bytes()  # version 1's signed root, kept for later

        # B, on another node, holds the write cap: publishes version 2
        put2 = cli("put", "--node", b, files[1], write_cap)
        assert put2.stdout.strip() == write_cap
        assert "version 2" in put2.stderr, put2.stderr
        out2 = tmp_path / "out2.bin"
        cli("get", "--node", c, read_cap, out2)
        assert out2.read_bytes() == v2
        info = cli("info", "--node", c, read_cap).stdout
        assert "version:       2" in info and "read cap" in info, info
        assert "write" not in info.split("kind:")[1].splitlines()[0], info

        # C holds only the read cap: it cannot publish
        refused = cli("put", "--node", c, files[2], read_cap, check=False)
        assert refused.returncode == 2, refused
        assert "only a write cap" in refused.stderr, refused.stderr

        # a publish that expects version 1 is a conflict; nothing changes
        stale = cli("put", "--node", a, "--expect-sequence", "1", files[2], write_cap, check=False)
        assert stale.returncode == 1, stale
        assert "latest version is 2" in stale.stderr, stale.stderr
        cli("put", "--node", a, "--expect-sequence", "2", files[2], write_cap)
        out3 = tmp_path / "out3.bin"
        cli("get", "--node", b, write_cap, out3)
        assert out3.read_bytes() == v3

        doc = json.loads(cli("info", "--node", b, "--json", made["verify_cap"]).stdout)
        assert doc["kind"] == "mut-verify" and doc["sequence"] == 3 and doc["size"] is None
        assert doc["storage"]["holding_latest"] == doc["storage"]["peers_asked"] >= 3
        verify_get = cli("get", "--node", b, made["verify_cap"], tmp_path / "x", check=False)
        assert verify_get.returncode == 2 and "verify cap cannot read" in verify_get.stderr
        check = cli("check", "--node", b, read_cap)
        assert "healthy" in check.stdout.lower(), check.stdout
        # C links the file into its private drive: the path reads the latest version
        cli("ln", "--node", c, read_cap, "private:/doc.bin")
        via = tmp_path / "via.bin"
        cli("get", "--node", c, "private:/doc.bin", via)
        assert via.read_bytes() == v3
        # C keeps A's file alive from its own node: a pin of the read cap
        pinned = json.loads(cli("pin", "--node", c, "--json", read_cap).stdout)
        assert pinned["verify_cap"] == made["verify_cap"] and pinned["holders"] >= 3, pinned
        assert made["verify_cap"] in cli("pins", "--node", c).stdout

        # one storage node serves version 1's root again (a stale or replaying peer):
        # readers still get version 3, and the peer is reported
        slots[0].write_bytes(first_root)
        doc = json.loads(cli("info", "--node", c, "--json", read_cap).stdout)
        assert doc["sequence"] == 3 and len(doc["storage"]["stale"]) == 1, doc
        out4 = tmp_path / "out4.bin"
        cli("get", "--node", c, read_cap, out4)
        assert out4.read_bytes() == v3
        unhealthy = cli("check", "--node", c, read_cap, check=False)
        assert unhealthy.returncode == 1 and "no copy of the latest root" in unhealthy.stdout
        cli("check", "--node", c, "--repair", read_cap)  # copies the latest root back
        assert slots[0].read_bytes() != first_root
