"""What keeps files alive over time, wired for one node (docs/maintenance.md,
docs/node.md "Leases"):

- the lease book (``private/leases.log``) and the renewer that extends, at every
  peer holding a share, this node's lease on each file it uploaded;
- the maintainer (``[maintenance]``): a storage node checks the storage indexes it
  holds, repairs them when it is their custodian, moves shares held outside the
  download window nearer, and scrubs its own shares;
- the pins (``private/pins.json``) and the reference keeper: every third of the
  lease duration, this node renews its lease on every file reachable from the
  drives it publishes (its private drive; the shared drive on the vdrive node) and
  on every pinned file (``[maintenance] keep_references``);
- corrupt copies reported: a verify that finds a share copy failing its hash check
  asks its holder (``maintenance.suspect``) to scrub that storage index now; the
  holder checks its own bytes and deletes what is corrupt (docs/maintenance.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from p2pstore.app.drive import VdriveOperations
from p2pstore.app.grid import GridApplication
from p2pstore.app.keeper import KeeperConfig, PinBook, ReferenceKeeper
from p2pstore.app.keeper import VerifyCap as KeptCap
from p2pstore.app.vpath import VPath
from p2pstore.grid.custodian import Maintainer
from p2pstore.grid.health import Health, HealthConfig
from p2pstore.grid.lease_renewal import LeaseBook, LeaseRenewer, RenewerConfig
from p2pstore.grid.maintenance import MaintenanceConfig
from p2pstore.grid.mutable import MutableConfig, MutableFiles, renew_any
from p2pstore.grid.peers import FindPeers, StorageFor
from p2pstore.grid.quality import QualitySource
from p2pstore.immutable import LiteralCap, ReadCap, VerifyCap
from p2pstore.mutable import VerifyCap as MutableVerifyCap
from p2pstore.storage.disk_layout import check_storage_index
from p2pstore.storage.errors import StorageError
from p2pstore.storage.server import StorageServer
from quic_transport import PeerAddress
from quic_transport.errors import RpcError

from .config import NodeConfig
from .grid_params import effective_encoding
from .limits import slower
from .service import NodeContext

log = logging.getLogger(__name__)

SUSPECT_METHOD = "maintenance.suspect"
#: (peer, method, body) -> reply: an RPC to another node
PeerCall = Callable[[PeerAddress, str, Any], Awaitable[Any]]


class _Ctx(Protocol):
    @property
    def peer_id(self) -> Any: ...


class _Registry(Protocol):
    def register(self, method: str, handler: Any) -> None: ...


def maintenance_config(ctx: NodeContext, happy: int) -> MaintenanceConfig:
    """``[maintenance]`` as the maintainer takes it (the low-power profile slows the
    checks down like every other background job)."""
    cfg = ctx.config
    m = cfg.maintenance
    return MaintenanceConfig(
        enabled=m.enabled,
        check_interval=slower(float(m.check_interval), cfg.limits),
        min_shares=m.min_shares or None,
        happy=m.min_holders or happy,
        pace=slower(float(m.pace), cfg.limits),
        verify_interval=float(m.verify_interval),
    )


class BookView:
    """The lease book as the reference keeper sees it (``UploadBook``): ``book()``
    is the book, or None (``renew_leases = false``: it holds nothing)."""

    def __init__(self, book: Callable[[], LeaseBook | None], clock: Callable[[], float]) -> None:
        self.book, self.clock = book, clock

    def holds(self, vc: KeptCap) -> bool:
        book = self.book()
        return book is not None and vc in book

    def seen_linked(self, vc: KeptCap) -> bool:
        book = self.book()
        return book is not None and book.is_linked(vc)

    def adopt(self, vc: KeptCap) -> None:
        book = self.book()
        if book is not None:
            book.record(vc, self.clock())


def keeper_interval(cfg: NodeConfig) -> float:
    """Seconds between two rounds of the reference keeper: ``[maintenance]
    keep_interval`` (0: a third of the lease), slowed by the limits profile but
    never past a third of the lease, or files only the keeper renews would lapse
    between two rounds."""
    third = cfg.storage.lease_duration / 3
    return min(slower(float(cfg.maintenance.keep_interval or third), cfg.limits), third)


class Upkeep:
    """The lease book, its renewer and the maintainer of one node."""

    def __init__(self, ctx: NodeContext, renewer_config: RenewerConfig | None = None) -> None:
        self.ctx = ctx
        self.renewer_config = renewer_config
        self.book: LeaseBook | None = None
        self.renewer: LeaseRenewer | None = None
        self.maintainer: Maintainer[PeerAddress] | None = None
        self.pins = PinBook.load(ctx.node_dir.private_dir / "pins.json")
        #: what this node uploads with: its [client] keys, else the grid's p2ps-params
        self.encoding = effective_encoding(ctx.config, ctx.bootstrap.params)
        self.keeper: ReferenceKeeper | None = None
        self._call: PeerCall | None = None

    def start(
        self,
        find_peers: FindPeers[PeerAddress],
        storage_for: StorageFor[PeerAddress],
        server: StorageServer | None,
        quality: QualitySource | None = None,
        ready: Callable[[], bool] | None = None,
        call: PeerCall | None = None,
    ) -> None:
        """``call``: how to reach another node (to report corrupt copies)."""
        cfg = self.ctx.config
        self._call = call
        health: Health[PeerAddress] = Health(
            find_peers, storage_for, HealthConfig(happy=self.encoding.happy), quality=quality
        )
        health.on_corrupt = self.report_corrupt
        if cfg.client.renew_leases:
            self._start_leases(health)
        mc = maintenance_config(self.ctx, self.encoding.happy)
        if server is not None and mc.enabled:
            self.maintainer = Maintainer(
                server, self.ctx.key.node_id, health, mc, ready=ready, slot_replicas=self.encoding.n
            )
            self.maintainer.start()

    async def report_corrupt(self, peer: PeerAddress, si: bytes, share: int, why: str) -> None:
        """``Health.on_corrupt``: ask the holder of a corrupt copy to scrub it."""
        if peer.node_id == self.ctx.key.node_id:
            if self.maintainer is not None:
                await self.maintainer.suspect(si)
            return
        if self._call is None:
            return
        try:
            await self._call(peer, SUSPECT_METHOD, {"si": si, "share": share})
        except Exception as e:  # best effort: its own scrub finds it later
            log.info("telling %s of a corrupt share failed: %s", peer.node_id.short(), e)

    def serve(self, registry: _Registry) -> None:
        """Answer ``maintenance.suspect {si, share}``: ``{"scheduled": bool}``."""

        async def handler(ctx: _Ctx, body: Any) -> dict[str, Any]:
            share = body.get("share") if isinstance(body, dict) else None
            if (
                not isinstance(body, dict)
                or set(body) != {"si", "share"}
                or not isinstance(share, int)
                or isinstance(share, bool)
                or not 0 <= share < 256
            ):
                raise RpcError("bad-request", "expected {si: storage index, share: 0..255}")
            try:
                si = check_storage_index(body["si"])
            except StorageError as e:
                raise RpcError("bad-request", str(e)) from None
            m = self.maintainer
            scheduled = m is not None and await m.suspect(si)
            if scheduled:
                log.info(
                    "a peer reports share %d of a storage index here corrupt: scrubbing", share
                )
            return {"scheduled": scheduled}

        registry.register(SUSPECT_METHOD, handler)

    def _start_leases(self, health: Health[PeerAddress]) -> None:
        cfg = self.ctx.config
        self.book = LeaseBook.load(self.ctx.node_dir.private_dir / "leases.log")
        config = self.renewer_config or RenewerConfig(
            interval=slower(float(cfg.client.renew_interval), cfg.limits),
            renew_after=cfg.storage.lease_duration / 3,
        )
        # mutable files' roots and latest versions too (docs/mutable.md, "Leases")
        mutable = MutableFiles(
            health.find_peers, health.storage_for, None, MutableConfig(replicas=self.encoding.n)
        )
        renew = renew_any(health.renew, mutable)
        self.renewer = LeaseRenewer(self.book, renew, config, clock=self.ctx.clock)
        # a first round soon after start, so a node restarted more often than the
        # interval still renews
        self.renewer.start(first_delay=min(300.0, config.interval) * random.uniform(0.8, 1.2))

    def keep_references(self, app: GridApplication) -> None:
        """Hand the pins to the API backend and start the reference keeper (once the
        backend, and with it the vdrive, exists)."""
        app.pin_book = self.pins
        app.health.on_corrupt = self.report_corrupt
        app.mutable.on_published = self.track  # it keeps the mutable files it publishes
        cfg = self.ctx.config
        if not cfg.maintenance.keep_references or self.keeper is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # built outside the node's loop (tests): nothing runs in the background
        serves = cfg.vdrive.serve if cfg.vdrive.serve is not None else cfg.node.introducer
        roots = [VPath("private", ())] + ([VPath("shared", ())] if serves else [])
        interval = keeper_interval(cfg)
        config = KeeperConfig(
            interval=interval, pace=slower(float(cfg.maintenance.pace), cfg.limits)
        )
        drives = app if app.vdrive is not None else None
        vd = app.vdrive if isinstance(app.vdrive, VdriveOperations) else None
        renew = renew_any(app.health.renew, app.mutable)  # pins of mutable files too
        self.keeper = ReferenceKeeper(
            drives,
            roots,
            self.pins,
            renew,
            config,
            on_walked=self._follow_links,
            book=BookView(lambda: self.book, self.ctx.clock),
            list_dircap=(lambda dircap: vd.vdrive_list_dircap(dircap, ())) if vd else None,
        )
        if vd is not None:  # what a change links is renewed at once, not at the next round
            vd.on_linked = self.keeper.keep_linked
        self.keeper.start(first_delay=min(600.0, interval) * random.uniform(0.8, 1.2))

    def _follow_links(self, own: set[KeptCap], reached: set[KeptCap]) -> dict[str, int]:
        """A complete walk of the drives this node publishes: the lease book marks
        its uploads found there and lets go of those unlinked since (docs/node.md,
        "Leases")."""
        if self.book is None:
            return {}
        linked, let_go = self.book.follow_links(own, reached)
        return {"uploads_linked": linked, "uploads_let_go": let_go}

    def track(self, cap: ReadCap | VerifyCap | LiteralCap | MutableVerifyCap) -> None:
        """A file this node uploaded (new, or already stored): renewed from now on."""
        if self.book is not None:
            self.book.track(cap, self.ctx.clock())

    async def close(self) -> None:
        if self.keeper is not None:
            await self.keeper.close()
        if self.maintainer is not None:
            await self.maintainer.close()
        if self.renewer is not None:
            await self.renewer.close()
            self.renewer = None
        if self.book is not None:
            self.book.close()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.renewer is not None:
            out["leases"] = self.renewer.status()
        if self.maintainer is not None:
            out["maintenance"] = self.maintainer.status()
        else:
            out["maintenance"] = {"enabled": False}
        if self.keeper is not None:
            out["maintenance"]["references"] = self.keeper.status()
        out["maintenance"]["pins"] = len(self.pins)
        return out
