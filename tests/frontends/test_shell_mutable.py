"""The shell and mutable files: parsing of ``put --mutable`` / ``put LOCAL WRITECAP``
(sans-I/O), and the commands against a real API server in this process whose
backend has mutable files (``p2pstore.testing.memory_mutable``): make a mutable
file, publish versions, a conflict, get/cat/info/check with each kind of cap, the
refusals, and a Ctrl-C during a publish."""

from __future__ import annotations

import asyncio
import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.api_client import NodeClient
from p2pstore.immutable import EncodingParams
from p2pstore.mutable import WriteCap
from p2pstore.testing.memory_mutable import MemoryMutableApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.web.server import ApiServer
from shell import mutable_cmds
from shell.errors import Cancelled, UsageError
from shell.parse import lookup, parse_line
from shell.render import help_lines

from .test_shell_commands import TOKEN, make_shell


class MutableServer:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backend = MemoryMutableApplication(
            params=EncodingParams.create(3, 10, 64 * 1024), vdrive=MemoryVdrive()
        )
        self.server = ApiServer(self.backend, TOKEN)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.url = self.server.url

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def srv() -> Iterator[MutableServer]:
    s = MutableServer()
    yield s
    s.close()


def test_parsing_of_mutable_puts() -> None:
    inv = parse_line("put --mutable a.txt")
    assert inv is not None and inv.flag("mutable") and mutable_cmds.is_mutable_put(inv)
    inv = parse_line("put a.txt p2ps:mut:xx:yy --expect-sequence 3")
    assert inv is not None and inv.lists["expect_sequence"] == ("3",)
    assert mutable_cmds.is_mutable_put(inv)
    inv = parse_line("put --expect-sequence=2 a.txt docs/")
    assert inv is not None and mutable_cmds.is_mutable_put(inv)  # refused when run
    inv = parse_line("put a.txt docs/")
    assert inv is not None and not mutable_cmds.is_mutable_put(inv)
    spec = lookup("put")
    assert spec is not None
    assert "[--mutable]" in spec.usage and "[--expect-sequence N]" in spec.usage
    assert "REMOTE|WRITECAP" in spec.usage
    text = "\n".join(help_lines(spec))
    assert "put --mutable LOCAL" in text and "write cap" in text
    with pytest.raises(UsageError):
        parse_line("put --expect-sequence")


def test_mutable_cap_checks_before_the_node_is_asked() -> None:
    with pytest.raises(UsageError, match="looks cut off"):
        mutable_cmds.checked_cap("p2ps:mut:aaaa:bbbb", readable=False)
    verify = WriteCap.generate().verify_cap().to_string()
    assert mutable_cmds.checked_cap(verify, readable=False).to_string() == verify
    with pytest.raises(UsageError, match="not read it"):
        mutable_cmds.checked_cap(verify, readable=True)


def test_make_publish_read_and_check_a_mutable_file(srv: MutableServer, tmp_path: Path) -> None:
    sh, rec = make_shell([srv.url], tmp_path)
    v1, v2 = os.urandom(150_000), b"second version\n"
    (tmp_path / "v1.bin").write_bytes(v1)
    (tmp_path / "v2.txt").write_bytes(v2)

    sh.run_line("put --mutable v1.bin")
    out = rec.take()
    assert out[0] == "new mutable file: version 1 (146.5 KiB)", out
    write_cap = out[1].split()[-1]
    read_cap = out[2].split()[-1]
    verify_cap = out[3].split()[-1]
    assert write_cap.startswith("p2ps:mut:") and read_cap.startswith("p2ps:mut-ro:")
    assert verify_cap.startswith("p2ps:mut-verify:")
    assert "keys to the file" in out[4] and "write cap can change it" in out[4]
    sh.run_line("ls")
    assert rec.take() == ["(empty directory)"]  # nothing is linked in the drive

    sh.run_line(f"get {read_cap} one.bin")
    assert rec.take() == ["got one.bin (146.5 KiB)"]
    assert (tmp_path / "one.bin").read_bytes() == v1

    sh.run_line(f"put v2.txt {write_cap}")
    assert rec.take() == ["published version 2 (15 B)"]
    sh.run_line(f"cat {write_cap}")
    assert rec.take() == ["second version"]

    # a publish expecting an old version is a conflict, said plainly
    sh.run_line(f"put v1.bin {write_cap} --expect-sequence 1")
    (line,) = rec.take()
    assert line.startswith("error: conflict: the latest is version 2"), line
    assert "--expect-sequence 2" in line and "(mutable-conflict)" in line
    sh.run_line(f"put v1.bin {write_cap} --expect-sequence 2")
    assert rec.take() == ["published version 3 (146.5 KiB)"]

    sh.run_line(f"info {read_cap}")
    info = rec.take()
    assert info[0] == "kind:          mutable file, read cap", info
    assert "version:       3" in info and any(ln.startswith("published:") for ln in info)
    assert f"verify cap:    {verify_cap}" in info
    assert not any(write_cap in ln for ln in info)
    sh.run_line(f"info {verify_cap}")
    assert rec.take()[0] == "kind:          mutable file, verify cap"
    sh.run_line(f"check {verify_cap}")
    assert re.search(r"healthy", " ".join(rec.take()), re.I)
    sh.run_line(f"check --verify --repair {read_cap}")
    assert "healthy" in " ".join(rec.take()).lower()


def test_refusals_are_one_clear_line(srv: MutableServer, tmp_path: Path) -> None:
    sh, rec = make_shell([srv.url], tmp_path)
    (tmp_path / "a.txt").write_text("a")
    made = NodeClient(srv.url, TOKEN).put_mutable(io.BytesIO(b"a"), size=1)
    write_cap, read_cap, verify_cap = made["write_cap"], made["read_cap"], made["verify_cap"]
    cases = {
        f"put a.txt {read_cap}": "only a write cap (p2ps:mut:...) can publish",
        f"put a.txt {verify_cap}": "this cap can check the file",
        f"get {verify_cap} x.bin": "a verify cap can check a mutable file but not read it",
        f"cat {verify_cap}": "but not read it",
        f"put --mutable a.txt {write_cap}": "put --mutable makes a new file: give LOCAL only",
        "put --mutable --expect-sequence 1 a.txt": "--expect-sequence goes with WRITECAP",
        "put --expect-sequence 1 a.txt docs/": "--expect-sequence goes with WRITECAP",
        f"put --mode random a.txt {write_cap}": "-n and --mode are for drive paths",
        f"put a.txt {write_cap} --expect-sequence x": "takes a version number",
        f"put a.txt {write_cap[:-3]}": "bad cap",
        f"get {read_cap}": "give a LOCAL file name",
    }
    for line, want in cases.items():
        sh.run_line(line)
        out = rec.take()
        assert len(out) == 1 and out[0].startswith("error: ") and want in out[0], (line, out)
    # an immutable cap names a file that never changes
    imm = NodeClient(srv.url, TOKEN).put(io.BytesIO(b"a"), size=1)["cap"]
    sh.run_line(f"put a.txt {imm}")
    assert "names an immutable file, which never changes" in rec.take()[0]
    # a write cap with no file behind it
    other = NodeClient(srv.url, TOKEN).put_mutable(io.BytesIO(b"a"), size=1)
    srv.backend.mutable.clear()
    sh.run_line(f"put a.txt {other['write_cap']}")
    assert "(file-not-found)" in rec.take()[0]


def test_ctrl_c_during_a_publish(srv: MutableServer, tmp_path: Path) -> None:
    """Ctrl-C while a version is being sent (from a FIFO that stalls): the node
    publishes nothing, the shell says so and lives on; a cancel after the version was
    published is told as such."""
    sh, rec = make_shell([srv.url], tmp_path)
    (tmp_path / "a.txt").write_text("first")
    sh.run_line("put --mutable a.txt")
    write_cap = rec.take()[1].split()[-1]
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    pressed = threading.Event()

    def feed() -> None:  # 1 MiB, then a stall until Ctrl-C
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, b"x" * (1 << 20))
        pressed.wait(10)
        os.close(fd)

    def interrupt(text: str) -> None:
        if "1.0 MiB" in text:
            pressed.set()
            raise KeyboardInterrupt

    rec.progress = interrupt  # type: ignore[method-assign]
    t = threading.Thread(target=feed, daemon=True)
    t.start()
    sh.run_line(f"put slow {write_cap}")
    t.join(10)
    assert pressed.is_set() and rec.take() == ["error: cancelled: nothing was kept"]
    rec.progress = lambda text: None  # type: ignore[method-assign]
    sh.run_line(f"info {write_cap}")
    assert "version:       1" in rec.take()

    # the latest moved past the version seen before: the shell does not claim otherwise
    with pytest.raises(Cancelled, match="cancelled too late: the latest version is now 1"):
        mutable_cmds._say_what_a_cancel_kept(sh, write_cap, 0)
    mutable_cmds._say_what_a_cancel_kept(sh, write_cap, 1)  # unchanged: nothing to say
