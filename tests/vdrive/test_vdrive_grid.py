"""The vdrive on a grid: real DhtNodes on the in-memory network (records), the
in-process storage grid with the grid's Uploader/Downloader (directory objects and
files), and vdrive.apply carried by the same transport as the DHT.

Covers the issue's grid tests: a writer links a file and another node reads it by
path; an unauthorized writer is refused; two concurrent conditional writes give one
success and one conflict; reads survive the vdrive node being stopped (writes then
fail saying so); private drives and the shared namespace are unreadable without
the secret; a directory handed over as a read-only dircap is readable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.node import DhtNode
from dht.records import record_key
from p2pstore.app.drive import VdriveApplication
from p2pstore.app.errors import AppError
from p2pstore.app.vpath import parse_vpath
from p2pstore.grid import (
    DownloadConfig,
    Downloader,
    SendConfig,
    UploadConfig,
    Uploader,
    bytes_source,
    static_peers,
)
from p2pstore.immutable import EncodingParams, ReadCap
from p2pstore.node.bootstrap import VdriveKey
from p2pstore.node.vdrive_wiring import NodeVdrive, VdriveNodeCaller, build_node_vdrive
from p2pstore.testing.dht_memnet import MemoryNetwork, MemoryTransport
from p2pstore.testing.storage_grid import GridServer, StorageGrid
from p2pstore.vdrive.dirnode import parse_dircap
from p2pstore.vdrive.drive import DriveReader
from p2pstore.vdrive.errors import VdriveRemoteError
from p2pstore.vdrive.objects import GridObjectStore
from p2pstore.vdrive.root_record import PRIVATE_NAME, SHARED_NAME, SeenStore
from p2pstore.web.errors import http_status
from quic_transport.identity import NodeKey

PARAMS = EncodingParams.create(3, 6, 4096)
DHT = DhtConfig(k=8, request_timeout=0.6, slow_after=0.2)
N = 7  # 0: vdrive node, 1: alice (writer), 2: bob (writer), 3: eve (not allowed), 4..: others


@dataclass
class Node:
    key: NodeKey
    transport: MemoryTransport
    dht: DhtNode
    nv: NodeVdrive
    api: VdriveApplication
    up: Uploader[GridServer]
    down: Downloader[GridServer]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[list[Node]]:
    net = MemoryNetwork(latency=(0.0005, 0.001))
    keys = [NodeKey.generate() for _ in range(N)]
    with StorageGrid(tmp_path / "grid", 6) as grid:
        nodes: list[Node] = []
        trust: VdriveKey | None = None
        seed: Contact | None = None
        for i, key in enumerate(keys):
            t = net.add(key.node_id)
            dht = DhtNode(
                key.node_id, t, clock=LoopClock(), seeds=[seed] if seed else [], config=DHT
            )
            await dht.start(bootstrap=seed is not None)
            seed = seed or t.contact
            find = static_peers(grid.servers)

            def storage_for(gs: GridServer, owner: Any = key.node_id) -> Any:
                return gs.client(owner)

            up = Uploader(
                find,
                storage_for,
                UploadConfig(happy=4, send=SendConfig(op_timeout=1.0), list_timeout=1.0),
                params=PARAMS,
            )
            down = Downloader(find, storage_for, DownloadConfig(op_timeout=1.0, locate_timeout=3))
            store = GridObjectStore(up, down, bytes(range(32)))

            async def call(c: Any, m: str, b: Any, t: MemoryTransport = t) -> Any:
                return await t.call(c, m, b, timeout=1.0)

            caller = None
            if trust is not None:
                caller = VdriveNodeCaller(
                    keys[0].node_id,
                    call=call,
                    lookup=dht.lookup,
                    seeds=[nodes[0].transport.contact],
                )
            root = tmp_path / f"node{i}"
            nv = build_node_vdrive(
                key=key,
                private_dir=root / "private",
                state_dir=root / "state",
                trust=trust,
                serve=i == 0,
                writers=[keys[1].node_id.b32, keys[2].node_id.b32],
                dht=dht,
                store=store,
                call=caller,
                max_age=0.0,
            )
            nv.register(t)
            if i == 0:
                trust = nv.line
            nodes.append(Node(key, t, dht, nv, VdriveApplication(nv.vdrive), up, down))
        for n in nodes[:1]:
            await n.dht.bootstrap()  # the seed learns the others
        try:
            yield nodes
        finally:
            for n in nodes:
                await n.dht.close()


async def upload(n: Node, data: bytes) -> ReadCap:
    res = await n.up.upload_convergent(bytes_source(data), bytes(32))
    assert isinstance(res.cap, ReadCap)
    return res.cap


def P(s: str) -> Any:
    return parse_vpath(s)


async def code_of(aw: Any) -> str:
    try:
        await aw
    except AppError as e:
        return e.code
    raise AssertionError("no error")


async def test_link_then_read_by_path_elsewhere(world: list[Node]) -> None:
    vd, alice, bob, eve = world[0], world[1], world[2], world[3]
    data = b"hello vdrive " * 100
    cap = await upload(alice, data)
    s1 = await alice.api.vdrive_mkdir(P("/docs/2026"), parents=True, expected_sequence=None)
    s2 = await alice.api.vdrive_link(
        P("/docs/2026/a.txt"), cap, replace=False, expected_sequence=s1
    )
    assert (s1, s2) == (1, 2)
    # another node (not a writer) reads it by path, then downloads the file
    listing = await eve.api.vdrive_list(P("/docs/2026"))
    assert listing.sequence == 2 and [e.name for e in listing.entries] == ["a.txt"]
    entry = await eve.api.vdrive_stat(P("shared:/docs/2026/a.txt"))
    assert entry.cap == cap.to_string() and entry.size == len(data)
    assert await eve.down.read_all(cap) == data
    # the vdrive node reads its own head
    assert (await vd.api.vdrive_list(P("/docs"))).sequence == 2
    # unauthorized writer: refused, nothing changes
    assert await code_of(
        eve.api.vdrive_unlink(P("/docs"), recursive=True, expected_sequence=None)
    ) == ("vdrive-refused")
    assert (await bob.api.vdrive_list(P("/"))).sequence == 2
    # a read-only directory cap handed to someone else
    dircap = (await alice.api.vdrive_stat(P("/docs"))).cap
    assert dircap is not None and dircap.startswith("p2ps:dir:")
    d = await eve.nv.vdrive.list_cap(parse_dircap(dircap))
    assert list(d) == ["2026"]


async def test_concurrent_conditional_writes(world: list[Node]) -> None:
    alice, bob = world[1], world[2]
    cap = await upload(alice, b"x" * 500)
    seq = await alice.api.vdrive_mkdir(P("/d"), parents=False, expected_sequence=0)
    results = await asyncio.gather(
        alice.api.vdrive_link(P("/d/alice"), cap, replace=False, expected_sequence=seq),
        bob.api.vdrive_link(P("/d/bob"), cap, replace=False, expected_sequence=seq),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, int)]
    conflicts = [r for r in results if isinstance(r, AppError)]
    assert ok == [seq + 1]
    assert len(conflicts) == 1 and conflicts[0].code == "sequence-mismatch"
    assert http_status(conflicts[0]) == 409 and conflicts[0].details == {"sequence": seq + 1}
    names = [e.name for e in (await bob.api.vdrive_list(P("/d"))).entries]
    assert len(names) == 1


async def test_reads_survive_vdrive_node_down(world: list[Node]) -> None:
    vd, alice, bob = world[0], world[1], world[2]
    cap = await upload(alice, b"y" * 700)
    await alice.api.vdrive_link(P("/f"), cap, replace=False, expected_sequence=None)
    vd.transport.net.kill(vd.key.node_id)
    await vd.dht.close()
    entry = await bob.api.vdrive_stat(P("/f"))
    assert entry.cap == cap.to_string()
    try:
        await alice.api.vdrive_mkdir(P("/g"), parents=False, expected_sequence=None)
    except AppError as e:
        assert e.code == "vdrive-unavailable" and http_status(e) == 503
        assert "reading the drive still works" in e.message
    else:
        raise AssertionError("write succeeded with the vdrive node down")
    assert [e.name for e in (await bob.api.vdrive_list(P("/"))).entries] == ["f"]


async def test_private_drives_and_storers_cannot_read(world: list[Node], tmp_path: Path) -> None:
    alice, bob, other = world[1], world[2], world[5]
    cap = await upload(alice, b"z" * 900)
    assert (
        await alice.api.vdrive_link(P("private:/diary"), cap, replace=False, expected_sequence=0)
        == 1
    )
    assert [e.name for e in (await alice.api.vdrive_list(P("private:/"))).entries] == ["diary"]
    assert (await bob.api.vdrive_list(P("private:/"))).entries == ()  # bob's own, empty
    # the record is in the DHT, but a node without alice's secret cannot open it
    key = record_key(alice.key.public_key, PRIVATE_NAME)
    rec = await other.dht.get(key)
    assert rec is not None and cap.to_string().encode() not in rec.value
    for secret_holder in (bob, other):
        psecret = secret_holder.nv.private_writer.read_secret
        r = DriveReader(
            source=other.dht,
            public_key=alice.key.public_key,
            name=PRIVATE_NAME,
            read_secret=psecret,
            store=other.nv.vdrive.store,
            seen=SeenStore(None),
        )
        with pytest.raises(VdriveRemoteError) as e:
            await r.pointer()
        assert e.value.code == "bad-record"
    # likewise the shared drive for a node whose bootstrap line lacks the read secret
    await alice.api.vdrive_mkdir(P("/pub"), parents=False, expected_sequence=None)
    shared = await other.dht.get(record_key(world[0].key.public_key, SHARED_NAME))
    assert shared is not None
    nv = build_node_vdrive(
        key=NodeKey.generate(),
        private_dir=tmp_path / "x" / "private",
        state_dir=tmp_path / "x" / "state",
        trust=VdriveKey(world[0].key.public_key),
        serve=False,
        dht=other.dht,
        store=other.nv.vdrive.store,
        call=None,
    )
    assert await code_of(VdriveApplication(nv.vdrive).vdrive_list(P("/"))) == "vdrive-unavailable"


async def test_forged_records_from_dht_nodes_are_ignored(world: list[Node]) -> None:
    from p2pstore.testing.dht_memnet import Behaviour

    alice, bob = world[1], world[2]
    await alice.api.vdrive_mkdir(P("/real"), parents=False, expected_sequence=None)
    for n in world[3:6]:
        n.transport.net.set_behaviour(n.key.node_id, Behaviour.FORGE)
    listing = await bob.api.vdrive_list(P("/"))
    assert [e.name for e in listing.entries] == ["real"] and listing.sequence == 1
