"""Node files and config of the vdrive: the introducer's p2ps-vdrive line (with the
read secret), [vdrive] config, secret files, and refusing inconsistent setups."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.node.bootstrap import VdriveKey, parse_bootstrap
from p2pstore.node.config import load_config
from p2pstore.node.nodedir import CreateOptions, create_node_dir
from p2pstore.node.vdrive_wiring import SHARED_SECRET_FILE, build_node_vdrive, load_or_create_secret
from p2pstore.testing.vdrive import MemoryRecordDht
from p2pstore.vdrive.errors import VdriveLocalError
from p2pstore.vdrive.objects import MemoryObjectStore
from quic_transport.identity import NodeKey


def test_introducer_list_carries_key_and_read_secret(tmp_path: Path) -> None:
    nd, key = create_node_dir(tmp_path / "intro", CreateOptions(introducer=True))
    text = nd.default_bootstrap_path.read_text()
    bl = parse_bootstrap(text)
    assert bl.vdrive is not None and bl.vdrive.public_key == key.public_key
    secret = load_or_create_secret(nd.private_dir / SHARED_SECRET_FILE)
    assert bl.vdrive.read_secret == secret
    assert "read_secret=True" in repr(bl.vdrive) and bl.vdrive.to_line() not in repr(bl.vdrive)
    # a node created from that line keeps the secret; a plain node serves nothing
    nd2, _ = create_node_dir(tmp_path / "node", CreateOptions(bootstrap=bl))
    assert parse_bootstrap(nd2.default_bootstrap_path.read_text()).vdrive == bl.vdrive
    cfg = load_config(nd2.config_path)
    assert cfg.vdrive.serve is False and load_config(nd.config_path).vdrive.serve is True
    # a key-only line (no secret) still parses
    assert parse_bootstrap(VdriveKey(key.public_key).to_line()).vdrive == VdriveKey(key.public_key)


def test_vdrive_config(tmp_path: Path) -> None:
    nid = NodeKey.generate().node_id.b32
    p = tmp_path / "p2pstore.toml"
    p.write_text(f'[vdrive]\nserve = true\nwriters = ["{nid.upper()}"]\nopen = true\n')
    cfg = load_config(p)
    assert (cfg.vdrive.serve, cfg.vdrive.writers, cfg.vdrive.open) == (True, (nid,), True)


def test_inconsistent_setups_refused(tmp_path: Path) -> None:
    key = NodeKey.generate()

    def build(trust: VdriveKey | None) -> object:
        return build_node_vdrive(
            key=key,
            private_dir=tmp_path / "private",
            state_dir=tmp_path / "state",
            trust=trust,
            serve=True,
            dht=MemoryRecordDht(),
            store=MemoryObjectStore(),
            call=None,
        )

    with pytest.raises(VdriveLocalError):
        build(VdriveKey(NodeKey.generate().public_key))
    with pytest.raises(VdriveLocalError):
        build(VdriveKey(key.public_key, read_secret=bytes(32)))
    nv = build(None)
    assert nv.line is not None and nv.line.public_key == key.public_key  # type: ignore[attr-defined]
    (tmp_path / "private" / SHARED_SECRET_FILE).chmod(0o644)
    with pytest.raises(Exception, match="chmod"):
        build(None)


async def test_restarted_node_publishes_its_heads_again(tmp_path: Path) -> None:
    import asyncio

    from p2pstore.app.vpath import parse_vpath
    from p2pstore.node.vdrive_wiring import NodeVdriveBackend
    from p2pstore.vdrive.ops import Mkdir

    key, store = NodeKey.generate(), MemoryObjectStore()

    def build(dht: MemoryRecordDht) -> NodeVdriveBackend:
        nv = build_node_vdrive(
            key=key,
            private_dir=tmp_path / "private",
            state_dir=tmp_path / "state",
            trust=None,
            serve=True,
            dht=dht,
            store=store,
            call=None,
        )
        return NodeVdriveBackend(nv, retry=0.01)

    first = build(MemoryRecordDht())
    await first.vdrive_mkdir(parse_vpath("/a"), parents=False, expected_sequence=None)
    await first.vdrive_mkdir(parse_vpath("private:/b"), parents=False, expected_sequence=None)
    assert first.node.shared_writer is not None
    await first.node.shared_writer.apply(Mkdir(("c",)), expected_sequence=1, writer=key.node_id)
    # restart against a DHT that lost everything and is unreachable at first
    dht = MemoryRecordDht()
    dht.down = True
    second = build(dht)
    second.start()
    await asyncio.sleep(0.05)
    assert dht.publishes == 0
    dht.down = False
    dht.black_hole = True  # reachable, but publishing stores nothing (not joined yet)
    await asyncio.sleep(0.05)
    assert dht.publishes >= 2 and not dht.records
    dht.black_hole = False
    for _ in range(100):
        if len(dht.records) == 2:
            break
        await asyncio.sleep(0.01)
    await second.close()
    assert len(dht.records) == 2
    assert (await second.vdrive_list(parse_vpath("/"))).sequence == 2
