"""NAT traversal timings on 127.0.0.1 (docs/nat.md): one dial-back round trip
(fresh endpoint + probe), a rendezvous ``nat.connect`` + fresh dial (the punched
path, without a real NAT), and the Connector's fallback to a relayed address after
a punched dial toward a dead address fails (the worst case a dialer sees).

Prints one JSON object per line:
``{"bench": "nat", "op": ..., "ms": best, "spread_ms": max - min, "runs": n}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from p2pstore.nat.connector import Connector
from p2pstore.nat.peer_record import PeerRecord, RelayAddress
from p2pstore.nat.punch import PunchLimits, PunchService, request_connect
from p2pstore.nat.reachability import DialbackLimits, DialbackServer, ProbeResponder, ask_dialback
from p2pstore.testing.endpoints import address_of, endpoints
from quic_transport import PeerAddress, TransportConfig

CONFIG = TransportConfig(connect_timeout=2.0, close_timeout=0.2, pmtu_probe_timeout=0.1)


def _emit(op: str, samples: list[float], **extra: Any) -> None:
    ms = [s * 1000 for s in samples]
    doc = {
        "bench": "nat",
        "op": op,
        "ms": round(min(ms), 2),
        "spread_ms": round(max(ms) - min(ms), 2),
    }
    print(json.dumps({**doc, "runs": len(ms), **extra}), flush=True)


async def dialback(runs: int) -> None:
    samples = []
    async with endpoints(2, CONFIG) as (a, b):
        DialbackServer(b, DialbackLimits(per_peer_interval=0.0)).register()
        responder = ProbeResponder(a)
        responder.register()
        for _ in range(runs):
            t0 = time.perf_counter()
            answer = await ask_dialback(a, responder, address_of(b))
            samples.append(time.perf_counter() - t0)
            assert answer.success
    _emit("dialback", samples)


async def rendezvous_connect(runs: int) -> None:
    samples = []
    for _ in range(runs):
        async with endpoints(3, CONFIG) as (a, r, b):
            for ep in (r, b):
                PunchService(ep, PunchLimits(connect_interval=0.0)).register()
            await b.ping(address_of(r))
            t0 = time.perf_counter()
            observed, _ = await request_connect(a, address_of(r), b.node_id)
            await a.dial(PeerAddress(b.node_id, *observed), timeout=5.0)
            samples.append(time.perf_counter() - t0)
    _emit("connect_punched_path", samples)


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def relay_fallback(runs: int) -> None:
    """The rendezvous reports an address nobody answers: the Connector waits out
    its dial and then dials the 'relayed' address (here B's own, standing in for a
    relay), i.e. the cost of a failed punch."""
    samples = []
    for _ in range(runs):
        async with endpoints(3, CONFIG) as (a, r, b):

            async def wrong(ctx: Any, body: Any) -> Any:
                return {"observed": ["127.0.0.1", _dead_port()], "you": [ctx.host, ctx.port]}

            r.register("nat.connect", wrong)
            port = b.local_address[1]
            rec = PeerRecord.create(
                b.key,
                seq=1,
                reach="private",
                storage=True,
                relays=(RelayAddress(r.node_id, *r.local_address, relayed_port=port),),
            )
            connector = Connector(a)
            t0 = time.perf_counter()
            await connector.connect(rec)
            samples.append(time.perf_counter() - t0)
            route = connector.route(b.node_id)
            assert route is not None and route.how == "relayed"
            await connector.close()
    _emit("connect_after_failed_punch", samples, connect_timeout=CONFIG.connect_timeout)


async def run() -> None:
    await dialback(10)
    await rendezvous_connect(5)
    await relay_fallback(2)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
