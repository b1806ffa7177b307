"""GridService runs the relay service per ``[relay] serve`` (docs/relay.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2pstore.nat.relay.client import RelayClient
from p2pstore.node.grid_service import GridService
from quic_transport import NodeKey, PeerAddress, open_endpoint

from .test_node_grid_service import context, make_dir, seed_of

pytestmark = pytest.mark.timeout(90)


def set_serve(root: Path, value: str) -> None:
    path = root / "p2pstore.toml"
    path.write_text(re.sub(r'(?m)^serve = "auto"$', f"serve = {value}", path.read_text()))


async def test_auto_serves_on_introducers_and_follows_reachability(tmp_path: Path) -> None:
    intro = GridService(context(make_dir(tmp_path, "intro", [], introducer=True)))
    await intro.start()
    node = GridService(context(make_dir(tmp_path, "n", [seed_of(intro)])))
    off_root = make_dir(tmp_path, "off", [seed_of(intro)])
    set_serve(off_root, "false")
    off = GridService(context(off_root))
    await node.start()
    await off.start()
    try:
        assert intro.relay_service is not None and intro.relay_service.serving
        assert intro.status()["details"]["relay_service"]["serving"] is True
        assert node.relay_service is None and not node.relay_should_serve()
        await node.set_relay_reachable(True)
        assert node.relay_service is not None
        await off.set_relay_reachable(True)
        assert off.relay_service is None  # serve = false wins

        # the node behind "NAT" reserves on the introducer; the other node reaches
        # its storage server through the relayed port
        assert node.endpoint is not None and off.endpoint is not None
        client = RelayClient(node.endpoint)
        try:
            s = seed_of(intro)
            res = await client.reserve(PeerAddress(s.node_id, s.host, s.port))
            # a fresh endpoint (the DHT may connect off and node directly meanwhile)
            stranger = await open_endpoint(NodeKey.generate(), "127.0.0.1", 0)
            try:
                stat = await stranger.call(
                    PeerAddress(node.context.key.node_id, res.host, res.port),
                    "storage.stat",
                    {},
                )
            finally:
                await stranger.aclose()
            assert isinstance(stat, dict)
            (entry,) = intro.status()["details"]["relay_service"]["reservations"]
            assert entry["peer"] == node.context.key.node_id.b32 and entry["circuits"] == 1
        finally:
            await client.close()

        await node.set_relay_reachable(False)
        assert node.relay_service is None
    finally:
        for s in (off, node, intro):
            await s.close()
    assert intro.relay_service is None
