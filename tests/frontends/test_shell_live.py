"""The shell in live directories (docs/mutable.md, "Live directories"): paths and
labels (sans-I/O), and the commands against a real API server in this process whose
backend has mutable files and a memory vdrive that opens live directories
(``p2pstore.testing.memory_vdrive``): ``mkdir --live``, ``cd CAP``, every command
with relative paths inside it, ``drive`` back and forth, a read cap that reads
every change and is refused each one, and no write cap in any line shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pstore.app.vpath import VPath, drive_label
from p2pstore.mutable import WriteCap
from quic_transport.identity import b32encode
from shell.errors import UsageError
from shell.parse import parse_line
from shell.paths import hide_live_caps, is_cap, resolve_remote, show_remote

from .test_shell_commands import make_shell
from .test_shell_mutable import MutableServer, srv  # noqa: F401  (the fixture)

W = WriteCap.generate(directory=True)
WRITE = W.to_string()
READ = W.read_cap().to_string()
PK8 = b32encode(W.public_key)[:8]


def test_live_paths_and_labels() -> None:
    shared = VPath("shared", ("a",))
    assert resolve_remote(WRITE, shared) == VPath(WRITE, ())
    assert resolve_remote(f"{WRITE}/docs/../x/", shared) == VPath(WRITE, ("x",))
    inside = VPath(READ, ("docs",))
    assert resolve_remote("sub", inside) == VPath(READ, ("docs", "sub"))
    assert resolve_remote("/top", inside) == VPath(READ, ("top",))
    assert resolve_remote("..", VPath(READ, ())) == VPath(READ, ())
    assert resolve_remote("shared:/b", inside) == VPath("shared", ("b",))
    assert is_cap(WRITE) and not is_cap(f"{WRITE}/docs") and is_cap("p2ps:mut:x:y")
    with pytest.raises(UsageError, match="a cap is not a path"):
        resolve_remote("p2ps:chk:abc", shared)
    with pytest.raises(UsageError, match="bad live directory cap"):
        resolve_remote("p2ps:dir:mut:zz/a", shared)
    mutable_file = WriteCap.generate().to_string()  # not a directory
    with pytest.raises(UsageError):
        resolve_remote(mutable_file, shared)

    assert drive_label(WRITE) == f"live:{PK8}" and drive_label(READ) == f"live-ro:{PK8}"
    assert drive_label("private") == "private"
    assert show_remote(VPath(WRITE, ("d", "e"))) == f"live:{PK8}:/d/e"
    assert show_remote(shared) == "shared:/a"
    said = hide_live_caps(f"no such file or directory: {WRITE}/x (and {READ})")
    assert said == f"no such file or directory: live:{PK8}:/x (and live-ro:{PK8}:)"

    inv = parse_line("mkdir --live")
    assert inv is not None and inv.flag("live") and inv.args == ()


def test_work_inside_a_live_directory(srv: MutableServer, tmp_path: Path) -> None:  # noqa: F811
    sh, rec = make_shell([srv.url], tmp_path)
    data = os.urandom(100_000)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "note.txt").write_text("hello live\n")

    sh.run_line("mkdir")
    assert rec.take() == ["error: mkdir: missing PATH (or --live for a new live directory)"]
    sh.run_line("mkdir --live docs")
    assert "takes no PATH" in rec.take()[0]
    sh.run_line("mkdir --live")
    out = rec.take()
    assert out[0] == "new live directory", out
    write, read = out[1].split()[-1], out[2].split()[-1]
    assert write.startswith("p2ps:dir:mut:") and read.startswith("p2ps:dir:mut-ro:")
    assert out[3].split()[-1].startswith("p2ps:dir:mut-verify:")
    assert "keys to the directory" in out[4]
    label = drive_label(write)
    seen: list[str] = []  # every line shown from here on

    def take() -> list[str]:
        lines = rec.take()
        seen.extend([*lines, sh.prompt()])
        return lines

    assert label.startswith("live:") and len(label) == len("live:") + 8

    sh.run_line(f"cd {write}")
    assert take() == []
    assert sh.prompt() == f"p2ps node {label}:/> "
    sh.run_line("ls")
    assert take() == ["(empty directory)"]
    sh.run_line("mkdir -p docs/sub")
    sh.run_line("cd docs")
    assert sh.prompt() == f"p2ps node {label}:/docs> "
    sh.run_line("pwd")
    assert take() == [f"{label}:/docs"]
    sh.run_line("put a.bin")
    assert take() == [f"put {label}:/docs/a.bin (97.7 KiB)"]
    sh.run_line("put note.txt sub/")
    assert take() == [f"put {label}:/docs/sub/note.txt (11 B)"]
    sh.run_line("ls")
    assert take()[-1].split() == ["sub/", "a.bin"]
    sh.run_line("cat sub/note.txt")
    assert take() == ["hello live"]
    sh.run_line("get a.bin copy.bin")
    assert take() == ["got copy.bin (97.7 KiB)"]
    assert (tmp_path / "copy.bin").read_bytes() == data
    sh.run_line("mv a.bin sub")
    sh.run_line("ls sub")
    assert take()[-1].split() == ["a.bin", "note.txt"]
    sh.run_line("info sub/a.bin")
    assert f"path:          {label}:/docs/sub/a.bin" in take()
    sh.run_line("info /")
    info = take()
    assert "live directory: read and change (write cap)" in info
    assert f"read cap:      {read}" in info
    sh.run_line("cd ..")
    sh.run_line("rm -r docs/sub/note.txt")
    sh.run_line("ls docs/sub")
    assert take() == ["a.bin"]
    sh.run_line("cat nothing.txt")
    assert take() == [f"error: {label}:/nothing.txt: no such file or directory"]

    # back to the shared drive and into the live directory again by its label
    sh.run_line("drive shared")
    assert sh.prompt() == "p2ps node shared:/> "
    sh.run_line("ls")
    assert take() == ["(empty directory)"]  # nothing went into the shared drive
    sh.run_line("drive")
    listed = take()
    assert listed[-1].split() == [label, f"{label}:/"]
    sh.run_line(f"drive {label}")
    assert sh.prompt() == f"p2ps node {label}:/> "
    sh.run_line("drive live:nothing")
    assert "unknown drive" in take()[0]
    sh.run_line("drive private")
    sh.run_line(f"put note.txt {write}/docs/from-private.txt")
    assert take() == [f"put {label}:/docs/from-private.txt (11 B)"]

    # the read cap sees every change and is refused each one, in one line
    sh.run_line(f"cd {read}/docs")
    ro = drive_label(read)
    assert sh.prompt() == f"p2ps node {ro}:/docs> "
    sh.run_line("ls")
    assert take()[-1].split() == ["sub/", "from-private.txt"]
    sh.run_line("mkdir new")
    (line,) = take()
    assert line.startswith("error: this is the read cap of a live directory"), line
    assert line.endswith("(vdrive-refused)")
    sh.run_line("put note.txt")
    assert take()[-1].endswith("(vdrive-refused)")
    sh.run_line("info /")
    assert "live directory: read only" in take()

    # a write cap is never shown once made: not in the prompt, a message or an error
    take()
    assert all(write not in ln for ln in seen)
