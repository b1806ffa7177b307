"""The lease book follows the drives' links on a real node process (docs/node.md,
"Leases", "Letting go"): a file put into the private drive is marked linked by the
reference keeper's walk, and once it is removed from the drive the book lets it go;
a bare ``put`` (linked nowhere) and the drive's own directory objects still linked
are kept. Linked again, the file is renewed at once. The node runs with
``keep_interval = "2s"`` and ``pace = "0s"``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from p2pstore.immutable import parse_cap
from tests.nat_grid import set_config, until
from tests.realgrid import cli, local_grid

pytestmark = [pytest.mark.e2e]


def records(node: Path) -> list[tuple[str, str]]:
    """The lease book's lines, as ``(cap, time | "linked" | "-")``."""
    text = (node / "private" / "leases.log").read_text(encoding="ascii")
    return [(cap, what) for cap, what in (line.split(" ") for line in text.splitlines())]


def read_cap(put_output: str) -> str:
    (cap,) = re.findall(r"p2ps:chk:\S+", put_output)
    return str(cap)


def verify_of(put_output: str) -> str:
    return parse_cap(read_cap(put_output)).verify_cap().to_string()


def keeper_status(node: Path) -> dict[str, Any]:
    status = json.loads(cli("status", "--node", node, "--json").stdout)
    refs: dict[str, Any] = status["details"]["maintenance"]["references"]
    return refs


def keeper_round(node: Path) -> dict[str, Any]:
    last: dict[str, Any] = keeper_status(node)["last_round"] or {}
    return last


@pytest.mark.timeout(300)
def test_a_file_removed_from_the_drive_is_let_go_a_bare_put_is_kept(tmp_path: Path) -> None:
    a, bare = tmp_path / "a.bin", tmp_path / "bare.bin"
    a.write_bytes(os.urandom(200_000))
    bare.write_bytes(os.urandom(200_000))
    with local_grid(tmp_path / "grid", nodes=4) as grid:
        client = grid.node(1)
        cli("stop", client)
        set_config(client, "maintenance", {"keep_interval": "2s", "pace": "0s"})
        cli("start", client)
        cli("mkdir", "--node", client, "private:/docs")
        put_a = cli("put", "--node", client, a, "private:/docs/a.bin").stdout
        linked = verify_of(put_a)
        kept = verify_of(cli("put", "--node", client, bare).stdout)

        def marked(cap: str) -> bool:
            return (cap, "linked") in records(client)

        until(lambda: marked(linked), 60, "the file in the drive marked linked")
        assert not marked(kept)
        book = records(client)
        dirs_marked = {c for c, what in book if what == "linked"} - {linked}
        assert dirs_marked, "the drive's directory objects are marked linked too"

        cli("rm", "--node", client, "private:/docs/a.bin")
        until(lambda: (linked, "-") in records(client), 60, "the removed file let go")
        book = records(client)
        assert not any(c == kept and what in ("-", "linked") for c, what in book)
        # the root's and docs' old directory objects were replaced: let go as well;
        # the private drive's current objects stay marked
        gone = {c for c, what in book if what == "-"}
        assert gone - {linked}, "the replaced directory objects are let go"
        until(lambda: keeper_round(client).get("uploads_let_go") == 0, 60, "a quiet round")
        last = keeper_round(client)
        assert last["complete_walk"] and last["failed"] == 0, last
        # linked again (the cap kept elsewhere): renewed at once, not at the next round
        assert keeper_status(client)["kept_when_linked"] == 0
        cli("ln", "--node", client, read_cap(put_a), "private:/again.bin")
        until(lambda: keeper_status(client)["kept_when_linked"] == 1, 60, "renewed when linked")
        shown = cli("status", "--node", client).stdout  # the rows every front end shows
        assert "lease book:" in shown and "kept alive:" in shown, shown
        leases = json.loads(cli("status", "--node", client, "--json").stdout)["details"]["leases"]
        assert leases["tracked"] >= 1 and leases["linked"] >= 1, leases
