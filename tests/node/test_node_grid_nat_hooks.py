"""GridService hooks for the NAT wiring, on real QUIC in one process: a node in DHT
client mode is in no routing table, yet ``find_peers`` includes it through the
``announced_peers`` hook (its announcement found near the storage index) and an
upload can place shares on it; ``peer_quality`` combines the ``reachability`` hook
with uptime observed from DHT traffic."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from dht import Announcement
from p2pstore.grid import PeerQuality
from quic_transport import PeerAddress

from .test_node_grid_service import chunks, joined_grid, service

pytestmark = pytest.mark.timeout(90)


async def test_announced_client_node_is_found_and_stores_shares(tmp_path: Path) -> None:
    async with joined_grid(tmp_path, service, n=3) as (intro, nodes):
        natted, uploader = nodes[0], nodes[1]
        assert natted.dht is not None and uploader.dht is not None
        assert natted.endpoint is not None
        await natted.dht.set_server(False)
        host, port = natted.endpoint.local_address
        assert await natted.dht.announce(f"{host}:{port}".encode()) >= 2
        nid = natted.context.key.node_id
        for s in (intro, *nodes[1:]):
            assert s.dht is not None and nid not in s.dht.table
        si = nid.raw  # a storage index right at the NATed node's ID
        plain = await uploader.find_peers(si, 20)
        assert nid not in {p.node_id for p in plain}

        seen: list[Announcement] = []

        def from_announcements(anns: Sequence[Announcement]) -> list[PeerAddress]:
            seen.extend(anns)
            out = []
            for a in anns:
                h, _, p = a.value.decode().rpartition(":")
                out.append(PeerAddress(a.node_id, h, int(p)))
            return out

        uploader.announced_peers = from_announcements
        found = await uploader.find_peers(si, 20)
        assert [a.node_id for a in seen] == [nid]
        assert nid in {p.node_id for p in found}
        # An upload from this node now places a share on the NATed node too.
        backend = uploader.api_backend()
        data = b"n" * 30_000
        up = await backend.upload(chunks(data), size_hint=len(data), mode="random")
        assert natted.storage is not None
        assert natted.storage.server.stat().shares >= 1
        assert up.size == len(data)

        # Quality: the reachability hook and this node's own uptime observations.
        assert uploader.peer_quality(nid) == PeerQuality(None, None)
        uploader.reachability = lambda n: n != nid
        assert uploader.peer_quality(nid).reachable is False
        other = nodes[2].context.key.node_id
        assert uploader.peer_quality(other).reachable is True
        assert uploader.uptime.counts(other)[1] >= 1  # DHT traffic was observed
