"""GridService in one process on real QUIC (127.0.0.1): joining, skipping dead seeds,
rejoining through remembered peers, storage-peer filtering, the HTTP backend on the
grid, status numbers and clean shutdown with an upload in flight."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from p2pstore.app.errors import AppError
from p2pstore.grid.storage_peers import Role, StoragePeers
from p2pstore.immutable import ReadCap
from p2pstore.node.address import HostPort
from p2pstore.node.bootstrap import BootstrapList, Seed
from p2pstore.node.grid_service import GridService
from p2pstore.node.known_peers import KnownPeers
from p2pstore.node.nodedir import CreateOptions, create_node_dir
from p2pstore.node.runner import prepare
from p2pstore.node.service import NodeContext
from p2pstore.web.errors import http_status
from quic_transport.identity import NodeId

from ..polling import until

pytestmark = pytest.mark.timeout(90)


def make_dir(
    root: Path,
    name: str,
    seeds: list[Seed],
    *,
    introducer: bool = False,
    client: tuple[int, int, int] = (2, 4, 3),
) -> Path:
    nd, _key = create_node_dir(
        root / name,
        CreateOptions(
            introducer=introducer,
            nickname=name,
            listen=HostPort("127.0.0.1", 0),
            bootstrap=BootstrapList(seeds=tuple(seeds)),
        ),
    )
    text = nd.config_path.read_text()
    for key, value in zip(("shares_needed", "shares_total", "shares_happy"), client, strict=True):
        text = re.sub(rf"(?m)^(# )?{key} = .*$", f"{key} = {value}", text)
    text = re.sub(r"(?m)^reserved_space = .*$", 'reserved_space = "0B"', text)
    nd.config_path.write_text(text)
    return nd.root


def context(root: Path, stops: list[str] | None = None) -> NodeContext:
    p = prepare(root)
    known = KnownPeers.load(p.node_dir.known_peers_path)
    return NodeContext(
        node_dir=p.node_dir,
        config=p.config,
        key=p.key,
        bootstrap=p.bootstrap,
        known_peers=known,
        request_stop=(stops if stops is not None else []).append,
        convergence_secret=p.convergence_secret,
        api_token=p.api_token,
    )


def seed_of(svc: GridService) -> Seed:
    assert svc.endpoint is not None
    host, port = svc.endpoint.local_address
    return Seed(svc.context.key.node_id, host, port)


def service(root: Path) -> GridService:
    return GridService(context(root), grow_interval=0.5, probe_timeout=1.5)


@contextlib.asynccontextmanager
async def joined_grid(
    tmp_path: Path, make: Callable[[Path], GridService], n: int = 3
) -> AsyncIterator[tuple[GridService, list[GridService]]]:
    """An introducer and ``n`` storage nodes, started and all joined. On exit every
    service still in the yielded list is closed (a test may pop and close one itself)."""
    intro = make(make_dir(tmp_path, "intro", [], introducer=True))
    await intro.start()
    nodes: list[GridService] = []
    try:
        for i in range(n):
            nodes.append(make(make_dir(tmp_path, f"n{i}", [seed_of(intro)])))
            await nodes[-1].start()
        everyone = [intro, *nodes]
        await until(lambda: all(s.status()["peers_known"] == n for s in everyone))
        yield intro, nodes
    finally:
        for s in [*nodes, intro]:
            await s.close()


async def test_join_skip_dead_seed_and_rejoin_through_known_peers(tmp_path: Path) -> None:
    a = service(make_dir(tmp_path, "a", [], introducer=True))
    await a.start()
    services = [a]
    try:
        dead = Seed(NodeId(os.urandom(20)), "127.0.0.1", 9)  # nobody answers there
        b_root = make_dir(tmp_path, "b", [dead, seed_of(a)])
        c_root = make_dir(tmp_path, "c", [seed_of(a)])
        b, c = service(b_root), service(c_root)
        services += [b, c]
        await b.start()
        await c.start()
        await until(lambda: all(s.status()["peers_known"] == 2 for s in (a, b, c)))
        await until(lambda: b.last_join is not None)  # the dead seed's probe timed out
        assert b.last_join is not None
        assert [s.node_id for s, _why in b.last_join.failed] == [dead.node_id]
        assert b.status()["details"]["join"]["reached"] >= 1

        # b stops (remembering a and c), then every seed of its list is gone.
        await b.close()
        services.remove(b)
        b.context.known_peers.save()
        remembered = {p.node_id for p in KnownPeers.load(b_root / "state/known_peers.json").peers()}
        assert remembered == {a.context.key.node_id, c.context.key.node_id}
        await a.close()
        services.remove(a)

        stale = b_root / "state/spool/upload-killed.spool"  # left by a killed node
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"x" * 1000)
        b2 = service(b_root)
        services.append(b2)
        await b2.start()
        assert not stale.exists()
        await until(lambda: b2.last_join is not None)
        report = b2.last_join
        assert report is not None and [s.node_id for s in report.reached] == [c.context.key.node_id]
        failed = {s.node_id for s, _why in report.failed}
        assert {dead.node_id, a.context.key.node_id} <= failed
    finally:
        for s in services:
            await s.close()


async def chunks(data: bytes, step: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def test_grid_backend_storage_peers_status_and_clean_close(tmp_path: Path) -> None:
    async with joined_grid(tmp_path, service) as (intro, nodes):
        backend = nodes[0].api_backend()
        data = os.urandom(700_000)
        up = await backend.upload(chunks(data), size_hint=len(data), mode="convergent")
        assert isinstance(up.cap, ReadCap) and up.details["happiness"] == 3
        # the introducer (storage off) answered storage.stat with no-such-method
        role = nodes[0].storage_peers.role(intro.context.key.node_id)
        assert role is not None and not role.stores
        holders = set(up.details["placements"].values())
        assert intro.context.key.node_id.b32 not in holders and len(holders) == 3
        for reader in nodes:
            got = b"".join(
                [c async for c in await reader.api_backend().download(up.cap, 0, len(data))]
            )
            assert got == data
        part = await nodes[2].api_backend().download(up.cap, 123_456, 1000)
        assert b"".join([c async for c in part]) == data[123_456:124_456]
        info = await nodes[1].api_backend().info(up.cap)
        assert info["shares_found"] == 4 and info["k"] == 2
        report = await nodes[1].api_backend().check(up.cap, verify=True, repair=False)
        assert report.healthy and report.shares_good == 4
        assert all(s.status()["storage_used"] > 0 for s in nodes)
        assert intro.status()["storage_used"] == 0
        peers = await backend.peers()
        assert len(peers) == 3 and all(p.details["rtt_ms"] is not None for p in peers)
        status = await backend.status()
        assert status["backend"] == "grid" and status["peers_known"] == 3

        # An upload in flight when the node closes fails cleanly; complete shares stay.
        gate = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            yield os.urandom(300_000)
            gate.set()
            await asyncio.sleep(3600)
            yield b""

        task = asyncio.create_task(backend.upload(slow(), size_hint=None, mode="random"))
        await gate.wait()
        await asyncio.sleep(0.3)
        closing = nodes.pop(0)
        await closing.close()
        with pytest.raises((asyncio.CancelledError, AppError)):
            await task
        with pytest.raises(AppError) as e:
            await backend.upload(chunks(b"x" * 1000), size_hint=None, mode="random")
        assert http_status(e.value) == 503
        for s in nodes:
            incoming = s.context.node_dir.storage_dir / "incoming"
            await until(lambda inc=incoming: not any(p.is_file() for p in inc.rglob("*")))
        again = b"".join(
            [c async for c in await nodes[0].api_backend().download(up.cap, 0, len(data))]
        )
        assert again == data


async def test_storage_peers_cache() -> None:
    class Err(Exception):
        def __init__(self, code: str) -> None:
            self.code = code

    answers: dict[bytes, Any] = {}
    asked: list[bytes] = []

    async def probe(peer: Any) -> Any:
        asked.append(peer.node_id.raw)
        a = answers[peer.node_id.raw]
        if isinstance(a, BaseException):
            raise a
        return a

    now = [0.0]

    class P:
        def __init__(self, i: int) -> None:
            self.node_id = NodeId(bytes([i]) * 20)

    peers = [P(i) for i in range(4)]
    answers = {
        peers[0].node_id.raw: {"available": 10},
        peers[1].node_id.raw: Err("no-such-method"),
        peers[2].node_id.raw: TimeoutError(),
        peers[3].node_id.raw: Err("internal"),
    }
    sp = StoragePeers(probe, ttl=60, clock=lambda: now[0])
    kept = await sp.filter(peers)
    assert kept == [peers[0], peers[2], peers[3]]  # unknown ones are still offered
    assert sp.role(peers[0].node_id) == Role(True, 0.0, 10)
    assert sp.role(peers[1].node_id) == Role(False, 0.0)
    asked.clear()
    await sp.filter(peers)
    assert sorted(asked) == sorted([peers[2].node_id.raw, peers[3].node_id.raw])  # cached
    now[0] = 61.0
    asked.clear()
    await sp.filter(peers)
    assert len(asked) == 4  # expired


async def test_a_gone_peers_unfinished_uploads_are_dropped_at_once(tmp_path: Path) -> None:
    """A client that allocates a share and then goes away (its node stops or is
    killed: the connection closes) leaves nothing in ``incoming/`` for the idle
    sweep's 600 s: the storage node drops its uploads when the connection ends."""
    async with joined_grid(tmp_path, service, n=2) as (_intro, nodes):
        holder, client = nodes
        assert holder._self_address is not None and holder.storage is not None
        api = client.storage_for(holder._self_address)
        si = os.urandom(20)
        await api.allocate(si, 0, 1000)
        await api.write(si, 0, 0, b"x" * 500)
        assert holder.storage.server.stat().uploads == 1
        nodes.remove(client)
        await client.close()  # its QUIC connection to the holder closes
        server = holder.storage.server
        await until(lambda: server.stat().uploads == 0, 10)
        incoming = holder.context.node_dir.storage_dir / "incoming"
        assert not [p for p in incoming.rglob("*") if p.is_file()]
