"""NAT wiring in GridService (in one process, real QUIC on 127.0.0.1): loopback
nodes find themselves public; a node forced private keeps anchors, builds a record
listing them, and other nodes reach its storage through the Connector."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.web.ui.front import front_page
from quic_transport import PeerAddress

from ..node.test_node_grid_service import joined_grid, make_dir, seed_of, service, until

pytestmark = pytest.mark.timeout(90)


def private(root: Path) -> Path:
    cfg = root / "p2pstore.toml"
    cfg.write_text(cfg.read_text() + '\n[network]\nreachability = "private"\nkeepalive = "5s"\n')
    return root


async def test_loopback_grid_is_public_and_status_shows_it(tmp_path: Path) -> None:
    async with joined_grid(tmp_path, service, n=2) as (intro, nodes):
        everyone = [intro, *nodes]

        def public() -> bool:
            return all(s.nat is not None and s.nat.verdict == "public" for s in everyone)

        await until(public, within=30)
        for s in everyone:
            assert s.nat is not None and s.endpoint is not None
            st = s.status()["details"]["nat"]
            assert isinstance(st, dict)
            host, port = s.endpoint.local_address
            assert st["observed"] == f"{host}:{port}"
            assert st["dht_mode"].startswith("server") and st["mode"] == "auto"
        backend = nodes[0].api_backend()
        doc = await backend.status()
        assert doc["nat"]["reachability"] == "public"
        html = front_page(doc, [], now=0.0, ui_started=0.0)
        assert "Reachability" in html and "public" in html


async def test_private_node_keeps_anchors_and_is_reached_through_the_connector(
    tmp_path: Path,
) -> None:
    async with joined_grid(tmp_path, service, n=1) as (intro, (peer,)):
        p = service(private(make_dir(tmp_path, "natted", [seed_of(intro)])))
        await p.start()
        try:
            assert p.nat is not None and p.nat.verdict == "private"
            await until(lambda: p.nat is not None and len(p.nat.anchors) == 2, within=30)
            await until(
                lambda: (
                    p.nat is not None and p.nat.record is not None and len(p.nat.record.relays) == 2
                ),
                within=30,
            )
            record = p.nat.record
            assert record is not None and not record.reachable and record.storage
            st = p.status()["details"]["nat"]
            assert isinstance(st, dict) and st["reachability"] == "private"
            assert len(st["relays"]) == 2
            assert st["dht_mode"] == "client"
            pid = p.context.key.node_id
            assert peer.dht is not None and peer.dht.table.get(pid) is None  # DHT client
            # another node finds it through its DHT announcement and reaches its
            # storage through the connector (hole punch via an anchor)
            assert peer.nat is not None and peer.endpoint is not None
            await until(lambda: p.nat is not None and p.nat.announced_at is not None)
            await peer.endpoint.disconnect(pid)
            found = await peer.find_peers(bytes(20), 10)
            nominal = next(f for f in found if f.node_id == pid)
            assert peer.nat.records[pid].seq >= record.seq
            client = peer.storage_for(PeerAddress(nominal.node_id, "0.0.0.0", 1))
            stats = await client.stat()
            assert stats.max_bytes is None or stats.max_bytes >= 0
            kinds = {x.node_id: x.details.get("connection") for x in await peer.peer_list()}
            assert kinds[p.context.key.node_id.b32] in ("punched", "direct")
        finally:
            await p.close()
