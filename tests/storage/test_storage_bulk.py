"""Gathered share writes: StorageServer.writev, layout.pwrite_all (short writes) and
the storage.write_stream handler's batching (no sockets)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.storage import BadRequest, StorageConfig, StorageServer, TooLarge
from p2pstore.storage import disk_layout as layout_mod
from p2pstore.storage.bulk import MAX_PIECES, register_storage_streams
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
SI = hashlib.blake2b(b"bulk", digest_size=20).digest()


@given(
    pieces=st.lists(st.binary(min_size=0, max_size=50), max_size=30),
    step=st.integers(1, 64),
)
@settings(max_examples=60, deadline=None)
def test_pwrite_all_survives_short_writes(
    tmp_path_factory: pytest.TempPathFactory, pieces: list[bytes], step: int
) -> None:
    path = tmp_path_factory.mktemp("pw") / "f"
    real = os.pwritev
    calls = []

    def short(fd: int, bufs: list[memoryview], pos: int) -> int:
        calls.append(len(bufs))
        head = b"".join(bytes(b) for b in bufs)[:step]
        return real(fd, [head], pos)

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        setattr(os, "pwritev", short)  # noqa: B010 (the module layout.py writes through)
        try:
            layout_mod.pwrite_all(fd, [memoryview(p) for p in pieces], 7)
        finally:
            setattr(os, "pwritev", real)  # noqa: B010
    finally:
        os.close(fd)
    want = b"".join(pieces)
    assert path.read_bytes() == (bytes(7) + want if want else b"")
    assert all(0 < n <= layout_mod.IOV_BATCH for n in calls)


def test_pwrite_all_batches_many_buffers(tmp_path: Path) -> None:
    pieces = [bytes([i % 251]) * 3 for i in range(3 * layout_mod.IOV_BATCH + 5)]
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        layout_mod.pwrite_all(fd, [memoryview(p) for p in pieces], 0)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(pieces)


def test_pwrite_all_refuses_to_spin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "pwritev", lambda fd, bufs, pos: 0)
    with pytest.raises(OSError, match="wrote nothing"):
        layout_mod.pwrite_all(3, [memoryview(b"abc")], 0)


def test_writev_checks_like_write(tmp_path: Path) -> None:
    server = StorageServer.open(tmp_path / "s", StorageConfig(max_write=100))
    try:
        server.allocate(SI, 0, ALICE, 150)
        with pytest.raises(TooLarge):
            server.writev(SI, 0, ALICE, 0, [b"x" * 60, b"y" * 41])
        with pytest.raises(BadRequest):
            server.writev(SI, 0, ALICE, 0, [b"x", "y"])  # type: ignore[list-item]
        with pytest.raises(BadRequest, match="contiguous"):
            server.writev(SI, 0, ALICE, 0, [memoryview(b"abcdef")[::2]])
        assert server.stat().reserved == 150  # refusals changed nothing
        server.writev(SI, 0, ALICE, 0, [b"a" * 30, memoryview(b"b" * 40), bytearray(b"c" * 30)])
        server.writev(SI, 0, ALICE, 100, [b"", b"d" * 50])
        assert server.close_share(SI, 0, ALICE).size == 150
        assert server.read(SI, 0, 0, 150) == b"a" * 30 + b"b" * 40 + b"c" * 30 + b"d" * 50
    finally:
        server.close()


@dataclass
class _Ctx:
    peer_id: NodeId


class _Registry:
    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def register_stream(self, method: str, handler: Any) -> None:
        self.handlers[method] = handler


class _Reader:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            yield c


@pytest.mark.parametrize("batch", [1, 256, 10_000])
async def test_write_stream_gathers_within_max_write(tmp_path: Path, batch: int) -> None:
    server = StorageServer.open(tmp_path / "s", StorageConfig(max_write=1000))
    sizes: list[tuple[int, int]] = []
    real = server.writev

    def spy(si: bytes, shnum: int, owner: NodeId, offset: int, pieces: Any) -> None:
        sizes.append((sum(len(p) for p in pieces), len(pieces)))
        real(si, shnum, owner, offset, pieces)

    try:
        # big chunks (split at max_write), then more tiny ones than one call may gather
        chunks = [bytes([i]) * 2500 for i in range(3)]
        chunks += [bytes([i % 256]) for i in range(MAX_PIECES + 50)]
        want = b"".join(chunks)
        server.allocate(SI, 1, ALICE, 100 + len(want))
        server.write(SI, 1, ALICE, 0, b"h" * 100)
        setattr(server, "writev", spy)  # noqa: B010
        reg = _Registry()
        register_storage_streams(reg, server, batch=batch)
        handler = reg.handlers["storage.write_stream"]
        header = {"si": SI, "shnum": 1, "offset": 100}
        assert await handler(_Ctx(ALICE), header, _Reader(chunks)) == {"written": len(want)}
        assert sum(n for n, _ in sizes) == len(want)
        assert all(0 < n <= 1000 and k <= MAX_PIECES for n, k in sizes)
        assert server.close_share(SI, 1, ALICE).size == 100 + len(want)
        assert server.read(SI, 1, 100, len(want)) == want
    finally:
        server.close()
