"""The DHT over real QUIC sockets on 127.0.0.1: 20 nodes form a network from one seed
and every node finds every other node's record (a real-socket test, docs/dht.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dht.clock import LoopClock
from dht.contact import Contact
from dht.node import DhtNode
from dht.quic_wiring import dht_transport
from dht.transport import DhtTransport
from quic_transport import open_endpoint
from quic_transport.identity import NodeKey

from ..dht_contract import check_network


async def _open(
    key: NodeKey,
) -> tuple[DhtTransport, Contact, Callable[[], Awaitable[None]]]:
    ep = await open_endpoint(key, "127.0.0.1", 0)
    host, port = ep.local_address
    return dht_transport(ep), Contact(key.node_id, host, port), ep.aclose


async def test_twenty_quic_nodes_find_every_record() -> None:
    stats = await check_network(_open, n=20)
    assert stats["gets"] == 20 * 19


async def test_seed_answered_by_wrong_key_is_skipped() -> None:
    """A bootstrap line naming node X at an address where some other key answers is
    refused by the transport's key proof; the join proceeds through the honest seed and
    X never enters the routing table."""
    honest_key, impostor_key, joiner_key = (NodeKey.generate() for _ in range(3))
    claimed = NodeKey.generate().node_id  # the ID the bad bootstrap line names
    honest_t, honest_c, honest_close = await _open(honest_key)
    impostor_t, impostor_c, impostor_close = await _open(impostor_key)
    joiner_t, _joiner_c, joiner_close = await _open(joiner_key)
    clock = LoopClock()
    honest = DhtNode(honest_key.node_id, honest_t, clock=clock)
    impostor = DhtNode(impostor_key.node_id, impostor_t, clock=clock)
    bad_seed = Contact(claimed, impostor_c.host, impostor_c.port)
    joiner = DhtNode(joiner_key.node_id, joiner_t, clock=clock, seeds=[bad_seed, honest_c])
    try:
        await honest.start(bootstrap=False)
        await impostor.start(bootstrap=False)
        await joiner.start()
        assert honest_key.node_id in joiner.table
        assert claimed not in joiner.table
        assert impostor_key.node_id not in joiner.table
    finally:
        for n in (joiner, impostor, honest):
            await n.close()
        for close in (joiner_close, impostor_close, honest_close):
            await close()
