"""Starting this node's lease renewal (docs/node.md, "Leases"): the lease book in
``private/leases.log`` and a renewer that extends, at every peer holding a share,
the lease on each file this node uploaded.
"""

from __future__ import annotations

import random

from p2pstore.grid.health import Health, HealthConfig
from p2pstore.grid.lease_renewal import LeaseBook, LeaseRenewer, RenewerConfig
from p2pstore.grid.peers import FindPeers, StorageFor
from quic_transport import PeerAddress

from .limits import slower
from .service import NodeContext


def start_lease_renewal(
    ctx: NodeContext,
    find_peers: FindPeers[PeerAddress],
    storage_for: StorageFor[PeerAddress],
    renewer_config: RenewerConfig | None,
) -> tuple[LeaseBook, LeaseRenewer]:
    cfg = ctx.config
    book = LeaseBook.load(ctx.node_dir.private_dir / "leases.log")
    config = renewer_config or RenewerConfig(
        interval=slower(float(cfg.client.renew_interval), cfg.limits),
        renew_after=cfg.storage.lease_duration / 3,
    )
    health: Health[PeerAddress] = Health(
        find_peers, storage_for, HealthConfig(happy=cfg.client.shares_happy)
    )
    renewer = LeaseRenewer(book, health.renew, config, clock=ctx.clock)
    # a first round soon after start, so a node restarted more often than the
    # interval still renews
    renewer.start(first_delay=min(300.0, config.interval) * random.uniform(0.8, 1.2))
    return book, renewer
