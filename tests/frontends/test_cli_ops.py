"""The client CLI commands: in-process against an API server (with a vdrive) that a
test-made node directory points to, and end to end with real `p2pstore` processes
(create-node + start; put/get/info byte for byte; a clear error once stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore import cli, cli_ops
from p2pstore.api_client import (
    ApiCallError,
    NodeClient,
    NodeUnreachable,
    TransferError,
    default_node_dir,
    resolve_node_dir,
)
from p2pstore.app.errors import Unrecoverable
from p2pstore.base.fsutil import write_text_atomic
from p2pstore.base.progress import Progress, UploadProgress, format_progress, human_bytes
from p2pstore.grid import fd_source
from p2pstore.immutable import EncodingParams
from p2pstore.node.nodedir import NodeDir
from p2pstore.node.pidfile import PidLock
from p2pstore.node.runner import STATUS_FORMAT
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive
from p2pstore.web.server import ApiServer


class ThreadedServer:
    """An ApiServer on its own event loop in a thread (the CLI client is synchronous)."""

    def __init__(self, backend: MemoryApplication, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = ApiServer(backend, token)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serving(root: Path, backend: MemoryApplication) -> Iterator[None]:
    """Make the node directory ``root`` look running (pid lock held, status.json with
    api_url), served by an in-process API over ``backend``."""
    assert cli.main(["create-node", str(root), "--listen", "127.0.0.1:0"]) == 0
    nd = NodeDir(root)
    server = ThreadedServer(backend, nd.load_api_token())
    lock = PidLock(nd.pid_path)
    lock.acquire()
    doc = {"format": STATUS_FORMAT, "state": "running", "pid": os.getpid()}
    doc["api_url"] = server.server.url
    write_text_atomic(nd.status_path, json.dumps(doc))
    try:
        yield
    finally:
        lock.release()
        server.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, MemoryApplication]]:
    """A running-looking node with the memory backend and a vdrive."""
    backend = MemoryApplication(
        params=EncodingParams.create(3, 10, 64 * 1024), vdrive=MemoryVdrive()
    )
    with serving(tmp_path / "node", backend):
        yield tmp_path / "node", backend


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_put_get_ls_mv_rm_ln(
    node: tuple[Path, MemoryApplication], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = node
    src = tmp_path / "data.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    rc, out, _ = run(capsys, "put", src, "--node", root)
    assert rc == 0
    cap = out.strip()
    assert cap.startswith("p2ps:chk:3:10:300000:")
    dst = tmp_path / "back.bin"
    assert run(capsys, "get", cap, dst, "--node", root)[0] == 0
    assert dst.read_bytes() == data
    assert not [p for p in tmp_path.iterdir() if ".part-" in p.name]
    rc, out, _ = run(capsys, "info", cap, "--node", root, "--json")
    assert rc == 0 and json.loads(out)["size"] == 300_000
    rc, text, _ = run(capsys, "info", cap, "--node", root)
    assert rc == 0 and "encoding:      3-of-10" in text and "{" not in text  # no Python dicts
    rc, out, _ = run(capsys, "check", cap, "--verify", "--node", root)
    assert rc == 0 and out.startswith("healthy: 10 of 10")

    assert run(capsys, "mkdir", "/docs/2026", "-p", "--node", root)[0] == 0
    rc, out, err = run(capsys, "put", src, "/docs/2026/data.bin", "--node", root)
    assert rc == 0 and out.strip() == cap and "linked shared:/docs/2026/data.bin" in err
    rc, out, err = run(capsys, "put", src, "/docs/2026/data.bin", "--no-replace", "--node", root)
    assert rc == 1 and out == "" and "(exists, HTTP 409)" in err  # refused before uploading
    rc, out, _ = run(capsys, "ls", "/docs", "--node", root)
    assert out == "2026/\n"
    rc, out, _ = run(capsys, "ls", "-l", "--caps", "/docs/2026", "--node", root)
    assert "300000" in out and cap in out and "data.bin" in out
    rc, out, _ = run(capsys, "ls", "-l", "/docs/2026/data.bin", "--node", root)
    assert rc == 0 and out.startswith("file       300000") and out.endswith(" data.bin\n")
    rc, out, _ = run(
        capsys, "info", "/docs/2026/data.bin", "--node", root
    )  # a path, as in the shell
    assert rc == 0 and out.startswith("path:          shared:/docs/2026/data.bin\n")
    assert "size:          300000 bytes" in out
    dst2 = tmp_path / "back2.bin"
    assert run(capsys, "get", "/docs/2026/data.bin", dst2, "--node", root)[0] == 0
    assert dst2.read_bytes() == data
    assert run(capsys, "ln", cap, "private:/mine.bin", "--node", root)[0] == 0
    rc, _, err = run(capsys, "ln", cap, "private:/mine.bin", "--node", root)
    assert rc == 1 and "already exists" in err
    rc, out, _ = run(capsys, "mv", "/docs/2026/data.bin", "/docs/d.bin", "--node", root, "--json")
    assert rc == 0 and json.loads(out)["dst"] == "shared:/docs/d.bin"  # --json, as elsewhere
    rc, _, err = run(capsys, "rm", "/docs", "--node", root)
    assert rc == 1 and "not empty" in err and "directory-not-empty" in err
    assert run(capsys, "rm", "-r", "/docs", "--node", root)[0] == 0
    rc, out, _ = run(capsys, "ls", "--json", "--node", root)
    assert json.loads(out)["entries"] == []
    rc, out, _ = run(capsys, "ls", "private:/", "--node", root)
    assert out == "mine.bin\n"


def test_check_deep_and_pins(
    node: tuple[Path, MemoryApplication], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``check --deep PATH [--repair]`` over a directory tree; ``pin``/``pins``/``unpin``
    (docs/maintenance.md)."""
    root, backend = node
    caps = []
    for i, size in enumerate((1000, 70_000, 5)):
        src = tmp_path / f"f{i}"
        src.write_bytes(os.urandom(size))
        path = f"/docs/{'sub/' if i else ''}f{i}"
        assert run(capsys, "mkdir", "-p", path.rsplit("/", 1)[0], "--node", root)[0] == 0
        rc, out, _ = run(capsys, "put", src, path, "--node", root)
        assert rc == 0
        caps.append(out.strip())
    rc, out, err = run(capsys, "check", "--deep", "/docs", "--node", root)
    assert rc == 0 and out.endswith(
        "3 files below shared:/docs: 3 healthy, 0 repaired, 0 not healthy, 0 unrecoverable\n"
    ), out
    assert "checking 3/3" in err
    from p2pstore.immutable import parse_cap

    damaged = parse_cap(caps[1])
    assert not isinstance(damaged, str)
    backend.delete_share(damaged, 0)  # type: ignore[arg-type]
    rc, out, _ = run(capsys, "check", "--deep", "shared:/", "--node", root)
    assert rc == 1 and "not healthy: shared:/docs/sub/f1" in out and "1 not healthy" in out
    rc, out, _ = run(capsys, "check", "--deep", "shared:/", "--repair", "--json", "--node", root)
    doc = json.loads(out)
    assert rc == 0 and doc["repaired"] == 1 and doc["healthy"] == 2, doc
    assert doc["different"] == 3
    # a copy (as every backup snapshot holds): listed at both paths, checked once
    assert run(capsys, "put", tmp_path / "f1", "/docs/copy", "--node", root)[0] == 0
    rc, out, _ = run(capsys, "check", "--deep", "/docs", "--node", root)
    assert rc == 0 and out.endswith(
        "4 files below shared:/docs: 4 healthy, 0 repaired, 0 not healthy, "
        "0 unrecoverable; 3 different\n"
    ), out
    rc, _, err = run(capsys, "check", "--deep", caps[0], "--node", root)
    assert rc == 2 and "needs a vdrive directory" in err
    # pins: by path (labelled with it) or by cap; a literal file has nothing to keep
    rc, out, _ = run(capsys, "pin", "/docs/f0", "--node", root)
    assert rc == 0 and out.startswith("pinned: lease renewed on 10 holders")
    rc, out, _ = run(capsys, "pin", caps[1], "--label", "mine", "--node", root)
    assert rc == 0
    rc, out, _ = run(capsys, "pins", "--node", root)
    assert "shared:/docs/f0" in out and "mine" in out and out.endswith("2 pins\n")
    assert caps[0].split(":")[5] not in out  # verify caps only: no read key
    rc, _, err = run(capsys, "pin", caps[2], "--node", root)
    assert rc == 1 and "literal" in err
    assert run(capsys, "unpin", "/docs/f0", "--node", root)[0] == 0
    rc, out, _ = run(capsys, "pins", "--json", "--node", root)
    assert [p["label"] for p in json.loads(out)] == ["mine"]
    rc, _, err = run(capsys, "unpin", "/docs/f0", "--node", root)
    assert rc == 1 and "not pinned" in err


def test_a_put_is_listed_by_its_file_name(
    node: tuple[Path, MemoryApplication], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The web UI and status list a CLI upload by name, not as "(by cap)"."""
    root, _ = node
    src = tmp_path / "holiday photo.jpg"
    src.write_bytes(os.urandom(5000))
    assert run(capsys, "put", src, "--node", root)[0] == 0
    recent = NodeClient.for_node(root).status()["recent_transfers"]
    assert recent[0]["name"] == "holiday photo.jpg" and recent[0]["kind"] == "upload"


def test_get_asks_before_overwriting_or_filling_a_terminal(
    node: tuple[Path, MemoryApplication],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, _ = node
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5_000))
    cap = run(capsys, "put", src, "--node", root)[1].strip()
    dst = tmp_path / "back.bin"
    dst.write_bytes(b"precious")
    rc, _, err = run(capsys, "get", cap, dst, "--node", root)
    assert rc == 2 and f"{dst} exists; use --force to replace it" in err
    assert dst.read_bytes() == b"precious"
    old = os.umask(0o027)
    try:
        assert run(capsys, "get", cap, dst, "--force", "--node", root)[0] == 0
    finally:
        os.umask(old)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_mode & 0o777 == 0o640  # the umask's, not a temp file's 0600
    rc, _, err = run(capsys, "get", cap, tmp_path / "no-such-dir" / "x.bin", "--node", root)
    assert rc == 2 and "cannot write" in err and "No such file or directory" in err
    assert ".part-" not in err  # no hidden temporary name in the message
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    rc, out, err = run(capsys, "get", cap, "--node", root)
    assert rc == 2 and "not writing file data to the terminal" in err and out == ""


def test_node_option_goes_before_or_after_the_command(
    node: tuple[Path, MemoryApplication],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, _ = node
    assert run(capsys, "mkdir", "/before", "--node", root)[0] == 0
    rc, out, _ = run(capsys, "--node", root, "ls")
    assert rc == 0 and out == "before/\n"
    with pytest.raises(SystemExit):  # a command that takes DIR itself says so
        cli.main(["--node", str(root), "run", str(root)])
    assert "--node does not apply to 'run'" in capsys.readouterr().err
    other = tmp_path / "fixed"
    assert cli.main(["create-node", str(other), "--listen", "127.0.0.1:45123"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("P2PSTORE_NODE", str(other))
    rc, out, _ = run(capsys, "bootstrap", "show")  # DIR from $P2PSTORE_NODE, like the rest
    assert rc == 0 and "127.0.0.1:45123" in out
    rc, out2, _ = run(capsys, "--node", other, "bootstrap", "show")
    assert rc == 0 and out2 == out
    # the daemon commands find the node the same way: DIR, --node, $P2PSTORE_NODE
    rc, out_env, err_env = run(capsys, "stop")
    rc2, out_opt, err_opt = run(capsys, "--node", other, "stop")
    assert rc == rc2 == 0 and (out_env, err_env) == (out_opt, err_opt)
    assert "not running" in out_env + err_env


def test_errors_and_exit_codes(
    node: tuple[Path, MemoryApplication], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, backend = node
    rc, _, err = run(capsys, "get", "p2ps:chk:3:10:99:x:y", "--node", root)
    assert rc == 2 and "bad cap" in err
    rc, _, err = run(capsys, "ls", "/a/../b", "--node", root)
    assert rc == 2 and "not allowed" in err
    rc, _, err = run(capsys, "put", tmp_path / "missing", "--node", root)
    assert rc == 1 and "cannot read" in err
    src = tmp_path / "f"
    src.write_bytes(os.urandom(100_000))
    rc, out, _ = run(capsys, "put", src, "--node", root, "--mode", "random")
    cap = out.strip()
    from p2pstore.immutable import ReadCap, parse_cap

    parsed = parse_cap(cap)
    assert isinstance(parsed, ReadCap)
    for i in range(8):
        backend.delete_share(parsed, i)
    rc, out, _ = run(capsys, "check", cap, "--node", root)
    assert rc == 1 and "NOT RECOVERABLE" in out
    dst = tmp_path / "out"
    rc, _, err = run(capsys, "get", cap, dst, "--node", root)
    assert rc == 1 and "unrecoverable" in err and not dst.exists()
    assert not [p for p in tmp_path.iterdir() if ".part-" in p.name]
    rc, _, err = run(capsys, "ls", "--node", tmp_path / "nothing")
    assert rc == 3 and "no node directory" in err


def test_client_token_and_unreachable(node: tuple[Path, MemoryApplication]) -> None:
    root, _ = node
    good = NodeClient.for_node(root)
    assert good.status()["backend"] == "memory"
    bad = NodeClient(good.url, "wrong")
    with pytest.raises(ApiCallError) as e:
        bad.put(io.BytesIO(os.urandom(2_000_000)), size=2_000_000)
    assert e.value.status == 403 and e.value.code == "token-invalid"
    with pytest.raises(ApiCallError) as e:
        NodeClient(good.url, None).peers()
    assert e.value.status == 401
    with pytest.raises(NodeUnreachable, match="connection refused"):
        NodeClient("http://127.0.0.1:1/", "x").status()


class _FailingBackend(MemoryApplication):
    async def download(self, cap: Any, offset: int, length: int) -> AsyncIterator[bytes]:
        inner = await super().download(cap, offset, length)

        async def gen() -> AsyncIterator[bytes]:
            yield await anext(inner)
            raise Unrecoverable("shares vanished")

        return gen()


def test_client_detects_a_short_download() -> None:
    server = ThreadedServer(_FailingBackend(params=EncodingParams.create(3, 10, 64 * 1024)), "t")
    try:
        client = NodeClient(server.server.url, "t")
        cap = client.put(io.BytesIO(os.urandom(400_000)), size=400_000)["cap"]
        sink = io.BytesIO()
        with pytest.raises(TransferError, match=r"broke off after \d+ of 400000 bytes") as e:
            client.get(cap, sink)
        assert 0 < len(sink.getvalue()) < 400_000
        assert str(e.value).endswith(": shares vanished")  # the node's reason, not "see its log"
    finally:
        server.close()


def test_node_dir_resolution(tmp_path: Path) -> None:
    home = Path("/home/u")
    assert default_node_dir({}, "linux", home) == home / ".local/share/p2pstore/node"
    assert default_node_dir({"XDG_DATA_HOME": "/x"}, "linux", home) == Path("/x/p2pstore/node")
    assert default_node_dir({"XDG_DATA_HOME": "rel"}, "linux", home) == (
        home / ".local/share/p2pstore/node"
    )
    assert default_node_dir({}, "darwin", home) == (
        home / "Library/Application Support/p2pstore/node"
    )
    assert default_node_dir({"LOCALAPPDATA": "C:/L"}, "win32", home) == Path("C:/L/p2pstore/node")
    assert resolve_node_dir(str(tmp_path), {}) == tmp_path
    assert resolve_node_dir(None, {"P2PSTORE_NODE": str(tmp_path)}) == tmp_path


def test_progress() -> None:
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB"
    assert format_progress(3 << 20, 12 << 20, 1.5) == "3.0 MiB / 12.0 MiB   25%  2.0 MiB/s  ETA 5s"
    assert format_progress(5 << 20, None, 2.0) == "5.0 MiB  2.5 MiB/s"
    assert format_progress(10, 10, 70) == "10 B / 10 B  100%  0 B/s  in 1m10s"
    now = [0.0]
    out = io.StringIO()
    bar = Progress(100, out, enabled=True, clock=lambda: now[0])
    bar.update(10)
    assert out.getvalue() == ""  # nothing within the first second
    now[0] = 1.5
    bar.update(50)
    assert out.getvalue().startswith("\r50 B / 100 B   50%")
    bar.finish()
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()
    off = Progress(100, quiet, enabled=False, clock=lambda: now[0])
    off.update(100)
    off.finish()
    assert quiet.getvalue() == ""


# -- end to end with real processes ------------------------------------------------
def _p2pstore() -> list[str]:
    script = Path(sys.executable).parent / "p2pstore"
    return [str(script)] if script.exists() else [sys.executable, "-m", "p2pstore.cli"]


def sh(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*_p2pstore(), *map(str, args)], input=stdin, capture_output=True, timeout=60, check=False
    )


@pytest.mark.e2e
def test_real_node_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "n"
    assert sh("create-node", root, "--listen", "127.0.0.1:0").returncode == 0
    # A grid of one: this node stores every share itself (1-of-1, happy 1).
    conf = root / "p2pstore.toml"
    text = conf.read_text()
    for key, value in (("shares_needed", 3), ("shares_total", 10), ("shares_happy", 7)):
        text = text.replace(f"# {key} = {value}\n", f"{key} = 1\n")  # set: overrides
    text = text.replace('reserved_space = "1GB"', 'reserved_space = "0B"')
    conf.write_text(text)
    started = sh("start", root)
    assert started.returncode == 0, started.stderr
    try:
        data = os.urandom(2_500_000)
        src = tmp_path / "in.bin"
        src.write_bytes(data)
        put = sh("put", src, "--node", root)
        assert put.returncode == 0, put.stderr
        cap = put.stdout.decode().strip()
        assert sh("get", cap, tmp_path / "out.bin", "--node", root).returncode == 0
        assert (tmp_path / "out.bin").read_bytes() == data
        env_get = subprocess.run(
            [*_p2pstore(), "get", cap, "-"],
            capture_output=True,
            timeout=60,
            check=False,
            env={**os.environ, "P2PSTORE_NODE": str(root)},
        )
        assert env_get.returncode == 0 and env_get.stdout == data
        piped = sh("put", "-", "--node", root, stdin=data[:100_000])
        assert sh("get", piped.stdout.decode().strip(), "--node", root).stdout == data[:100_000]
        info = sh("info", cap, "--json", "--node", root)
        assert json.loads(info.stdout)["size"] == 2_500_000
        status = sh("status", root, "--json")
        doc: dict[str, Any] = json.loads(status.stdout)
        assert status.returncode == 0 and doc["api"]["backend"] == "grid"
        assert doc["api_url"].startswith("http://127.0.0.1:")
        ls = sh("ls", "--node", root)
        assert ls.returncode == 1 and b"vdrive-unavailable" in ls.stderr
        assert sh("peers", "--node", root).stdout == b"no peers\n"
    finally:
        assert sh("stop", root).returncode == 0
    gone = sh("get", cap, "--node", root)
    assert gone.returncode == 3
    assert b"no node is running in" in gone.stderr and b"p2pstore start" in gone.stderr


class SlowToFinish(MemoryApplication):
    """Takes the whole body, then works a while before answering (a convergent
    upload's encoding pass): the moment when a Ctrl-C used to be ignored."""

    def __init__(self) -> None:
        super().__init__(params=EncodingParams.create(3, 10, 64 * 1024), vdrive=MemoryVdrive())
        self.body_taken = threading.Event()
        self.cancelled = threading.Event()
        self.linked: list[str] = []

    async def upload(self, chunks: Any, **kw: Any) -> Any:
        async def counted() -> AsyncIterator[bytes]:
            async for c in chunks:
                yield c
            self.body_taken.set()

        result = await super().upload(counted(), **kw)
        try:
            await asyncio.sleep(30)  # "encoding and placing"
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return result

    async def vdrive_link(self, path: Any, cap: Any, **kw: Any) -> int:
        self.linked.append(str(path))
        return await super().vdrive_link(path, cap, **kw)


def test_a_put_cut_off_after_its_last_byte_is_stopped_and_links_nothing() -> None:
    """The client goes (the shell's Ctrl-C cuts the connection) after the body was
    sent, while the node still works: the node cancels the upload and links nothing."""
    backend = SlowToFinish()
    server = ThreadedServer(backend, "tok")
    try:
        client = NodeClient(server.server.url, "tok", timeout=60)
        errors: list[BaseException] = []

        def put() -> None:
            try:
                client.put_path(io.BytesIO(os.urandom(200_000)), "shared:/f.bin", size=200_000)
            except BaseException as e:
                errors.append(e)

        worker = threading.Thread(target=put)
        worker.start()
        assert backend.body_taken.wait(10)
        client.abort()  # what the shell does on Ctrl-C
        worker.join(10)
        assert not worker.is_alive() and errors  # the blocked call returned at once
        assert backend.cancelled.wait(5)  # the node stopped the upload
        assert backend.linked == []
        assert client.ls("shared:/")["entries"] == []
    finally:
        server.close()


class StoresSlowly(MemoryApplication):
    """Takes the whole body, then reports its storing pass in five steps."""

    def __init__(self) -> None:
        super().__init__(params=EncodingParams.create(3, 10, 64 * 1024), vdrive=MemoryVdrive())

    async def upload(self, chunks: Any, *, size_hint: Any, mode: Any, progress: Any = None) -> Any:
        data = b"".join([c async for c in chunks])

        async def again() -> AsyncIterator[bytes]:
            yield data

        result = await super().upload(again(), size_hint=size_hint, mode=mode)
        for step in range(1, 6):
            await asyncio.sleep(0.3)
            if progress is not None:
                progress(len(data) * step // 5)
        return result


def test_a_convergent_put_reports_its_storing_pass() -> None:
    """The node stores a convergent upload only after the whole body: the client sees
    that second pass (stored bytes) instead of a bar stuck at 100%."""
    server = ThreadedServer(StoresSlowly(), "tok")
    try:
        client = NodeClient(server.server.url, "tok")
        sent: list[int] = []
        stored: list[int] = []
        doc = client.put(
            io.BytesIO(os.urandom(100_000)),
            size=100_000,
            progress=sent.append,
            stored=stored.append,
        )
        assert doc["size"] == 100_000 and sent[-1] == 100_000
        assert stored == sorted(stored)  # forward only (0 while the body was arriving)
        moving = [v for v in stored if v > 0]
        assert len(set(moving)) >= 2 and 0 < moving[0] < 100_000  # seen partway
    finally:
        server.close()


def test_upload_progress_shows_both_passes_and_never_100_early() -> None:
    out = io.StringIO()
    now = [0.0]
    bar = UploadProgress(1000, out, two_passes=True, enabled=True, clock=lambda: now[0])
    for done in (200, 600, 1000):
        now[0] += 2
        bar.sent(done)
    now[0] += 2
    bar.stored(100)  # the second pass begins
    now[0] += 2
    bar.stored(300)
    now[0] += 2
    bar.stored(1000)
    bar.finish()
    lines = [ln.split("\r")[-1].strip() for ln in out.getvalue().split("\n") if ln.strip()]
    assert lines[0].startswith("sending  1000 B / 1000 B  100%")
    assert lines[1].startswith("storing  1000 B / 1000 B  100%")
    assert "storing  300 B / 1000 B   30%" in out.getvalue()  # the second pass, partway


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_adds_the_error_details(
    where: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(args: Any) -> int:
        raise ApiCallError(409, "sequence-mismatch", "the drive moved on", {"sequence": 7})

    monkeypatch.setattr(cli_ops, "cmd_ls", refused)
    monkeypatch.setattr(cli_ops, "_client", lambda args: None)
    argv = ["-v", "ls"] if where == "before" else ["ls", "-v"]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and "the drive moved on" in err and '"sequence": 7' in err
    assert cli.main(["ls"]) != 0
    assert '"sequence"' not in capsys.readouterr().err  # without -v: one line


def test_op_ids_and_outcomes_over_the_api(
    node: tuple[Path, MemoryApplication],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/http-api.md, "Outcomes": a change sent twice with one op id is made once;
    the outcome of an id not made is "no" for good; the CLI asks when its answer
    is lost and reports what the node says."""
    root, _backend = node
    client = NodeClient.for_node(root)
    first = client.mkdir("/a", op_id="11" * 16)
    assert client.mkdir("/a", op_id="11" * 16)["sequence"] == first["sequence"]
    assert client.outcome("shared", "11" * 16) == {
        "drive": "shared",
        "applied": True,
        "sequence": first["sequence"],
    }
    assert client.outcome("shared", "22" * 16)["applied"] is False
    with pytest.raises(ApiCallError) as e:
        client.mkdir("/b", op_id="22" * 16)
    assert (e.value.status, e.value.code) == (409, "abandoned")
    for bad in ("xyz", "1" * 15, "zz" * 16):
        with pytest.raises(ApiCallError) as e:
            client.mkdir("/c", op_id=bad)
        assert e.value.status == 400 and "op_id" in e.value.message
    # the answer is lost after the change was made: the CLI asks, and says it was made
    real_mkdir = NodeClient.mkdir

    def lost_after(self: NodeClient, *args: Any, **kw: Any) -> dict[str, Any]:
        real_mkdir(self, *args, **kw)
        raise TransferError("no answer from the node's API: connection reset")

    monkeypatch.setattr(NodeClient, "mkdir", lost_after)
    rc, _, err = run(capsys, "mkdir", "/made", "--node", root)
    assert rc == 0 and "asking it whether mkdir shared:/made was done" in err
    assert "created shared:/made" in err

    # lost before it was made: the CLI says it was not done, and it never will be
    def lost_before(self: NodeClient, *args: Any, **kw: Any) -> dict[str, Any]:
        raise TransferError("the upload broke off")

    monkeypatch.setattr(NodeClient, "mkdir", lost_before)
    rc, _, err = run(capsys, "mkdir", "/never", "--node", root)
    assert rc == 1 and "was not done" in err and "running the command again is safe" in err
    names = [x["name"] for x in client.ls("/")["entries"]]
    assert "made" in names and "never" not in names


def test_settle_waits_for_the_node_then_gives_up() -> None:
    from p2pstore.api_drive import OutcomeUnknown, settle

    now = [0.0]
    answers: list[Any] = [NodeUnreachable("refused"), NodeUnreachable("refused")]

    class Fake:
        def outcome(self, drive: str, op_id: str) -> dict[str, Any]:
            a = answers.pop(0) if answers else {"applied": True, "sequence": 7}
            if isinstance(a, Exception):
                raise a
            return dict(a)

    def sleep(s: float) -> None:
        now[0] += s

    lost = TransferError("reset")
    said: list[str] = []
    doc = settle(
        Fake,
        "shared",
        "ab" * 16,
        "mkdir x",
        lost,
        say=said.append,
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert doc == {"sequence": 7, "recovered": True} and now[0] == 1.0 and said
    answers[:] = [NodeUnreachable("refused")] * 1000
    with pytest.raises(OutcomeUnknown) as e:
        settle(
            Fake, "shared", "ab" * 16, "mkdir x", lost, wait=5, sleep=sleep, clock=lambda: now[0]
        )
    assert e.value.exit_code == 3 and "within 5 s" in str(e.value)
    # the node is back but its vdrive node does not answer yet: wait for it too
    answers[:] = [ApiCallError(503, "vdrive-unavailable", "the vdrive node is down")] * 2
    doc = settle(Fake, "shared", "ab" * 16, "mkdir x", lost, sleep=sleep, clock=lambda: now[0])
    assert doc["recovered"] is True
    answers[:] = [ApiCallError(400, "bad-request", "op_id must be 16 to 64 hex digits")]
    with pytest.raises(OutcomeUnknown, match="once the vdrive node answers"):
        settle(Fake, "shared", "ab" * 16, "mkdir x", lost, sleep=sleep, clock=lambda: now[0])


def test_put_lets_the_node_read_a_local_file_in_place(
    node: tuple[Path, MemoryApplication],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, backend = node
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(150_000))
    calls: list[str] = []
    real_body = backend.upload

    async def upload_file(fd: int, size: int, **kw: Any) -> Any:
        calls.append("file")
        return await real_body(aiter(fd_source(fd, size)()), size_hint=size, **kw)

    async def upload(*a: Any, **kw: Any) -> Any:
        calls.append("body")
        return await real_body(*a, **kw)

    monkeypatch.setattr(backend, "upload_file", upload_file)
    monkeypatch.setattr(backend, "upload", upload)
    rc, out, _ = run(capsys, "put", f, "--node", root)
    assert rc == 0 and calls == ["file"]
    cap = out.strip()
    rc, out, _ = run(capsys, "put", f, "--send-bytes", "--node", root)
    assert rc == 0 and calls == ["file", "body"] and out.strip() == cap
    rc, out, _ = run(capsys, "put", f, "/data.bin", "--node", root)
    assert rc == 0 and calls[-1] == "file" and out.strip() == cap

    async def refused(*a: Any, **kw: Any) -> Any:
        from p2pstore.app.errors import Forbidden

        calls.append("refused")
        raise Forbidden("the node may not read it", code="local-path-refused")

    monkeypatch.setattr(backend, "upload_file", refused)
    rc, out, _ = run(capsys, "put", f, "/again.bin", "--node", root)
    assert rc == 0 and calls[-2:] == ["refused", "body"] and out.strip() == cap
    # a node that does not offer local paths (an older one) gets the bytes
    monkeypatch.setattr(NodeClient, "features", lambda self: set())
    rc, out, _ = run(capsys, "put", f, "--node", root)
    assert rc == 0 and calls[-1] == "body"


def test_deep_checks_check_each_file_once() -> None:
    from p2pstore.api_client import ClientError
    from p2pstore.api_drive import DeepChecks

    asked: list[str] = []
    fail = {"c"}

    class Client:
        def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> dict[str, Any]:
            asked.append(cap)
            if cap in fail:
                raise ClientError("the node went away")
            return {"cap": cap, "verify": verify, "repair": repair}

    check = DeepChecks(Client(), verify=True, repair=False)
    assert check("a") == {"cap": "a", "verify": True, "repair": False}
    assert check("a") is check("a") and check("b")["cap"] == "b"
    for _ in range(2):  # a failure is not remembered: the next path asks again
        with pytest.raises(ClientError):
            check("c")
    assert asked == ["a", "b", "c", "c"] and check.distinct == 3
