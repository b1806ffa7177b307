"""The ``peers`` view of a running node: every routing-table contact (plus NATed
peers reached through the connector) with its round-trip time, nickname, storage
role and how we are connected (docs/node.md, docs/nat.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dht.contact import Contact
from dht.node import DhtNode
from p2pstore.app.contract import PeerInfo
from p2pstore.grid.storage_peers import StoragePeers
from p2pstore.nat.manager import NatManager
from quic_transport import Endpoint, PeerAddress

from .known_peers import KnownPeers
from .nat_wiring import connection_details, extra_peer_ids
from .seed_watch import Nicknames


async def list_peers(
    dht: DhtNode,
    ep: Endpoint,
    nat: NatManager | None,
    nicknames: Nicknames | None,
    storage_peers: StoragePeers,
    known_peers: KnownPeers,
) -> list[PeerInfo]:
    """Every routing-table contact, with RTT (a ping each, concurrently, 2 s max)."""
    contacts = dht.table.contacts()
    listed = {c.node_id for c in contacts}
    for nid in extra_peer_ids(nat, listed):  # NATed peers reached via the connector
        at = ep.peer_address(nid)
        if at is not None:
            contacts.append(Contact(nid, at[0], at[1]))
    connected = set(ep.connected_peers)

    nicks = nicknames

    async def rtt(c: Contact) -> float | None:
        peer = PeerAddress(c.node_id, c.host, c.port)
        try:
            took = await ep.ping(peer, timeout=2.0)
        except Exception:
            return None
        if nicks is not None and not nicks.known(c.node_id):
            await nicks.fetch(peer, timeout=2.0)
        if storage_peers.role(c.node_id) is None:
            await storage_peers.filter([peer])  # learn whether it stores (cached)
        return took

    limit = asyncio.Semaphore(16)

    async def bounded(c: Contact) -> float | None:
        async with limit:
            return await rtt(c)

    rtts = await asyncio.gather(*(bounded(c) for c in contacts))
    out = []
    for c, r in zip(contacts, rtts, strict=True):
        role = storage_peers.role(c.node_id)
        known = known_peers.get(c.node_id)
        details: dict[str, Any] = {
            "rtt_ms": None if r is None else round(r * 1000, 2),
            "storage": None if role is None else role.stores,
        }
        if role is not None and role.available is not None:
            details["storage_available"] = role.available
        details.update(connection_details(nat, c.node_id))
        nick = nicknames.get(c.node_id) if nicknames is not None else None
        if nick is not None:
            details["nickname"] = nick
        out.append(
            PeerInfo(
                c.node_id.b32,
                f"{c.host}:{c.port}",
                connected=c.node_id in connected or r is not None,
                last_seen=known.last_seen if known else None,
                details=details,
            )
        )
    return out
