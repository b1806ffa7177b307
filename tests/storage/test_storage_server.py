"""StorageServer behaviour beyond the contract: crash safety, restart, path safety,
ENOSPC, lease files, limits, and a property test of arbitrary write orders."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.storage import (
    DiskFull,
    NoSuchLease,
    NoSuchShare,
    NoSuchUpload,
    StorageConfig,
    StorageIOError,
    StorageServer,
    TooFragmented,
    TooManyUploads,
    Unavailable,
)
from p2pstore.storage import server as server_mod
from p2pstore.storage.disk_layout import (
    Layout,
    parse_incoming_name,
    parse_shnum_name,
    parse_si_name,
    si_b32,
)
from p2pstore.storage.leases import OVERFLOW_OWNER, SERVER_OWNER
from p2pstore.testing.storage_grid import FakeClock
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
BOB = NodeId(b"B" * 20)
SI = hashlib.blake2b(b"file-1", digest_size=20).digest()
DAY = 86400.0
REPO = Path(__file__).resolve().parent.parent.parent


def put(server: StorageServer, si: bytes, shnum: int, data: bytes, owner: NodeId = ALICE) -> None:
    server.allocate(si, shnum, owner, len(data))
    server.write(si, shnum, owner, 0, data)
    server.close_share(si, shnum, owner)


def test_layout_paths(tmp_path: Path) -> None:
    with_server = StorageServer.open(tmp_path / "s")
    try:
        put(with_server, SI, 7, b"seven")
        b = si_b32(SI)
        path = tmp_path / "s" / "shares" / b[:2] / b / "7"
        assert path.read_bytes() == b"seven"
        assert with_server.share_path(SI, 7) == path
        lease = cbor2.loads((path.parent / "leases").read_bytes())
        assert lease["v"] == 1 and lease["leases"][0]["owner"] == ALICE.raw
    finally:
        with_server.close()


def test_crash_mid_upload_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "s"
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from p2pstore.storage import StorageServer
        from quic_transport.identity import NodeId
        s = StorageServer.open(Path({str(root)!r}))
        owner = NodeId(b"A" * 20)
        s.allocate({SI!r}, 0, owner, 100)
        s.write({SI!r}, 0, owner, 0, b"x" * 100)   # complete but never closed
        s.allocate({SI!r}, 1, owner)
        s.write({SI!r}, 1, owner, 0, b"y" * 10)
        sys.stdout.write(str(len(os.listdir(s.layout.incoming))))
        sys.stdout.flush()
        os._exit(3)   # crash: no cleanup, no close
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "2"
    assert len(os.listdir(root / "incoming")) == 2  # the crash left temp files behind
    server = StorageServer.open(root)
    try:
        assert os.listdir(root / "incoming") == []
        assert server.list_shares(SI) == {}
        with pytest.raises(NoSuchShare):
            server.read(SI, 0, 0, 1)
        st = server.stat()
        assert (st.used, st.reserved, st.uploads, st.shares) == (0, 0, 0, 0)
        put(server, SI, 0, b"fresh")  # the slot is usable again
    finally:
        server.close()


def test_stale_incoming_cleaned_and_usage_rescanned(tmp_path: Path) -> None:
    root = tmp_path / "s"
    server = StorageServer.open(root)
    put(server, SI, 0, b"a" * 100)
    put(server, SI, 1, b"b" * 50)
    server.allocate(SI, 2, ALICE, 10)
    server.close()  # a clean shutdown aborts uploads in progress
    assert os.listdir(root / "incoming") == []
    (root / "incoming" / f"{si_b32(SI)}.3").write_bytes(b"half")
    (root / "incoming" / "junk").mkdir()
    os.symlink("/etc/passwd", root / "incoming" / "link")
    again = StorageServer.open(root)
    try:
        assert os.listdir(root / "incoming") == []
        assert Path("/etc/passwd").exists()
        st = again.stat()
        assert (st.used, st.shares) == (150, 2)
    finally:
        again.close()


def test_directory_lock(tmp_path: Path) -> None:
    first = StorageServer.open(tmp_path / "s")
    with pytest.raises(StorageIOError, match="in use"):
        StorageServer.open(tmp_path / "s")
    first.close()
    first.close()  # idempotent
    with pytest.raises(Unavailable):
        first.list_shares(SI)
    StorageServer.open(tmp_path / "s").close()


def test_hostile_storage_index_bytes_stay_inside(tmp_path: Path) -> None:
    server = StorageServer.open(tmp_path / "s")
    try:
        for si in (b"../../../../../../..", b"/" * 20, b"\x00" * 20, b".." + b"\xff" * 18):
            put(server, si, 0, b"data")
            path = server.share_path(si, 0)
            assert path.resolve().is_relative_to((tmp_path / "s" / "shares").resolve())
            assert path.parent.name == si_b32(si)
            assert server.list_shares(si) == {0: 4}
    finally:
        server.close()


def test_name_parsers_are_strict() -> None:
    assert parse_si_name(si_b32(SI)) == SI
    for bad in ("..", "", si_b32(SI).upper(), si_b32(SI)[:-1], si_b32(SI) + "a", "a/" * 16):
        assert parse_si_name(bad) is None
    assert [parse_shnum_name(n) for n in ("0", "9", "255")] == [0, 9, 255]
    for bad in ("256", "-1", "01", "+1", " 1", "1.0", "leases", "", "0x1"):
        assert parse_shnum_name(bad) is None
    assert parse_incoming_name(f"{si_b32(SI)}.4") == (SI, 4)
    assert parse_incoming_name(f"{si_b32(SI)}.04") is None


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0").write_bytes(b"secret")
    (outside / "leases").write_bytes(b"not ours")
    server = StorageServer.open(tmp_path / "s")
    try:
        layout: Layout = server.layout
        # A symlinked storage-index directory pointing outside the root.
        evil_si = hashlib.blake2b(b"evil", digest_size=20).digest()
        layout.prefix_dir(evil_si).mkdir(parents=True, exist_ok=True)
        os.symlink(outside, layout.si_dir(evil_si))
        assert server.list_shares(evil_si) == {}
        with pytest.raises(NoSuchShare):
            server.read(evil_si, 0, 0, 6)
        # A symlinked share file inside a real directory.
        put(server, SI, 0, b"real")
        os.symlink(outside / "0", layout.share_path(SI, 1))
        assert server.list_shares(SI) == {0: 4}
        with pytest.raises(NoSuchShare):
            server.read(SI, 1, 0, 6)
        assert server.expire(evil_si, server.clock() + 100 * DAY) == 0
        with pytest.raises(NoSuchLease):
            server.cancel_lease(evil_si, ALICE)
        with pytest.raises(NoSuchShare):
            server.add_lease(evil_si, ALICE)
        # An upload cannot be closed into a directory that escapes the root.
        server.allocate(evil_si, 1, ALICE, 3)
        server.write(evil_si, 1, ALICE, 0, b"abc")
        with pytest.raises(StorageIOError, match="not inside"):
            server.close_share(evil_si, 1, ALICE)
        assert sorted(os.listdir(outside)) == ["0", "leases"]
        assert (outside / "0").read_bytes() == b"secret"
        assert (outside / "leases").read_bytes() == b"not ours"
    finally:
        server.close()


def test_enospc_during_write_is_a_clean_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = StorageServer.open(tmp_path / "s")
    try:
        put(server, SI, 0, b"kept")
        server.allocate(SI, 1, ALICE, 20)
        server.write(SI, 1, ALICE, 0, b"x" * 10)
        real = os.pwritev

        def full(fd: int, buffers: object, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(server_mod.os, "pwritev", full)
        with pytest.raises(DiskFull, match="upload removed"):
            server.write(SI, 1, ALICE, 10, b"y" * 10)
        monkeypatch.setattr(server_mod.os, "pwritev", real)
        assert os.listdir(server.layout.incoming) == []
        assert server.stat().reserved == 0
        with pytest.raises(NoSuchUpload):
            server.write(SI, 1, ALICE, 10, b"y" * 10)
        assert server.read(SI, 0, 0, 10) == b"kept"  # reads unaffected
        put(server, SI, 1, b"retry")
    finally:
        server.close()


def test_enospc_during_close_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = StorageServer.open(tmp_path / "s")
    try:
        server.allocate(SI, 0, ALICE, 3)
        server.write(SI, 0, ALICE, 0, b"abc")

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(server_mod.os, "fsync", full)
        with pytest.raises(DiskFull):
            server.close_share(SI, 0, ALICE)
        monkeypatch.undo()
        assert server.list_shares(SI) == {}
        assert os.listdir(server.layout.incoming) == []
    finally:
        server.close()


def test_lease_expiry_with_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    cfg = StorageConfig(lease_duration=10 * DAY)
    server = StorageServer.open(tmp_path / "s", cfg, clock=clock)
    try:
        put(server, SI, 0, b"a" * 10)
        put(server, SI, 1, b"b" * 10)
        clock.advance(5 * DAY)
        server.add_lease(SI, BOB)  # Bob's lease runs to day 15
        clock.advance(6 * DAY)  # day 11: Alice's expired, Bob's live
        assert server.expire(SI) == 0
        assert [le.owner for le in server.leases(SI)] == [BOB.raw]  # pruned
        assert server.list_shares(SI) == {0: 10, 1: 10}
        clock.advance(4 * DAY + 1)
        assert server.expire(SI) == 2
        assert server.list_shares(SI) == {}
        assert server.stat().used == 0
        assert not server.layout.si_dir(SI).exists()
    finally:
        server.close()


def test_corrupt_or_missing_lease_file_gets_grace_lease(tmp_path: Path) -> None:
    clock = FakeClock()
    server = StorageServer.open(tmp_path / "s", StorageConfig(lease_duration=DAY), clock=clock)
    try:
        put(server, SI, 0, b"data")
        server.layout.lease_path(SI).write_bytes(b"\xff not cbor")
        clock.advance(2 * DAY)
        assert server.expire(SI) == 0  # not deleted on a technicality
        assert [le.owner for le in server.leases(SI)] == [SERVER_OWNER]
        clock.advance(DAY + 1)
        assert server.expire(SI) == 1
    finally:
        server.close()


def test_too_many_ranges_aborts(tmp_path: Path) -> None:
    server = StorageServer.open(tmp_path / "s", StorageConfig(max_ranges_per_upload=4))
    try:
        server.allocate(SI, 0, ALICE)
        for i in range(4):
            server.write(SI, 0, ALICE, i * 10, b"x")
        server.write(SI, 0, ALICE, 1, b"x")  # merges into the first range
        with pytest.raises(TooFragmented):
            server.write(SI, 0, ALICE, 100, b"x")
        assert server.stat().uploads == 0
    finally:
        server.close()


def test_upload_count_limits(tmp_path: Path) -> None:
    cfg = StorageConfig(max_uploads=3, max_uploads_per_owner=2)
    server = StorageServer.open(tmp_path / "s", cfg)
    try:
        server.allocate(SI, 0, ALICE, 1)
        server.allocate(SI, 1, ALICE, 1)
        with pytest.raises(TooManyUploads, match="you have"):
            server.allocate(SI, 2, ALICE, 1)
        server.allocate(SI, 2, BOB, 1)
        with pytest.raises(TooManyUploads, match="server has"):
            server.allocate(SI, 3, BOB, 1)
        assert server.abort_uploads_of(ALICE) == 2
        assert server.stat().uploads == 1
        server.allocate(SI, 3, BOB, 1)
    finally:
        server.close()


# Each example fsyncs a share and a lease file: fewer examples keep the default run fast
# (the "thorough" hypothesis profile is for deep local runs).
@settings(max_examples=50 if settings.default.max_examples <= 100 else 1000)
@given(
    size=st.integers(min_value=1, max_value=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
    order=st.randoms(use_true_random=False),
    overlaps=st.lists(st.tuples(st.integers(0, 2999), st.integers(1, 500)), max_size=4),
    sized=st.booleans(),
)
def test_any_write_order_reproduces_the_data(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    cuts: list[int],
    order: object,
    overlaps: list[tuple[int, int]],
    sized: bool,
) -> None:
    import random

    assert isinstance(order, random.Random)
    data = bytes(order.getrandbits(8) for _ in range(size))
    points = sorted({0, size, *(c for c in cuts if c < size)})
    pieces = [(a, data[a:b]) for a, b in itertools.pairwise(points)]
    # Retransmissions: overlapping writes of the same bytes, anywhere.
    pieces += [(o, data[o : o + n]) for o, n in overlaps if o < size]
    order.shuffle(pieces)
    server = StorageServer.open(tmp_path_factory.mktemp("prop"), StorageConfig(max_write=4096))
    try:
        server.allocate(SI, 0, ALICE, size if sized else None)
        for off, chunk in pieces:
            server.write(SI, 0, ALICE, off, chunk)
        assert server.close_share(SI, 0, ALICE).size == size
        assert server.read(SI, 0, 0, size) == data
        mid = size // 3
        assert server.readv(SI, 0, [(mid, 7), (size - 1, 5)]) == [
            data[mid : mid + 7],
            data[size - 1 :],
        ]
    finally:
        server.close()


def test_lease_count_limit_overflows_instead_of_refusing(tmp_path: Path) -> None:
    """Past max_leases_per_index owners, a new lease is not refused (it used to be
    TooManyLeases): its time goes into the shared overflow lease."""
    clock = FakeClock()
    cfg = StorageConfig(max_leases_per_index=2, lease_duration=DAY)
    server = StorageServer.open(tmp_path / "s", cfg, clock=clock)
    try:
        put(server, SI, 0, b"x")
        server.add_lease(SI, BOB)
        clock.advance(10)
        c_expiry = server.add_lease(SI, NodeId(b"C" * 20))
        owners = {le.owner for le in server.leases(SI)}
        assert len(owners) == 2 and OVERFLOW_OWNER in owners  # ALICE's folded in
        assert c_expiry == clock() + DAY
        server.add_lease(SI, BOB)  # renewing an existing lease is always allowed
        server.renew_lease(SI, NodeId(b"C" * 20))  # C renews through the overflow
        put(server, SI, 1, b"y", owner=NodeId(b"D" * 20))  # kept alive too
        clock.advance(2 * DAY)  # all expired: a new owner takes a named slot
        server.add_lease(SI, NodeId(b"E" * 20))
        assert [le.owner for le in server.leases(SI)] == [b"E" * 20]
    finally:
        server.close()


def test_squatters_cannot_crowd_out_or_cancel_away_a_lease(tmp_path: Path) -> None:
    """64 free identities take every named slot; the legitimate owner still gets a
    lease, and when the squatters and the original uploader all cancel, the shares
    stay (before: TooManyLeases, then the shares were deleted)."""
    clock = FakeClock()
    server = StorageServer.open(tmp_path / "s", StorageConfig(lease_duration=DAY), clock=clock)
    try:
        put(server, SI, 0, b"x")  # ALICE uploads (her lease)
        squatters = [NodeId(bytes([i + 1]) * 20) for i in range(70)]
        for sq in squatters:
            server.add_lease(SI, sq)
        legit = NodeId(b"L" * 20)
        assert server.add_lease(SI, legit) == clock() + DAY
        for who in [*squatters, ALICE]:
            with contextlib.suppress(NoSuchLease):  # folded into the overflow lease
                assert server.cancel_lease(SI, who) == 0
        assert server.list_shares(SI) == {0: 1}  # still here for the legitimate owner
        clock.advance(2 * DAY)
        assert server.expire(SI) == 1  # and collected once nobody renews
    finally:
        server.close()


async def test_concurrent_uploads_and_aborts_keep_accounts(tmp_path: Path) -> None:
    import asyncio

    from p2pstore.storage import LocalStorageClient, StorageError

    server = StorageServer.open(tmp_path / "s", StorageConfig(max_write=4096))
    try:
        owners = [NodeId(bytes([i]) * 20) for i in range(8)]

        async def one(i: int) -> None:
            api = LocalStorageClient(server, owners[i])
            si = hashlib.blake2b(bytes([i % 4]), digest_size=20).digest()
            try:
                await api.allocate(si, i, 40_000 if i % 2 else None)
            except StorageError:
                return
            writes = [api.write(si, i, off, bytes([i]) * 4000) for off in range(0, 40_000, 4000)]
            if i % 3 == 0:
                writes.append(api.abort(si, i))
            results = await asyncio.gather(*writes, return_exceptions=True)
            if i % 3 == 0:
                assert results[-1] is None  # the abort itself succeeded
                # writes raced with the abort: each either landed first or was refused
                assert all(r is None or isinstance(r, NoSuchUpload) for r in results)
                with pytest.raises(NoSuchUpload):
                    await api.close_share(si, i)
                return
            assert not any(isinstance(r, BaseException) for r in results), results
            await api.close_share(si, i)

        await asyncio.gather(*(one(i) for i in range(8)))
        st = server.stat()
        assert (st.reserved, st.uploads) == (0, 0)
        kept = [i for i in range(8) if i % 3 != 0]
        assert st.used == 40_000 * len(kept) and st.shares == len(kept)
        assert os.listdir(server.layout.incoming) == []
        for i in kept:
            si = hashlib.blake2b(bytes([i % 4]), digest_size=20).digest()
            assert server.read(si, i, 0, 4096) == bytes([i]) * 4096
    finally:
        server.close()


def test_config_from_mapping() -> None:
    from p2pstore.storage.config import parse_duration, parse_size

    cfg = StorageConfig.from_mapping(
        {"max_bytes": "10GB", "reserved_space": "1GiB", "lease_duration": "31d", "max_write": 4096}
    )
    assert cfg.max_bytes == 10 * 1000**3
    assert cfg.reserved_space == 1024**3
    assert cfg.lease_duration == 31 * DAY
    assert cfg.max_write == 4096
    assert StorageConfig.from_mapping({"max_bytes": None}).max_bytes is None
    assert [parse_size(s) for s in ("0", "5", "2k", "2KiB", "3 MB", "1t")] == [
        0,
        5,
        2000,
        2048,
        3_000_000,
        10**12,
    ]
    assert [parse_duration(s) for s in ("90", "90s", "2m", "1.5h", 7)] == [90, 90, 120, 5400, 7]
    for bad in ("", "10X", "iB", "-5", "1.5GB", True, 2.5):
        with pytest.raises(ValueError):
            parse_size(bad)
    for bad in ("", "5w", "x", None):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError, match="unknown"):
        StorageConfig.from_mapping({"max_byte": 5})
    with pytest.raises(ValueError):
        StorageConfig.from_mapping({"max_write": "0"})


def test_symlinked_root_is_allowed(tmp_path: Path) -> None:
    real = tmp_path / "disk2"
    real.mkdir()
    os.symlink(real, tmp_path / "storage")
    server = StorageServer.open(tmp_path / "storage")
    try:
        put(server, SI, 0, b"via link")
        assert server.read(SI, 0, 0, 20) == b"via link"
        assert (real / "shares").is_dir()
    finally:
        server.close()


def test_put_share_is_allocate_write_close_in_one_call(tmp_path: Path) -> None:
    """The same checks and errors as the three calls; nothing is left in progress."""
    from p2pstore.storage import BadRequest, QuotaExceeded, ShareExists, TooLarge
    from p2pstore.storage.put import put_whole

    clock = FakeClock()
    cfg = StorageConfig(max_bytes=20_000, max_write=16_000)
    server = StorageServer.open(tmp_path / "s", cfg, clock=clock)
    try:
        closed = put_whole(server, SI, 0, ALICE, b"a" * 10_000, 3600)
        assert closed.size == 10_000 and closed.lease_expires == clock() + 3600
        assert server.list_shares(SI) == {0: 10_000}
        assert server.read(SI, 0, 0, 10_000) == b"a" * 10_000
        with pytest.raises(ShareExists):
            put_whole(server, SI, 0, BOB, b"b" * 10)
        with pytest.raises(TooLarge):  # more than one write may carry
            put_whole(server, SI, 1, ALICE, b"c" * 16_001)
        with pytest.raises(BadRequest):
            put_whole(server, SI, 1, ALICE, b"")
        with pytest.raises(QuotaExceeded):
            put_whole(server, SI, 2, ALICE, b"d" * 15_000)
        assert server.stat().uploads == 0 and server.list_shares(SI) == {0: 10_000}
    finally:
        server.close()
