"""GridService's NAT wiring (docs/nat.md, "Node behaviour"), kept out of
grid_service.py: building the :class:`~p2pstore.nat.manager.NatManager` from the
config, merging DHT node announcements into ``find_peers``, and the per-peer
connection details shown by ``peers``.

Invariants: announcements are verified (signature, node ID) before use and only
storage records are returned as storage peers; a lookup that brings no
announcements leaves ``find_peers`` with the routing table's peers alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dht.announce import Announcement
from dht.node import DhtNode
from p2pstore.nat.manager import NatManager, NatSettings
from p2pstore.nat.portmap.mapper import PortMapper
from quic_transport import Endpoint, PeerAddress
from quic_transport.identity import NodeId, NodeKey

from .config import NodeConfig
from .limits import slower


def nat_settings(config: NodeConfig) -> NatSettings:
    net = config.network
    return NatSettings(
        reachability=net.reachability,
        hole_punching=net.hole_punching,
        use_relays=net.use_relays,
        max_anchors=net.relays,
        keepalive=float(net.keepalive),
        # the low-power profile slows re-checks; never the keepalive, which must
        # stay under the NAT's UDP timeout or the node becomes unreachable
        recheck_interval=slower(float(net.recheck_interval), config.limits),
    )


def make_nat_manager(
    endpoint: Endpoint,
    dht: DhtNode,
    key: NodeKey,
    config: NodeConfig,
    *,
    port_mapping: Callable[[], PortMapper | None],
    set_relay_reachable: Callable[[bool], Awaitable[None]],
) -> NatManager:
    """The node's NAT manager; ``port_mapping`` gives the port mapper once there is
    one, ``set_relay_reachable`` makes ``[relay] serve = "auto"`` follow the verdict."""
    public = config.node.public_address
    extra = [] if public is None else [(public.host, public.port)]

    def candidates() -> list[PeerAddress]:
        return [PeerAddress(c.node_id, c.host, c.port) for c in dht.table.contacts()]

    nat = NatManager(
        endpoint,
        key,
        dht,
        nat_settings(config),
        stores=config.storage.enabled,
        candidates=candidates,
        extra_addresses=lambda: extra,
        port_mapping=port_mapping,
    )

    async def relay_follows(verdict: str) -> None:
        # [relay] serve = "auto": relay for others exactly while we are reachable
        if verdict in ("public", "private"):
            await set_relay_reachable(verdict == "public")

    nat.verdict_hooks.append(relay_follows)
    return nat


def announced_storage_peers(
    nat: NatManager, announcements: Sequence[Announcement], own: NodeId
) -> list[PeerAddress]:
    """Storage peers from a lookup's node announcements (dht.Announcement: the DHT
    verified its signature; ``node_id`` derives from its key). The value is our peer
    record, verified again and tied to that node ID."""
    out = []
    for ann in announcements:
        if not ann.value:
            continue
        rec = nat.learn(ann.value, ann.node_id)
        if rec is not None and rec.storage and rec.node_id != own:
            out.append(nat.address_of(rec))
    return out


def nat_hooks(
    nat: NatManager, own: NodeId
) -> tuple[
    Callable[[Sequence[Announcement]], Sequence[PeerAddress]], Callable[[NodeId], bool | None]
]:
    """GridService's ``announced_peers`` and ``reachability`` hooks (dhtmode)."""

    def announced(announcements: Sequence[Announcement]) -> Sequence[PeerAddress]:
        return announced_storage_peers(nat, announcements, own)

    return announced, nat.peer_reachable


def connection_details(nat: NatManager | None, node_id: NodeId) -> dict[str, Any]:
    """``peers`` details: how we are connected (direct/punched/relayed) and whether
    the peer is one of our relays."""
    if nat is None:
        return {}
    out: dict[str, Any] = {}
    kind = nat.connection_kind(node_id)
    if kind is not None:
        out["connection"] = kind
    anchor = nat.anchors.get(node_id)
    if anchor is not None:
        out["our_relay"] = True
        if anchor.reservation is not None:
            res = anchor.reservation
            out["relayed_address"] = f"{res.host}:{res.port}"
    rec = nat.records.get(node_id)
    if rec is not None:
        out["reachability"] = rec.reach
    return out


def extra_peer_ids(nat: NatManager | None, listed: set[NodeId]) -> list[NodeId]:
    """Connected peers not in the routing table that we reached through the connector,
    know by their peer record, or that reached us through a relay (NATed ones: DHT
    clients)."""
    if nat is None:
        return []
    ids = list(nat.connector.routes())
    ids += [n for n in nat.records if nat.endpoint.peer_address(n) is not None]
    # peers that came in through our relay reservations (NATed callers)
    ids += [n for n in nat.endpoint.connected_peers if nat.connection_kind(n) == "relayed"]
    return [n for n in dict.fromkeys(ids) if n not in listed]
