"""Backups keep their files in the grid (unchanged files checked again, and uploaded
again when the grid lost them), the database's schema 2, and restores that meet
names listed twice, a stop under way, and a bad ``-j``: in process, the real CLI
against an API server over the in-memory backend."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from p2pstore import cli
from p2pstore.api_client import ApiCallError, NodeClient, NodeUnreachable
from p2pstore.api_drive import walk_files
from p2pstore.app.drive import VdriveApplication
from p2pstore.backup.db import DB_NAME, BackupDb, FileStamp
from p2pstore.backup.restore import Restore
from p2pstore.backup.send import thin_below
from p2pstore.backup.snapshot import CHECK_AFTER, Backup
from p2pstore.immutable import EncodingParams, ReadCap, parse_cap
from p2pstore.testing.backup_tree import assert_same_tree, make_tree, regular_files
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.vdrive import local_vdrive

from .test_cli_ops import serving

DAY = 86400.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Path, MemoryApplication]]:
    backend = MemoryApplication(
        params=EncodingParams.create(3, 10, 64 * 1024),
        vdrive=VdriveApplication(local_vdrive()),
    )
    with serving(tmp_path / "node", backend):
        yield tmp_path / "node", backend


def backup(node: Path, src: Path, dest: str, *extra: str) -> tuple[int, dict[str, Any]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["backup", str(src), dest, "--json", "--node", str(node), *extra])
    return rc, json.loads(out.getvalue())


def caps_at(node: Path, path: str) -> dict[str, str]:
    base = len(path.rstrip("/")) + 1
    return {p[base:]: str(e["cap"]) for p, e in walk_files(NodeClient.for_node(node), path)}


# -- checking unchanged files -------------------------------------------------------------
def test_files_the_grid_lost_are_uploaded_again_from_the_local_copy(
    node: tuple[Path, MemoryApplication], tmp_path: Path
) -> None:
    """One file loses every share (the grid cannot repair it), one loses four (6 of
    10 left, under thin_below), one loses one (left to the grid's maintenance); a
    run that checks uploads the first two again: the same caps, whole again, and a
    restore gives back every byte."""
    nd, app = node
    src = tmp_path / "src"
    make_tree(src, 12, seed=21)
    rc, first = backup(nd, src, "private:/k")
    assert rc == 0 and first["uploaded"] == 12
    caps = caps_at(nd, "private:/k/Latest")
    coded = sorted(p for p, c in caps.items() if isinstance(parse_cap(c), ReadCap))
    assert len(coded) >= 3
    gone, thin, short = (parse_cap(caps[p]) for p in coded[:3])
    assert isinstance(gone, ReadCap) and isinstance(thin, ReadCap)
    assert isinstance(short, ReadCap) and thin_below(3, 10) == 7
    for share in range(10):
        app.delete_share(gone, share)
    for share in (1, 4, 6, 9):
        app.delete_share(thin, share)
    app.delete_share(short, 5)

    rc, second = backup(nd, src, "private:/k")  # fresh records: nothing is due
    assert rc == 0 and (second["checked"], second["reuploaded"]) == (0, 0)
    rc, third = backup(nd, src, "private:/k", "--check-all")
    assert rc == 0, third
    assert (third["checked"], third["reuploaded"], third["unchecked"]) == (len(coded) - 2, 2, 0)
    assert (third["unchanged"], third["uploaded"]) == (12, 0)
    assert third["bytes_read"] == sum((src / p).stat().st_size for p in coded[:2])
    assert caps_at(nd, "private:/k/Latest") == caps  # the same caps, linked as before
    assert len(app.stored_shares(gone)) == len(app.stored_shares(thin)) == 10
    assert len(app.stored_shares(short)) == 9  # the grid's maintenance mends that
    rc, fourth = backup(nd, src, "private:/k")  # just checked: not due again
    assert rc == 0 and (fourth["checked"], fourth["reuploaded"]) == (0, 0)
    assert cli.main(["restore", "private:/k/Latest", str(tmp_path / "out"), "--node", str(nd)]) == 0
    assert_same_tree(src, tmp_path / "out")


def test_checks_come_due_between_30_and_60_days(tmp_path: Path) -> None:
    """A check is due from CHECK_AFTER on, the more likely the later, and certainly
    at twice it; ``all`` and ``none`` decide alone; a dry run never checks."""
    draws = [0.5]

    def run(**kw: Any) -> Backup:
        return Backup(None, BackupDb.open(None), tmp_path, chance=lambda: draws[0], **kw)  # type: ignore[arg-type]

    b = run()
    assert CHECK_AFTER == 30 * DAY
    for age, want in [(0, False), (29, False), (30, False), (44, False), (46, True), (61, True)]:
        assert b._due(b.started - age * DAY) is want, age
    draws[0] = 0.99
    assert not b._due(b.started - 59 * DAY) and b._due(b.started - 60 * DAY)
    assert run(check="all")._due(b.started) and not run(check="none")._due(0)
    assert not run(dry_run=True)._due(0)
    with pytest.raises(ValueError, match="check must be one of"):
        run(check="sometimes")


def test_a_check_the_node_cannot_make_links_the_file_as_it_was(
    node: tuple[Path, MemoryApplication], tmp_path: Path
) -> None:
    nd, _app = node
    src = tmp_path / "src"
    make_tree(src, 6, seed=22)
    rc, _ = backup(nd, src, "private:/u")
    assert rc == 0
    caps = caps_at(nd, "private:/u/Latest")

    class NoChecks(NodeClient):
        def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> Any:
            raise ApiCallError(503, "not-enough-peers", "only 2 peers answered (test)")

    from p2pstore.backup.run import run_backup
    from p2pstore.backup.scan import Excluder

    client = NodeClient.for_node(nd)
    client.__class__ = NoChecks
    notes: list[str] = []
    report = run_backup(
        client,
        lambda: NodeClient.for_node(nd),
        nd,
        src,
        "private:/u",
        excluder=Excluder(),
        dry_run=False,
        verbose=True,
        note=notes.append,
        on_change=lambda _r: None,
        check="all",
    )
    coded = sum(isinstance(parse_cap(c), ReadCap) for c in caps.values())
    assert (report.checked, report.unchecked, report.unchanged, report.failed) == (0, coded, 6, [])
    assert any("could not be checked" in n and "only 2 peers" in n for n in notes)
    assert caps_at(nd, "private:/u/Latest") == caps


def test_the_database_moves_from_schema_1(tmp_path: Path) -> None:
    """A schema 1 database (no checked column): read as is by a dry run, and moved
    to schema 2 on the next run, its uploads counting as checks."""
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns "
        "INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, cap TEXT "
        "NOT NULL, uploaded REAL NOT NULL); CREATE TABLE dirs (hash TEXT PRIMARY KEY, "
        "cap TEXT NOT NULL, made REAL NOT NULL); PRAGMA user_version = 1;"
    )
    conn.execute("INSERT INTO files VALUES ('/a', 1, 2, 3, 4, 'p2ps:lit:x', 1000.5)")
    conn.commit()
    conn.close()
    stamp = FileStamp(1, 2, 3, 4)
    ro = BackupDb.open(path, read_only=True)
    assert ro.file_record("/a", stamp) == ("p2ps:lit:x", 1000.5)
    ro.close()
    db = BackupDb.open(path)
    assert db.file_record("/a", stamp) == ("p2ps:lit:x", 1000.5)
    db.record_checked("/a", 2000.0)
    assert db.file_record("/a", stamp) == ("p2ps:lit:x", 2000.0)
    db.record_file("/b", stamp, "p2ps:lit:y")
    found = db.file_record("/b", stamp)
    assert found is not None and found[1] > 2000.0
    db.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


# -- restores -------------------------------------------------------------------------------
class FakeDrive:
    """A drive of hand-made listings (what a hostile or odd directory object can
    say), whose gets write ``data`` and may wait on ``gate``."""

    def __init__(self, listings: dict[str, list[dict[str, Any]]]) -> None:
        self.listings = listings
        self.gate: threading.Event | None = None
        self.started = threading.Semaphore(0)
        self.aborted = False

    def stat(self, path: str) -> dict[str, Any]:
        return {"entry": {"kind": "dir"}}

    def ls(self, path: str) -> dict[str, Any]:
        if path not in self.listings:
            raise NodeUnreachable("the node went away (test)")
        return {"entries": self.listings[path]}

    def get(self, cap: str, sink: IO[bytes], *, progress: Any = None) -> int:
        self.started.release()
        if self.gate is not None:
            self.gate.wait(10)
        data = cap.encode()
        sink.write(data)
        return len(data)

    def abort(self) -> None:
        self.aborted = True
        if self.gate is not None:
            self.gate.set()


def f(name: str, cap: str = "") -> dict[str, Any]:
    return {"name": name, "kind": "file", "cap": cap or f"content of {name}"}


def d(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "dir", "cap": "dircap"}


@pytest.mark.parametrize("jobs", [1, 4])
def test_a_name_listed_twice_keeps_the_first(tmp_path: Path, jobs: int) -> None:
    drive = FakeDrive(
        {
            "s": [f("x", "first"), d("x"), f("y", "one"), f("y", "two"), d("z"), f("z")],
            "s/x": [f("inner")],
            "s/z": [f("inner")],
        }
    )
    report = Restore(drive, jobs=jobs).run("s", tmp_path / "out")
    assert (tmp_path / "out" / "x").read_bytes() == b"first"
    assert (tmp_path / "out" / "y").read_bytes() == b"one"
    assert (tmp_path / "out" / "z" / "inner").read_bytes() == b"content of inner"
    assert report.files == 3 and len(report.failed) == 3, report.failed
    assert "listed twice, as a file and a folder" in report.failed[0]
    assert all("listed twice" in line or "already exists" in line for line in report.failed)


def test_a_stop_lets_no_download_land_afterwards(tmp_path: Path) -> None:
    """The node goes away while four downloads wait: the run stops at once, and
    none of them is renamed into place after it (or left half-written)."""
    drive = FakeDrive({"s": [f(f"f{i}") for i in range(4)] + [d("gone")]})
    drive.gate = threading.Event()
    run = Restore(drive, jobs=4)
    with pytest.raises(NodeUnreachable):
        run.run("s", tmp_path / "out")
    assert drive.aborted and run.report.files == 0
    assert [p.name for p in (tmp_path / "out").rglob("*")] == ["gone"]  # made, then listed


def test_the_cli_refuses_a_bad_jobs_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("0", "65", "x"):
        with pytest.raises(SystemExit) as e:
            cli.main(["restore", "private:/s", str(tmp_path / "o"), "-j", bad])
        assert e.value.code == 2
        assert "takes a number from 1 to 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["backup", str(tmp_path), "private:/s", "--check-all", "--no-check"])
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert regular_files(tmp_path) == []


def test_a_due_check_records_when_the_file_was_found_well_kept(
    node: tuple[Path, MemoryApplication], tmp_path: Path
) -> None:
    """Rows last checked 61 days ago are due in an ordinary run; each check sets its
    row to the run's start, so the next run checks nothing."""
    nd, _app = node
    src = tmp_path / "src"
    make_tree(src, 8, seed=23)
    rc, _ = backup(nd, src, "private:/t")
    assert rc == 0
    with sqlite3.connect(nd / DB_NAME) as db:
        db.execute("UPDATE files SET checked = checked - ?", (61 * DAY,))
    coded = sum(
        isinstance(parse_cap(c), ReadCap) for c in caps_at(nd, "private:/t/Latest").values()
    )
    before = time.time()
    rc, run = backup(nd, src, "private:/t")
    assert rc == 0 and (run["checked"], run["reuploaded"]) == (coded, 0)
    with sqlite3.connect(nd / DB_NAME) as db:
        rows = [(c, when) for c, when in db.execute("SELECT cap, checked FROM files")]
    for cap, when in rows:
        if isinstance(parse_cap(cap), ReadCap):
            assert before - 5 <= when <= time.time(), cap
        else:  # literal files are never checked
            assert when < before - 60 * DAY
    rc, again = backup(nd, src, "private:/t")
    assert rc == 0 and again["checked"] == 0


def test_a_grid_that_refuses_the_upload_again_still_gets_its_snapshot(
    node: tuple[Path, MemoryApplication], tmp_path: Path
) -> None:
    """The grid answers 503 to the upload again of a file that lost its shares: the
    file is listed as failed and linked with its recorded cap, the snapshot is made.
    A check reply the backup cannot read counts as not checked."""
    from p2pstore.backup.run import run_backup
    from p2pstore.backup.scan import Excluder

    nd, app = node
    src = tmp_path / "src"
    make_tree(src, 6, seed=24)
    rc, _ = backup(nd, src, "private:/r")
    assert rc == 0
    caps = caps_at(nd, "private:/r/Latest")
    lost = next(p for p, c in sorted(caps.items()) if isinstance(parse_cap(c), ReadCap))
    for share in range(10):
        app.delete_share(parse_cap(caps[lost]), share)  # type: ignore[arg-type]

    class Refusing(NodeClient):
        odd: bool = False

        def put(self, source: Any, **kw: Any) -> dict[str, Any]:
            raise ApiCallError(503, "not-enough-peers", "only 2 peers answered (test)")

        def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> Any:
            return {"status": "ok"} if self.odd else super().check(cap)

    client = NodeClient.for_node(nd)
    client.__class__ = Refusing

    def run() -> Any:
        return run_backup(
            client,
            lambda: NodeClient.for_node(nd),
            nd,
            src,
            "private:/r",
            excluder=Excluder(),
            dry_run=False,
            verbose=False,
            note=lambda _m: None,
            on_change=lambda _r: None,
            check="all",
        )

    report = run()
    assert report.snapshot is not None and len(report.failed) == 1
    assert lost in report.failed[0] and "503" in report.failed[0]
    assert "uploaded again" in report.failed[0] and report.reuploaded == 0
    assert caps_at(nd, "private:/r/Latest") == caps
    Refusing.odd = True
    report = run()
    assert report.unchecked == sum(isinstance(parse_cap(c), ReadCap) for c in caps.values())
    assert report.checked == 0 and report.failed == []


def test_schema_1_moved_part_way_and_a_newer_schema(tmp_path: Path) -> None:
    """A move from schema 1 cut short after its column was added opens (the column
    reused); a schema newer than this version knows is refused, saying so."""
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns "
        "INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, cap TEXT "
        "NOT NULL, uploaded REAL NOT NULL, checked REAL NOT NULL DEFAULT 0); "
        "CREATE TABLE dirs (hash TEXT PRIMARY KEY, cap TEXT NOT NULL, made REAL NOT NULL);"
        "PRAGMA user_version = 1;"
    )
    conn.execute("INSERT INTO files VALUES ('/a', 1, 2, 3, 4, 'c', 1000.5, 0)")
    conn.commit()
    conn.close()
    db = BackupDb.open(path)
    assert db.file_record("/a", FileStamp(1, 2, 3, 4)) == ("c", 1000.5)
    db.close()
    sqlite3.connect(path).execute("PRAGMA user_version = 3").connection.commit()
    with pytest.raises(Exception, match="schema 3, this version reads up to 2"):
        BackupDb.open(path)


def test_the_summary_says_what_was_checked() -> None:
    from p2pstore.backup import ui
    from p2pstore.backup.snapshot import Report

    r = Report(files_total=50, unchanged=50, checked=45, reuploaded=1, unchecked=4)
    lines = ui.summary(r, dry_run=False, latest=None)
    assert lines[-1] == (
        "checked in the grid: 46 unchanged files, 1 of them uploaded again (the grid had "
        "lost too many of their shares); 4 could not be checked"
    )
    assert not any(
        "checked in the grid" in x for x in ui.summary(Report(), dry_run=False, latest=None)
    )
