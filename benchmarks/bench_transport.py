"""Transport throughput on loopback, next to stock aioquic measured in the same run.

Prints JSON lines (MB/s = 10^6 bytes per second of payload, end to end: from the
first byte offered until the receiver's reply that it has everything):

- ``stock``: aioquic's asyncio client/server (default configuration), one 100 MiB
  stream, and 10 concurrent streams to 10 servers;
- ``p2pstore``: this transport (``call_stream``), same transfers, with datagram
  size discovered by probing (65,507 bytes on IPv4 loopback) and capped at 1,452 bytes.

Receivers run in a child process (one core), senders in this one (the other).
``python -m benchmarks transport`` runs it; ``BENCH_QUICK=1`` (or ``--quick`` when run as
``python -m benchmarks.bench_transport``) uses 20 MiB transfers.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

MIB = 1 << 20
CHUNK = b"\xa5" * MIB


# --------------------------------------------------------------------------- receivers
async def _serve_stock(n: int) -> None:
    from aioquic.asyncio import serve
    from aioquic.asyncio.protocol import QuicStreamHandler  # noqa: F401
    from aioquic.quic.configuration import QuicConfiguration

    from quic_transport.auth import make_certificate
    from quic_transport.identity import NodeKey

    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while chunk := await reader.read(1 << 20):
            total += len(chunk)
        writer.write(str(total).encode())
        writer.write_eof()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = asyncio.ensure_future(handle(reader, writer))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    ports = []
    servers = []
    for _ in range(n):
        cert, key = make_certificate(NodeKey.generate())
        conf = QuicConfiguration(
            is_client=False, alpn_protocols=["bench"], certificate=cert, private_key=key
        )
        server = await serve("127.0.0.1", 0, configuration=conf, stream_handler=on_stream)
        servers.append(server)
        ports.append(server._transport.get_extra_info("sockname")[1])
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _serve_p2p(n: int) -> None:
    from quic_transport import BulkReader, CallContext, NodeKey, open_endpoint

    async def sink(ctx: CallContext, header: Any, reader: BulkReader) -> int:
        total = 0
        async for chunk in reader:
            total += len(chunk)
        return total

    eps = []
    for _ in range(n):
        ep = await open_endpoint(NodeKey.generate())
        ep.register_stream("bench.sink", sink)
        eps.append(ep)
    print(json.dumps({"peers": [[ep.node_id.b32, ep.local_address[1]] for ep in eps]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for ep in eps:
        await ep.aclose()


def _start(kind: str, n: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_transport", "--serve", kind, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


def _stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- senders
async def _stock_send(port: int, size: int) -> None:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    conf = QuicConfiguration(is_client=True, alpn_protocols=["bench"], verify_mode=ssl.CERT_NONE)
    async with connect("127.0.0.1", port, configuration=conf) as client:
        reader, writer = await client.create_stream()
        for _ in range(size // MIB):
            writer.write(CHUNK)
            await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        assert int(reply) == size, reply


async def _p2p_send(ep: Any, peer: Any, size: int) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(size // MIB):
            yield CHUNK

    total = await ep.call_stream(peer, "bench.sink", None, chunks(), timeout=60)
    assert total == size, total


def _udp_counters() -> dict[str, int]:
    """Kernel UDP counters (Linux); receive-buffer drops explain slow runs."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [ln.split() for ln in f if ln.startswith("Udp:")]
    except OSError:
        return {}
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=False))


def _drops(before: dict[str, int]) -> int:
    after = _udp_counters()
    return after.get("RcvbufErrors", 0) - before.get("RcvbufErrors", 0)


def _child_cpu(pid: int) -> float:
    """User+system CPU seconds of a child process (Linux /proc), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class _Meter:
    """Wall time, sender and receiver CPU, kernel UDP drops over one timed transfer."""

    def __init__(self, impl: str, case: str, size: int, child: int, **extra: Any) -> None:
        self.rec: dict[str, Any] = {"bench": "transport", "impl": impl, "case": case}
        self.size, self.child, self.extra = size, child, extra

    def __enter__(self) -> _Meter:
        self.udp = _udp_counters()
        self.cpu_child = _child_cpu(self.child)
        self.cpu = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        wall = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu
        cpu_child = _child_cpu(self.child) - self.cpu_child
        busiest = max(cpu, cpu_child)
        rec = self.rec | {
            "mib": self.size // MIB,
            "seconds": round(wall, 3),
            "mb_per_s": round(self.size / wall / 1e6, 1),
            "sender_cpu_s": round(cpu, 2),
            "receiver_cpu_s": round(cpu_child, 2),
            # What the busier side's CPU time allows: the figure on an unloaded machine.
            "cpu_bound_mb_per_s": round(self.size / busiest / 1e6, 1) if busiest else None,
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "udp_rcvbuf_drops": _drops(self.udp),
            **self.extra,
        }
        print(json.dumps(rec), flush=True)


async def _run_stock(size: int, each: int) -> None:
    proc, info = _start("stock", 10)
    try:
        with _Meter("stock-aioquic", f"1x{size // MIB}MiB", size, proc.pid, datagram=1200):
            await _stock_send(info["ports"][0], size)
        with _Meter("stock-aioquic", f"10 peers x{each // MIB}MiB", 10 * each, proc.pid):
            await asyncio.gather(*(_stock_send(p, each) for p in info["ports"]))
    finally:
        _stop(proc)


async def _run_p2p(size: int, each: int, cap: int | None) -> None:
    from quic_transport import NodeId, NodeKey, PeerAddress, TransportConfig, open_endpoint

    cfg = TransportConfig() if cap is None else TransportConfig(max_datagram_size=cap)
    label = "p2pstore" if cap is None else f"p2pstore-cap{cap}"
    proc, info = _start("p2p", 10)
    ep = await open_endpoint(NodeKey.generate(), config=cfg)
    try:
        peers = [PeerAddress(NodeId.from_b32(n), "127.0.0.1", p) for n, p in info["peers"]]
        for peer in peers:
            await ep.ping(peer)  # connect + probe outside the timed part, like stock's handshake
        dgram = next(iter(ep._conns)).quic._max_datagram_size
        with _Meter(label, f"1x{size // MIB}MiB", size, proc.pid, datagram=dgram):
            await _p2p_send(ep, peers[0], size)
        with _Meter(label, f"10 peers x{each // MIB}MiB", 10 * each, proc.pid, datagram=dgram):
            await asyncio.gather(*(_p2p_send(ep, p, each) for p in peers))
    finally:
        await ep.aclose()
        _stop(proc)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--serve"]:
        runner = _serve_stock if args[1] == "stock" else _serve_p2p
        asyncio.run(runner(int(args[2])))
        return
    quick = "--quick" in args or os.environ.get("BENCH_QUICK") == "1"
    size = (20 if quick else 100) * MIB
    each = (4 if quick else 10) * MIB
    only = [a for a in args if not a.startswith("-")]
    if not only or "stock" in only:
        asyncio.run(_run_stock(size, each))
    if not only or "p2p" in only:
        asyncio.run(_run_p2p(size, each, None))
    if not only or "cap" in only:
        asyncio.run(_run_p2p(size, each, 1452))


if __name__ == "__main__":
    main()
