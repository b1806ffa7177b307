"""``p2pstore backup`` / ``restore`` in process: the real CLI against an API server
whose vdrive stores real directory objects (in memory), and the pure pieces
(exclusions, names, the database, the exact-length reader)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pstore import cli
from p2pstore.api_client import NodeClient, NodeUnreachable
from p2pstore.api_drive import walk_files
from p2pstore.app.drive import VdriveApplication
from p2pstore.backup.db import DB_NAME, BackupDb, FileStamp, entries_hash
from p2pstore.backup.restore import RestoreError, safe_name
from p2pstore.backup.scan import Excluder, drive_name, read_exclude_file
from p2pstore.backup.send import BackupStopped, FileChanged, NodeGone, ReadFailed, _Exact
from p2pstore.backup.snapshot import Backup, snapshot_name
from p2pstore.immutable import EncodingParams
from p2pstore.testing.backup_tree import (
    assert_same_tree,
    backdate,
    change_tree,
    make_tree,
    regular_files,
)
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.vdrive import local_vdrive

from .test_cli_ops import serving


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    """A running-looking node whose vdrive stores real directory objects (in memory)."""
    backend = MemoryApplication(
        params=EncodingParams.create(3, 10, 64 * 1024),
        vdrive=VdriveApplication(local_vdrive()),
    )
    with serving(tmp_path / "node", backend):
        yield tmp_path / "node"


def backup(node: Path, src: Path, dest: str, *extra: str, capsys: Any) -> tuple[int, Any, str]:
    rc = cli.main(["backup", str(src), dest, "--json", "--node", str(node), *extra])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip().startswith("{") else out), err


def files_at(node: Path, path: str) -> dict[str, str]:
    base = len(path.rstrip("/")) + 1
    return {p[base:]: str(e["cap"]) for p, e in walk_files(NodeClient.for_node(node), path)}


def test_backup_again_changes_and_restore(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    make_tree(src, 120, seed=5)
    (src / "link").symlink_to("nowhere")
    os.mkfifo(src / "pipe")
    rc, first, _ = backup(node, src, "private:/bk", capsys=capsys)
    assert rc == 0, first
    assert first["uploaded"] == 120 and first["files"] == 120
    assert len(first["skipped"]) == 2 and not first["failed"]
    assert first["snapshot"].startswith("private:/bk/Archives/")
    rc, second, _ = backup(node, src, "private:/bk", capsys=capsys)
    assert rc == 0
    assert (second["uploaded"], second["bytes_read"], second["dirs_made"]) == (0, 0, 0)
    assert second["unchanged"] == 120 and second["snapshot"] != first["snapshot"]
    before = files_at(node, second["snapshot"])
    assert before == files_at(node, first["snapshot"]) == files_at(node, "private:/bk/Latest")
    changes = change_tree(src, changed=5, added=3, removed=2)
    rc, third, _ = backup(node, src, "private:/bk", capsys=capsys)
    assert rc == 0 and third["uploaded"] == 8
    after = files_at(node, "private:/bk/Latest")
    assert sorted(k for k in before.keys() & after.keys() if before[k] != after[k]) == sorted(
        changes["changed"]
    )
    assert sorted(after.keys() - before.keys()) == sorted(changes["added"])
    assert sorted(before.keys() - after.keys()) == sorted(changes["removed"])
    assert files_at(node, second["snapshot"]) == before  # snapshots never change
    # restore: byte for byte, modes and mtimes
    assert (
        cli.main(["restore", "private:/bk/Latest", str(tmp_path / "out"), "--node", str(node)]) == 0
    )
    (src / "link").unlink()
    (src / "pipe").unlink()
    assert_same_tree(src, tmp_path / "out")
    # a non-empty target is refused unless --force
    capsys.readouterr()
    assert (
        cli.main(["restore", "private:/bk/Latest", str(tmp_path / "out"), "--node", str(node)]) == 1
    )
    assert "not empty" in capsys.readouterr().err
    rc = cli.main(
        ["restore", "private:/bk/Latest", str(tmp_path / "out"), "--force", "--node", str(node)]
    )
    assert rc == 0


def test_excludes_dry_run_and_names(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    (src / "keep" / "node_modules").mkdir(parents=True)
    (src / "keep" / "node_modules" / "x.js").write_text("x" * 100)
    (src / "keep" / "a.tmp").write_text("t" * 100)
    (src / "keep" / "b.txt").write_text("b" * 100)
    (src / "build").mkdir()
    (src / "build" / "out.o").write_text("o" * 100)
    (src / "e\u0301.txt").write_text("decomposed")  # NFC: é.txt
    (src / "\u00e9.txt").write_text("composed")  # the same name once normalized
    excl = tmp_path / "excludes"
    excl.write_text("# comments and blank lines are ignored\n\nbuild/\n")
    excludes = ["--exclude", "*.tmp", "--exclude", "node_modules", "--exclude-from", str(excl)]
    rc, dry, _err = backup(node, src, "private:/d", "--dry-run", *excludes, capsys=capsys)
    assert rc == 1  # the name clash is a failure
    assert dry["uploaded"] == 2 and len(dry["failed"]) == 1 and "normalized" in dry["failed"][0]
    assert not (node / DB_NAME).exists()  # a dry run writes nothing, not even the database
    rc = cli.main(["ls", "private:/", "--node", str(node)])
    assert "d/" not in capsys.readouterr().out
    rc, real, _ = backup(node, src, "private:/d", *excludes, capsys=capsys)
    assert rc == 1 and real["uploaded"] == 2
    got = files_at(node, "private:/d/Latest")
    assert sorted(got) == ["keep/b.txt", "\u00e9.txt"]
    assert (node / DB_NAME).stat().st_mode & 0o777 == 0o600


def test_latest_that_is_not_a_snapshot_is_not_replaced(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    make_tree(src, 3)
    f = tmp_path / "f"
    f.write_bytes(b"mine" * 100)
    assert cli.main(["mkdir", "-p", "private:/b", "--node", str(node)]) == 0
    assert cli.main(["put", str(f), "private:/b/Latest", "--node", str(node)]) == 0
    mine = files_at(node, "private:/b")["Latest"]
    capsys.readouterr()
    rc, doc, _err = backup(node, src, "private:/b", capsys=capsys)
    (why,) = doc["failed"]  # said with the summary of what was done
    assert rc == 1 and "Latest is a file" in why and "private:/b/Archives/" in why
    assert doc["snapshot"] is None and doc["uploaded"] == 3
    assert files_at(node, "private:/b")["Latest"] == mine
    # a folder named Latest that is not one of the snapshots (someone's own, or a
    # snapshot changed since) is not deleted either
    assert cli.main(["put", str(f), "private:/c/Latest/notes.txt", "--node", str(node)]) != 0
    assert cli.main(["mkdir", "-p", "private:/c/Latest", "--node", str(node)]) == 0
    assert cli.main(["put", str(f), "private:/c/Latest/notes.txt", "--node", str(node)]) == 0
    capsys.readouterr()
    rc, doc, _err = backup(node, src, "private:/c", capsys=capsys)
    assert rc == 1 and "not a snapshot" in doc["failed"][0]
    assert "Latest/notes.txt" in files_at(node, "private:/c")
    assert cli.main(["rm", "-r", "private:/c/Latest", "--node", str(node)]) == 0
    rc, _doc, _err = backup(node, src, "private:/c", capsys=capsys)
    assert rc == 0  # a snapshot's Latest is replaced by the next one
    rc, _doc, _err = backup(node, src, "private:/c", capsys=capsys)
    assert rc == 0 and len(files_at(node, "private:/c/Archives")) == 3 * 3  # 3 snapshots


def test_a_file_written_just_before_the_run_is_read_again_next_time(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "fresh.txt").write_bytes(b"f" * 1000)  # mtime: now
    (src / "old.txt").write_bytes(b"o" * 1000)
    backdate(src / "old.txt")
    rc, first, _ = backup(node, src, "private:/r", capsys=capsys)
    assert rc == 0 and first["uploaded"] == 2
    rc, second, _ = backup(node, src, "private:/r", capsys=capsys)
    assert (second["uploaded"], second["unchanged"], second["bytes_read"]) == (1, 1, 1000)


def test_the_grid_refusing_uploads_stops_the_run(
    node: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pstore.api_client import ApiCallError

    src = tmp_path / "src"
    make_tree(src, 5)
    real = NodeClient.for_node(node)

    def refuse(*a: Any, **kw: Any) -> Any:
        raise ApiCallError(503, "not-enough-peers", "only 2 peers answered")

    monkeypatch.setattr(real, "put", refuse)
    run = Backup(real, BackupDb.open(None), src)
    with pytest.raises(BackupStopped, match="run it again when the grid has room"):
        run.tree()


class _Client:
    """A NodeClient wrapper that misbehaves on purpose."""

    def __init__(self, real: NodeClient, *, die_after: int | None = None, grow: str = "") -> None:
        self.real, self.die_after, self.grow, self.puts = real, die_after, grow, 0
        self.lock = threading.Lock()  # the run uploads from several threads

    def put(self, source: Any, **kw: Any) -> dict[str, Any]:
        with self.lock:
            if self.die_after is not None and self.puts >= self.die_after:
                raise NodeUnreachable("the node went away (test)")
            self.puts += 1
        if self.grow and kw.get("name") == self.grow:
            with open(self.grow_path, "ab") as f:
                f.write(b"more")
        return self.real.put(source, **kw)

    def make_dir(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return self.real.make_dir(entries)

    def stat(self, path: str) -> dict[str, Any]:
        return self.real.stat(path)


def test_an_interrupted_backup_sends_only_the_rest(node: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 30, seed=9)
    real = NodeClient.for_node(node)
    db = BackupDb.open(node / DB_NAME)
    run = Backup(_Client(real, die_after=12), db, src)
    with pytest.raises(NodeGone, match="Run it again"):
        run.tree()
    done = db.counts()[0]  # the uploads made before the stop are remembered
    assert run.report.uploaded == done and 1 <= done <= 12
    again = Backup(_Client(real), db, src)
    assert again.tree() is not None
    assert (again.report.uploaded, again.report.unchanged) == (30 - done, done)
    db.close()


def test_a_file_changing_while_read_fails_and_is_not_recorded(node: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "growing.log").write_bytes(b"x" * 5000)
    (src / "ok.txt").write_bytes(b"y" * 5000)
    backdate(src / "ok.txt")
    client = _Client(NodeClient.for_node(node), grow="growing.log")
    client.grow_path = src / "growing.log"  # type: ignore[attr-defined]
    db = BackupDb.open(None)
    run = Backup(client, db, src)
    run.tree()
    assert run.report.uploaded == 1 and len(run.report.failed) == 1
    assert "changed while it was read" in run.report.failed[0]
    assert db.counts()[0] == 1


# -- pure pieces -------------------------------------------------------------------
def test_excluder_rules() -> None:
    ex = Excluder(["*.tmp", "node_modules", "photos/raw", "cache/", "/top.txt"])
    assert ex.excluded("a/b/x.tmp", False)
    assert ex.excluded("deep/node_modules", True)
    assert ex.excluded("photos/raw", True) and not ex.excluded("x/photos/raw", True)
    assert ex.excluded("a/cache", True) and not ex.excluded("a/cache", False)
    assert ex.excluded("top.txt", False) and not ex.excluded("a/top.txt", False)
    assert not ex.excluded("keep.txt", False)


def test_exclude_file_errors(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot read the exclude file"):
        read_exclude_file(str(tmp_path / "missing"))
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(Exception, match="not UTF-8"):
        read_exclude_file(str(tmp_path / "bin"))


def test_drive_names() -> None:
    assert drive_name("e\u0301") == "\u00e9"
    assert drive_name("a\nb") is None
    assert drive_name("x" * 256) is None
    assert drive_name(b"\xff".decode("utf-8", "surrogateescape")) is None


def test_database_stamps_and_dirs(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    db = BackupDb.open(path)
    st = os.stat(tmp_path)
    stamp = FileStamp.of(st)
    db.record_file("/a", stamp, "p2ps:lit:x")
    assert db.file_cap("/a", stamp) == "p2ps:lit:x"
    assert db.file_cap("/a", FileStamp(stamp.size + 1, stamp.mtime_ns, stamp.ctime_ns, 1)) is None
    h = entries_hash([{"name": "a", "cap": "c"}])
    assert h == entries_hash([{"cap": "c", "name": "a"}])
    db.record_dir(h, "p2ps:dir:lit:x")
    assert db.dir_cap(h) == "p2ps:dir:lit:x" and db.counts() == (1, 1)
    db.close()
    ro = BackupDb.open(path, read_only=True)
    ro.record_file("/b", stamp, "c")  # ignored
    assert ro.counts() == (1, 1)
    ro.close()
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.commit()
    with pytest.raises(Exception, match="schema 99"):
        BackupDb.open(path)
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(Exception, match="damaged or not ours"):
        BackupDb.open(tmp_path / "junk")


def test_exact_reader() -> None:
    assert _Exact(io.BytesIO(b"abcdef"), 6).read(4) == b"abcd"
    r = _Exact(io.BytesIO(b"abcdef"), 6)
    assert r.read(100) == b"abcdef" and r.read(100) == b""
    with pytest.raises(FileChanged):  # grew: refused before the last bytes go
        _Exact(io.BytesIO(b"abcdefg"), 6).read(100)
    r = _Exact(io.BytesIO(b"abc"), 6)
    assert r.read(100) == b"abc"
    with pytest.raises(FileChanged):  # shrank
        r.read(100)

    class Broken(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(ReadFailed, match="Input/output error"):  # not an OSError: cut at once
        _Exact(Broken(b""), 6).read(6)


def test_snapshot_names_and_safe_names() -> None:
    assert snapshot_name(0) == "1970-01-01T000000Z"
    assert snapshot_name(time.time()) < snapshot_name(time.time() + 2)
    for bad in ("", ".", "..", "a/b", "a\0b", None, 3):
        with pytest.raises(RestoreError):
            safe_name(bad)
    assert safe_name("ok name") == "ok name"


def test_shell_backup_and_restore(node: Path, tmp_path: Path) -> None:
    from shell.commands import Shell
    from shell.session import Connection, ShellState

    from .test_shell_commands import Rec

    src = tmp_path / "src"
    make_tree(src, 10, seed=3)
    (src / "skip.tmp").write_text("t" * 100)
    rec = Rec()
    conn = Connection(lambda: NodeClient.for_node(node), name="n", node_dir=node)
    sh = Shell(conn, rec, ShellState(tmp_path))
    assert sh.run_line("backup src private:/s --exclude '*.tmp' -v")
    out = rec.take()
    assert any(line.startswith("snapshot: private:/s/Archives/") for line in out), out
    assert any("10 uploaded" in line for line in out), out
    assert sum(line.startswith("uploaded: ") for line in out) == 10
    assert sh.run_line("backup src private:/s --exclude=*.tmp")
    assert any("0 uploaded" in line and "10 unchanged" in line for line in rec.take())
    assert sh.run_line("restore private:/s/Latest out")
    assert any(line.startswith("restored 10 files") for line in rec.take())
    (src / "skip.tmp").unlink()
    assert_same_tree(src, tmp_path / "out")
    assert sh.run_line("restore -j 2 private:/s/Latest out2")
    assert any(line.startswith("restored 10 files") for line in rec.take())
    assert_same_tree(src, tmp_path / "out2")
    for bad in ("0", "x", "65"):
        assert sh.run_line(f"restore -j {bad} private:/s/Latest out3")
        assert "-j takes a number from 1 to 64" in rec.take()[-1]
        assert not (tmp_path / "out3").exists()
    assert sh.run_line("backup -j 1 src private:/s --exclude=*.tmp --check-all")
    out = rec.take()
    assert any("10 unchanged" in line for line in out), out
    assert any(line.startswith("checked in the grid: ") for line in out), out
    assert sh.run_line("backup src private:/s --check-all --no-check")
    assert "do not go together" in rec.take()[-1]
    assert sh.run_line("backup nowhere private:/s")
    assert "not a local folder" in rec.take()[-1]
    assert sh.run_line("backup src")
    assert "missing REMOTE" in rec.take()[-1]


class _Gets:
    """A NodeClient wrapper for restores: each get takes ``delay`` seconds, counts
    the gets under way at once, and can fail (``fail``: names whose get fails with
    an API error; ``die_after``: the node is gone after that many gets)."""

    def __init__(
        self,
        real: NodeClient,
        *,
        delay: float = 0.02,
        fail: tuple[str, ...] = (),
        die_after: int | None = None,
    ) -> None:
        self.real, self.delay, self.fail, self.die_after = real, delay, fail, die_after
        self.lock = threading.Lock()
        self.now = self.most = self.gets = 0
        self.names: dict[str, str] = {}  # cap -> a name it was listed under

    def ls(self, path: str) -> dict[str, Any]:
        doc = self.real.ls(path)
        for e in doc["entries"]:
            if isinstance(e.get("cap"), str):
                self.names[e["cap"]] = e["name"]
        return doc

    def stat(self, path: str) -> dict[str, Any]:
        return self.real.stat(path)

    def get(self, cap: str, sink: Any, *, progress: Any = None) -> int:
        from p2pstore.api_client import ApiCallError

        with self.lock:
            self.gets += 1
            if self.die_after is not None and self.gets > self.die_after:
                raise NodeUnreachable("the node went away (test)")
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(self.delay)
            if self.names.get(cap) in self.fail:
                sink.write(b"partial")
                raise ApiCallError(500, "download-failed", "not enough shares (test)")
            return self.real.get(cap, sink, progress=progress)
        finally:
            with self.lock:
                self.now -= 1


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".p2pstore-restore-*")]


def test_restore_downloads_several_files_at_once_and_sets_folders_last(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-j 3: up to three gets at once, never more; every file, mode and mtime comes
    back, and each folder's recorded mode and mtime are set after its contents."""
    from p2pstore.backup.restore import Restore

    src = tmp_path / "src"
    make_tree(src, 40, seed=11)
    folders = sorted(p for p in src.rglob("*") if p.is_dir())
    assert len(folders) >= 3
    for i, d in enumerate(reversed(folders)):  # deepest first: a parent's mtime stays
        d.chmod(0o750 if i % 2 else 0o705)
        os.utime(d, (1_600_000_000 + i, 1_600_000_000 + i))
    rc, doc, _ = backup(node, src, "private:/par", capsys=capsys)
    assert rc == 0 and doc["uploaded"] == 40
    client = _Gets(NodeClient.for_node(node))
    report = Restore(client, jobs=3).run("private:/par/Latest", tmp_path / "out")
    assert (report.files, report.failed, report.dirs) == (40, [], len(folders))
    assert client.most == 3  # 40 gets of 20 ms each: the three workers overlap
    assert_same_tree(src, tmp_path / "out")
    for d in folders:
        back = tmp_path / "out" / d.relative_to(src)
        assert back.stat().st_mode & 0o777 == d.stat().st_mode & 0o777, d
        assert back.stat().st_mtime == d.stat().st_mtime, d
    assert not _leftovers(tmp_path / "out")


def test_a_failed_get_is_listed_and_the_rest_restored(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2pstore.backup.restore import Restore

    src = tmp_path / "src"
    make_tree(src, 12, seed=12)
    rc, _doc, _ = backup(node, src, "private:/f", capsys=capsys)
    assert rc == 0
    victim = sorted(regular_files(src))[5]
    client = _Gets(NodeClient.for_node(node), fail=(victim.name,))
    report = Restore(client, jobs=4).run("private:/f/Latest", tmp_path / "out")
    assert report.files == 11 and len(report.failed) == 1
    assert victim.name in report.failed[0] and "not enough shares" in report.failed[0]
    assert not (tmp_path / "out" / victim.relative_to(src)).exists()
    assert not _leftovers(tmp_path / "out")


def test_a_node_gone_mid_restore_stops_it_and_leaves_no_temporary_file(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2pstore.backup.restore import Restore

    src = tmp_path / "src"
    make_tree(src, 30, seed=13)
    rc, _doc, _ = backup(node, src, "private:/g", capsys=capsys)
    assert rc == 0
    client = _Gets(NodeClient.for_node(node), die_after=6)
    run = Restore(client, jobs=4)
    with pytest.raises(NodeUnreachable):
        run.run("private:/g/Latest", tmp_path / "out")
    assert run.report.files <= 6 and client.gets < 30  # the queued ones never ran
    assert not _leftovers(tmp_path / "out")
    assert len(regular_files(tmp_path / "out")) == run.report.files
