"""The upload helper in a node (docs/helper.md): serving it when ``[helper]
enabled``, and sending this node's own convergent uploads through helpers when
``[helper] use`` says so. Called once, when the grid service builds its API backend.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from dht import DhtNode
from p2pstore.app.grid import GridApplication
from p2pstore.grid.helper import HelperService
from p2pstore.grid.helper_client import HelpedUploader
from p2pstore.grid.helper_rpc import RpcHelperClient, register_helper_rpc
from p2pstore.nat.manager import NatManager
from quic_transport import Endpoint, PeerAddress
from quic_transport.identity import NodeId

from .helper_config import SEEDS
from .service import NodeContext

log = logging.getLogger(__name__)

STATUS_TIMEOUT = 3.0
#: a whole probe: finding the helper, the connection (through the NAT connector for a
#: helper behind NAT: a hole punch, then its relays), and its status
PROBE_TIMEOUT = 20.0


class GridService(Protocol):
    """What of ``grid_service.GridService`` the wiring uses."""

    context: NodeContext
    endpoint: Endpoint | None
    dht: DhtNode | None
    nat: NatManager | None
    helper: HelperService[Any] | None
    backend: GridApplication | None


def wire_helper(service: GridService, backend: GridApplication) -> HelperService[Any] | None:
    """Serve (when enabled) and use (when asked) upload helpers; returns the served
    helper, for the node's status."""
    cfg = service.context.config
    endpoint = service.endpoint
    assert endpoint is not None
    served = None
    if cfg.helper.enabled:
        served = HelperService(
            service.context.node_dir.state_dir / "helper",
            backend.direct_uploader,
            cfg.helper.serving(reserve=cfg.storage.reserved_space),
        )
        register_helper_rpc(endpoint, served)
        log.info("serving as an upload helper (docs/helper.md)")
    if cfg.helper.use != "never":

        async def helpers() -> list[RpcHelperClient]:
            return await usable_helpers(service)

        backend.uploader = HelpedUploader(backend.direct_uploader, helpers, cfg.helper.using())
    return served


def helper_status(service: GridService) -> dict[str, Any]:
    """``details.helper`` of the node's status (docs/helper.md, "Status")."""
    doc: dict[str, Any] = {"serving": service.helper is not None}
    doc["use"] = service.context.config.helper.use
    if service.helper is not None:
        doc |= service.helper.figures()
    uploader = service.backend.uploader if service.backend is not None else None
    if isinstance(uploader, HelpedUploader):
        if uploader.uplink is not None:
            doc["measured_upload_rate"] = round(uploader.uplink)
        if uploader.helper_rates:  # docs/helper.md, "Choosing a helper"
            doc["helper_rates"] = {k: round(v) for k, v in uploader.helper_rates.items()}
    return doc


async def usable_helpers(service: GridService) -> list[RpcHelperClient]:
    """The configured helpers that answer now, are helpers and accept this node, in
    the configured order (``seeds``: the bootstrap list's seeds, in its order)."""
    ctx = service.context
    endpoint = service.endpoint
    assert endpoint is not None
    seeds = {s.node_id: PeerAddress(s.node_id, s.host, s.port) for s in ctx.bootstrap.seeds}
    wanted: list[NodeId] = []
    for entry in ctx.config.helper.helpers:
        ids = list(seeds) if entry == SEEDS else [NodeId.from_b32(entry)]
        wanted += [i for i in ids if i not in wanted and i != ctx.key.node_id]

    async def address(node_id: NodeId) -> PeerAddress | None:
        if node_id in seeds:
            return seeds[node_id]
        if service.dht is None:
            return None
        found = await service.dht.lookup_detailed(node_id)
        for c in found.contacts:
            if c.node_id == node_id:
                return PeerAddress(c.node_id, c.host, c.port)
        # a helper behind NAT is in no routing table: its signed peer record, announced
        # near its own ID, says how to reach it (hole punching or its relays)
        nat = service.nat
        mine = [a for a in found.announcements if a.node_id == node_id and a.value]
        rec = nat.learn(mine[0].value, node_id) if nat is not None and mine else None
        return None if rec is None or nat is None else nat.address_of(rec)

    async def probe(node_id: NodeId) -> RpcHelperClient | None:
        try:
            # the connector's set-up is outside the call's own timeout: bound it all
            async with asyncio.timeout(PROBE_TIMEOUT):
                peer = await asyncio.wait_for(address(node_id), STATUS_TIMEOUT * 3)
                if peer is None:
                    return None
                # as for a storage peer: a NATed helper's calls go through the connector
                nat = service.nat
                via = nat.storage_endpoint(node_id) if nat is not None else None
                client = RpcHelperClient(via or endpoint, peer)
                st = await client.status(STATUS_TIMEOUT)
        except Exception as e:
            log.info("upload helper %s not usable: %s", node_id.b32[:12], e)
            return None
        return client if st.get("enabled") is True and st.get("accepts") is True else None

    found = await asyncio.gather(*(probe(i) for i in wanted))
    return [c for c in found if c is not None]
