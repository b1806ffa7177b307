"""A network-level contract check for any ``DhtTransport`` (in-memory, fake, real QUIC).

``await check_network(open_transport, n=20)`` forms an ``n``-node network from one seed
with real ``DhtNode``s on the running event loop, has every node publish a record
under its own key, then checks that every node finds every other node's record.
``open_transport(key)`` returns ``(transport, own_contact, close)``; the real-socket
test only has to supply one for ``quic_transport`` endpoints on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.node import DhtNode
from dht.records import record_key
from dht.transport import DhtTransport
from quic_transport.identity import NodeKey

OpenTransport = Callable[
    [NodeKey], Awaitable[tuple[DhtTransport, Contact, Callable[[], Awaitable[None]]]]
]
CONFIG = DhtConfig(request_timeout=3.0, maintenance_interval=3600.0)


async def check_network(open_transport: OpenTransport, n: int = 20) -> dict[str, float]:
    keys = [NodeKey.generate() for _ in range(n)]
    opened = [await open_transport(k) for k in keys]
    clock = LoopClock()
    seed = opened[0][1]
    nodes = [
        DhtNode(k.node_id, t, clock=clock, seeds=[] if i == 0 else [seed], config=CONFIG)
        for i, (k, (t, _c, _close)) in enumerate(zip(keys, opened, strict=True))
    ]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        await nodes[0].start(bootstrap=False)
        for node in nodes[1:]:
            await node.start()
        t_join = loop.time() - t0
        assert all(len(node.table) > 0 for node in nodes)
        await asyncio.gather(
            *(node.publish(k, b"probe", k.node_id.raw) for node, k in zip(nodes, keys, strict=True))
        )
        sem = asyncio.Semaphore(32)

        async def fetch(node: DhtNode, owner: NodeKey) -> bool:
            async with sem:
                rec = await node.get(record_key(owner.public_key, b"probe"))
            return rec is not None and rec.value == owner.node_id.raw

        pairs = [(a, k) for a in nodes for k in keys if k.node_id != a.node_id]
        t1 = loop.time()
        ok = await asyncio.gather(*(fetch(a, k) for a, k in pairs))
        missing = len(ok) - sum(ok)
        assert missing == 0, f"{missing} of {len(ok)} record fetches failed"
        return {"join_s": t_join, "gets": len(ok), "gets_s": loop.time() - t1}
    finally:
        await asyncio.gather(*(node.close() for node in nodes))
        for _t, _c, close in opened:
            await close()
