"""Whether this node serves as a relay for others, and the relay service while it
does (docs/relay.md, "Who relays").

``[relay] serve``: true or false as configured; "auto" follows what the
reachability engine reports (:meth:`RelayKeeper.set_reachable`), and until that
is known, serves when the node has a ``public_address`` configured or is an
introducer.
"""

from __future__ import annotations

import logging

from p2pstore.nat.relay.service import RelayService
from quic_transport import Endpoint

from .config import NodeConfig

log = logging.getLogger(__name__)


class RelayKeeper:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.service: RelayService | None = None
        self.reachable: bool | None = None  # set by the reachability engine
        self._endpoint: Endpoint | None = None

    def should_serve(self) -> bool:
        cfg = self.config
        if cfg.relay.serve is not None:
            return cfg.relay.serve
        if self.reachable is not None:
            return self.reachable
        return cfg.node.public_address is not None or cfg.node.introducer

    async def set_reachable(self, reachable: bool) -> None:
        """With ``serve = "auto"`` the relay service starts or stops accordingly."""
        self.reachable = reachable
        if not self.should_serve() and self.service is not None:
            service, self.service = self.service, None
            await service.close()
            log.info("relay service stopped (node not publicly reachable)")
        if self._endpoint is not None:
            self.update(self._endpoint)

    def update(self, endpoint: Endpoint) -> None:
        """Start the relay service on ``endpoint`` if it should serve and does not."""
        self._endpoint = endpoint
        if self.service is not None or not self.should_serve():
            return
        cfg = self.config
        public = cfg.node.public_address.host if cfg.node.public_address is not None else None
        self.service = RelayService(endpoint, cfg.relay.limits(), public_host=public)
        self.service.start()
        log.info("relay service started (docs/relay.md)")

    async def close(self) -> None:
        service, self.service = self.service, None
        self._endpoint = None
        if service is not None:
            await service.close()
