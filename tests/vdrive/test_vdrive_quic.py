"""The node hook (``grid_vdrive_factory``) over real QUIC on 127.0.0.1: three nodes
with real endpoints and DhtNodes; vdrive.apply travels over QUIC with the caller's
proven node ID; directory objects go to an in-process storage grid."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dht.clock import LoopClock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.node import DhtNode
from dht.quic_wiring import dht_transport
from p2pstore.app.errors import AppError
from p2pstore.app.vpath import parse_vpath
from p2pstore.grid import DownloadConfig, Downloader, UploadConfig, Uploader, static_peers
from p2pstore.immutable import EncodingParams, LiteralCap
from p2pstore.node.bootstrap import BootstrapList, Seed, VdriveKey
from p2pstore.node.config import VdriveSection
from p2pstore.node.vdrive_wiring import NodeVdriveBackend, grid_vdrive_factory
from p2pstore.testing.storage_grid import StorageGrid
from p2pstore.web.errors import http_status
from quic_transport import open_endpoint
from quic_transport.identity import NodeKey

PARAMS = EncodingParams.create(2, 4, 4096)


async def test_factory_over_quic(tmp_path: Path) -> None:
    keys = [NodeKey.generate() for _ in range(3)]  # vdrive node, writer, outsider
    endpoints = [await open_endpoint(k, "127.0.0.1", 0) for k in keys]
    dhts: list[DhtNode] = []
    comps: list[NodeVdriveBackend] = []
    with StorageGrid(tmp_path / "grid", 4) as grid:
        try:
            host, port = endpoints[0].local_address
            seed = Seed(keys[0].node_id, host, port)
            trust: VdriveKey | None = None
            for i, (key, ep) in enumerate(zip(keys, endpoints, strict=True)):
                seeds = [] if i == 0 else [Contact(seed.node_id, seed.host, seed.port)]
                dht = DhtNode(
                    key.node_id,
                    dht_transport(ep),
                    clock=LoopClock(),
                    seeds=seeds,
                    config=DhtConfig(k=4, request_timeout=2.0),
                )
                await dht.start(bootstrap=bool(seeds))
                dhts.append(dht)
                find = static_peers(grid.servers)

                def storage_for(gs: Any, owner: Any = key.node_id) -> Any:
                    return gs.client(owner)

                files = SimpleNamespace(
                    direct_uploader=Uploader(
                        find, storage_for, UploadConfig(happy=3), params=PARAMS
                    ),
                    downloader=Downloader(find, storage_for, DownloadConfig()),
                )
                root = tmp_path / f"n{i}"
                ctx = SimpleNamespace(
                    key=key,
                    node_dir=SimpleNamespace(
                        private_dir=root / "private", state_dir=root / "state"
                    ),
                    bootstrap=BootstrapList((seed,) if i else (), trust),
                    config=SimpleNamespace(
                        node=SimpleNamespace(introducer=i == 0),
                        vdrive=VdriveSection(writers=(keys[1].node_id.b32,)),
                    ),
                    convergence_secret=bytes(32),
                    clock=LoopClock().time,
                )
                service = SimpleNamespace(context=ctx, endpoint=ep, dht=dht, backend=files)
                comp = grid_vdrive_factory(service)
                comps.append(comp)
                if i == 0:
                    trust = comp.node.line
                    assert trust is not None and trust.read_secret is not None
                    assert (root / "private" / "vdrive-shared.secret").stat().st_mode & 0o077 == 0
            await dhts[0].bootstrap()
            vd, writer, outsider = comps
            cap = LiteralCap(b"tiny file")
            seq = await writer.vdrive_mkdir(parse_vpath("/a"), parents=False, expected_sequence=0)
            assert seq == 1
            assert (
                await writer.vdrive_link(
                    parse_vpath("/a/t"), cap, replace=False, expected_sequence=1
                )
                == 2
            )
            entry = await outsider.vdrive_stat(parse_vpath("/a/t"))
            assert entry.cap == cap.to_string()
            try:
                await outsider.vdrive_mkdir(
                    parse_vpath("/b"), parents=False, expected_sequence=None
                )
            except AppError as e:
                assert e.code == "vdrive-refused" and http_status(e) == 403
            else:
                raise AssertionError("outsider could write")
            # the vdrive node's own view, and its restart from its head file
            assert (await vd.vdrive_list(parse_vpath("/a"))).sequence == 2
            head = tmp_path / "n0" / "private" / "vdrive-shared.head.json"
            assert head.exists() and head.stat().st_mode & 0o077 == 0
            # private drive over the real DHT
            await outsider.vdrive_link(
                parse_vpath("private:/p"), cap, replace=False, expected_sequence=None
            )
            assert [
                e.name for e in (await outsider.vdrive_list(parse_vpath("private:/"))).entries
            ] == ["p"]
        finally:
            for c in comps:
                await c.close()
            for d in dhts:
                await d.close()
            for ep in endpoints:
                await ep.aclose()
