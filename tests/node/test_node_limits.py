"""``[limits]`` applied to a node: transport settings, the low-power profile, status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dht import DhtConfig
from p2pstore.node.config import LimitsSection, MaintenanceSection, NodeConfig
from p2pstore.node.grid_service import GridService
from p2pstore.node.limits import (
    REPUBLISH_PER_TTL,
    dht_config,
    limits_status,
    slower,
    transport_config,
)
from p2pstore.node.upkeep import keeper_interval
from quic_transport import TransportConfig

from .test_node_grid_service import context, make_dir

LOW = LimitsSection(profile="low-power")


def test_transport_config_maps_zero_to_unlimited_and_keeps_the_rest() -> None:
    base = TransportConfig(idle_timeout=7.0)
    cfg = transport_config(LimitsSection(), base)
    assert (cfg.upload_rate, cfg.download_rate, cfg.max_connections) == (None, None, 256)
    assert cfg.idle_timeout == 7.0
    cfg = transport_config(
        LimitsSection(max_connections=32, upload_rate=2_000_000, download_rate=50_000)
    )
    assert (cfg.upload_rate, cfg.download_rate, cfg.max_connections) == (2_000_000, 50_000, 32)


def test_normal_profile_changes_nothing() -> None:
    base = DhtConfig()
    assert dht_config(base, LimitsSection()) is base
    assert slower(10.0, LimitsSection()) == 10.0


def test_low_power_slows_dht_work_but_records_never_lapse() -> None:
    base = DhtConfig()
    slow = dht_config(base, LOW)
    assert slow.maintenance_interval == 4 * base.maintenance_interval
    assert slow.refresh_interval == 4 * base.refresh_interval
    assert slow.republish_interval == 4 * base.republish_interval
    assert slow.republish_interval <= slow.record_ttl / REPUBLISH_PER_TTL
    # announcements: re-announced 4x less often, living 4x longer (ratio unchanged)
    assert slow.announce_interval == 4 * base.announce_interval
    assert slow.announce_ttl == 4 * base.announce_ttl
    assert slow.announce_interval <= slow.announce_ttl / REPUBLISH_PER_TTL
    long = dht_config(DhtConfig(announce_ttl=12 * 3600, announce_interval=4 * 3600.0), LOW)
    assert long.announce_ttl == 24 * 3600 and long.announce_interval == 8 * 3600
    assert (slow.k, slow.alpha, slow.record_ttl) == (base.k, base.alpha, base.record_ttl)
    # a short record lifetime caps the slowed republish (never below the original)
    short = DhtConfig(record_ttl=6 * 3600, republish_interval=3600.0)
    assert dht_config(short, LOW).republish_interval == 2 * 3600
    tight = DhtConfig(record_ttl=3600, republish_interval=3000.0)
    assert dht_config(tight, LOW).republish_interval == 3000.0
    assert slower(10.0, LOW) == 40.0


def test_status_without_an_endpoint() -> None:
    doc = limits_status(LimitsSection(upload_rate=20_000, profile="low-power"), None)
    assert doc == {
        "profile": "low-power",
        "background_factor": 4,
        "max_connections": 256,
        "upload_rate": 20_000,
        "download_rate": 0,
        "uplink_queue_ms": 100,
    }


@pytest.mark.timeout(60)
async def test_grid_service_applies_limits_and_shows_them(tmp_path: Path) -> None:
    root = make_dir(tmp_path, "home", [], introducer=True)
    cfg = root / "p2pstore.toml"
    text = cfg.read_text()
    for key, value in (
        ("max_connections", "48"),
        ("upload_rate", '"2MB"'),
        ("download_rate", '"512KiB"'),
        ("profile", '"low-power"'),
    ):
        assert f"\n{key} = " in text
        text = "\n".join(
            f"{key} = {value}" if line.startswith(f"{key} = ") else line
            for line in text.splitlines()
        )
    text = text.replace('renew_interval = "1h"', 'renew_interval = "2h"')
    cfg.write_text(text + "\n")
    # the storage service must be on for the crawler: enable it
    cfg.write_text(cfg.read_text().replace("enabled = false", "enabled = true"))

    svc = GridService(context(root), grow_interval=0.5, feed_interval=30.0, seed_interval=30.0)
    assert (svc.grow_interval, svc.feed_interval, svc.seed_interval) == (2.0, 120.0, 120.0)
    await svc.start()
    try:
        assert svc.endpoint is not None and svc.dht is not None
        tc = svc.endpoint.config
        assert (tc.max_connections, tc.upload_rate, tc.download_rate) == (48, 2_000_000, 524_288)
        assert svc.dht.config.refresh_interval == 4 * DhtConfig().refresh_interval
        assert svc.dht.config.republish_interval == 4 * DhtConfig().republish_interval
        assert svc.lease_renewer is not None
        assert svc.lease_renewer.config.interval == 4 * 7200
        assert svc.storage is not None
        assert svc.storage.crawler._interval == 4.0
        shown = svc.status()["details"]["limits"]
        assert shown["profile"] == "low-power" and shown["background_factor"] == 4
        assert (shown["upload_rate"], shown["download_rate"]) == (2_000_000, 524_288)
        assert shown["max_connections"] == 48 and shown["read_pauses"] >= 0
        assert svc.api_backend() is not None
        info = svc._node_info()
        assert info["details"]["limits"]["profile"] == "low-power"
    finally:
        await svc.close()


def test_uplink_queue_key_maps_to_the_transport() -> None:
    assert transport_config(LimitsSection()).uplink_delay_target == 0.1
    assert transport_config(LimitsSection(uplink_queue_ms=0)).uplink_delay_target is None
    assert transport_config(LimitsSection(uplink_queue_ms=250)).uplink_delay_target == 0.25


def test_low_power_never_slows_lease_keeping_past_a_third_of_the_lease() -> None:
    """The reference keeper is the only renewer of a file linked from this node's
    drives once its uploader is gone: four times its default period (41 days) would
    outlast a 31-day lease."""
    lease = 31 * 86400
    third = lease / 3
    plain = NodeConfig(Path("p2pstore.toml"))
    assert keeper_interval(plain) == third
    assert keeper_interval(dataclasses.replace(plain, limits=LOW)) == third
    quick = dataclasses.replace(plain, maintenance=MaintenanceSection(keep_interval=86400))
    assert keeper_interval(quick) == 86400
    assert keeper_interval(dataclasses.replace(quick, limits=LOW)) == 4 * 86400
