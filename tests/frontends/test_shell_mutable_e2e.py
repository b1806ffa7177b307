"""Mutable files from the real shell (``p2pstore shell`` in a pseudo-terminal) on a
real local grid (``p2pstore grid up --nodes 3``): ``put --mutable`` prints the caps;
the read cap reads on another node's CLI; a new version from the shell; a version
from another node makes a stale ``--expect-sequence`` a conflict; ``get``, ``cat``,
``info`` and ``check`` with each kind of cap; ``mkdir --live``, ``cd`` into it, a
change from the shell read on another node and one from another node seen in the
shell, ``drive shared`` back."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pexpect
import pytest

from ..realgrid import cli, local_grid
from .test_shell_e2e import PROMPT, _cmd, _run, _spawn

pytestmark = [pytest.mark.timeout(150), pytest.mark.e2e]


def test_mutable_files_from_the_shell_on_a_real_grid(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    v1 = os.urandom(400_000)
    (work / "v1.bin").write_bytes(v1)
    (work / "v2.txt").write_text("second version\n")
    (tmp_path / "v3.txt").write_text("third, from node2\n")
    with local_grid(tmp_path / "grid", nodes=3) as grid:
        # wide enough that a line with a read cap does not wrap (a wrapped echo would
        # end a command's output early)
        child = _spawn(grid.node(1), work, tmp_path / "hist", columns=250, timeout=30)
        try:
            child.expect(PROMPT)
            out = _run(child, "put --mutable v1.bin")
            assert "new mutable file: version 1 (390.6 KiB)" in out, out
            assert "keys to the file" in out and "write cap can change it" in out
            write_cap = re.search(r"write cap:\s+(p2ps:mut:\S+)", out).group(1)  # type: ignore[union-attr]
            read_cap = re.search(r"read cap:\s+(p2ps:mut-ro:\S+)", out).group(1)  # type: ignore[union-attr]
            verify_cap = re.search(r"verify cap:\s+(p2ps:mut-verify:\S+)", out).group(1)  # type: ignore[union-attr]

            got = tmp_path / "from-node3.bin"
            cli("get", "--node", grid.node(3), read_cap, got)
            assert got.read_bytes() == v1

            assert "published version 2 (15 B)" in _run(child, f"put v2.txt {write_cap}")
            assert "second version" in _run(child, f"cat {read_cap}")
            cli("put", "--node", grid.node(2), tmp_path / "v3.txt", write_cap)
            out = _run(child, f"put v1.bin {write_cap} --expect-sequence 2")
            assert "error: conflict: the latest is version 3" in out, out
            assert "--expect-sequence 3" in out
            assert "got v3.txt" in _run(child, f"get {write_cap} v3.txt")
            assert (work / "v3.txt").read_text() == "third, from node2\n"

            info = _run(child, f"info {verify_cap}")
            assert "mutable file, verify cap" in info and "version:       3" in info, info
            held = re.search(r"root held by:\s+(\d+) of (\d+) peers asked", info)
            assert held and held.group(1) == held.group(2), info
            assert "healthy" in _run(child, f"check {read_cap}").lower()
            out = _run(child, f"get {verify_cap} x.bin")
            assert "a verify cap can check a mutable file but not read it" in out

            # a live directory: made and entered in the shell, changed from another node
            out = _run(child, "mkdir --live")
            assert "new live directory" in out, out
            live_w = re.search(r"write cap:\s+(p2ps:dir:mut:\S+)", out).group(1)  # type: ignore[union-attr]
            live_r = re.search(r"read cap:\s+(p2ps:dir:mut-ro:\S+)", out).group(1)  # type: ignore[union-attr]
            _cmd(child, f"cd {live_w}")
            child.expect(PROMPT)
            label = child.match.group(1)
            assert re.fullmatch(r"live:[a-z2-7]{8}:/", label), label
            assert _run(child, "mkdir docs").strip() == ""
            assert f"put {label}docs/v2.txt (15 B)" in _run(child, "put v2.txt docs/")
            listed = cli("ls", "--node", grid.node(3), f"{live_r}/docs").stdout
            assert "v2.txt" in listed, listed
            cli("put", "--node", grid.node(2), tmp_path / "v3.txt", f"{live_w}/docs/v3.txt")
            _cmd(child, "cd docs")
            child.expect(PROMPT)
            out = _run(child, "ls")
            assert "v2.txt" in out and "v3.txt" in out, out
            assert "third, from node2" in _run(child, "cat v3.txt")
            assert live_w not in _run(child, "pwd")
            _cmd(child, "drive shared")
            child.expect(PROMPT)
            assert child.match.group(1) == "shared:/"
            _cmd(child, "exit")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
