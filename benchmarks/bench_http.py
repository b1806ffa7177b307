"""The local HTTP API with the in-memory backend (real encoding, k=3 N=10, 1 MiB
segments): upload and download throughput through the synchronous client
(``NodeClient``) on 127.0.0.1, against the same backend called directly, so the
HTTP overhead shows; plus Range-request latency. JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
from collections.abc import AsyncIterator

from p2pstore.api_client import NodeClient
from p2pstore.immutable import parse_cap
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.web.server import ApiServer

SIZE = 32 << 20
RUNS = 3


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 256 * 1024):
        yield data[i : i + 256 * 1024]


def main() -> None:
    data = os.urandom(SIZE)
    backend = MemoryApplication(max_bytes=4 << 30)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ApiServer(backend, "bench-token")
    asyncio.run_coroutine_threadsafe(server.start(), loop).result()
    client = NodeClient(server.url, "bench-token")
    mib = SIZE / (1 << 20)
    results: dict[str, list[float]] = {k: [] for k in ("direct_up", "http_up", "http_down")}
    cap = ""
    for _ in range(RUNS):
        t0 = time.perf_counter()
        asyncio.run_coroutine_threadsafe(
            backend.upload(_chunks(data), size_hint=SIZE, mode="random"), loop
        ).result()
        results["direct_up"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cap = client.put(io.BytesIO(data), size=SIZE, mode="random")["cap"]
        results["http_up"].append(time.perf_counter() - t0)
        sink = io.BytesIO()
        t0 = time.perf_counter()
        client.get(cap, sink)
        results["http_down"].append(time.perf_counter() - t0)
        assert sink.getvalue() == data
    for op, runs in results.items():
        rates = [mib / t for t in runs]
        print(
            json.dumps(
                {
                    "bench": "http",
                    "op": op,
                    "mib": mib,
                    "best_mib_s": round(max(rates), 1),
                    "worst_mib_s": round(min(rates), 1),
                }
            )
        )
    size = parse_cap(cap).size
    lat = []
    for i in range(20):
        start = (i * 997_001) % (size - 4096)
        sink = io.BytesIO()
        t0 = time.perf_counter()
        client.get(cap, sink, range_header=f"bytes={start}-{start + 4095}")
        lat.append(time.perf_counter() - t0)
        assert sink.getvalue() == data[start : start + 4096]
    print(
        json.dumps(
            {
                "bench": "http",
                "op": "range_4k",
                "best_ms": round(min(lat) * 1000, 2),
                "median_ms": round(sorted(lat)[len(lat) // 2] * 1000, 2),
            }
        )
    )
    asyncio.run_coroutine_threadsafe(server.close(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()


if __name__ == "__main__":
    main()
