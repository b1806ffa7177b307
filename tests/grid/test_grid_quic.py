"""End to end on real QUIC: a 10-node storage grid on 127.0.0.1 in this process.

Each storage node is a real Endpoint with a StorageService (and the bulk
``storage.write_stream`` handler) over a temp dir; the client is an 11th endpoint.
Every endpoint also runs a real DhtNode (bootstrapped from node 0), and the
client finds storage peers with a DHT lookup of the storage index
(``lookup_peers``); the fault tests after killing nodes use the static list of all
ten, so the downloader itself has to cope with the dead ones."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dht import Contact, DhtNode, LoopClock
from dht.quic_wiring import dht_transport
from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    DownloadError,
    Health,
    HealthConfig,
    SendConfig,
    UploadConfig,
    Uploader,
    aiter_bytes,
    bytes_source,
    lookup_peers,
    rank_peers,
    static_peers,
)
from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.storage import LocalStorageClient, StorageAPI, StorageConfig, StorageService
from p2pstore.storage.bulk import QuicStorageClient, register_storage_streams
from p2pstore.testing.endpoints import address_of, endpoints
from p2pstore.testing.grid_client import GridClient
from quic_transport import Endpoint, PeerAddress, RpcError, TransportConfig

SECRET = hashlib.sha256(b"secret").digest()
MiB = 1 << 20


@dataclass
class QuicGrid:
    client: Endpoint
    nodes: list[Endpoint]
    services: list[StorageService]
    peers: list[PeerAddress]
    clients: dict[PeerAddress, StorageAPI]
    client_dht: DhtNode
    dhts: list[DhtNode]

    def storage_for(self, peer: PeerAddress) -> StorageAPI:
        if peer not in self.clients:
            self.clients[peer] = QuicStorageClient(
                self.client, peer, timeout=3.0, stream_timeout=5.0
            )
        return self.clients[peer]

    def tools(self) -> tuple[Uploader[PeerAddress], Downloader[PeerAddress]]:
        find = lookup_peers(self.client_dht.lookup)
        send = SendConfig(op_timeout=5.0)
        up = Uploader(find, self.storage_for, UploadConfig(send=send, list_timeout=3.0))
        down = Downloader(
            find, self.storage_for, DownloadConfig(op_timeout=3.0, locate_timeout=10.0)
        )
        return up, down

    def service_of(self, peer: PeerAddress) -> StorageService:
        return self.services[self.peers.index(peer)]


@pytest.fixture
async def qgrid(tmp_path: Path) -> AsyncIterator[QuicGrid]:
    configs = [StorageConfig()] * 9 + [StorageConfig(max_bytes=1 * MiB)]  # node 9 is small
    async with endpoints(11, TransportConfig()) as eps:
        client, nodes = eps[0], eps[1:]
        services = []
        dhts: list[DhtNode] = []
        clock = LoopClock()
        seed = address_of(nodes[0])
        try:
            for i, ep in enumerate(nodes):
                svc = await StorageService.start(
                    tmp_path / f"node{i}", ep, configs[i], error_factory=RpcError
                )
                register_storage_streams(ep, svc.server, error_factory=RpcError)
                services.append(svc)
            for i, ep in enumerate([*nodes, client]):
                seeds = [] if i == 0 else [Contact(seed.node_id, seed.host, seed.port)]
                dht = DhtNode(ep.node_id, dht_transport(ep), clock=clock, seeds=seeds)
                dhts.append(dht)
                await dht.start(bootstrap=i != 0)
            peers = [address_of(ep) for ep in nodes]
            yield QuicGrid(client, nodes, services, peers, {}, dhts[-1], dhts)
        finally:
            for dht in dhts:
                await dht.close()
            for svc in services:
                await svc.close()


def ranked(g: QuicGrid, si: bytes) -> list[PeerAddress]:
    by_id = {p.node_id.raw: p for p in g.peers}
    return [by_id[r] for r in rank_peers(si, by_id)]


async def test_put_get_sizes_byte_for_byte(qgrid: QuicGrid) -> None:
    found = await qgrid.client_dht.lookup(qgrid.peers[0].node_id)
    assert {c.node_id for c in found} == {p.node_id for p in qgrid.peers}  # via the DHT
    up, down = qgrid.tools()
    for size in (0, 1, 3000):
        data = os.urandom(size)
        res = await up.upload_convergent(bytes_source(data), SECRET)
        assert await down.read_all(res.cap) == data
    # the node's one-object wiring: QUIC storage clients and DHT lookups
    gc = GridClient.over_quic(
        qgrid.client, qgrid.client_dht.lookup, convergence_secret=SECRET, call_timeout=5.0
    )
    small = os.urandom(5000)
    put = await gc.put(bytes_source(small))
    assert b"".join([c async for c in gc.get(put.cap)]) == small
    assert (await gc.check(put.cap)).healthy(7)
    # node 0 acting as the client, with its own storage reached locally
    me = qgrid.peers[0]
    own = LocalStorageClient(qgrid.services[0].server, me.node_id)
    gc0 = GridClient.over_quic(
        qgrid.nodes[0], qgrid.dhts[0].lookup, local=(me, own), convergence_secret=SECRET
    )
    put0 = await gc0.put(bytes_source(small + b"!"))
    assert me in put0.placements.values() and len(set(put0.placements.values())) == 10
    assert b"".join([c async for c in gc0.get(put0.cap)]) == small + b"!"
    big = os.urandom(10 * MiB)
    res = await up.upload_random(aiter_bytes(big))
    assert res.happiness >= 9 and len(res.placements) == 10
    assert await down.read_all(res.cap) == big
    assert (
        await down.read_all(res.cap, offset=5 * MiB - 3, length=MiB)
        == big[5 * MiB - 3 : 6 * MiB - 3]
    )
    # k = 1 (plain replication): a block is a whole 1 MiB segment, and reading it must
    # fit the transport's 1 MiB message cap with the reply's framing
    solo = os.urandom(3 * MiB + 5)
    res = await up.upload_random(
        aiter_bytes(solo), params=EncodingParams.create(1, 3, MiB), happy=3
    )
    assert await down.read_all(res.cap) == solo


async def test_seven_of_ten_nodes_killed_corrupt_shares_and_a_full_server(
    qgrid: QuicGrid,
) -> None:
    up, down = qgrid.tools()
    data = os.urandom(2 * MiB + 12345)
    res = await up.upload_convergent(bytes_source(data), SECRET)
    assert isinstance(res.cap, ReadCap)
    si = res.cap.storage_index
    small = qgrid.peers[9]  # 1 MiB quota: takes this file's ~700 KiB share, no more
    assert all(len(qgrid.service_of(p).server.list_shares(si)) == 1 for p in qgrid.peers)

    # corrupt three shares on disk: still the right bytes
    order = ranked(qgrid, si)
    for p in order[:3]:
        svc = qgrid.service_of(p)
        for shnum in svc.server.list_shares(si):
            path = svc.server.share_path(si, shnum)
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 3] ^= 0x55
            path.write_bytes(bytes(raw))
    assert await down.read_all(res.cap) == data

    # a full server makes the upload place its share elsewhere
    data2 = os.urandom(3 * MiB)
    res2 = await up.upload_convergent(bytes_source(data2), SECRET)
    si2 = res2.cap.storage_index  # type: ignore[union-attr]
    assert qgrid.service_of(small).server.list_shares(si2) == {}
    assert len(res2.placements) == 10 and small not in res2.placements.values()
    assert await down.read_all(res2.cap) == data2

    # kill 7 of the 10 storage nodes, keeping three that hold intact shares
    keep = [p for p in order[3:] if qgrid.service_of(p).server.list_shares(si)][:3]
    for p in qgrid.peers:
        if p not in keep:
            await qgrid.nodes[qgrid.peers.index(p)].aclose()
    fresh = Downloader(
        static_peers(qgrid.peers),
        qgrid.storage_for,
        DownloadConfig(op_timeout=2.0, locate_timeout=10.0),
    )
    assert await fresh.read_all(res.cap) == data
    health = Health(static_peers(qgrid.peers), qgrid.storage_for, HealthConfig(op_timeout=2.0))
    check = await health.check(res.cap)
    assert check.recoverable and len(check.unreachable) == 7
    qgrid.service_of(keep[0]).server.close()  # one more gone: not enough shares
    with pytest.raises(DownloadError) as info:
        await fresh.read_all(res.cap)
    assert info.value.found == 2 and info.value.need == 3
    assert set(info.value.where) == {keep[1].node_id.b32, keep[2].node_id.b32}
