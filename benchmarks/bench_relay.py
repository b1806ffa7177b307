"""Relayed throughput on loopback: A uploads to B through R's relayed port (docs/relay.md).

R (RelayService, no rate limit) and B (RelayClient + a sink handler) each run in
their own child process; A (this process) uploads ``BENCH_RELAY_MIB`` MiB (default
64; ``BENCH_QUICK=1``: 16) to B once through the relay and once directly, and prints
one JSON line per transfer: wall MB/s and the load average (the machine is shared).

Run: ``python -m benchmarks relay`` (or ``python -m benchmarks.bench_relay``).
``BENCH_RELAY_QUEUE`` sets the relay's queue towards B (bytes, default 1 MiB);
``BENCH_RELAY_DEBUG=1`` prints the relay's and the client's counters to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from quic_transport import BulkReader, CallContext, NodeKey, PeerAddress, open_endpoint
from quic_transport.identity import NodeId


async def _role_r() -> None:
    from p2pstore.nat.relay.limits import RelayLimits
    from p2pstore.nat.relay.service import RelayService

    ep = await open_endpoint(NodeKey.generate())
    qb = int(os.environ.get("BENCH_RELAY_QUEUE", str(1 << 20)))
    svc = RelayService(ep, RelayLimits(max_rate=0, max_bytes=0, queue_bytes=qb))
    svc.start()
    print(json.dumps({"id": ep.node_id.b32, "addr": ep.local_address}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if os.environ.get("BENCH_RELAY_DEBUG"):
        print(json.dumps(svc.status()["counters"]), file=sys.stderr)
    await svc.close()
    await ep.aclose()


async def _role_b(relay_id: str, host: str, port: int) -> None:
    from p2pstore.nat.relay.client import RelayClient

    ep = await open_endpoint(NodeKey.generate())

    async def sink(ctx: CallContext, header: Any, reader: BulkReader) -> int:
        n = 0
        async for chunk in reader:
            n += len(chunk)
        return n

    ep.register_stream("bench.sink", sink)
    client = RelayClient(ep)
    res = await client.reserve(PeerAddress(NodeId.from_b32(relay_id), host, port))
    print(
        json.dumps(
            {"id": ep.node_id.b32, "addr": ep.local_address, "relayed": [res.host, res.port]}
        ),
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if os.environ.get("BENCH_RELAY_DEBUG"):
        print(json.dumps(client.status()), file=sys.stderr)
    await client.close()
    await ep.aclose()


def _spawn(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_relay", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


async def _upload(peer: PeerAddress, mib: int) -> float:
    ep = await open_endpoint(NodeKey.generate())
    try:
        chunk = os.urandom(1 << 20)
        await ep.ping(peer, timeout=10)
        t0 = time.perf_counter()
        n = await ep.call_stream(peer, "bench.sink", None, [chunk] * mib, timeout=30)
        took = time.perf_counter() - t0
        assert n == mib << 20
        return took
    finally:
        await ep.aclose()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--role-r":
        asyncio.run(_role_r())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--role-b":
        asyncio.run(_role_b(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    mib = int(os.environ.get("BENCH_RELAY_MIB", "16" if os.environ.get("BENCH_QUICK") else "64"))
    r, rinfo = _spawn("--role-r")
    b, binfo = _spawn("--role-b", rinfo["id"], rinfo["addr"][0], str(rinfo["addr"][1]))
    try:
        bid = NodeId.from_b32(binfo["id"])
        for name, peer in (
            ("relayed", PeerAddress(bid, binfo["relayed"][0], binfo["relayed"][1])),
            ("direct", PeerAddress(bid, binfo["addr"][0], binfo["addr"][1])),
        ):
            took = asyncio.run(_upload(peer, mib))
            print(
                json.dumps(
                    {
                        "bench": "relay",
                        "path": name,
                        "mib": mib,
                        "seconds": round(took, 3),
                        "mb_per_s": round((mib << 20) / took / 1e6, 1),
                        "loadavg": round(os.getloadavg()[0], 1),
                    }
                ),
                flush=True,
            )
    finally:
        for p in (b, r):
            assert p.stdin is not None
            p.stdin.close()
            p.wait(30)


if __name__ == "__main__":
    main()
