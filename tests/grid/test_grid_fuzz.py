"""Downloads, checks and verifies against lying storage peers (property tests).

Peers serve shares from memory, and some of them lie: flipped bytes, short or long
answers, the wrong number of ranges, garbage, exceptions, hangs. Whatever they do,
a download either returns exactly the file or raises DownloadError; it never
returns a wrong byte and never raises anything else."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.grid import DownloadConfig, Downloader, DownloadError, Health, static_peers
from p2pstore.immutable import EncodingParams, ReadCap, encode_bytes
from p2pstore.storage import NoSuchShare, StorageAPI
from quic_transport.identity import NodeId

PARAMS = EncodingParams.create(3, 10, 999)
DATA = hashlib.sha256(b"fuzz").digest() * 200  # 6,400 bytes, 7 segments
CAP, SHARES = encode_bytes(DATA, PARAMS, key=bytes(range(32)))
assert isinstance(CAP, ReadCap)
SI = CAP.storage_index

MODES = ["ok", "flip", "short", "long", "count", "garbage", "raise", "hang", "noshare"]


@dataclass(frozen=True)
class Peer:
    node_id: NodeId


@dataclass
class LyingStorage:
    """A read-only StorageAPI over in-memory shares that misbehaves on demand."""

    shares: dict[int, bytes]
    mode: str
    seed: int
    calls: int = field(default=0)

    def _mangle(self, data: bytes) -> bytes:
        self.calls += 1
        if self.calls % 2 == 0 and self.mode in ("flip", "garbage"):  # not every time
            return data
        if self.mode == "flip" and data:
            i = self.seed % len(data)
            return data[:i] + bytes([data[i] ^ (1 + self.seed % 255)]) + data[i + 1 :]
        if self.mode == "short":
            return data[: len(data) // 2]
        if self.mode == "long":
            return data + b"\0" * 7
        if self.mode == "garbage":
            return hashlib.sha256(data).digest() * (len(data) // 32 + 1)
        return data

    async def _gate(self) -> None:
        if self.mode == "raise":
            raise ConnectionError("peer vanished")
        if self.mode == "hang":
            await asyncio.sleep(3600)

    async def list_shares(self, storage_index: bytes) -> dict[int, int]:
        if self.mode == "hang" and self.seed % 2:
            await asyncio.sleep(3600)
        return {s: len(d) for s, d in self.shares.items()} if storage_index == SI else {}

    async def readv(
        self, storage_index: bytes, shnum: int, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        await self._gate()
        if self.mode == "noshare" or shnum not in self.shares:
            raise NoSuchShare("gone", remote=True)
        d = self.shares[shnum]
        out = [self._mangle(d[o : o + n]) for o, n in ranges]
        if self.mode == "count":
            out = out[:-1] if len(out) > 1 else [*out, b""]
        return out

    async def read(self, storage_index: bytes, shnum: int, offset: int, length: int) -> bytes:
        return (await self.readv(storage_index, shnum, [(offset, length)]))[0]


def peer(i: int) -> Peer:
    return Peer(NodeId(hashlib.blake2b(f"fz{i}".encode(), digest_size=20).digest()))


@settings(max_examples=60)
@given(
    modes=st.lists(st.sampled_from(MODES), min_size=10, max_size=10),
    seed=st.integers(0, 10**6),
    offset=st.integers(0, len(DATA)),
    length=st.integers(0, len(DATA)),
)
async def test_download_returns_exact_bytes_or_download_error(
    modes: list[str], seed: int, offset: int, length: int
) -> None:
    peers = [peer(i) for i in range(10)]
    apis = {p: LyingStorage({i: SHARES[i]}, modes[i], seed + i) for i, p in enumerate(peers)}

    def storage_for(p: Peer) -> StorageAPI:
        return apis[p]  # type: ignore[return-value]

    cfg = DownloadConfig(op_timeout=0.05, locate_timeout=0.5, locate_grace=0.01)
    down = Downloader(static_peers(peers), storage_for, cfg)
    got = b""
    honest = sum(1 for m in modes if m == "ok")
    try:
        async for chunk in down.read(CAP, offset=offset, length=length):
            got += chunk
    except DownloadError as e:
        assert got == DATA[offset : offset + len(got)]  # only verified bytes came out
        assert honest < 3 or e.found < 3
        return
    assert got == DATA[offset : offset + length]


@settings(max_examples=25)
@given(modes=st.lists(st.sampled_from(MODES[:7]), min_size=10, max_size=10), seed=st.integers())
async def test_verify_flags_exactly_the_lying_peers(modes: list[str], seed: int) -> None:
    peers = [peer(i) for i in range(10)]
    apis = {p: LyingStorage({i: SHARES[i]}, modes[i], seed) for i, p in enumerate(peers)}
    if sum(1 for m in modes if m == "ok") < 3:
        modes = ["ok"] * 3 + modes[3:]
        apis = {p: LyingStorage({i: SHARES[i]}, modes[i], seed) for i, p in enumerate(peers)}

    def storage_for(p: Peer) -> StorageAPI:
        return apis[p]  # type: ignore[return-value]

    from p2pstore.grid import HealthConfig

    health = Health(static_peers(peers), storage_for, HealthConfig(op_timeout=0.05))
    result = await health.verify(CAP)
    for (share, _), why in result.copies.items():
        if modes[share] == "ok":
            assert why is None, (share, why)
        elif modes[share] in ("short", "long", "raise", "garbage"):  # ("count": read is fine)
            assert why is not None
    assert set(result.good_shares) >= {i for i, m in enumerate(modes) if m == "ok"}
