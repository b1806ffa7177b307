"""Grid upload and download over real QUIC (JSON lines).

Ten storage node processes (``benchmarks.grid_node``) on 127.0.0.1, 3-of-10; each
measurement runs in a fresh client process so its peak RSS (``ru_maxrss``) is its
own. Lines: ``upload`` (random key, one pass) and ``download`` of ``BENCH_GRID_MB``
MiB (default 100), ``upload-convergent`` of the same size (two passes over a
re-generated source), and with ``BENCH_GRID_1GIB=1`` a 1 GiB upload for the
peak-RSS-does-not-grow check. ``upload-unary`` is the random-key upload with one
``storage.write`` RPC per block instead of a bulk stream per share. ``mb_s`` is MiB
of file data per wall-clock second and ``MB_s`` the same in 10^6 bytes (the unit of
the targets in docs/grid.md); ``cpu_s`` is the client's CPU seconds,
``nodes_cpu_s`` the storage nodes' during that client process (both runs when
``mb_s_warm`` is given); ``loadavg`` shows how
shared the machine was. ``mb_s`` includes opening the client's endpoint and its ten
connections; ``mb_s_warm`` (upload, download) is a second run in the same process
over the connections already open, as in a running node (CPU figures are for the
first run; peak RSS covers both).

``BENCH_GRID_OPS`` (comma-separated, e.g. ``upload``) runs only some of
``upload,download,upload-convergent,upload-unary`` (download needs upload) and
``BENCH_GRID_REPEAT`` repeats them over the same nodes (default 1).

``python -m benchmarks grid`` runs it; ``python -m benchmarks.bench_grid client
'<json>'`` is the client half (used internally).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    SendConfig,
    UploadConfig,
    Uploader,
    static_peers,
)
from p2pstore.immutable import ReadCap, parse_cap
from p2pstore.immutable.allocator import tune_allocator
from p2pstore.storage.bulk import QuicStorageClient
from quic_transport import Endpoint, PeerAddress, open_endpoint
from quic_transport.identity import NodeId, NodeKey

MiB = 1 << 20
SECRET = bytes(32)
_ZEROS = bytes(MiB)


def chunk_of(seed: int, i: int) -> bytes:
    """MiB ``i`` of the test file ``seed``: an AES-CTR keystream, incompressible and
    cheap (~0.01 CPU-s per 100 MiB, where ``random.randbytes`` cost the client
    ~0.25 CPU-s, more than reading a cached file would)."""
    key = hashlib.sha256(b"bench_grid source %d" % seed).digest()
    nonce = i.to_bytes(16, "big")
    return Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor().update(_ZEROS)


async def source(size: int, seed: int) -> AsyncIterator[bytes]:
    for i in range(0, size, MiB):
        c = chunk_of(seed, i // MiB)
        yield c[: min(MiB, size - i)]


def expected_sha(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for i in range(0, size, MiB):
        h.update(chunk_of(seed, i // MiB)[: min(MiB, size - i)])
    return h.hexdigest()


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


async def _client(args: dict[str, Any]) -> dict[str, Any]:
    tune_allocator()
    peers = [PeerAddress(NodeId.from_b32(b), h, p) for h, p, b in args["peers"]]
    ep: Endpoint = await open_endpoint(NodeKey.generate(), "127.0.0.1", 0)
    clients: dict[PeerAddress, QuicStorageClient] = {}

    def storage_for(p: PeerAddress) -> QuicStorageClient:
        if p not in clients:
            clients[p] = QuicStorageClient(ep, p, timeout=30.0, stream_timeout=30.0)
        return clients[p]

    find = static_peers(peers)
    size, seed = args["size"], args["seed"]

    async def once(seed: int) -> dict[str, Any]:
        if args["op"] in ("upload", "upload-convergent", "upload-unary"):
            cfg = UploadConfig(send=SendConfig(use_bulk=args["op"] != "upload-unary"))
            up = Uploader(find, storage_for, cfg)
            if args["op"] in ("upload", "upload-unary"):
                res = await up.upload_random(source(size, seed), size=size)
            else:
                res = await up.upload_convergent(lambda: source(size, seed), SECRET)
            return {"cap": res.cap.to_string(), "happiness": res.happiness}
        cap = parse_cap(args["cap"])
        assert isinstance(cap, ReadCap)
        down = Downloader(find, storage_for, DownloadConfig())
        h = hashlib.sha256()
        n = 0
        async for chunk in down.read(cap):
            h.update(chunk)
            n += len(chunk)
        return {"ok": n == size and h.hexdigest() == args["sha"]}

    try:
        cpu0, _ = _usage()
        t0 = time.perf_counter()
        out = await once(seed)
        secs = time.perf_counter() - t0
        cpu1, _ = _usage()
        out.update(
            seconds=round(secs, 2),
            mb_s=round(size / MiB / secs, 1),
            MB_s=round(size / 1e6 / secs, 1),
        )
        out["cpu_s"] = round(cpu1 - cpu0, 2)
        if args.get("warm"):  # again over the connections now open, as in a running node
            t0 = time.perf_counter()
            again = await once(seed + 1000)
            out["mb_s_warm"] = round(size / MiB / (time.perf_counter() - t0), 1)
            out["ok"] = out.get("ok", True) and again.get("ok", True)
    finally:
        await ep.aclose()
    out["peak_rss_mib"] = round(_usage()[1], 1)
    return out


def nodes_cpu(nodes: list[subprocess.Popen[str]]) -> float:
    """CPU seconds used so far by the node processes (Linux /proc)."""
    total = 0
    for p in nodes:
        try:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return float("nan")
    return total / os.sysconf("SC_CLK_TCK")


def run_client(args: dict[str, Any], nodes: list[subprocess.Popen[str]]) -> dict[str, Any]:
    before = nodes_cpu(nodes)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_grid", "client", json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["nodes_cpu_s"] = round(nodes_cpu(nodes) - before, 2)
    result["loadavg"] = round(os.getloadavg()[0], 2)
    return result


def _run_ops(
    base: dict[str, Any],
    wanted: set[str],
    peers: list[list[Any]],
    size: int,
    sha: str,
    nodes: list[subprocess.Popen[str]],
) -> None:
    cap = None
    if wanted & {"upload", "download"}:
        up = run_client(
            {"op": "upload", "peers": peers, "size": size, "seed": 1, "warm": True}, nodes
        )
        cap = up.pop("cap")
        if "upload" in wanted:
            print(json.dumps({**base, "op": "upload", **up}), flush=True)
    if "download" in wanted:
        down = run_client(
            {
                "op": "download",
                "peers": peers,
                "size": size,
                "seed": 1,
                "cap": cap,
                "sha": sha,
                "warm": True,
            },
            nodes,
        )
        print(json.dumps({**base, "op": "download", **down}), flush=True)
    for op, seed in (("upload-convergent", 2), ("upload-unary", 4)):
        if op in wanted:
            res = run_client({"op": op, "peers": peers, "size": size, "seed": seed}, nodes)
            res.pop("cap")
            print(json.dumps({**base, "op": op, **res}), flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "client":
        print(json.dumps(asyncio.run(_client(json.loads(sys.argv[2])))), flush=True)
        return
    size = int(os.environ.get("BENCH_GRID_MB", "100")) * MiB
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        nodes: list[subprocess.Popen[str]] = []
        peers = []
        try:
            for i in range(10):
                p = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.grid_node", str(Path(tmp) / f"n{i}")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                nodes.append(p)
                assert p.stdout is not None
                line = p.stdout.readline().split()
                if not line or line[0] != "READY":
                    raise RuntimeError(f"node {i} did not start")
                peers.append([line[1], int(line[2]), line[3]])
            base = {"bench": "grid", "k": 3, "n": 10, "nodes": 10, "size_mib": size // MiB}
            sha = expected_sha(size, 1)
            ops = os.environ.get("BENCH_GRID_OPS", "upload,download,upload-convergent,upload-unary")
            wanted = {o.strip() for o in ops.split(",")}
            for _ in range(int(os.environ.get("BENCH_GRID_REPEAT", "1"))):
                _run_ops(base, wanted, peers, size, sha, nodes)
            if os.environ.get("BENCH_GRID_1GIB"):
                big = run_client(
                    {"op": "upload", "peers": peers, "size": 1024 * MiB, "seed": 3}, nodes
                )
                big.pop("cap")
                print(json.dumps({**base, "size_mib": 1024, "op": "upload", **big}), flush=True)
        finally:
            for p in nodes:
                if p.stdin:
                    p.stdin.close()
            for p in nodes:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
