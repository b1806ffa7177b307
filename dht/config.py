"""Tunable parameters of a DHT node, with the defaults docs/dht.md justifies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DhtConfig:
    k: int = 20  # bucket size, replication factor, lookup result size
    alpha: int = 3  # requests in flight per lookup
    beta: int | None = None  # closest answered before a lookup stops; None = k (strict)
    request_timeout: float = 5.0  # seconds per request; a dead peer costs at most this
    slow_after: float = 1.0  # an unanswered request stops holding an alpha slot after this
    max_queries: int = 400  # per lookup
    stale_failures: int = 2  # consecutive failures before eviction when a replacement waits
    max_failures: int = 5  # consecutive failures before eviction otherwise
    ping_after: float = 900.0  # a full bucket's oldest contact seen this recently is not pinged
    ping_attempts: int = 2  # tries when pinging the oldest contact of a full bucket
    join_refresh_max: int = 8  # at most this many empty-bucket lookups when joining
    refresh_interval: float = 3600.0  # a bucket with no lookup for this long is refreshed
    maintenance_interval: float = 60.0  # mean period of the maintenance tick (jittered)
    max_refresh_per_tick: int = 2  # bucket refreshes per tick, so refresh is spread out
    republish_interval: float = 3600.0  # mean period between republishes of a record
    record_ttl: int = 24 * 3600  # lifetime given to records this node publishes
    rebootstrap_backoff_max: float = 600.0  # re-bootstrap retry ceiling when table is empty
    store_max_records: int = 20_000
    store_max_bytes: int = 32 * 1024 * 1024
    ann_max_count: int = 5000  # node announcements held for others (one per announcer)
    ann_max_returned: int = 8  # announcements per find_node/get response (wire max 20)
    announce_ttl: int = 3600  # lifetime given to our own announcement
    announce_interval: float = 1200.0  # mean period between re-announcements

    def __post_init__(self) -> None:
        if self.k < 1 or self.k > 20:
            raise ValueError("k must be in 1..20 (responses carry at most 20 contacts)")
        if self.alpha < 1:
            raise ValueError("alpha must be positive")
        if not 0 <= self.ann_max_returned <= 20:
            raise ValueError("ann_max_returned must be in 0..20")
        if not 0 < self.announce_ttl <= 24 * 3600 or self.announce_interval <= 0:
            raise ValueError("announce_ttl must be in 1..86400 s, announce_interval positive")
        if self.request_timeout <= 0 or self.maintenance_interval <= 0:
            raise ValueError("timeouts and intervals must be positive")
