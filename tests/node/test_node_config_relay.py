"""The ``[relay]`` config section (p2pstore/node/config.py, docs/relay.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pstore.nat.relay.limits import RelayLimits
from p2pstore.node.config import (
    NodeSection,
    RelaySection,
    StorageSection,
    config_from_dict,
    load_config,
)
from p2pstore.node.config_template import render_config
from p2pstore.node.errors import ConfigError


@pytest.mark.parametrize("serve", [None, True, False])
def test_rendered_relay_section_loads_back(tmp_path: Path, serve: bool | None) -> None:
    relay = RelaySection(
        serve=serve,
        max_reservations=5,
        max_reservations_per_peer=1,
        max_circuits=3,
        max_bytes=0,
        max_rate=250_000,
        lifetime=120,
        max_duration=0,
        circuit_idle=300,
    )
    path = tmp_path / "p2pstore.toml"
    path.write_text(render_config(NodeSection(), StorageSection(), relay=relay))
    assert load_config(path).relay == relay


def test_defaults_and_limits() -> None:
    cfg = config_from_dict({}, Path("p2pstore.toml"))
    assert cfg.relay == RelaySection() and cfg.relay.serve is None
    lim = cfg.relay.limits()
    assert isinstance(lim, RelayLimits)
    assert (lim.max_bytes, lim.max_rate, lim.lifetime) == (1 << 30, 1_000_000, 600.0)
    cfg = config_from_dict(
        {"relay": {"serve": True, "max_bytes": "10MB", "max_rate": "0", "lifetime": "5m"}},
        Path("p2pstore.toml"),
    )
    assert cfg.relay.serve is True
    assert (cfg.relay.max_bytes, cfg.relay.max_rate, cfg.relay.lifetime) == (10**7, 0, 300)


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ({"serve": "yes"}, "[relay] serve", 'expected "auto", true or false'),
        ({"max_reservations": 0}, "[relay] max_reservations", "out of range"),
        ({"max_circuits": True}, "[relay] max_circuits", "expected an integer"),
        ({"max_bytes": "lots"}, "[relay] max_bytes", "not a size"),
        ({"lifetime": "5s"}, "[relay] lifetime", "shorter than the minimum"),
        ({"circuit_idle": "30s"}, "[relay] circuit_idle", "shorter than the minimum"),
        (
            {"max_reservations": 2, "max_reservations_per_peer": 3},
            "[relay] max_reservations_per_peer",
            "must not exceed",
        ),
        ({"lifetime": "1h", "max_duration": "10m"}, "[relay] max_duration", "at least lifetime"),
        ({"bogus": 1}, "[relay] bogus", "unknown key"),
    ],
)
def test_bad_relay_values_name_the_key(table: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"relay": table}, Path("p2pstore.toml"))
    assert e.value.key == key and problem in e.value.problem
