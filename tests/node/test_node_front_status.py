"""The front page's status keys from a real GridService (QUIC on 127.0.0.1): start
time, version, bootstrap seeds with reachability (from joining and from the seed
watch's own pings), peers with nicknames and round-trip times, DHT and storage; then
the web UI's front page served with the node's GridApplication shows them."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from p2pstore import __version__
from p2pstore.node.bootstrap import Seed
from p2pstore.node.grid_service import GridService
from p2pstore.node.join import JoinReport
from p2pstore.node.seed_watch import SeedWatch, clean_nickname
from p2pstore.web.context import ApiLimits
from p2pstore.web.http_app import create_app, runner_kwargs
from p2pstore.web.ui import make_ui
from quic_transport import PeerAddress
from quic_transport.identity import NodeId

from ..webui_helpers import TOKEN, login
from .test_node_grid_service import context, make_dir, seed_of, until

pytestmark = pytest.mark.timeout(90)


def service(root: Any, **kw: Any) -> GridService:
    return GridService(context(root), grow_interval=0.5, probe_timeout=1.0, **kw)


async def test_front_page_status_from_a_real_grid_node(tmp_path: Any) -> None:
    intro = service(make_dir(tmp_path, "intro", [], introducer=True))
    await intro.start()
    nodes: list[GridService] = [intro]
    try:
        dead = Seed(NodeId(os.urandom(20)), "127.0.0.1", 9, "gone")
        alpha = make_dir(tmp_path, "alpha", [seed_of(intro), dead])
        with (alpha / "p2pstore.toml").open("a", encoding="utf-8") as f:
            f.write('\n[helper]\nenabled = true\nuse = "always"\n')  # docs/helper.md
        a = service(alpha, seed_interval=0.3)
        b = service(make_dir(tmp_path, "beta", [seed_of(intro)]))
        for s in (a, b):
            nodes.append(s)
            await s.start()
        await until(lambda: all(s.status()["peers_known"] == 2 for s in nodes))
        await until(lambda: a.seed_watch is not None and a.seed_watch.rounds >= 1)
        backend = a.api_backend()
        st = await backend.status()
        assert st["nickname"] == "alpha" and st["version"] == __version__
        assert st["started_at"] is not None and 0 <= time.time() - st["started_at"] < 60
        assert st["introducer"] is False and st["advertised"].endswith(f":{st['listen_port']}")
        seeds = {s["node_id"]: s for s in st["seeds"]}
        good = seeds[intro.context.key.node_id.b32]
        assert good["reachable"] is True and good["rtt_ms"] > 0 and good["last_contact"]
        assert good["nickname"] == "intro"  # asked over node.info by the peer list
        bad = seeds[dead.node_id.b32]
        assert bad["reachable"] is False and bad["error"] and "rtt_ms" not in bad
        assert bad["nickname"] == "gone"  # the seed line's label
        assert st["dht"]["routing_table_size"] == 2
        assert st["storage"]["enabled"] is True and st["storage"]["quota"] is None
        peers = await backend.peers()
        by_id = {p.node_id: p for p in peers}
        assert by_id[b.context.key.node_id.b32].details["nickname"] == "beta"
        assert by_id[intro.context.key.node_id.b32].details["nickname"] == "intro"
        assert all(p.details["rtt_ms"] > 0 and p.connected for p in peers)

        # The front page served with this backend.
        limits = ApiLimits()
        app = create_app(backend, TOKEN, limits=limits, ui=make_ui())
        client: TestClient[Any, Any] = TestClient(
            TestServer(app, host="127.0.0.1", **runner_kwargs(limits))
        )
        await client.start_server()
        try:
            await login(client)
            page = await (await client.get("/")).text()
            for text in (
                a.context.key.node_id.b32,
                "alpha",
                __version__,
                "1 of 2 reachable",
                "unreachable",
                "beta",
                b.context.key.node_id.b32,
                "2 contacts",
                "unlimited",
                "serving: 0 placed",  # the upload helper's rows
                "Uses helpers",
            ):
                assert text in page, text
            assert "not reported" not in page.split('id="h-transfers"')[0]
        finally:
            await client.close()

        # The introducer goes away: the seed watch notices.
        await intro.close()
        nodes.remove(intro)
        assert a.seed_watch is not None
        await a.seed_watch.probe_all()
        st = await backend.status()
        gone = {s["node_id"]: s for s in st["seeds"]}[intro.context.key.node_id.b32]
        assert gone["reachable"] is False and gone["error"]
        assert gone["last_contact"] is not None  # when it last answered
    finally:
        for s in nodes:
            await s.close()
    for s in (a, b):
        assert s._tasks.tasks == ()  # the join loop and the seed watch ended


async def test_seed_watch_units() -> None:
    s1 = Seed(NodeId(b"\x01" * 20), "127.0.0.1", 1000)
    s2 = Seed(NodeId(b"\x02" * 20), "::1", 1001, "v6")
    calls: list[PeerAddress] = []
    now = [100.0]

    async def ping(peer: PeerAddress, timeout: float) -> float:  # noqa: ASYNC109
        calls.append(peer)
        if peer.port == 1001:
            await asyncio.sleep(10)
        return 0.0125

    w = SeedWatch([s1, s2], ping, timeout=0.05, clock=lambda: now[0])
    assert [r["reachable"] for r in w.report()] == [None, None]  # not tried yet
    w.record_join(JoinReport(reached=(s1,), failed=((s2, "x" * 500),), untried=()))
    r1, r2 = w.report()
    assert r1 == {
        "address": "127.0.0.1:1000",
        "node_id": s1.node_id.b32,
        "reachable": True,
        "last_contact": 100.0,
    }
    assert r2["address"] == "[::1]:1001" and r2["nickname"] == "v6"
    assert r2["reachable"] is False and len(r2["error"]) == 200
    now[0] = 200.0
    await w.probe_all()
    r1, r2 = w.report()
    assert r1["rtt_ms"] == 12.5 and r1["last_contact"] == 200.0
    assert r2["reachable"] is False and "no answer" in r2["error"]
    assert len(calls) == 2
    # a remembered peer that is not a seed does not appear
    other = Seed(NodeId(b"\x03" * 20), "127.0.0.1", 1002)
    w.record_join(JoinReport(reached=(other,), failed=(), untried=()))
    assert len(w.report()) == 2
    assert clean_nickname("ok") == "ok"
    for bad in (None, 3, "", " x", "a\nb", "x" * 65, "\x1b[31m"):
        assert clean_nickname(bad) is None
