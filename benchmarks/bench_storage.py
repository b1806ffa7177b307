"""Storage server throughput: share upload/read in 1 MiB calls, direct, through
worker threads, and through the RPC adapter with CBOR round trips (JSON lines)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import tempfile
import time
from pathlib import Path

from p2pstore.storage import (
    LocalStorageClient,
    RpcStorageClient,
    StorageAPI,
    StorageServer,
    register_storage_rpc,
)
from p2pstore.testing.fake_rpc import FakeRegistry, FakeRpcError
from quic_transport.identity import NodeId

MiB = 1024 * 1024
OWNER = NodeId(b"O" * 20)


def _si(tag: str) -> bytes:
    return hashlib.blake2b(tag.encode(), digest_size=20).digest()


async def _roundtrip(api: StorageAPI, tag: str, size: int) -> tuple[float, float]:
    si, chunk = _si(tag), b"\x5a" * MiB
    t0 = time.perf_counter()
    await api.allocate(si, 0, size)
    for off in range(0, size, MiB):
        await api.write(si, 0, off, chunk)
    await api.close_share(si, 0)
    t1 = time.perf_counter()
    for off in range(0, size, MiB):
        data = await api.read(si, 0, off, MiB)
        assert len(data) == MiB
    t2 = time.perf_counter()
    return size / MiB / (t1 - t0), size / MiB / (t2 - t1)


async def _small_shares(api: StorageAPI, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        si = _si(f"small-{i}")
        await api.allocate(si, 0, 1024)
        await api.write(si, 0, 0, b"x" * 1024)
        await api.close_share(si, 0)
    return n / (time.perf_counter() - t0)


async def _main(root: Path) -> None:
    server = StorageServer.open(root)
    registry = FakeRegistry()
    register_storage_rpc(registry, server, error_factory=FakeRpcError)
    paths: dict[str, StorageAPI] = {
        "direct": LocalStorageClient(server, OWNER, offload=False),
        "thread": LocalStorageClient(server, OWNER),
        "rpc": RpcStorageClient(registry.caller(OWNER)),
    }
    size = 64 * MiB
    for name, api in paths.items():
        w, r = await _roundtrip(api, name, size)
        print(
            json.dumps(
                {
                    "bench": "storage",
                    "path": name,
                    "share_mib": size // MiB,
                    "write_mb_s": round(w, 1),
                    "read_mb_s": round(r, 1),
                }
            )
        )
    rate = await _small_shares(paths["thread"], 200)
    print(json.dumps({"bench": "storage", "op": "1KiB share upload (fsync)", "per_s": round(rate)}))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"bench": "storage", "peak_rss_mib": rss}))
    server.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as d:
        asyncio.run(_main(Path(d)))


if __name__ == "__main__":
    main()
