"""A friend joins with defaults only (docs/bootstrap.md, "Invitations"), on real node
processes: a 5-node local grid; ``invite --write``; the friend's node made with
``create-node --join`` and started; the friend puts 50 MB into ``shared:/`` and
``private:/`` and reads both back (the grid's encoding came with the invitation:
its default happiness of 7 could not be met by 5 storage nodes); another node
lists the friend's shared file; the code is refused the second time; after
``revoke`` the friend's next write to the shared drive is refused with a clear
message."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

from ..realgrid import cli, local_grid

pytestmark = [pytest.mark.e2e]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(400)
def test_a_friend_joins_with_an_invitation(tmp_path: Path) -> None:
    data = os.urandom(50_000_000)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    with local_grid(tmp_path / "grid", nodes=5) as grid:
        out = cli("invite", "--write", "alice", grid.introducer).stdout
        code = next(line for line in out.splitlines() if line.startswith("p2ps-invite:"))
        friend = tmp_path / "friend"
        port = _free_udp_port()
        made = cli(
            "create-node", friend, "--join", code, "--listen", f"127.0.0.1:{port}", timeout=60
        ).stdout
        assert "joined through invitation 'alice'" in made
        assert "shared drive: read and write access" in made
        assert "the grid's encoding: 3-of-10, happy 4" in made
        cli("start", friend, timeout=60)
        try:
            status = json.loads(cli("status", friend, "--json").stdout)
            assert "the grid's p2ps-params line" in status["api"]["encoding_source"]
            cli("put", "--node", friend, src, "shared:/alice.bin", timeout=180)
            cli("put", "--node", friend, src, "private:/mine.bin", timeout=180)
            for path in ("shared:/alice.bin", "private:/mine.bin"):
                back = tmp_path / "back.bin"
                cli("get", "--node", friend, "-f", path, back, timeout=180)
                assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
            listed = cli("ls", "--node", grid.node(2), "-l", "shared:/").stdout
            assert "alice.bin" in listed and "50000000" in listed
            # the code works once
            other = tmp_path / "other"
            again = cli(
                "create-node", other, "--join", code, "--listen", "127.0.0.1:0", check=False
            )
            assert again.returncode == 1
            assert "the inviter refused: invitation 'alice' was already used" in again.stderr
            writers = cli("writers", grid.introducer).stdout
            assert "alice" in writers and "write" in writers and "used" in writers
            # revoked: the next write to the shared drive is refused, clearly
            cli("revoke", "alice", grid.introducer)
            refused = cli("mkdir", "--node", friend, "shared:/more", check=False)
            assert refused.returncode == 1
            assert "may not change the shared drive" in refused.stderr
            assert "invitation with write access" in refused.stderr
            cli("mkdir", "--node", friend, "private:/still-mine")  # its own drive: fine
        finally:
            cli("stop", friend, check=False, timeout=60)
