"""Lease renewal: the LeaseBook log (round trip, corrupt lines, compaction, 0600),
the LeaseRenewer (due selection, per-round bound, failures stay due, concurrency,
close), the uploader's ``on_uploaded`` hook over the in-process grid, and a
GridService upload tracked and renewed over real QUIC."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.app.vpath import parse_vpath
from p2pstore.grid import Health, HealthConfig, SendConfig, UploadConfig, Uploader
from p2pstore.grid.lease_renewal import LeaseBook, LeaseRenewer, RenewerConfig
from p2pstore.grid.peers import static_peers
from p2pstore.grid.upload import UploadResult, bytes_source
from p2pstore.immutable import EncodingParams, LiteralCap, ReadCap, VerifyCap, parse_cap
from p2pstore.node.config import ConfigError, config_from_dict
from p2pstore.node.grid_service import GridService
from p2pstore.node.vdrive_wiring import grid_vdrive_factory
from p2pstore.storage import StorageAPI
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from quic_transport.identity import NodeId

from .test_node_grid_service import chunks, context, joined_grid, until

pytestmark = pytest.mark.timeout(60)

OWNER = NodeId(hashlib.blake2b(b"lease-owner", digest_size=20).digest())
DAY = 86400.0


def cap(i: int, size: int = 10_000) -> ReadCap:
    key = hashlib.sha256(f"key-{i}".encode()).digest()
    return ReadCap(3, 10, size, key, hashlib.sha256(f"ext-{i}".encode()).digest())


def log_path(tmp_path: Path) -> Path:
    return tmp_path / "private" / "leases.log"


# -- LeaseBook --------------------------------------------------------------------------
def test_book_round_trip_last_wins_literal_skipped_and_0600(tmp_path: Path) -> None:
    book = LeaseBook.load(log_path(tmp_path))
    assert stat.S_IMODE(os.stat(log_path(tmp_path)).st_mode) == 0o600
    assert book.track(cap(1), 100.0)
    assert book.track(cap(2).verify_cap(), 200.5)
    assert book.track(cap(1), 300.0)  # renewed later: the last line wins
    assert not book.track(LiteralCap(b"tiny"), 400.0)
    book.close()
    text = log_path(tmp_path).read_text()
    assert "chk:" not in text.replace("chk-verify:", "")  # no read cap ever stored
    assert len(text.splitlines()) == 3
    again = LeaseBook.load(log_path(tmp_path))
    assert len(again) == 2
    assert again.last_renewed(cap(1).verify_cap()) == 300.0
    assert again.last_renewed(cap(2).verify_cap()) == 200.5
    assert stat.S_IMODE(os.stat(log_path(tmp_path)).st_mode) == 0o600
    with pytest.raises(TypeError):
        again.record(cap(3), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        again.record(cap(3).verify_cap(), float("nan"))


def test_book_lets_go_of_uploads_linked_then_unlinked(tmp_path: Path) -> None:
    """A cap a complete walk found in the drives' own tree is marked linked; once a
    later complete walk does not reach it at all, it is let go. One never found (a
    bare put), or reached only through a live directory, stays. The marks and the
    letting go survive a reload and a compaction."""
    book = LeaseBook.load(log_path(tmp_path))
    a, b, bare, shared = (cap(i).verify_cap() for i in (1, 2, 3, 4))
    for i, vc in enumerate((a, b, bare, shared)):
        book.record(vc, 100.0 + i)
    own = {a, b, cap(9).verify_cap()}  # 9: not ours
    assert book.follow_links(own, own | {shared}) == (2, 0)
    assert not book.is_linked(shared)  # reached through a live directory: not marked
    assert book.follow_links(own, own) == (0, 0)  # nothing new: no line written
    assert book.follow_links({a}, {a, b}) == (0, 0)  # b only in a live directory now
    assert book.follow_links({a}, {a}) == (0, 1)
    assert b not in book and a in book and bare in book and shared in book
    assert book.is_linked(a) and not book.is_linked(bare) and book.count_linked() == 1
    book.record(a, 500.0)  # renewed: still linked
    assert book.is_linked(a)
    book.close()
    assert log_path(tmp_path).read_text().splitlines()[4:] == [
        f"{a.to_string()} linked",
        f"{b.to_string()} linked",
        f"{b.to_string()} -",
        f"{a.to_string()} 500",
    ]
    again = LeaseBook.load(log_path(tmp_path))
    assert len(again) == 3 and again.is_linked(a) and not again.is_linked(bare)
    assert again.last_renewed(a) == 500.0
    again.compact()
    again.close()
    assert sorted(log_path(tmp_path).read_text().splitlines()) == sorted(
        [
            f"{bare.to_string()} 102",
            f"{shared.to_string()} 103",
            f"{a.to_string()} 500",
            f"{a.to_string()} linked",
        ]
    )
    third = LeaseBook.load(log_path(tmp_path))
    assert third.is_linked(a) and len(third) == 3
    assert third.follow_links(set(), set()) == (0, 1)  # a complete walk of empty drives
    third.record(a, 600.0)  # uploaded again after it was let go: kept, not linked
    assert a in third and not third.is_linked(a)
    # a mark for a cap the book does not keep is ignored
    third.close()
    with open(log_path(tmp_path), "a") as f:
        f.write(f"{b.to_string()} linked\n")
    fourth = LeaseBook.load(log_path(tmp_path))
    assert b not in fourth and fourth.count_linked() == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**40)), max_size=30))
def test_book_replays_to_the_last_time_per_cap(events: list[tuple[int, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "leases.log"
        book = LeaseBook.load(path)
        want: dict[VerifyCap, float] = {}
        for i, t in events:
            book.track(cap(i), float(t))
            want[cap(i).verify_cap()] = float(t)
        book.close()
        again = LeaseBook.load(path)
        assert {vc: again.last_renewed(vc) for vc in want} == want
        assert len(again) == len(want)


def test_book_skips_corrupt_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = log_path(tmp_path)
    path.parent.mkdir()
    good = cap(1).verify_cap().to_string()
    lines = [
        f"{good} 100",
        "garbage",
        f"{cap(2).to_string()} 100",  # a read cap: refused
        f"{cap(3).verify_cap().to_string()} soon",
        f"{cap(4).verify_cap().to_string()} -5",
        f"{cap(5).verify_cap().to_string()} inf",
        "p2ps:chk-verify:3:10:1000:AAAA:BBBB 1",
        "x" * 5000,
        f"{cap(6).verify_cap().to_string()} 7 extra",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe 3\n" + good.encode())
    book = LeaseBook.load(path)  # the torn last line (no time) is skipped too
    assert len(book) == 1 and book.last_renewed(cap(1).verify_cap()) == 100.0
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 10
    # the torn tail was rewritten away: a later append starts on a fresh line
    assert path.read_bytes().endswith(b"\n")
    book.track(cap(7), 5.0)
    book.close()
    assert len(LeaseBook.load(path)) == 2
    assert all(cap(2).to_string() not in r.getMessage() for r in caplog.records)


def test_book_compacts_when_bloated(tmp_path: Path) -> None:
    book = LeaseBook.load(log_path(tmp_path))
    for t in range(150):
        book.track(cap(t % 3), float(t))
    assert book.maybe_compact()  # 150 lines > 2 * 3 + 100
    book.close()
    assert len(log_path(tmp_path).read_text().splitlines()) == 3
    for t in range(100):
        book.track(cap(t % 3), 1000.0 + t)
    book.close()
    assert len(log_path(tmp_path).read_text().splitlines()) == 103  # under the bound
    again = LeaseBook.load(log_path(tmp_path))
    assert len(log_path(tmp_path).read_text().splitlines()) == 103
    for t in range(10):
        again.track(cap(t % 3), 2000.0 + t)
    again.close()
    third = LeaseBook.load(log_path(tmp_path))  # 113 lines > 106: compacted at load
    assert len(log_path(tmp_path).read_text().splitlines()) == 3
    assert stat.S_IMODE(os.stat(log_path(tmp_path)).st_mode) == 0o600
    assert {third.last_renewed(cap(i).verify_cap()) for i in range(3)} == {2007.0, 2008.0, 2009.0}
    assert not (log_path(tmp_path).parent / "leases.log.tmp").exists()


def test_book_due_is_oldest_first_and_bounded(tmp_path: Path) -> None:
    book = LeaseBook.load(log_path(tmp_path))
    for i, t in enumerate([50.0, 10.0, 30.0, 90.0, 20.0]):
        book.track(cap(i), t)
    order = [cap(i).verify_cap() for i in (1, 4, 2, 0)]
    assert book.due(60.0) == order
    assert book.due(60.0, 2) == order[:2]
    assert book.count_due(60.0) == 4 and book.count_due(5.0) == 0


# -- LeaseRenewer with a fake renew -----------------------------------------------------
class FakeRenew:
    def __init__(self) -> None:
        self.calls: list[VerifyCap] = []
        self.refuse: set[VerifyCap] = set()
        self.raise_for: set[VerifyCap] = set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, vc: VerifyCap) -> Mapping[str, str | None]:
        self.calls.append(vc)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if vc in self.raise_for:
                raise ConnectionError("lookup failed")
            if vc in self.refuse:
                return {"peer-a": "no such share", "peer-b": "timed out"}
            return {"peer-a": "no such share", "peer-b": None}
        finally:
            self.in_flight -= 1


class Clock:
    def __init__(self, now: float = 1_000 * DAY) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_renewer_round_selection_bound_failures_and_status(tmp_path: Path) -> None:
    clock = Clock()
    book = LeaseBook.load(log_path(tmp_path))
    for i in range(10):  # caps 0..9 renewed 20..11 days ago; cap 10 just now
        book.track(cap(i), clock.now - (20 - i) * DAY)
    book.track(cap(10), clock.now)
    renew = FakeRenew()
    renew.refuse.add(cap(0).verify_cap())
    renew.raise_for.add(cap(1).verify_cap())
    cfg = RenewerConfig(renew_after=10 * DAY, max_per_round=6, concurrency=2)
    r = LeaseRenewer(book, renew, cfg, clock=clock)
    assert r.status() == {
        "tracked": 11,
        "linked": 0,
        "due": 10,
        "renewed_last_round": 0,
        "failed_last_round": 0,
        "last_round_at": None,
    }
    report = await r.run_round()
    assert renew.calls == [cap(i).verify_cap() for i in range(6)]  # oldest first, 6 max
    assert renew.max_in_flight == 2
    assert (report.renewed, report.failed) == (4, 2)
    assert book.last_renewed(cap(2).verify_cap()) == clock.now
    assert book.last_renewed(cap(0).verify_cap()) == clock.now - 20 * DAY  # still due
    st_ = r.status()
    assert st_["due"] == 6 and st_["renewed_last_round"] == 4 and st_["failed_last_round"] == 2
    assert st_["last_round_at"] == clock.now
    renew.calls.clear()
    renew.refuse.clear()
    renew.raise_for.clear()
    await r.run_round()  # the failed ones back off (still due); the rest go
    assert renew.calls == [cap(i).verify_cap() for i in (6, 7, 8, 9)]
    assert r.status()["due"] == 2
    renew.calls.clear()
    clock.now += 2 * 3600.0  # first back-off: 2 intervals
    await r.run_round()  # retried, oldest first
    assert renew.calls == [cap(i).verify_cap() for i in (0, 1)]
    assert r.status()["due"] == 0
    book.close()
    reloaded = LeaseBook.load(log_path(tmp_path))
    assert {reloaded.last_renewed(cap(i).verify_cap()) for i in range(11)} == {
        clock.now,
        clock.now - 2 * 3600.0,
    }


async def test_renewer_logs_storage_index_not_caps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    book = LeaseBook.load(log_path(tmp_path))
    book.track(cap(1), 0.0)
    renew = FakeRenew()
    renew.refuse.add(cap(1).verify_cap())
    await LeaseRenewer(book, renew, RenewerConfig(), clock=clock).run_round()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "no holder accepted" in text
    vc = cap(1).verify_cap().to_string()
    assert vc not in text and vc.rsplit(":", 1)[1] not in text  # no cap, no ext hash


async def test_renewer_loop_sleeps_runs_and_close_cancels(tmp_path: Path) -> None:
    clock = Clock()
    book = LeaseBook.load(log_path(tmp_path))
    book.track(cap(1), 0.0)
    renew = FakeRenew()
    sleeps: list[float] = []
    wake = asyncio.Queue[None]()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await wake.get()

    r = LeaseRenewer(book, renew, RenewerConfig(interval=3600.0), clock=clock, sleep=sleep)
    r.start(first_delay=5.0)
    with pytest.raises(RuntimeError):
        r.start()
    await until(lambda: len(sleeps) == 1)
    assert sleeps == [5.0] and renew.calls == []
    wake.put_nowait(None)
    await until(lambda: len(sleeps) == 2)
    assert renew.calls == [cap(1).verify_cap()]
    assert 3240.0 <= sleeps[1] <= 3960.0  # jittered by at most 10 %
    (task,) = r._tasks.tasks
    await r.close()
    assert task is not None and task.cancelled()
    await r.close()  # idempotent
    with pytest.raises(ValueError):
        RenewerConfig(max_per_round=0)


# -- the uploader hook and Health.renew over the in-process grid ------------------------
@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path / "grid", 6) as g:
        yield g


def grid_storage_for(gs: GridServer) -> StorageAPI:
    return gs.client(OWNER)


def data_of(n: int, seed: int) -> bytes:
    return b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(n // 32 + 1))[:n]


async def test_hook_tracks_uploads_and_reuploads_then_renewal_extends(
    grid: StorageGrid, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = EncodingParams.create(2, 6, 4096)
    find = static_peers(grid.servers)
    cfg = UploadConfig(happy=4, send=SendConfig(op_timeout=2.0), list_timeout=0.5)
    book = LeaseBook.load(log_path(tmp_path))
    seen: list[UploadResult[GridServer]] = []

    def hook(res: UploadResult[GridServer]) -> None:
        seen.append(res)
        book.track(res.cap, grid.clock())

    up = Uploader(find, grid_storage_for, cfg, params=params, on_uploaded=hook)
    data = data_of(20_000, 1)
    first = await up.upload_convergent(bytes_source(data), b"s" * 32)
    assert isinstance(first.cap, ReadCap)
    vc = first.cap.verify_cap()
    assert book.last_renewed(vc) == grid.clock()
    grid.clock.advance(DAY)
    second = await up.upload_convergent(bytes_source(data), b"s" * 32)
    assert second.shares_sent == 0 and second.shares_present == 6
    assert book.last_renewed(vc) == grid.clock()  # a re-upload re-adds and records
    await up.upload_random(bytes_source(b"tiny")())
    assert len(seen) == 3 and len(book) == 1  # the literal file needs no lease

    si = vc.storage_index
    before = {gs.index: gs.server.leases(si)[0].expires for gs in grid.servers}
    grid.clock.advance(11 * DAY)
    health: Health[GridServer] = Health(find, grid_storage_for, HealthConfig(op_timeout=2.0))
    r = LeaseRenewer(book, health.renew, RenewerConfig(renew_after=10 * DAY), clock=grid.clock)
    report = await r.run_round()
    assert (report.renewed, report.failed) == (1, 0)
    after = {gs.index: gs.server.leases(si)[0].expires for gs in grid.servers}
    assert all(after[i] == before[i] + 11 * DAY for i in before)
    assert book.last_renewed(vc) == grid.clock()

    # every holder refusing: counted failed, kept due
    grid.clock.advance(11 * DAY)
    for gs in grid.servers:
        gs.broken()
    report = await r.run_round()
    assert (report.renewed, report.failed) == (1 - 1, 1) and r.status()["due"] == 1

    # a hook that raises never fails the upload
    def bad_hook(res: UploadResult[GridServer]) -> None:
        raise RuntimeError("disk full")

    for gs in grid.servers:
        gs.heal()
    up2 = Uploader(find, grid_storage_for, cfg, params=params, on_uploaded=bad_hook)
    res = await up2.upload_convergent(bytes_source(data_of(9000, 2)), b"s" * 32)
    assert isinstance(res.cap, ReadCap)
    assert any("on_uploaded hook failed" in r.getMessage() for r in caplog.records)


# -- config ------------------------------------------------------------------------------
def test_config_renew_keys(tmp_path: Path) -> None:
    p = tmp_path / "p2pstore.toml"
    c = config_from_dict({}, p)
    assert c.client.renew_leases is True and c.client.renew_interval == 3600
    c = config_from_dict({"client": {"renew_leases": False, "renew_interval": "10m"}}, p)
    assert c.client.renew_leases is False and c.client.renew_interval == 600
    for bad in ({"renew_leases": "yes"}, {"renew_interval": "5s"}, {"renew_interval": "x"}):
        with pytest.raises(ConfigError):
            config_from_dict({"client": bad}, p)


# -- GridService over real QUIC -----------------------------------------------------------
async def test_grid_service_tracks_uploads_and_renews(tmp_path: Path) -> None:
    def service(root: Path) -> GridService:
        return GridService(
            context(root),
            grow_interval=0.5,
            probe_timeout=1.5,
            renewer_config=RenewerConfig(renew_after=0.0),
            vdrive_factory=grid_vdrive_factory,
        )

    async with joined_grid(tmp_path, service) as (_intro, nodes):
        backend = nodes[0].api_backend()
        data = os.urandom(50_000)
        up = await backend.upload(chunks(data), size_hint=len(data), mode="convergent")
        assert isinstance(up.cap, ReadCap)
        vc = up.cap.verify_cap()
        book = nodes[0].lease_book
        renewer = nodes[0].lease_renewer
        assert book is not None and renewer is not None and vc in book
        log_file = nodes[0].context.node_dir.private_dir / "leases.log"
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        assert vc.to_string() in log_file.read_text()
        assert up.cap.to_string() not in log_file.read_text()
        si = vc.storage_index
        owner = nodes[0].context.key.node_id.raw

        def expiry() -> dict[int, float]:
            out = {}
            for i, n in enumerate(nodes):
                assert n.storage is not None
                mine = [x.expires for x in n.storage.server.leases(si) if x.owner == owner]
                out[i] = mine[0] if mine else 0.0
            return out

        before = expiry()
        assert all(v > 0 for v in before.values())
        await asyncio.sleep(0.05)
        report = await renewer.run_round()
        assert (report.renewed, report.failed) == (1, 0)
        after = expiry()
        assert all(after[i] > before[i] for i in before)
        status = nodes[0].status()["details"]["leases"]
        assert status["tracked"] == 1 and status["renewed_last_round"] == 1
        assert status["last_round_at"] is not None
        # another node that merely reads the file does not track it
        reader = nodes[1].api_backend()
        got = b"".join([c async for c in await reader.download(up.cap, 0, len(data))])
        assert got == data and nodes[1].lease_book is not None and len(nodes[1].lease_book) == 0
        # the vdrive's directory objects go through the same uploader: tracked too
        await backend.vdrive_link(
            parse_vpath("private:/f"), up.cap, replace=False, expected_sequence=None
        )
        assert len(book) >= 2
        dir_caps = [c for c in book.due(float("inf")) if c != vc]
        assert dir_caps and all(c.storage_index != si for c in dir_caps)
    assert nodes[0].lease_renewer is None
    reloaded = LeaseBook.load(nodes[0].context.node_dir.private_dir / "leases.log")
    assert vc in reloaded
    assert parse_cap(vc.to_string()) == vc


def test_marks_do_not_make_every_round_compact(tmp_path: Path) -> None:
    """The bound counts the marks' lines: a compacted book of marked caps takes
    about as many appends before its next compaction as an unmarked one."""
    book = LeaseBook.load(log_path(tmp_path))
    caps = [cap(i).verify_cap() for i in range(500)]
    for vc in caps:
        book.record(vc, 1.0)
    book.follow_links(set(caps), set(caps))
    book.compact()  # 1,000 lines: a time and a mark per cap
    for i in range(200):  # two renewal rounds' worth
        book.record(caps[i], 2.0)
    assert not book.maybe_compact()
    book.close()


async def test_a_cap_let_go_while_its_renewal_ran_stays_let_go(tmp_path: Path) -> None:
    clock = Clock()
    book = LeaseBook.load(log_path(tmp_path))
    vc = cap(1).verify_cap()
    book.record(vc, clock.now - 20 * DAY)
    book.follow_links({vc}, {vc})

    async def renew(v: VerifyCap) -> Mapping[str, str | None]:
        book.follow_links(set(), set())  # a walk finished meanwhile: unlinked
        return {"peer-a": None}

    r = LeaseRenewer(book, renew, RenewerConfig(renew_after=10 * DAY), clock=clock)
    report = await r.run_round()
    assert report.renewed == 1 and vc not in book
    book.close()
    assert vc not in LeaseBook.load(log_path(tmp_path))


async def test_a_large_backlog_is_worked_off_within_catch_up(tmp_path: Path) -> None:
    """200 caps an hour renew 48,000 in ten days: a bigger book would fall behind and
    its oldest leases run out. A round takes enough to clear the backlog in a day."""
    clock = Clock()
    book = LeaseBook.load(log_path(tmp_path))
    for i in range(1_000):
        book.record(cap(i).verify_cap(), clock.now - 20 * DAY)
    renew = FakeRenew()
    cfg = RenewerConfig(interval=3600, renew_after=10 * DAY, max_per_round=10, catch_up=DAY)
    r = LeaseRenewer(book, renew, cfg, clock=clock)
    assert (await r.run_round()).renewed == 42  # ceil(1,000 x 1 h / 24 h)
    small = LeaseRenewer(book, renew, RenewerConfig(renew_after=10 * DAY), clock=clock)
    assert (await small.run_round()).renewed == 200  # the floor, when it is enough
    with pytest.raises(ValueError):
        RenewerConfig(catch_up=0)
    book.close()
