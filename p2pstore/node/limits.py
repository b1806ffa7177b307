"""``[limits]`` applied to a node: transport caps and the low-power profile.

Owns the translation of :class:`~p2pstore.node.config.LimitsSection` into the
settings of the parts it limits (docs/limits.md):

- :func:`transport_config`: ``max_connections`` and the bandwidth caps
  (``0`` = unlimited becomes ``None``) in the endpoint's
  :class:`~quic_transport.TransportConfig`;
- :func:`slower`: a period of background work times the profile's factor
  (``PROFILE_FACTORS``: 1 for "normal", 4 for "low-power");
- :func:`dht_config`: the DHT's periodic work (maintenance tick, bucket refresh,
  record republish, node re-announcement) slowed by that factor, republish and
  re-announcement kept well inside the lifetimes so nothing lapses (our own
  announcements get a lifetime as many times longer, at most a day);
- :func:`limits_status`: what ``status`` shows.

Invariant: the "normal" profile with no caps changes nothing (every function is
the identity on the defaults), so nodes without a ``[limits]`` section behave
exactly as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dht import DhtConfig
from quic_transport import Endpoint, TransportConfig

from .config import LimitsSection

#: republish (re-announce) at least this many times per lifetime, whatever the profile
REPUBLISH_PER_TTL = 3
#: the DHT's ceiling on an announcement's lifetime (dht/config.py)
MAX_ANNOUNCE_TTL = 24 * 3600


def transport_config(limits: LimitsSection, base: TransportConfig | None = None) -> TransportConfig:
    """``base`` (default: the transport's defaults) with the node's limits applied."""
    return dataclasses.replace(
        base or TransportConfig(),
        max_connections=limits.max_connections,
        upload_rate=limits.upload_rate or None,
        download_rate=limits.download_rate or None,
        uplink_delay_target=limits.uplink_queue_ms / 1000 or None,
    )


def slower(period: float, limits: LimitsSection) -> float:
    """A background period under the profile (multiplied by its factor)."""
    return period * limits.background_factor


def dht_config(base: DhtConfig, limits: LimitsSection) -> DhtConfig:
    """``base`` with its periodic work slowed by the profile's factor."""
    factor = limits.background_factor
    if factor == 1:
        return base
    republish = min(base.republish_interval * factor, base.record_ttl / REPUBLISH_PER_TTL)
    announce_ttl = max(base.announce_ttl, min(base.announce_ttl * factor, MAX_ANNOUNCE_TTL))
    announce = min(base.announce_interval * factor, announce_ttl / REPUBLISH_PER_TTL)
    return dataclasses.replace(
        base,
        maintenance_interval=base.maintenance_interval * factor,
        refresh_interval=base.refresh_interval * factor,
        republish_interval=max(base.republish_interval, republish),
        announce_ttl=announce_ttl,
        announce_interval=max(base.announce_interval, announce),
    )


def limits_status(limits: LimitsSection, endpoint: Endpoint | None) -> dict[str, Any]:
    """The active limits for ``status`` (rates in bytes/s, 0 = unlimited), with the
    transport's counters of how often the caps held traffic back."""
    doc: dict[str, Any] = {
        "profile": limits.profile,
        "background_factor": limits.background_factor,
        "max_connections": limits.max_connections,
        "upload_rate": limits.upload_rate,
        "download_rate": limits.download_rate,
        "uplink_queue_ms": limits.uplink_queue_ms,
    }
    if endpoint is not None:
        counters = endpoint.limits
        doc["upload_deferred"] = counters["upload_deferred"]
        doc["read_pauses"] = counters["read_pauses"]
        # the uplink's queue: the rate set now (0: none), times a standing queue set one
        doc["uplink_rate"] = counters.get("uplink_rate") or 0
        doc["uplink_engaged"] = counters.get("uplink_engaged", 0)
    return doc
