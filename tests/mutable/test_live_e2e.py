"""Live directories on a real local grid, through the CLI only (issue #16's story):
user A makes a live directory on node1 and gives its write cap to B on node2; B adds
a file, A lists it; C on node3 holds the read cap: sees every later change and is
refused when it tries to write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ..realgrid import cli, local_grid

pytestmark = [pytest.mark.timeout(180), pytest.mark.e2e]


def test_live_directory_shared_between_three_nodes(tmp_path: Path) -> None:
    a_data, b_data = os.urandom(90_000), b"B's note\n"
    fa, fb = tmp_path / "a.bin", tmp_path / "b.txt"
    fa.write_bytes(a_data)
    fb.write_bytes(b_data)
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        a, b, c = grid.node(1), grid.node(2), grid.node(3)
        made = json.loads(cli("mkdir", "--live", "--json", "--node", a).stdout)
        w, r = made["write_cap"], made["read_cap"]
        assert w.startswith("p2ps:dir:mut:") and r.startswith("p2ps:dir:mut-ro:")

        cli("mkdir", "--node", a, f"{w}/docs")
        cli("put", "--node", a, fa, f"{w}/docs/a.bin")
        # B holds the write cap on another node: adds a file; A sees it
        cli("put", "--node", b, fb, f"{w}/b.txt")
        listing = cli("ls", "--node", a, f"{w}/").stdout
        assert "b.txt" in listing and "docs" in listing, listing

        # C holds the read cap: reads everything, sees later changes, cannot write
        assert "a.bin" in cli("ls", "--node", c, f"{r}/docs").stdout
        out = tmp_path / "out.bin"
        cli("get", "--node", c, f"{r}/docs/a.bin", out)
        assert out.read_bytes() == a_data
        refused = cli("put", "--node", c, fb, f"{r}/c.txt", check=False)
        assert refused.returncode == 1, refused
        assert "read cap of a live directory" in refused.stderr, refused.stderr
        refused = cli("mkdir", "--node", c, f"{r}/x", check=False)
        assert refused.returncode == 1 and "write cap" in refused.stderr, refused.stderr

        cli("mv", "--node", b, f"{w}/docs/a.bin", f"{w}/a-moved.bin")
        cli("rm", "--node", a, f"{w}/b.txt")
        after = cli("ls", "--node", c, f"{r}/").stdout
        assert "a-moved.bin" in after and "b.txt" not in after, after
        info = json.loads(cli("info", "--node", c, "--json", r).stdout)
        assert info["directory"] is True and info["sequence"] >= 6, info

        # C links A's live directory into its private drive (by the read cap) and
        # reads through it; changes through the drive are refused
        cli("ln", "--node", c, w, "private:/from-a")  # a write cap is linked as its read cap
        assert "a-moved.bin" in cli("ls", "--node", c, "private:/from-a").stdout
        via = tmp_path / "via.bin"
        cli("get", "--node", c, "private:/from-a/a-moved.bin", via)
        assert via.read_bytes() == a_data
        entry = json.loads(cli("ls", "--node", c, "--json", "private:/").stdout)["entries"]
        assert [e["cap"] for e in entry if e["name"] == "from-a"] == [r]
        no = cli("mkdir", "--node", c, "private:/from-a/new", check=False)
        assert no.returncode == 1 and "write cap" in no.stderr, no.stderr
        cli("put", "--node", a, fb, f"{w}/later.txt")  # A's later change shows through C's link
        assert "later.txt" in cli("ls", "--node", c, "private:/from-a").stdout
        cli("rm", "--node", c, "private:/from-a")  # unlinking touches only C's drive
        assert "later.txt" in cli("ls", "--node", a, f"{w}/").stdout

        # a read cap of the live directory lists, a verify cap does not
        verify = made["verify_cap"]
        bad = cli("ls", "--node", c, f"{verify}/", check=False)
        assert bad.returncode != 0 and "verify cap" in bad.stderr, bad.stderr
