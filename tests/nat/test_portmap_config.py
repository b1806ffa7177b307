"""``[portmap]`` in p2pstore.toml, and the port mapper inside GridService: off on
loopback (so local grids and tests never wait on it), its status in the node status."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.node.address import HostPort
from p2pstore.node.config import NodeSection, PortmapSection, StorageSection, load_config
from p2pstore.node.config_template import render_config
from p2pstore.node.errors import ConfigError
from p2pstore.node.grid_service import GridService
from tests.node.test_node_grid_service import context, make_dir


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p2pstore.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).portmap == PortmapSection(True, 7200)
    node, storage = NodeSection(listen=HostPort("0.0.0.0", 3456)), StorageSection()
    text = render_config(node, storage)
    assert "[portmap]" in text and "enabled = true" in text
    assert load_config(write(tmp_path, text)).portmap == PortmapSection()
    custom = PortmapSection(enabled=False, lifetime=3 * 3600 + 60)
    loaded = load_config(write(tmp_path, render_config(node, storage, portmap=custom)))
    assert loaded.portmap == custom


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[portmap]\nenabled = 1\n", "[portmap] enabled", "true or false"),
        ('[portmap]\nlifetime = "30s"\n', "[portmap] lifetime", "minimum of 120"),
        ('[portmap]\nlifetime = "2d"\n', "[portmap] lifetime", "maximum of 86400"),
        ("[portmap]\nlifetime = -5\n", "[portmap] lifetime", ""),
        ("[portmap]\nenable = true\n", "[portmap] enable", "unknown key"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key and problem in info.value.problem


async def test_grid_service_on_loopback_has_port_mapping_off(tmp_path: Path) -> None:
    svc = GridService(context(make_dir(tmp_path, "n", [])))
    await svc.start()
    try:
        pm = svc.port_mapper
        assert pm is not None and pm.mapped_address() is None
        assert pm.status() == {"state": "off", "reason": "listening on loopback"}
        assert svc.status()["details"]["portmap"]["state"] == "off"
        assert svc._node_info()["portmap"]["reason"] == "listening on loopback"
    finally:
        await svc.close()
    assert svc.port_mapper is not None and svc.port_mapper.status()["state"] == "off"


async def test_grid_service_passes_the_config_to_the_mapper(tmp_path: Path) -> None:
    root = make_dir(tmp_path, "n", [])
    cfg = root / "p2pstore.toml"
    cfg.write_text(cfg.read_text().replace('lifetime = "2h"', 'lifetime = "10m"'))
    svc = GridService(context(root))
    await svc.start()
    try:
        assert svc.port_mapper is not None and svc.port_mapper.settings.lifetime == 600
    finally:
        await svc.close()
