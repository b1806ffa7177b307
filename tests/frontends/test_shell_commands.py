"""The shell's commands (shell.commands.Shell) against a real API server in this
process (memory backend + memory vdrive, on 127.0.0.1 port 0), with a recording
output: navigation, transfers (including a cancelled one), errors as one line,
reconnecting after the node went away, and the bootstrap route."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pstore.api_client import ApiCallError, NodeClient
from p2pstore.immutable import EncodingParams
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.web.context import BOOTSTRAP
from p2pstore.web.server import ApiServer
from shell.commands import Shell
from shell.errors import Cancelled
from shell.session import Connection, ShellState
from shell.transfer import TransferRunner

TOKEN = "t0ken"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Server:
    def __init__(self, bootstrap: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.backend = MemoryApplication(
            params=EncodingParams.create(3, 10, 64 * 1024), vdrive=MemoryVdrive()
        )
        info = {"introducer": True, "bootstrap": "p2ps-seed A h:1\n", "self": "p2ps-seed B h:2\n"}
        self.server = ApiServer(self.backend, TOKEN)
        if bootstrap:
            self.server.app[BOOTSTRAP] = lambda: info
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.url = self.server.url

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Rec:
    width = 80

    def __init__(self) -> None:
        self.out: list[str] = []
        self.bars: list[str] = []

    def line(self, text: str) -> None:
        self.out.append(text)

    def lines(self, lines: list[str], *, page: bool = False) -> None:
        self.out.extend(lines)

    def progress(self, text: str) -> None:
        self.bars.append(text)

    def progress_done(self) -> None:
        pass

    def clear(self) -> None:
        self.out.append("<screen cleared>")

    def take(self) -> list[str]:
        out, self.out = self.out, []
        return out


@pytest.fixture
def srv() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def make_shell(url: list[str], local: Path) -> tuple[Shell, Rec]:
    rec = Rec()
    conn = Connection(lambda: NodeClient(url[0], TOKEN), name="node")
    runner = TransferRunner(rec, delay=0.0, interval=0.01)
    return Shell(conn, rec, ShellState(local), transfers=runner), rec


def test_navigation_transfers_and_errors(srv: Server, tmp_path: Path) -> None:
    sh, rec = make_shell([srv.url], tmp_path)
    data = os.urandom(200_000)
    (tmp_path / "big file.bin").write_bytes(data)
    (tmp_path / "small.txt").write_text("hello\tworld\n")

    assert sh.run_line("mkdir -p docs/sub 'my dir'")
    assert rec.take() == []
    sh.run_line("ls 'my dir'")
    assert rec.take() == ["(empty directory)"]  # not silence, which reads like a hang
    sh.run_line("clear")
    assert rec.take() == ["<screen cleared>"]
    sh.run_line("put 'big file.bin' docs")
    assert rec.take() == ["put shared:/docs/big file.bin (195.3 KiB)"]
    sh.run_line("put small.txt")
    sh.run_line("ls")
    assert rec.take()[-1].split() == ["docs/", "my", "dir/", "small.txt"]
    sh.run_line("cd docs")
    assert sh.prompt() == "p2ps node shared:/docs> "
    sh.run_line("ls -l")
    out = rec.take()
    assert out[0].startswith("dir ") and out[1].endswith("big file.bin")
    sh.run_line("get 'big file.bin' copy.bin")
    assert rec.take() == ["got copy.bin (195.3 KiB)"]
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert (tmp_path / "copy.bin").stat().st_mode & 0o777 == 0o666 & ~_umask()
    (tmp_path / "copy.bin").write_bytes(b"mine")
    sh.run_line("get 'big file.bin' copy.bin")  # an existing local file is kept
    assert rec.take() == ["error: copy.bin exists; use get -f to replace it"]
    assert (tmp_path / "copy.bin").read_bytes() == b"mine"
    sh.run_line("get -f 'big file.bin' copy.bin")
    assert rec.take() == ["got copy.bin (195.3 KiB)"]
    assert (tmp_path / "copy.bin").read_bytes() == data
    sh.run_line("cat ../small.txt")
    assert rec.take() == ["hello   world"]
    sh.run_line("info 'big file.bin'")
    info = rec.take()
    assert info[0] == "path:          shared:/docs/big file.bin"
    assert any(ln.startswith("cap:           p2ps:chk:") for ln in info)
    cap = next(ln.split()[1] for ln in info if ln.startswith("cap:"))
    sh.run_line("verify 'big file.bin'")
    assert rec.take()[0].startswith("healthy: 10 of 10 shares good")
    sh.run_line(f"ln {cap} private:/linked.bin")
    sh.run_line("mv /small.txt private:/nodir/x")  # a missing parent: error
    assert rec.take()[-1].startswith("error: ")
    sh.run_line("mv /small.txt sub")  # into a directory
    sh.run_line("ls sub")
    assert rec.take() == ["small.txt"]
    sh.run_line("mv sub/small.txt private:/moved.txt")  # between drives
    sh.run_line("cd private:/")
    sh.run_line("ls")
    assert rec.take() == ["linked.bin  moved.txt"]
    sh.run_line("drive shared")
    sh.run_line("pwd")
    assert rec.take() == ["shared:/docs"]
    sh.run_line("cd -")
    sh.run_line("pwd")
    assert rec.take() == ["private:/"]
    sh.run_line(f"get {cap} fromcap.bin")
    assert (tmp_path / "fromcap.bin").read_bytes() == data
    rec.take()

    # errors: one line each, the shell goes on
    for line, expected in [
        ("nope", "error: unknown command 'nope'"),
        ("cd /missing", "error: private:/missing: no such directory"),
        ("cd moved.txt", "error: private:/moved.txt is not a directory"),
        ("get missing.txt", "error: private:/missing.txt: no such file or directory"),
        ("put no-such-file", "error: cannot read no-such-file: No such file or directory"),
        ("mkdir /", "error:"),
        ("rm /", "error: rm: a drive's root cannot be removed"),
        ("get p2ps:chk:bad", "error: "),
        ("cat 'unclosed", "error: unclosed ' quote in the command line"),
    ]:
        assert sh.run_line(line)
        out = rec.take()
        assert len(out) == 1 and out[0].startswith(expected), (line, out)
    sh.run_line("rm -r /")
    sh.run_line("rm moved.txt linked.bin")
    sh.run_line("ls")
    assert rec.take() == [
        "error: rm: a drive's root cannot be removed",
        "(empty directory)",  # the drive is empty: said, not silence
    ]
    assert not list(tmp_path.glob(".*part*"))
    assert sh.run_line("exit") is False


def test_status_peers_bootstrap_help_and_local(srv: Server, tmp_path: Path) -> None:
    sh, rec = make_shell([srv.url], tmp_path)
    sh.run_line("status")
    out = rec.take()
    assert out[0] == f"API:           {srv.url}" and "vdrive:        available" in out
    sh.run_line("peers")
    assert rec.take() == ["no peers"]
    sh.run_line("bootstrap")
    assert rec.take() == [
        "# this node (an introducer): give these lines to people who join",
        "p2ps-seed B h:2",
        "# this node's bootstrap list (others can join with it too)",
        "p2ps-seed A h:1",
    ]
    sh.run_line("help put")
    assert rec.take()[0] == (
        "usage: put [-n] [--mode convergent|random] [--mutable] [--expect-sequence N] "
        "LOCAL [REMOTE|WRITECAP]"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "f.txt").write_text("x")
    sh.run_line("lls")
    assert rec.take() == ["sub/   f.txt"]
    sh.run_line("lcd sub")
    sh.run_line("lpwd")
    assert rec.take() == [str(tmp_path / "sub")]
    sh.run_line("lcd nowhere")
    assert rec.take()[0].startswith("error: lcd: nowhere: not a directory")


def test_check_deep_and_pins(srv: Server, tmp_path: Path) -> None:
    """docs/maintenance.md: ``check --deep`` with a progress line, ``pin``/``pins``/``unpin``."""
    sh, rec = make_shell([srv.url], tmp_path)
    (tmp_path / "a.bin").write_bytes(os.urandom(9000))
    assert sh.run_line("mkdir -p docs/sub")
    sh.run_line("put a.bin docs/sub")
    sh.run_line("put a.bin docs")
    rec.take()
    sh.run_line("check --deep docs")
    assert rec.take() == [  # the same file twice: checked once
        "2 files below shared:/docs: 2 healthy, 0 repaired, 0 not healthy, "
        "0 unrecoverable; 1 different"
    ]
    assert rec.bars[-1] == "checking 2/2: shared:/docs/sub/a.bin"
    sh.run_line("pin docs/a.bin")
    assert rec.take() == ["pinned: lease renewed on 10 holders"]
    sh.run_line("pins")
    out = rec.take()
    assert out[-1] == "1 pins" and out[0].endswith("shared:/docs/a.bin")
    assert "p2ps:chk-verify:" in out[0]
    sh.run_line("unpin docs/a.bin")
    assert rec.take() == ["unpinned: this node no longer renews the file"]
    sh.run_line("pins")
    assert rec.take() == ["0 pins"]


def test_bootstrap_route_needs_the_token(srv: Server) -> None:
    with pytest.raises(ApiCallError) as e:
        NodeClient(srv.url, None).bootstrap()
    assert e.value.status == 401
    assert NodeClient(srv.url, TOKEN).bootstrap()["introducer"] is True


def test_unexpected_errors_are_one_line_unless_debug(tmp_path: Path) -> None:
    def broken() -> NodeClient:
        raise ValueError("a bug")

    for debug in (False, True):
        rec = Rec()
        sh = Shell(Connection(broken, "n"), rec, ShellState(tmp_path), debug=debug)
        assert sh.run_line("ls")
        out = rec.take()
        assert out[-1] == "internal error: ValueError: a bug (run with --debug for details)"
        assert (out[0] == "Traceback (most recent call last):") is debug
        assert len(out) == 1 or debug


def test_bootstrap_route_without_a_provider_is_unavailable(tmp_path: Path) -> None:
    s = Server(bootstrap=False)
    try:
        sh, rec = make_shell([s.url], tmp_path)
        sh.run_line("bootstrap")
        assert rec.take() == [
            "error: this API does not publish a bootstrap list (not served by a node) (unavailable)"
        ]
    finally:
        s.close()


def test_a_cancel_that_came_too_late_says_what_was_kept(srv: Server, tmp_path: Path) -> None:
    """If the node had linked the file before the Ctrl-C reached it, the shell does not
    claim that nothing was kept: it names the file and how to remove it."""
    sh, rec = make_shell([srv.url], tmp_path)
    (tmp_path / "a.bin").write_bytes(b"a" * 100)
    sh.run_line("put a.bin")
    rec.take()
    dst = sh.remote("a.bin")
    with pytest.raises(Cancelled) as e:
        sh._say_what_a_cancel_kept(dst, None)  # it was not there before the put
    assert str(e.value) == (
        "cancelled too late: the upload had finished and shared:/a.bin was linked "
        "(remove it with: rm shared:/a.bin)"
    )
    sh._say_what_a_cancel_kept(dst, sh._stat(dst))  # unchanged: nothing to say
    # with the put's op id the node says definitely: this id was never made
    sh._say_what_a_cancel_kept(dst, None, "ab" * 16)


def test_cancelled_put_stores_and_links_nothing(srv: Server, tmp_path: Path) -> None:
    sh, rec = make_shell([srv.url], tmp_path)
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    pressed = threading.Event()

    def feed() -> None:  # a source that sends 1 MiB, then stalls until Ctrl-C
        fd = os.open(fifo, os.O_WRONLY)
        os.write(fd, b"x" * (1 << 20))
        pressed.wait(10)
        os.close(fd)

    def interrupt(text: str) -> None:  # Ctrl-C arrives while the bar is drawn
        if "1.0 MiB" in text:
            pressed.set()
            raise KeyboardInterrupt

    rec.progress = interrupt  # type: ignore[method-assign]
    t = threading.Thread(target=feed, daemon=True)
    t.start()
    sh.run_line("put slow f.bin")
    t.join(10)
    assert pressed.is_set() and rec.take() == ["error: cancelled: nothing was kept"]
    sh.run_line("ls")
    assert rec.take() == ["(empty directory)"]  # nothing was linked
    assert srv.backend.bytes_used == 0

    rec.progress = lambda text: None  # type: ignore[method-assign]
    (tmp_path / "f.bin").write_bytes(os.urandom(3 << 20))
    sh.run_line("put f.bin")
    rec.take()
    seen = []

    def interrupt_get(text: str) -> None:
        seen.append(text)
        raise KeyboardInterrupt

    rec.progress = interrupt_get  # type: ignore[method-assign]
    sh.run_line("get f.bin out.bin")
    out = rec.take()
    # Either cancelled (no file at all) or, if every byte had arrived, completed.
    if out == ["error: cancelled: nothing was kept"]:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "slow"]
    else:
        assert out[-1] == "got out.bin (3.0 MiB)"
        assert (tmp_path / "out.bin").read_bytes() == (tmp_path / "f.bin").read_bytes()
    assert seen and not list(tmp_path.glob(".*part*"))


def test_node_goes_away_and_comes_back(tmp_path: Path) -> None:
    first = Server()
    url = [first.url]
    sh, rec = make_shell(url, tmp_path)
    sh.run_line("mkdir a")
    first.close()
    sh.run_line("ls")
    (line,) = rec.take()
    assert line.startswith("node unreachable: cannot reach the node's API")
    assert "the next command tries again" in line
    assert not sh.conn.connected
    second = Server()  # a new port, as a restarted node with web_port 0
    url[0] = second.url
    try:
        sh.run_line("mkdir b")
        sh.run_line("ls")
        assert rec.take() == ["b/"]
    finally:
        second.close()
