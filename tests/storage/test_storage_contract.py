"""Contract suite for the storage interface: every test runs against the server
directly (LocalStorageClient) and through the RPC adapter with an in-memory
registry and a CBOR round trip (RpcStorageClient), proving the two equivalent."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pstore.storage import (
    AlreadyUploading,
    BadRequest,
    IncompleteShare,
    LocalStorageClient,
    NoSuchLease,
    NoSuchShare,
    NoSuchUpload,
    OutOfRange,
    QuotaExceeded,
    RpcStorageClient,
    ShareExists,
    StorageAPI,
    StorageConfig,
    StorageError,
    StorageServer,
    TooLarge,
    register_storage_rpc,
)
from p2pstore.storage.config import MAX_HASH_PREFIX, MAX_HASH_RANGES
from p2pstore.testing.fake_rpc import FakeRegistry, FakeRpcError
from p2pstore.testing.storage_grid import FakeClock
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
BOB = NodeId(b"B" * 20)
SI = hashlib.blake2b(b"file-1", digest_size=20).digest()
SI2 = hashlib.blake2b(b"file-2", digest_size=20).digest()
DAY = 86400.0


class FakeDisk:
    def __init__(self, free: int = 10**12) -> None:
        self.free = free

    def __call__(self, path: Path) -> int:
        return self.free


@dataclass
class Env:
    server: StorageServer
    clock: FakeClock
    disk: FakeDisk
    api: Callable[[NodeId], StorageAPI]
    remote: bool


CONFIG = StorageConfig(
    max_bytes=10_000,
    max_share_size=5_000,
    max_write=1_000,
    max_read=2_000,
    max_hash=4_000,
    lease_duration=10 * DAY,
    upload_idle_timeout=60.0,
)


@pytest.fixture(params=["direct", "rpc"])
def make_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    servers: list[StorageServer] = []

    def make(config: StorageConfig = CONFIG, free: int = 10**12) -> Env:
        clock, disk = FakeClock(), FakeDisk(free)
        server = StorageServer.open(
            tmp_path / f"s{len(servers)}", config, clock=clock, free_space=disk
        )
        servers.append(server)
        if request.param == "direct":
            return Env(server, clock, disk, lambda who: LocalStorageClient(server, who), False)
        registry = FakeRegistry()
        register_storage_rpc(registry, server, error_factory=FakeRpcError)
        return Env(server, clock, disk, lambda who: RpcStorageClient(registry.caller(who)), True)

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


async def upload(api: StorageAPI, si: bytes, shnum: int, data: bytes, sized: bool = True) -> None:
    await api.allocate(si, shnum, len(data) if sized else None)
    for off in range(0, len(data), 1000):
        await api.write(si, shnum, off, data[off : off + 1000])
    await api.close_share(si, shnum)


async def test_round_trip_and_list(env: Env) -> None:
    a = env.api(ALICE)
    data = bytes(range(256)) * 10
    alloc = await a.allocate(SI, 3, len(data))
    assert (alloc.size, alloc.limit) == (len(data), len(data))
    for off in range(0, len(data), 1000):
        await a.write(SI, 3, off, data[off : off + 1000])
    closed = await a.close_share(SI, 3)
    assert closed.size == len(data)
    assert closed.lease_expires == env.clock.now + 10 * DAY
    assert await a.list_shares(SI) == {3: len(data)}
    assert await a.read(SI, 3, 0, 2000) == data[:2000]
    assert await env.api(BOB).read(SI, 3, 2000, 2000) == data[2000:]  # clamped at the end
    assert await a.read(SI, 3, 10_000, 5) == b""  # past the end: empty
    assert await a.readv(SI, 3, [(0, 4), (2558, 10)]) == [data[:4], data[2558:]]
    assert await a.list_shares(SI2) == {}


async def test_hashv_hashes_stored_ranges_without_moving_them(env: Env) -> None:
    a = env.api(ALICE)
    data = os.urandom(3000)
    await upload(a, SI, 2, data)
    prefix = b"\x07tag:blk"
    ranges = [(0, 1000), (1000, 1000), (2500, 1000), (5000, 10), (6000, 0)]
    expect = [hashlib.sha256(prefix + data[o : o + n]).digest() for o, n in ranges]
    assert await env.api(BOB).hashv(SI, 2, prefix, ranges) == expect  # clamped at the end
    assert await a.hashv(SI, 2, b"", [(0, 3000)]) == [hashlib.sha256(data).digest()]
    with pytest.raises(TooLarge):  # max_hash bounds the bytes one call hashes
        await a.hashv(SI, 2, b"", [(0, 3000), (3000, 1001)])
    with pytest.raises(BadRequest):  # each byte at most once a call: in order, disjoint
        await a.hashv(SI, 2, b"", [(0, 1000), (999, 10)])
    with pytest.raises(BadRequest):
        await a.hashv(SI, 2, b"", [(1000, 10), (0, 10)])
    with pytest.raises((TooLarge, BadRequest)):  # the RPC schema refuses it first
        await a.hashv(SI, 2, b"", [(i, 1) for i in range(MAX_HASH_RANGES + 1)])
    with pytest.raises(BadRequest):
        await a.hashv(SI, 2, b"x" * (MAX_HASH_PREFIX + 1), [(0, 1)])
    with pytest.raises(BadRequest):
        await a.hashv(SI, 2, b"", [(-1, 1)])
    with pytest.raises(NoSuchShare):
        await a.hashv(SI, 3, b"", [(0, 1)])
    await a.allocate(SI, 4, 10)  # in progress: not there for hashing either
    await a.write(SI, 4, 0, b"0123456789")
    with pytest.raises(NoSuchShare):
        await a.hashv(SI, 4, b"", [(0, 10)])


async def test_share_invisible_until_closed(env: Env) -> None:
    a = env.api(ALICE)
    await a.allocate(SI, 0, 10)
    await a.write(SI, 0, 0, b"0123456789")
    assert await a.list_shares(SI) == {}
    with pytest.raises(NoSuchShare):
        await a.read(SI, 0, 0, 10)
    await a.close_share(SI, 0)
    assert await a.read(SI, 0, 0, 10) == b"0123456789"


async def test_out_of_order_streamed_writes(env: Env) -> None:
    a = env.api(ALICE)
    alloc = await a.allocate(SI, 1)  # size unknown: a pipe upload
    assert alloc.size is None and alloc.limit == CONFIG.max_share_size
    await a.write(SI, 1, 100, b"b" * 900)  # blocks first
    await a.write(SI, 1, 1000, b"c" * 50)
    await a.write(SI, 1, 0, b"h" * 100)  # header last
    assert (await a.close_share(SI, 1)).size == 1050
    assert await a.read(SI, 1, 0, 1050) == b"h" * 100 + b"b" * 900 + b"c" * 50


async def test_close_with_holes_refused_then_completed(env: Env) -> None:
    a = env.api(ALICE)
    await a.allocate(SI, 0)
    await a.write(SI, 0, 0, b"x" * 10)
    await a.write(SI, 0, 20, b"y" * 10)
    with pytest.raises(IncompleteShare, match=r"10\.\.20"):
        await a.close_share(SI, 0)
    await a.write(SI, 0, 10, b"z" * 10)
    assert (await a.close_share(SI, 0)).size == 30


async def test_declared_size_must_be_filled_and_not_exceeded(env: Env) -> None:
    a = env.api(ALICE)
    await a.allocate(SI, 0, 100)
    await a.write(SI, 0, 0, b"x" * 60)
    with pytest.raises(OutOfRange):
        await a.write(SI, 0, 60, b"x" * 41)
    with pytest.raises(IncompleteShare):
        await a.close_share(SI, 0)
    await a.allocate(SI, 1)
    with pytest.raises(OutOfRange):
        await a.write(SI, 1, CONFIG.max_share_size - 5, b"x" * 6)
    with pytest.raises(IncompleteShare):
        await a.close_share(SI, 1)  # nothing written


async def test_complete_shares_are_immutable(env: Env) -> None:
    a = env.api(ALICE)
    await upload(a, SI, 0, b"data")
    with pytest.raises(ShareExists):
        await a.write(SI, 0, 0, b"evil")
    with pytest.raises(ShareExists):
        await a.allocate(SI, 0, 4)
    with pytest.raises(ShareExists):
        await env.api(BOB).allocate(SI, 0)
    assert await a.read(SI, 0, 0, 10) == b"data"


async def test_concurrent_allocation_and_ownership(env: Env) -> None:
    a, b = env.api(ALICE), env.api(BOB)
    await a.allocate(SI, 5, 10)
    with pytest.raises(AlreadyUploading):
        await b.allocate(SI, 5, 10)
    with pytest.raises(AlreadyUploading):
        await a.allocate(SI, 5, 10)
    for call in (
        b.write(SI, 5, 0, b"x"),
        b.close_share(SI, 5),
        b.abort(SI, 5),
    ):
        with pytest.raises(NoSuchUpload):
            await call
    await a.write(SI, 5, 0, b"0123456789")
    await a.close_share(SI, 5)
    with pytest.raises(NoSuchUpload):
        await a.abort(SI, 6)


async def test_abort_releases_reservation(env: Env) -> None:
    a = env.api(ALICE)
    await a.allocate(SI, 0, 4000)
    await a.write(SI, 0, 0, b"x" * 1000)
    st = await a.stat()
    assert (st.reserved, st.uploads, st.used) == (4000, 1, 0)
    await a.abort(SI, 0)
    st = await a.stat()
    assert (st.reserved, st.uploads, st.used) == (0, 0, 0)
    assert list((env.server.layout.incoming).iterdir()) == []
    with pytest.raises(NoSuchUpload):
        await a.write(SI, 0, 1000, b"x")
    await upload(env.api(BOB), SI, 0, b"y" * 10)  # the slot is free again
    assert await a.read(SI, 0, 0, 20) == b"y" * 10


async def test_quota_refuses_new_shares_but_reads_continue(env: Env) -> None:
    a = env.api(ALICE)
    await upload(a, SI, 0, b"a" * 5000)
    await upload(a, SI, 1, b"b" * 4000)
    st = await a.stat()
    assert (st.used, st.available, st.shares, st.max_bytes) == (9000, 1000, 2, 10_000)
    await a.allocate(SI, 2, 800)  # reserves 800 of the last 1000
    with pytest.raises(QuotaExceeded, match="storage full"):
        await env.api(BOB).allocate(SI, 3, 300)
    await a.abort(SI, 2)
    with pytest.raises(QuotaExceeded):
        await a.allocate(SI, 3, 1001)
    await upload(a, SI, 3, b"c" * 1000)
    with pytest.raises(QuotaExceeded):
        await a.allocate(SI2, 0)  # streamed: refused when nothing is left
    assert (await a.stat()).available == 0
    assert await a.read(SI, 0, 4990, 100) == b"a" * 10
    assert await a.list_shares(SI) == {0: 5000, 1: 4000, 3: 1000}


async def test_streamed_upload_growing_past_quota_is_aborted(env: Env) -> None:
    a = env.api(ALICE)
    await upload(a, SI, 0, b"a" * 5000)
    await upload(a, SI, 1, b"a" * 3000)
    await a.allocate(SI2, 0)
    await a.write(SI2, 0, 0, b"x" * 1000)
    await a.write(SI2, 0, 1000, b"x" * 1000)
    with pytest.raises(QuotaExceeded, match="aborted"):
        await a.write(SI2, 0, 2000, b"x" * 1)
    with pytest.raises(NoSuchUpload):
        await a.close_share(SI2, 0)
    assert (await a.stat()).reserved == 0


async def test_reserved_free_space(make_env: Callable[..., Env]) -> None:
    env = make_env(StorageConfig(reserved_space=1_000_000, max_share_size=10**6), free=1_000_500)
    a = env.api(ALICE)
    await a.allocate(SI, 0, 400)
    with pytest.raises(QuotaExceeded, match="keeping 1000000 free"):
        await a.allocate(SI, 1, 200)
    env.disk.free = 10**9
    await a.allocate(SI, 1, 200)
    env.disk.free = 0
    assert (await a.stat()).available == 0
    with pytest.raises(QuotaExceeded):
        await env.api(BOB).allocate(SI2, 0)


async def test_leases_add_renew_cancel(env: Env) -> None:
    a, b = env.api(ALICE), env.api(BOB)
    await upload(a, SI, 0, b"zero")
    await upload(a, SI, 1, b"one")
    with pytest.raises(NoSuchLease):
        await b.renew_lease(SI)
    with pytest.raises(NoSuchLease):
        await b.cancel_lease(SI)
    env.clock.advance(DAY)
    assert await b.add_lease(SI) == env.clock.now + 10 * DAY
    env.clock.advance(DAY)
    assert await a.renew_lease(SI) == env.clock.now + 10 * DAY
    assert await a.cancel_lease(SI) == 0  # Bob's lease keeps the shares
    assert await a.list_shares(SI) == {0: 4, 1: 3}
    with pytest.raises(NoSuchLease):
        await a.renew_lease(SI)
    assert await b.cancel_lease(SI) == 2  # last lease gone: shares deleted now
    assert await a.list_shares(SI) == {}
    assert (await a.stat()).used == 0
    with pytest.raises(NoSuchShare):
        await a.add_lease(SI)
    with pytest.raises(NoSuchShare):
        await a.read(SI, 0, 0, 1)


async def test_bad_arguments_refused(env: Env) -> None:
    a = env.api(ALICE)
    for si in (b"short", b"x" * 21, b""):
        with pytest.raises(BadRequest):
            await a.list_shares(si)
        with pytest.raises(BadRequest):
            await a.allocate(si, 0, 10)
    for shnum in (-1, 256, 10**9):
        with pytest.raises(BadRequest):
            await a.allocate(SI, shnum, 10)
        with pytest.raises(BadRequest):
            await a.read(SI, shnum, 0, 1)
    with pytest.raises(BadRequest):
        await a.allocate(SI, True, 10)
    with pytest.raises(BadRequest):
        await a.allocate(SI, 0, 0)
    with pytest.raises(TooLarge):
        await a.allocate(SI, 0, CONFIG.max_share_size + 1)
    await a.allocate(SI, 0, 5000)
    with pytest.raises(TooLarge):
        await a.write(SI, 0, 0, b"x" * 1001)
    with pytest.raises(BadRequest):
        await a.write(SI, 0, -1, b"x")
    await upload(a, SI, 1, b"x" * 10)
    with pytest.raises(TooLarge):
        await a.read(SI, 1, 0, 2001)
    with pytest.raises(TooLarge):
        await a.readv(SI, 1, [(0, 1000), (0, 1001)])
    with pytest.raises(BadRequest):
        await a.read(SI, 1, -5, 1)
    with pytest.raises(BadRequest):
        await a.read(SI, 1, 2**64, 1)
    assert await a.read(SI, 1, 2**62, 1) == b""


async def test_idle_upload_swept(env: Env) -> None:
    a = env.api(ALICE)
    await a.allocate(SI, 0, 100)
    await a.write(SI, 0, 0, b"x" * 50)
    env.clock.advance(59)
    assert env.server.sweep_idle_uploads() == 0
    await a.write(SI, 0, 50, b"x" * 10)  # activity resets the idle timer
    env.clock.advance(59)
    assert env.server.sweep_idle_uploads() == 0
    env.clock.advance(2)
    assert env.server.sweep_idle_uploads() == 1
    with pytest.raises(NoSuchUpload):
        await a.write(SI, 0, 60, b"x")
    assert (await a.stat()).reserved == 0


async def test_errors_carry_locality(env: Env) -> None:
    a = env.api(ALICE)
    with pytest.raises(StorageError) as info:
        await a.read(SI, 0, 0, 1)
    assert info.value.code == "no-such-share"
    assert info.value.remote is env.remote


async def test_slots(env: Env) -> None:
    from p2pstore.storage.errors import BadRecord
    from p2pstore.storage.slots import SlotRecord

    one, two = SlotRecord.sign(bytes(32), 1, b"a"), SlotRecord.sign(bytes(32), 2, b"b")
    si = one.storage_index
    a, b = env.api(ALICE), env.api(BOB)
    assert await a.slot_read(si) is None
    assert await a.slot_write(si, one.encode()) == (True, one.encode())
    assert await b.slot_write(si, two.encode(), 3600) == (True, two.encode())
    assert await a.slot_write(si, one.encode()) == (False, two.encode())
    assert await a.slot_read(si) == two.encode()
    assert await a.list_shares(si) == {}
    leases = {le.owner: le.expires for le in env.server.leases(si)}
    assert leases == {ALICE.raw: env.clock.now + 10 * DAY, BOB.raw: env.clock.now + 3600}
    with pytest.raises(BadRecord) as info:
        await a.slot_write(SI, two.encode())
    assert info.value.remote is env.remote
    with pytest.raises(QuotaExceeded):
        for n in (5, 6):  # 10_000 bytes of quota hold one 8 KB record, not two
            big = SlotRecord.sign(bytes([n]) * 32, 1, bytes(8000))
            await a.slot_write(big.storage_index, big.encode())
    assert await a.cancel_lease(si) == 0
    assert await b.cancel_lease(si) == 0
    assert await a.slot_read(si) is None
