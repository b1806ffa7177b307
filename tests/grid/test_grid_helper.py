"""The upload helper on the in-process grid (docs/helper.md): the client encodes and
verifies, the helper encodes the ciphertext again and places it; faults of the
helper (refusing, vanishing, corrupting) end in another helper or a direct upload,
never in a cap for an unreadable file."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    SendConfig,
    UploadConfig,
    Uploader,
    bytes_source,
    helper_client,
    static_peers,
)
from p2pstore.grid import helper as helper_mod
from p2pstore.grid.download import read_ranges
from p2pstore.grid.helper import MAX_FINISH_ATTEMPTS, HelperConfig, HelperError, HelperService
from p2pstore.grid.helper_client import MAX_RANGES, HelpedUploader, HelperUse
from p2pstore.grid.helper_rpc import _body
from p2pstore.grid.peers import READ_CHUNK
from p2pstore.immutable import (
    CiphertextEncoder,
    ConvergenceHasher,
    Encoder,
    EncodingParams,
    ReadCap,
)
from p2pstore.storage.errors import UnknownStorageError
from p2pstore.testing.storage_grid import FaultyStorage, GridServer, StorageGrid
from quic_transport.identity import NodeId

CLIENT = NodeId(b"C" * 20)
HELPER = NodeId(b"H" * 20)
SECRET = bytes(range(32))
PARAMS = EncodingParams.create(3, 10, 4096)
FAST = SendConfig(op_timeout=2.0)


@pytest.fixture(autouse=True)
def _no_resume_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helper_client, "RESUME_PAUSE", 0.0)


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[StorageGrid]:
    with StorageGrid(tmp_path / "grid", 14) as g:
        yield g


def _uploader(grid: StorageGrid, owner: NodeId) -> Uploader[GridServer]:
    cfg = UploadConfig(happy=7, send=FAST, list_timeout=0.5)
    return Uploader(static_peers(grid.servers), lambda gs: gs.client(owner), cfg, params=PARAMS)


class LocalHelper:
    """A helper reached without the network, as ``caller``; ``cut_after`` makes a
    push fail after that many bytes (a helper that vanishes), ``flip`` corrupts the
    byte at that offset of the ciphertext (a helper that stores garbage)."""

    def __init__(self, service: HelperService[Any], name: str, caller: NodeId = CLIENT) -> None:
        self.service, self.name, self.caller = service, name, caller
        self.cut_after: int | None = None
        self.cut_once = False  # the connection breaks once, not for good
        self.flip: int | None = None
        self.pushed = 0

    async def start(self, si: bytes, params: EncodingParams, size: int) -> dict[str, Any]:
        return await self.service.start(self.caller, si, params, size)

    async def push(self, si: bytes, offset: int, chunks: AsyncIterable[bytes]) -> int:
        async def tapped() -> AsyncIterator[bytes]:
            pos = offset
            async for chunk in chunks:
                if self.flip is not None and pos <= self.flip < pos + len(chunk):
                    b = bytearray(chunk)
                    b[self.flip - pos] ^= 1
                    chunk = bytes(b)
                if self.cut_after is not None and self.pushed + len(chunk) > self.cut_after:
                    keep = self.cut_after - self.pushed
                    self.pushed += keep
                    if self.cut_once:
                        self.cut_after = None
                    yield chunk[:keep]
                    raise ConnectionError("the helper went away")
                self.pushed += len(chunk)
                pos += len(chunk)
                yield chunk

        return await self.service.push(self.caller, si, offset, tapped())

    async def finish(self, si: bytes, size: int) -> dict[str, Any]:
        return await self.service.finish(self.caller, si)


def _service(
    grid: StorageGrid, tmp_path: Path, name: str = "h1", **config: Any
) -> HelperService[GridServer]:
    cfg = HelperConfig(enabled=True, reserve=0, **config)
    return HelperService(tmp_path / name, _uploader(grid, HELPER), cfg)


def _client(
    grid: StorageGrid, helpers: list[LocalHelper], use: str = "always"
) -> HelpedUploader[GridServer]:
    async def known() -> list[LocalHelper]:
        return helpers

    return HelpedUploader(_uploader(grid, CLIENT), known, HelperUse(use=use))


async def _read(grid: StorageGrid, cap: ReadCap) -> bytes:
    down = Downloader(
        static_peers(grid.servers),
        lambda gs: gs.client(CLIENT),
        DownloadConfig(op_timeout=2.0, locate_timeout=5),
    )
    return b"".join([c async for c in down.read(cap)])


def _leased_by(grid: StorageGrid, si: bytes, owner: NodeId) -> int:
    return sum(
        1 for gs in grid.servers if any(lz.owner == owner.raw for lz in gs.server.leases(si))
    )


@settings(max_examples=25, deadline=None)
@given(size=st.integers(56, 40_000), cut=st.integers(1, 9000))
def test_ciphertext_encoder_reproduces_the_keyed_encoding(size: int, cut: int) -> None:
    data = os.urandom(size)
    enc = Encoder(os.urandom(32), PARAMS, expected_size=size)
    segs = enc.feed(data)
    res = enc.finish()
    segs += list(res.segments)
    seg = PARAMS.segment_size
    ct = b"".join(b"".join(s.blocks[: PARAMS.k])[: min(seg, size - s.index * seg)] for s in segs)
    assert len(ct) == size
    again = CiphertextEncoder(enc.storage_index, PARAMS, size)
    segs2 = again.feed(ct[:cut]) + again.feed(ct[cut:])
    res2 = again.finish()
    segs2 += list(res2.segments)
    assert [s.blocks for s in segs2] == [s.blocks for s in segs]
    assert res2.trailers == res.trailers and res2.extension == res.extension
    assert isinstance(res.cap, ReadCap) and res2.cap == res.cap.verify_cap()


async def test_upload_through_a_helper_is_verified_and_readable(
    grid: StorageGrid, tmp_path: Path
) -> None:
    service = _service(grid, tmp_path)
    helper = LocalHelper(service, "h1")
    client = _client(grid, [helper])
    data = os.urandom(150_000)
    res = await client.upload_convergent(bytes_source(data), SECRET)
    assert res.helper == "h1" and res.helper_failures == ()
    assert isinstance(res.cap, ReadCap) and res.happiness >= 7
    assert helper.pushed == len(data)  # the ciphertext went once, nothing more
    assert await _read(grid, res.cap) == data
    si = res.cap.storage_index
    assert _leased_by(grid, si, CLIENT) >= 7  # the client's own lease, for renewal
    assert service.figures()["uploads_placed"] == 1
    assert list((tmp_path / "h1").iterdir()) == []  # the spool is gone


async def test_a_file_the_grid_holds_sends_nothing(grid: StorageGrid, tmp_path: Path) -> None:
    service = _service(grid, tmp_path)
    helper = LocalHelper(service, "h1")
    client = _client(grid, [helper])
    data = os.urandom(60_000)
    first = await client.upload_convergent(bytes_source(data), SECRET)
    helper.pushed = 0
    again = await client.upload_convergent(bytes_source(data), SECRET)
    assert again.cap == first.cap and again.helper == "h1"
    assert helper.pushed == 0 and service.figures()["uploads_present"] == 1


async def test_an_interrupted_upload_resumes_where_it_stopped(
    grid: StorageGrid, tmp_path: Path
) -> None:
    service = _service(grid, tmp_path)
    helper = LocalHelper(service, "h1")
    helper.cut_after = 50_000
    data = os.urandom(120_000)
    # the only helper vanished: the upload goes direct, and says why
    direct = await _client(grid, [helper]).upload_convergent(bytes_source(data), SECRET)
    assert direct.helper is None and "went away" in direct.helper_failures[0]
    # ... and its spool survives a restart of the helper node
    restarted = HelperService(tmp_path / "h1", _uploader(grid, HELPER), service.config)
    assert restarted.figures()["uploads_in_progress"] == 1
    helper2 = LocalHelper(restarted, "h1")
    res = await _client(grid, [helper2]).upload_convergent(bytes_source(data), SECRET)
    # the grid already held the file (the direct upload): nothing more was sent
    assert res.cap == direct.cap and helper2.pushed == 0


async def test_resume_sends_only_the_rest(grid: StorageGrid, tmp_path: Path) -> None:
    service = _service(grid, tmp_path)
    helper = LocalHelper(service, "h1")
    helper.cut_after = 50_000
    data = os.urandom(120_000)
    client = _client(grid, [helper])
    with pytest.raises(ConnectionError):
        # through the helper only (what HelpedUploader does before falling back)
        await client._via(helper, bytes_source(data), _key(data), len(data), PARAMS, 7, None)
    assert service.figures()["bytes_received"] == 50_000
    helper.cut_after = None
    helper.pushed = 0
    seen: list[int] = []
    res = await client._via(
        helper, bytes_source(data), _key(data), len(data), PARAMS, 7, lambda d, _t: seen.append(d)
    )
    assert helper.pushed == len(data) - 50_000
    assert seen[-1] == len(data)
    assert isinstance(res.cap, ReadCap) and await _read(grid, res.cap) == data


def _key(data: bytes) -> bytes:
    h = ConvergenceHasher(SECRET, PARAMS)
    h.update(data)
    return h.key()


async def test_a_corrupting_helper_never_yields_a_cap(grid: StorageGrid, tmp_path: Path) -> None:
    bad = LocalHelper(_service(grid, tmp_path, "bad"), "bad")
    bad.flip = 12_345
    good = LocalHelper(_service(grid, tmp_path, "good"), "good")
    data = os.urandom(100_000)
    res = await _client(grid, [bad, good]).upload_convergent(bytes_source(data), SECRET)
    assert res.helper == "good"
    assert len(res.helper_failures) == 1 and res.helper_failures[0].startswith("bad:")
    assert "differ from this file's encoding" in res.helper_failures[0]
    assert isinstance(res.cap, ReadCap) and await _read(grid, res.cap) == data


async def test_refusing_helpers_end_in_a_direct_upload(grid: StorageGrid, tmp_path: Path) -> None:
    off = LocalHelper(
        HelperService(tmp_path / "off", _uploader(grid, HELPER), HelperConfig()), "off"
    )
    picky = LocalHelper(_service(grid, tmp_path, "picky", accept=frozenset({b"x" * 20})), "picky")
    data = os.urandom(80_000)
    res = await _client(grid, [off, picky]).upload_convergent(bytes_source(data), SECRET)
    assert res.helper is None
    assert [f.split(":")[0] for f in res.helper_failures] == ["off", "picky"]
    assert "not an upload helper" in res.helper_failures[0]
    assert "does not accept" in res.helper_failures[1]
    assert isinstance(res.cap, ReadCap) and await _read(grid, res.cap) == data


async def test_never_and_random_uploads_go_direct(grid: StorageGrid, tmp_path: Path) -> None:
    helper = LocalHelper(_service(grid, tmp_path), "h1")
    data = os.urandom(70_000)
    res = await _client(grid, [helper], use="never").upload_convergent(bytes_source(data), SECRET)
    assert res.helper is None and res.helper_failures == () and helper.pushed == 0
    res = await _client(grid, [helper]).upload_random(bytes_source(data)(), size=len(data))
    assert res.helper is None and helper.pushed == 0
    tiny = await _client(grid, [helper]).upload_convergent(bytes_source(b"x" * 40), SECRET)
    assert tiny.helper is None and tiny.helper_failures == ()


async def test_slow_use_follows_the_measured_uplink(grid: StorageGrid, tmp_path: Path) -> None:
    helper = LocalHelper(_service(grid, tmp_path), "h1")
    client = _client(grid, [helper], use="slow")
    assert not client.wanted()  # nothing measured yet: direct, which measures
    await client.upload_convergent(bytes_source(os.urandom(1_500_000)), SECRET)
    assert client.uplink is not None and client.uplink > 0
    client.use = HelperUse(use="slow", slow_below=int(client.uplink * 10))
    res = await client.upload_convergent(bytes_source(os.urandom(90_000)), SECRET)
    assert res.helper == "h1"


async def test_helper_limits(grid: StorageGrid, tmp_path: Path) -> None:
    service = _service(grid, tmp_path, max_uploads=1, max_bytes_per_day=30_000)
    si1, si2 = b"\x01" * 20, b"\x02" * 20
    assert (await service.start(CLIENT, si1, PARAMS, 100_000)) == {"state": "send", "have": 0}
    with pytest.raises(HelperError) as busy:
        await service.start(CLIENT, si2, PARAMS, 100_000)
    assert busy.value.code == "helper-busy"
    with pytest.raises(HelperError) as offset:
        await service.push(CLIENT, si1, 5, _chunks(b"x" * 10))
    assert offset.value.code == "helper-offset" and offset.value.have == 0
    with pytest.raises(HelperError) as quota:
        await service.push(CLIENT, si1, 0, _chunks(os.urandom(40_000)))
    assert quota.value.code == "helper-quota"
    with pytest.raises(HelperError) as other:
        await service.push(HELPER, si1, 0, _chunks(b"x"))  # someone else's spool
    assert other.value.code == "helper-unknown"
    with pytest.raises(HelperError) as early:
        await service.finish(CLIENT, si1)
    assert early.value.code == "helper-offset"
    with pytest.raises(HelperError) as small:
        await service.start(CLIENT, si2, PARAMS, 55)
    assert small.value.code == "bad-request"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 8192):
        yield data[i : i + 8192]


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"si": b"x" * 20},
        {"si": b"x" * 19, "offset": 0},
        {"si": b"x" * 20, "offset": -1},
        {"si": b"x" * 20, "offset": True},
        {"si": b"x" * 20, "offset": 0, "more": 1},
        {"si": "x" * 20, "offset": 0},
    ],
)
def test_malformed_bodies_are_refused(body: object) -> None:
    with pytest.raises(HelperError) as e:
        _body(body, ("si", "offset"))
    assert e.value.code == "bad-request"


async def test_after_a_corrupting_helper_the_direct_upload_takes_a_fresh_key(
    grid: StorageGrid, tmp_path: Path
) -> None:
    bad = LocalHelper(_service(grid, tmp_path, "bad"), "bad")
    bad.flip = 0
    data = os.urandom(90_000)
    res = await _client(grid, [bad]).upload_convergent(bytes_source(data), SECRET)
    assert res.helper is None and "fresh key" in res.helper_failures[0]
    convergent = Encoder.convergent(SECRET, [data], PARAMS).storage_index
    assert isinstance(res.cap, ReadCap) and res.cap.storage_index != convergent
    assert await _read(grid, res.cap) == data


async def test_one_caller_cannot_take_every_spool(grid: StorageGrid, tmp_path: Path) -> None:
    now = [time.time()]
    service = HelperService(
        tmp_path / "h",
        _uploader(grid, HELPER),
        HelperConfig(enabled=True, reserve=0, max_uploads=3),
        clock=lambda: now[0],
    )
    for i in (1, 2, 3):  # the third replaces the caller's oldest
        await service.start(CLIENT, bytes([i]) * 20, PARAMS, 100_000)
    mine = sorted(p.name for p in (tmp_path / "h").glob("*.ct"))
    assert len(mine) == 2 and service.figures()["uploads_in_progress"] == 2
    await service.start(NodeId(b"O" * 20), b"\x04" * 20, PARAMS, 100_000)
    third = NodeId(b"T" * 20)
    with pytest.raises(HelperError) as full:  # full, and nothing idle long enough
        await service.start(third, b"\x05" * 20, PARAMS, 100_000)
    assert full.value.code == "helper-busy"
    now[0] += 3600  # an hour later every spool is idle: one makes room
    assert (await service.start(third, b"\x05" * 20, PARAMS, 100_000))["state"] == "send"
    assert service.figures()["uploads_in_progress"] == 3


async def test_parallel_starts_keep_the_limits(grid: StorageGrid, tmp_path: Path) -> None:
    service = _service(grid, tmp_path, max_uploads=4)
    callers = [NodeId(bytes([65 + i]) * 20) for i in range(3)]
    await asyncio.gather(
        *(
            service.start(c, bytes([i, j]) * 10, PARAMS, 100_000)
            for i, c in enumerate(callers)
            for j in range(3)
        ),
        return_exceptions=True,
    )
    keys = [p.stem for p in (tmp_path / "h1").glob("*.ct")]
    assert len(keys) <= 4 and service.figures()["uploads_in_progress"] == len(keys)
    for c in callers:
        assert sum(k.startswith(c.b32) for k in keys) <= 2


async def test_only_the_helpers_own_encoding(grid: StorageGrid, tmp_path: Path) -> None:
    service = _service(grid, tmp_path)
    for params in (EncodingParams.create(1, 10, 4096), EncodingParams.create(3, 10, 64)):
        with pytest.raises(HelperError) as e:
            await service.start(CLIENT, b"\x01" * 20, params, 100_000)
        assert e.value.code == "bad-request" and "3-of-10" in e.value.message


async def test_a_placement_is_tried_a_bounded_number_of_times(
    grid: StorageGrid, tmp_path: Path
) -> None:
    service = _service(grid, tmp_path)
    si = b"\x07" * 20
    await service.start(CLIENT, si, PARAMS, 60_000)
    for gs in grid.servers:  # the streamed placement fails too, and is not counted
        gs.broken()
    await service.push(CLIENT, si, 0, _chunks(os.urandom(60_000)))
    for attempt in range(1, MAX_FINISH_ATTEMPTS + 1):
        with pytest.raises(HelperError) as e:
            await service.finish(CLIENT, si)
        assert e.value.code == "helper-placement"
        left = service.figures()["uploads_in_progress"]
        assert left == (1 if attempt < MAX_FINISH_ATTEMPTS else 0)


async def test_a_broken_connection_resumes_within_the_same_put(
    grid: StorageGrid, tmp_path: Path
) -> None:
    helper = LocalHelper(_service(grid, tmp_path), "h1")
    helper.cut_after, helper.cut_once = 40_000, True
    data = os.urandom(120_000)
    res = await _client(grid, [helper]).upload_convergent(bytes_source(data), SECRET)
    assert res.helper == "h1" and res.helper_failures == ()
    assert helper.pushed == len(data)  # 40,000 bytes, then the rest: nothing twice
    assert isinstance(res.cap, ReadCap) and await _read(grid, res.cap) == data


async def test_foreign_copies_beside_enough_good_shares_are_not_the_helpers(
    grid: StorageGrid, tmp_path: Path
) -> None:
    helper = LocalHelper(_service(grid, tmp_path), "h1")
    client = _client(grid, [helper])
    data = os.urandom(90_000)
    first = await client.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(first.cap, ReadCap)
    si = first.cap.storage_index
    holder = next(gs for gs in grid.servers if gs.server.list_shares(si))
    share = min(holder.server.list_shares(si))
    holder.corrupt_share(si, share, offset=10)  # its header: a copy that differs
    again = await client.upload_convergent(bytes_source(data), SECRET)
    assert again.cap == first.cap and again.helper == "h1" and again.helper_failures == ()


async def test_a_segment_corrupt_in_every_share_is_caught(
    grid: StorageGrid, tmp_path: Path
) -> None:
    helper = LocalHelper(_service(grid, tmp_path), "h1")
    client = _client(grid, [helper])
    data = os.urandom(100_000)
    first = await client.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(first.cap, ReadCap)
    si = first.cap.storage_index
    for gs in grid.servers:  # a hostile helper's work: one block of every share
        for share in gs.server.list_shares(si):
            gs.corrupt_share(si, share, offset=72 + 5 * PARAMS.block_size + 1)
    again = await client.upload_convergent(bytes_source(data), SECRET)
    assert again.helper is None and "fresh key" in again.helper_failures[0]
    assert isinstance(again.cap, ReadCap) and again.cap != first.cap
    assert await _read(grid, again.cap) == data


class _Share:
    """A storage API over one share's bytes that enforces the servers' read limits."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    async def readv(self, si: bytes, share: int, ranges: list[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        assert len(ranges) <= 64 and sum(n for _, n in ranges) <= READ_CHUNK
        return [self.data[o : o + n] for o, n in ranges]


async def test_long_ranges_are_read_in_calls_the_servers_allow() -> None:
    data = os.urandom(3 << 20)
    api = _Share(data)
    ranges = [(0, 72), (100, (5 << 19) + 3), (3 << 20, 0), (5, 10)]
    got = await read_ranges(
        api,  # type: ignore[arg-type]
        b"s" * 20,
        0,
        ranges,
        max_read=READ_CHUNK,  # what the helper client's verification passes
        max_ranges=MAX_RANGES,
        timeout=5.0,
    )
    assert got == [data[o : o + n] for o, n in ranges]
    assert api.calls >= 3


def _uploads(grid: StorageGrid) -> int:
    """Shares being uploaded on the grid now (allocated, not closed)."""
    return sum(gs.server.stat().uploads for gs in grid.servers)


async def _until(cond: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached in {seconds} s")


def _spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[tuple[Any, ...]]:
    """Record the arguments of every call of ``owner.name`` (a function or a coroutine
    function; a method's first argument is its object), which still runs."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(owner, name)

    if asyncio.iscoroutinefunction(real):

        async def spied_async(*args: Any) -> Any:
            calls.append(args)
            return await real(*args)

        monkeypatch.setattr(owner, name, spied_async)
    else:

        def spied(*args: Any) -> Any:
            calls.append(args)
            return real(*args)

        monkeypatch.setattr(owner, name, spied)
    return calls


def _count_whole_spool_placements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The placements ``finish`` makes from the complete spool (not streamed)."""
    return _spy(monkeypatch, helper_mod, "file_source")


async def test_shares_are_placed_as_the_ciphertext_arrives(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(helper_mod, "BATCH", 8192)  # spooled as it comes, in this test
    whole = _count_whole_spool_placements(monkeypatch)
    service = _service(grid, tmp_path)
    si, data = b"\x05" * 20, os.urandom(200_000)
    assert (await service.start(CLIENT, si, PARAMS, len(data)))["state"] == "send"
    more = asyncio.Event()

    async def paused() -> AsyncIterator[bytes]:
        async for chunk in _chunks(data[:100_000]):
            yield chunk
        await more.wait()  # the caller's slow link: the second half comes later
        async for chunk in _chunks(data[100_000:]):
            yield chunk

    push = asyncio.create_task(service.push(CLIENT, si, 0, paused()))
    # with half the ciphertext spooled, the shares are already being written
    await _until(lambda: _uploads(grid) >= 7)
    assert not push.done()
    more.set()
    assert await push == len(data)
    res = await service.finish(CLIENT, si)
    assert res["happiness"] >= 7 and res["sent"] == 10
    assert whole == []  # placed once, as it arrived
    assert sum(len(gs.server.list_shares(si)) for gs in grid.servers) == 10
    assert _uploads(grid) == 0


async def test_a_stalled_stream_is_given_up_and_finish_places_the_spool(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stepwise: None
) -> None:
    monkeypatch.setattr(helper_mod, "STREAM_STALL", 0.2)
    whole = _count_whole_spool_placements(monkeypatch)
    service = _service(grid, tmp_path)
    si, data = b"\x06" * 20, os.urandom(150_000)
    have = 0
    for _ in range(helper_mod.MAX_STREAMS):  # each resumed push gets a new stream
        assert (await service.start(CLIENT, si, PARAMS, len(data)))["have"] == have
        have = await service.push(CLIENT, si, have, _chunks(data[have : have + 50_000]))
        await _until(lambda: _uploads(grid) >= 7)
        # the caller went quiet: the stream gives up and the peers' uploads end
        await _until(lambda: _uploads(grid) == 0)
    # the streams are spent: the rest is placed from the whole spool, after it
    assert (await service.start(CLIENT, si, PARAMS, len(data)))["have"] == have
    await service.push(CLIENT, si, have, _chunks(data[have:]))
    await asyncio.sleep(0.3)
    assert _uploads(grid) == 0
    res = await service.finish(CLIENT, si)
    assert res["happiness"] >= 7 and len(whole) == 1


async def test_closing_the_helper_gives_up_its_streams(
    grid: StorageGrid, tmp_path: Path, stepwise: None
) -> None:
    service = _service(grid, tmp_path)
    si, data = b"\x08" * 20, os.urandom(120_000)
    await service.start(CLIENT, si, PARAMS, len(data))
    await service.push(CLIENT, si, 0, _chunks(data[:60_000]))
    await _until(lambda: _uploads(grid) >= 7)
    await service.close()
    await _until(lambda: _uploads(grid) == 0)
    # the spool stays: after a restart the caller resumes, and finish places it
    restarted = HelperService(tmp_path / "h1", _uploader(grid, HELPER), service.config)
    assert (await restarted.start(CLIENT, si, PARAMS, len(data)))["have"] == 60_000
    await restarted.push(CLIENT, si, 60_000, _chunks(data[60_000:]))
    assert (await restarted.finish(CLIENT, si))["happiness"] >= 7
    with pytest.raises(HelperError) as e:  # a stopped helper takes nothing more
        await service.start(CLIENT, b"\x0c" * 20, PARAMS, len(data))
    assert e.value.code == "helper-refused" and "stopping" in e.value.message


def _count_read_backs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    return _spy(monkeypatch, HelpedUploader, "_read_back")  # (client, cap) each


async def test_every_block_of_every_share_is_hashed_by_its_server(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_backs = _count_read_backs(monkeypatch)
    client = _client(grid, [LocalHelper(_service(grid, tmp_path), "h1")])
    data = os.urandom(100_000)  # 25 segments
    first = await client.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(first.cap, ReadCap)
    assert read_backs == []  # the servers hashed the blocks: nothing was downloaded
    assert sum(gs.calls["hashv"] for gs in grid.servers) >= 7
    # one block of one share differs: a single random block would miss it 24 times
    # in 25; the servers' hashes never do
    si = first.cap.storage_index
    holder = next(gs for gs in grid.servers if gs.server.list_shares(si))
    share = min(holder.server.list_shares(si))
    holder.corrupt_share(si, share, offset=72 + 17 * PARAMS.block_size + 3)
    again = await client.upload_convergent(bytes_source(data), SECRET)
    assert again.helper == "h1" and again.cap == first.cap
    assert again.placements.get(share) is not holder


async def test_servers_without_hashing_are_checked_by_a_read_back(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_backs = _count_read_backs(monkeypatch)

    async def older(*_: Any) -> list[bytes]:
        raise UnknownStorageError("no-such-method", "no handler for storage.hashv")

    monkeypatch.setattr(FaultyStorage, "hashv", older)
    client = _client(grid, [LocalHelper(_service(grid, tmp_path), "h1")])
    data = os.urandom(100_000)
    res = await client.upload_convergent(bytes_source(data), SECRET)
    assert res.helper == "h1" and [cap for _, cap in read_backs] == [res.cap]
    assert isinstance(res.cap, ReadCap) and await _read(grid, res.cap) == data


async def test_the_servers_hash_with_a_fresh_nonce_each_upload(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a share's trailer holds its block hashes: with a fixed prefix a server could
    # answer from them without the blocks; the nonce of each verification it cannot
    calls = _spy(monkeypatch, FaultyStorage, "hashv")  # (storage, si, share, prefix, ranges)
    client = _client(grid, [LocalHelper(_service(grid, tmp_path), "h1")])
    data = os.urandom(80_000)
    await client.upload_convergent(bytes_source(data), SECRET)
    first = {c[3] for c in calls}
    calls.clear()
    await client.upload_convergent(bytes_source(data), SECRET)  # present: verified again
    second = {c[3] for c in calls}
    assert len(first) == 1 and len(second) == 1 and first != second
    assert all(len(p) == 16 for p in first | second)


async def test_a_slow_caller_keeps_its_stream(
    grid: StorageGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bytes that arrive but do not yet fill a spool batch are no stall
    monkeypatch.setattr(helper_mod, "STREAM_STALL", 0.3)
    whole = _count_whole_spool_placements(monkeypatch)
    service = _service(grid, tmp_path)
    si, data = b"\x09" * 20, os.urandom(80_000)
    await service.start(CLIENT, si, PARAMS, len(data))

    async def trickle() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 4000):  # 20 chunks over a second
            await asyncio.sleep(0.05)
            yield data[i : i + 4000]

    await service.push(CLIENT, si, 0, trickle())
    assert (await service.finish(CLIENT, si))["happiness"] >= 7
    assert whole == []


async def test_a_stream_counts_the_declared_size_against_the_day(
    grid: StorageGrid, tmp_path: Path
) -> None:
    # it reserves the whole file's shares on the storage peers at its first segment
    service = _service(grid, tmp_path, max_bytes_per_day=150_000)
    data = os.urandom(100_000)
    await service.start(CLIENT, b"\x0a" * 20, PARAMS, len(data))
    assert service.figures()["bytes_today"] == 100_000
    await service.push(CLIENT, b"\x0a" * 20, 0, _chunks(data))
    assert service.figures()["bytes_today"] == 100_000  # counted once
    # a second file that does not fit the day gets no stream, and its push is refused
    await service.start(CLIENT, b"\x0b" * 20, PARAMS, len(data))
    assert service.figures()["bytes_today"] == 100_000
    with pytest.raises(HelperError) as e:
        await service.push(CLIENT, b"\x0b" * 20, 0, _chunks(data))
    assert e.value.code == "helper-quota"


async def test_a_replaced_spool_ends_its_stream(
    grid: StorageGrid, tmp_path: Path, stepwise: None
) -> None:
    # the caller's file changed size: its spool is started again, and the stream of
    # the old one ends with its storage peers' unfinished uploads
    service = _service(grid, tmp_path)
    si, data = b"\x0d" * 20, os.urandom(120_000)
    await service.start(CLIENT, si, PARAMS, len(data))
    await service.push(CLIENT, si, 0, _chunks(data[:60_000]))
    await _until(lambda: _uploads(grid) >= 7)
    assert (await service.start(CLIENT, si, PARAMS, 90_000))["have"] == 0
    await _until(lambda: _uploads(grid) == 0)
    await service.push(CLIENT, si, 0, _chunks(data[:90_000]))
    assert (await service.finish(CLIENT, si))["happiness"] >= 7


async def test_helpers_are_tried_by_measured_throughput(grid: StorageGrid, tmp_path: Path) -> None:
    bad = LocalHelper(_service(grid, tmp_path, "bad"), "bad")
    bad.cut_after = 10_000  # it vanishes mid-push
    good = LocalHelper(_service(grid, tmp_path, "good"), "good")
    client = _client(grid, [bad, good])
    first = await client.upload_convergent(bytes_source(os.urandom(60_000)), SECRET)
    assert first.helper == "good" and "went away" in first.helper_failures[0]
    bad.pushed = 0
    # a helper that failed a moment ago is tried after the others
    again = await client.upload_convergent(bytes_source(os.urandom(60_000)), SECRET)
    assert again.helper == "good" and again.helper_failures == () and bad.pushed == 0
    # small uploads (and files the grid held: nothing pushed) measure nothing
    assert client.helper_rates == {}
    # not yet measured first, in their configured order; then fastest first
    third = LocalHelper(_service(grid, tmp_path, "third"), "third")
    client.helper_rates = {"good": 1e6, "third": 5e6}
    client._failed_at.clear()
    assert [h.name for h in client.ranked([bad, good, third])] == ["bad", "third", "good"]
    client._rate("good", 8 << 20, 0.5)  # 16 MiB/s, averaged with the 1 MB/s before
    assert client.helper_rates["good"] > client.helper_rates["third"]
    assert [h.name for h in client.ranked([bad, good, third])] == ["bad", "good", "third"]
    client._failed_at["bad"] = time.monotonic()
    assert [h.name for h in client.ranked([bad, good, third])] == ["good", "third", "bad"]


async def test_random_key_uploads_go_through_a_helper_too(
    grid: StorageGrid, tmp_path: Path
) -> None:
    helper = LocalHelper(_service(grid, tmp_path), "h1")
    client = _client(grid, [helper])
    data = os.urandom(70_000)
    one = await client.upload_random_from(bytes_source(data), len(data))
    two = await client.upload_random_from(bytes_source(data), len(data))
    assert one.helper == two.helper == "h1" and one.cap != two.cap  # a key each
    assert helper.pushed == 2 * len(data)
    for res in (one, two):
        assert isinstance(res.cap, ReadCap) and await _read(grid, res.cap) == data
    # the helper gone: directly, with a key of its own, and it says why
    helper.cut_after = helper.pushed + 5_000
    direct = await client.upload_random_from(bytes_source(data), len(data))
    assert direct.helper is None and "went away" in direct.helper_failures[0]
    assert isinstance(direct.cap, ReadCap) and await _read(grid, direct.cap) == data


async def test_a_busy_helper_keeps_its_place(grid: StorageGrid, tmp_path: Path) -> None:
    busy = LocalHelper(_service(grid, tmp_path, "busy", max_uploads=1), "busy")
    other = LocalHelper(_service(grid, tmp_path, "other"), "other")
    await busy.service.start(NodeId(b"X" * 20), b"\x0e" * 20, PARAMS, 100_000)  # its slot
    client = _client(grid, [busy, other])
    res = await client.upload_convergent(bytes_source(os.urandom(60_000)), SECRET)
    assert res.helper == "other" and "helper-busy" in res.helper_failures[0]
    assert [h.name for h in client.ranked([busy, other])] == ["busy", "other"]
