"""The virtual drive on a real local grid (``p2pstore grid up``: introducer = vdrive
node, storage nodes on its writers list; every node its own daemon process), driven
through the CLI only: a shared directory and file written on node1 are listed and
read by path on node3 (same bytes); node2's private drive is not visible from node3;
a node not on the writers list can read but is refused writes with a clear
message; with the introducer (vdrive node) stopped, reads still work and writes
fail saying the vdrive node cannot be reached."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ..realgrid import cli, local_grid

pytestmark = [pytest.mark.timeout(150), pytest.mark.e2e]


def test_vdrive_across_real_node_processes(tmp_path: Path) -> None:
    data = os.urandom(250_000)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    secret = tmp_path / "secret.txt"
    secret.write_text("node2's own\n")
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        n1, n2, n3 = grid.node(1), grid.node(2), grid.node(3)
        cli("mkdir", "--node", n1, "shared:/dir")
        cli("put", "--node", n1, src, "shared:/dir/f.bin")
        listing = cli("ls", "-l", "--node", n3, "shared:/dir").stdout
        assert listing.split()[:2] == ["file", "250000"] and "f.bin" in listing, listing
        out = tmp_path / "out.bin"
        cli("get", "--node", n3, "shared:/dir/f.bin", out)
        assert out.read_bytes() == data

        # Private drives are per node.
        cli("put", "--node", n2, secret, "private:/secret.txt")
        assert "secret.txt" in cli("ls", "--node", n2, "private:/").stdout
        assert "secret.txt" not in cli("ls", "--node", n3, "private:/").stdout
        miss = cli("get", "--node", n3, "private:/secret.txt", tmp_path / "x", check=False)
        assert miss.returncode != 0 and not (tmp_path / "x").exists()

        # A node made with the introducer's bootstrap lines but not on its writers list.
        lines = cli("bootstrap", "show", grid.introducer).stdout
        assert "p2ps-vdrive " in lines
        outsider = tmp_path / "outsider"
        cli(
            "create-node", outsider, "--listen", "127.0.0.1:0", "--web-port", "0",
            "--nickname", "outsider", "--bootstrap", lines,
        )  # fmt: skip
        cfg = outsider / "p2pstore.toml"  # the grid's 3 storage nodes are "happy"
        cfg.write_text(re.sub(r"(?m)^(# )?shares_happy = .*$", "shares_happy = 3", cfg.read_text()))
        cli("start", outsider)
        try:
            got = tmp_path / "outsider.bin"
            cli("get", "--node", outsider, "shared:/dir/f.bin", got)  # it can read
            assert got.read_bytes() == data
            refused = cli("mkdir", "--node", outsider, "shared:/mine", check=False)
            assert refused.returncode == 1, refused
            assert "may not change the shared drive" in refused.stderr, refused.stderr
            assert "[vdrive] writers" in refused.stderr, refused.stderr
            # its own private drive is its own to write
            cli("mkdir", "--node", outsider, "private:/mine")
        finally:
            cli("stop", outsider, check=False)
        assert "mine" not in cli("ls", "--node", n1, "shared:/").stdout

        # The vdrive node is gone: reads work, writes say why they cannot.
        cli("stop", grid.introducer)
        assert "f.bin" in cli("ls", "--node", n3, "shared:/dir").stdout
        again = tmp_path / "again.bin"
        cli("get", "--node", n2, "shared:/dir/f.bin", again)
        assert again.read_bytes() == data
        failed = cli("mkdir", "--node", n1, "shared:/later", check=False)
        assert failed.returncode != 0
        assert "vdrive node cannot be reached" in failed.stderr, failed.stderr
