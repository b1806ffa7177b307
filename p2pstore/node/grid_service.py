"""The assembled node: QUIC endpoint + Kademlia DHT + storage server + grid client.

:class:`GridService` is the runner's default :class:`~p2pstore.node.service.NodeService`
(``p2pstore run DIR``). ``start()`` opens the QUIC endpoint, starts the storage
service when ``[storage] enabled`` (its uploads from a peer that goes away are
dropped at once), the DHT, NAT and joining; ``api_backend()`` gives the HTTP API a
:class:`~p2pstore.app.grid.GridApplication` whose ``find_peers`` is a DHT lookup
filtered to storage peers (:mod:`p2pstore.grid.storage_peers`) and whose
``storage_for`` is a QUIC storage client (this node's own server directly).

Joining, retries and growing the table: docs/node.md, "Joining and rejoining".

Invariants:
- Every background task (join/maintenance loop) belongs to the service and ends in
  :meth:`close`; ``close()`` undoes a partial ``start()``.
- Shutdown order: the HTTP API is closed by the runner first; then the backend
  refuses new work and cancels running uploads (they abort their share uploads),
  then the join loop, the known-peers feed (one last time), the DHT, the storage
  service (incomplete uploads stay in ``incoming/`` and are removed; complete
  shares are untouched), and last the endpoint.
- Leases and maintenance (docs/node.md, "Leases"; docs/maintenance.md;
  :mod:`.upkeep`): every successful upload through the backend is recorded in the
  lease book and renewed; the renewer closes before the DHT. Mutable files' rollback
  guard is ``state/mutable_seen.json`` (docs/mutable.md).
- The known-peers store is fed from the routing table every ``feed_interval`` and
  at close; the runner writes it to ``state/known_peers.json``.
- Components and their docs: the relay service (``[relay] serve``, docs/relay.md),
  ``[limits]`` and the low-power profile (docs/limits.md, :mod:`.limits`), peer
  quality for placement from this node's own uptime observations (docs/grid.md,
  "Placement preference"), the NAT manager and its ``announced_peers`` /
  ``reachability`` hooks (docs/nat.md, :mod:`.nat_wiring`), the port mapper
  (docs/portmap.md). Each closes in the order of :meth:`close`: NAT before the
  DHT, the relay before storage, the port mapping just before the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dht import Announcement, Contact, DhtConfig, DhtNode, LoopClock
from dht.quic_wiring import dht_transport
from p2pstore import __version__
from p2pstore.app.contract import PeerInfo
from p2pstore.app.grid import GridApplication, VdriveComponent
from p2pstore.base.tasks import TaskOwner
from p2pstore.grid.helper import HelperService
from p2pstore.grid.lease_renewal import LeaseBook, LeaseRenewer, RenewerConfig
from p2pstore.grid.quality import PeerQuality
from p2pstore.grid.storage_peers import StoragePeers
from p2pstore.grid.upload import UploadResult
from p2pstore.grid.uptime import ObservingTransport, UptimeTracker
from p2pstore.immutable import EncodingParams
from p2pstore.immutable.allocator import tune_allocator
from p2pstore.nat.manager import NatManager
from p2pstore.nat.portmap.mapper import PortMapper
from p2pstore.nat.relay.service import RelayService
from p2pstore.storage import LocalStorageClient, StorageAPI, StorageConfig, StorageService
from p2pstore.storage.bulk import QuicStorageClient, register_storage_streams
from p2pstore.vdrive import SeenStore
from quic_transport import Endpoint, LocalError, PeerAddress, RpcError, addrclass, open_endpoint
from quic_transport.identity import NodeId

from .advertise import advertised_address
from .bootstrap import Seed
from .helper_wiring import helper_status, wire_helper
from .join import JoinReport, contact_any, join_candidates
from .limits import dht_config, limits_status, slower, transport_config
from .nat_wiring import make_nat_manager, nat_hooks
from .peer_view import list_peers
from .relay_keeper import RelayKeeper
from .seed_watch import Nicknames, SeedWatch
from .service import NodeContext, ServiceStatus
from .storage_disk import disk_usage, raise_bind_oserror, remove_stale_spools
from .upkeep import Upkeep

log = logging.getLogger(__name__)
STORAGE_RESCAN_SECONDS = 60.0
GROW_MAX = 600.0  # longest pause between self-lookups while the table stays below k


#: ``announced_peers(announcements)``: the storage peers a lookup's node announcements
#: describe (the reachability wiring decodes the peer records in their values).
AnnouncedPeers = Callable[[Sequence[Announcement]], Sequence[PeerAddress]]


class VdriveFactory(Protocol):
    """The hook for the vdrive package: called once by :meth:`GridService.api_backend`
    with the running service (endpoint, DHT, key, grid backend for files) and
    returns the component serving the ``vdrive_*`` API calls. If the component has
    ``async close()``, the service calls it first at shutdown."""

    def __call__(self, service: GridService) -> VdriveComponent: ...


class GridService:
    """See the module docstring."""

    def __init__(
        self,
        context: NodeContext,
        *,
        vdrive_factory: VdriveFactory | None = None,
        join_enough: int = 3,
        grow_interval: float = 10.0,
        feed_interval: float = 30.0,
        retry_max: float = 60.0,
        probe_timeout: float = 5.0,
        seed_interval: float = 600.0,
        renewer_config: RenewerConfig | None = None,
    ) -> None:
        self.context = context
        self.vdrive_factory = vdrive_factory
        self.join_enough = join_enough
        limits = context.config.limits
        self.grow_interval = slower(grow_interval, limits)
        self.feed_interval = slower(feed_interval, limits)
        self.retry_max = retry_max
        self.probe_timeout = probe_timeout
        self.seed_interval = slower(seed_interval, limits)
        self.upkeep = Upkeep(context, renewer_config)
        self.started_at: float | None = None
        self.seed_watch: SeedWatch | None = None
        self.nicknames: Nicknames | None = None
        self.endpoint: Endpoint | None = None
        self.dht: DhtNode | None = None
        self.storage: StorageService | None = None
        self.backend: GridApplication | None = None
        self.vdrive: VdriveComponent | None = None
        self.nat: NatManager | None = None
        self.storage_peers = StoragePeers(self._probe_storage)
        self.uptime = UptimeTracker()
        #: NAT wiring hooks (see the module docstring); None = not wired
        self.announced_peers: AnnouncedPeers | None = None
        self.reachability: Callable[[NodeId], bool | None] | None = None
        self.last_join: JoinReport | None = None
        self.joined_at: float | None = None
        self._tasks = TaskOwner()  # the join loop and the seed watch
        self._bound: tuple[str, int] | None = None
        self._self_address: PeerAddress | None = None
        self._storage_used = 0
        self._storage_scanned_at: float | None = None
        self.spool_dir = context.node_dir.state_dir / "spool"
        self.relay = RelayKeeper(context.config)  # [relay] serve (docs/relay.md)
        self.port_mapper: PortMapper | None = None  # docs/portmap.md
        self.helper: HelperService[Any] | None = None  # [helper] enabled

    def __repr__(self) -> str:
        return f"GridService({self.context.key.node_id.b32})"

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        tune_allocator()
        ctx = self.context
        cfg = ctx.config
        listen = cfg.node.listen
        try:
            self.endpoint = await open_endpoint(
                ctx.key, listen.host, listen.port, transport_config(cfg.limits)
            )
        except LocalError:
            raise_bind_oserror(listen.host, listen.port)  # the runner reports OSError
            raise
        host, port = self.endpoint.local_address
        self.started_at = ctx.clock()
        self._start_seed_watch(self.endpoint)
        self._bound = (listen.host, port)
        # port mapping (docs/portmap.md): in the background; off on loopback
        self.port_mapper = PortMapper.for_node(
            listen.host, port, enabled=cfg.portmap.enabled, lifetime=cfg.portmap.lifetime
        )
        await self.port_mapper.start()
        adv = advertised_address(cfg, port)
        self._self_address = PeerAddress(ctx.key.node_id, adv.host, adv.port)
        await self._start_storage(self.endpoint)
        remove_stale_spools(self.spool_dir)
        self._update_relay()
        candidates = join_candidates(ctx.bootstrap, ctx.known_peers, ctx.key.node_id)
        self.dht = await self._start_dht(self.endpoint, candidates)
        self.nat = make_nat_manager(
            self.endpoint,
            self.dht,
            ctx.key,
            cfg,
            port_mapping=lambda: self.port_mapper,
            set_relay_reachable=self.set_relay_reachable,
        )
        self.nat.start()
        self.announced_peers, self.reachability = nat_hooks(self.nat, ctx.key.node_id)
        server = self.storage.server if self.storage is not None else None
        self.upkeep.start(
            self.find_peers,
            self.storage_for,
            server,
            self.peer_quality,
            ready=lambda: self.joined_at is not None,
            call=self.endpoint.call,  # reports of corrupt copies to their holders
        )
        self.upkeep.serve(self.endpoint)  # maintenance.suspect
        self._tasks.start(self._run(), name="grid-service-join")
        assert self.seed_watch is not None  # seeds' RTT, re-checked every seed_interval
        self._tasks.start(
            self.seed_watch.run(first_delay=min(2.0, self.seed_interval)),
            name="grid-service-seeds",
        )
        self._rescan_storage()
        log.info(
            "grid node %s listening on UDP %s:%d (advertised %s:%d); storage %s; %d join "
            "candidates",
            *(ctx.key.node_id.b32, host, port, adv.host, adv.port),
            *("on" if self.storage else "off", len(candidates)),
        )

    def _start_seed_watch(self, ep: Endpoint) -> None:
        ctx = self.context
        self.nicknames = nicks = Nicknames(ep, ctx.config.node.nickname, __version__)

        async def ping(peer: PeerAddress, timeout: float) -> float:  # noqa: ASYNC109
            took = await ep.ping(peer, timeout=timeout)
            if not nicks.known(peer.node_id):
                await nicks.fetch(peer, timeout=timeout)
            return took

        self.seed_watch = SeedWatch(
            ctx.bootstrap.seeds,
            ping,
            interval=self.seed_interval,
            timeout=min(self.probe_timeout, 3.0),
            clock=ctx.clock,
        )

    async def _start_storage(self, ep: Endpoint) -> None:
        cfg = self.context.config
        if not cfg.storage.enabled:
            return
        scfg = StorageConfig(
            max_bytes=cfg.storage.quota,
            reserved_space=cfg.storage.reserved_space,
            lease_duration=float(cfg.storage.lease_duration),
        )
        self.storage = await StorageService.start(
            self.context.node_dir.storage_dir,
            ep,
            scfg,
            error_factory=RpcError,
            crawl_interval=slower(1.0, cfg.limits),
            crawl_pause=slower(min(600.0, cfg.storage.lease_duration / 100), cfg.limits),
        )
        register_storage_streams(ep, self.storage.server, error_factory=RpcError)
        self.storage.follow_connections(ep)  # drops the uploads of peers that went away

    async def _start_dht(self, ep: Endpoint, candidates: Sequence[Seed]) -> DhtNode:
        ctx = self.context
        cfg = ctx.config
        dht = DhtNode(
            ctx.key.node_id,
            ObservingTransport(dht_transport(ep), self.uptime),
            clock=LoopClock(),
            seeds=[Contact(s.node_id, s.host, s.port) for s in candidates],
            config=dht_config(
                DhtConfig(k=min(cfg.dht.k, 20), alpha=min(cfg.dht.alpha, cfg.dht.k, 20)),
                cfg.limits,
            ),
            signer=ctx.key,
            # address classes follow our listen address (docs/dht.md)
            may_dial=functools.partial(addrclass.may_send, own=cfg.node.listen.host),
        )
        await dht.start(bootstrap=False)
        return dht

    async def close(self) -> None:
        if (vclose := getattr(self.vdrive, "close", None)) is not None:
            with contextlib.suppress(Exception):
                await vclose()
        if self.helper is not None:  # its streamed placements (docs/helper.md)
            await self.helper.close()
        if self.backend is not None:
            await self.backend.close()
        await self._tasks.close()
        await self.upkeep.close()
        if self.nat is not None:
            await self.nat.close()
        if self.dht is not None:
            self._feed_known_peers()
            await self.dht.close()
        await self.relay.close()
        if self.storage is not None:
            await self.storage.close()
            self.storage = None
        if self.port_mapper is not None:  # portmap: delete the router's mapping
            await self.port_mapper.close()
        if self.endpoint is not None:
            await self.endpoint.aclose()
        log.info("grid node closed")

    # -- relay service (docs/relay.md; the rules in relay_keeper.py) -------------------
    @property
    def relay_service(self) -> RelayService | None:
        return self.relay.service

    def relay_should_serve(self) -> bool:
        return self.relay.should_serve()

    async def set_relay_reachable(self, reachable: bool) -> None:
        await self.relay.set_reachable(reachable)

    def _update_relay(self) -> None:
        if self.endpoint is not None:
            self.relay.update(self.endpoint)

    # -- leases and maintenance (upkeep.py) ------------------------------------------
    @property
    def lease_book(self) -> LeaseBook | None:
        return self.upkeep.book

    @property
    def lease_renewer(self) -> LeaseRenewer | None:
        return self.upkeep.renewer

    def _on_uploaded(self, result: UploadResult[Any]) -> None:
        self.upkeep.track(result.cap)  # the uploader's hook: renewed from now on

    # -- joining ---------------------------------------------------------------------
    async def _probe_seed(self, seed: Seed) -> None:
        assert self.dht is not None
        if not await self.dht.ping(Contact(seed.node_id, seed.host, seed.port)):
            raise ConnectionError("no answer to a DHT ping")

    async def join_once(self) -> JoinReport:
        """Try the candidates (seeds, then remembered peers); bootstrap the DHT from
        whoever answered. Returns what happened (also kept in ``last_join``)."""
        assert self.dht is not None
        ctx = self.context
        candidates = join_candidates(ctx.bootstrap, ctx.known_peers, ctx.key.node_id)
        report = await contact_any(
            candidates,
            self._probe_seed,
            enough=self.join_enough,
            parallel=4,
            probe_timeout=self.probe_timeout,
        )
        self.last_join = report
        if self.seed_watch is not None:
            self.seed_watch.record_join(report)
        for seed, why in report.failed:
            log.info("join: skipped %s:%d (%s)", seed.host, seed.port, why)
        if report.joined:
            for seed in report.reached:
                ctx.known_peers.saw(seed.node_id, seed.host, seed.port)
            size = await self.dht.bootstrap()
            self.joined_at = time.time()
            log.info(
                "joined the grid through %d of %d candidates; %d contacts known",
                len(report.reached),
                len(candidates),
                size,
            )
            self._feed_known_peers()
        elif candidates:
            log.warning("join: none of %d candidates answered", len(candidates))
        return report

    async def _run(self) -> None:
        """Join, retry with back-off while alone, grow the table, feed known peers."""
        assert self.dht is not None
        delay, grow = 2.0, self.grow_interval
        last_feed = next_grow = time.monotonic()
        joined = False  # a join through our own candidates succeeded at least once
        while True:
            try:
                if not joined or not len(self.dht.table):
                    grow = self.grow_interval  # alone again: grow fast once back
                    if self.context.bootstrap.seeds or len(self.context.known_peers):
                        joined = (await self.join_once()).joined
                    if not len(self.dht.table):
                        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                        delay = min(delay * 2, self.retry_max)
                        continue
                delay, before = 2.0, len(self.dht.table)
                if before < self.dht.config.k and time.monotonic() >= next_grow:
                    await self.dht.lookup(self.context.key.node_id)  # (a small grid: never k)
                    more = len(self.dht.table) > before
                    grow = self.grow_interval if more else min(grow * 2, GROW_MAX)
                    next_grow = time.monotonic() + grow * random.uniform(0.8, 1.2)
                if time.monotonic() - last_feed >= self.feed_interval:
                    self._feed_known_peers()
                    last_feed = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad round end joining for good
                log.exception("join/maintenance round failed")
            await asyncio.sleep(min(self.grow_interval * 3, self.feed_interval))

    def _feed_known_peers(self) -> None:
        """Record the routing-table contacts we hold an authenticated connection to
        now (so ``last_seen`` means "was live then", not merely "was in the table")."""
        if self.dht is None or self.endpoint is None:
            return
        known = self.context.known_peers
        live = set(self.endpoint.connected_peers)
        for c in self.dht.table.contacts():
            if c.node_id in live:
                known.saw(c.node_id, c.host, c.port)
                self.uptime.observe(c.node_id, True)

    # -- grid wiring -----------------------------------------------------------------
    async def _probe_storage(self, peer: PeerAddress) -> Any:
        assert self.endpoint is not None
        return await self.endpoint.call(peer, "storage.stat", {}, timeout=3.0)

    async def find_peers(self, storage_index: bytes, count: int) -> Sequence[PeerAddress]:
        """Storage peers near ``storage_index``: DHT lookup, minus non-storage nodes,
        plus the peers the ``announced_peers`` hook derives from the node announcements
        the lookup saw (not probed: their signed records say they store), plus this
        node when it stores; the ``count`` nearest, which uploaders, repairers and
        downloaders all ask for, so they see the same window."""
        assert self.dht is not None
        own = self.context.key.node_id
        hook = self.announced_peers
        announced: Sequence[PeerAddress] = ()
        if hook is None:
            contacts = await self.dht.lookup(NodeId(storage_index))
        else:
            outcome = await self.dht.lookup_detailed(NodeId(storage_index))
            contacts = outcome.contacts
            try:
                announced = hook(outcome.announcements)
            except Exception:  # a bad record must not break every upload
                log.exception("announced_peers hook failed")
        found = [PeerAddress(c.node_id, c.host, c.port) for c in contacts if c.node_id != own]
        peers = await self.storage_peers.filter(found)
        have = {p.node_id for p in peers}
        peers += [p for p in announced if p.node_id != own and p.node_id not in have]
        if self.storage is not None and self._self_address is not None:
            peers.append(self._self_address)
        target = int.from_bytes(storage_index, "big")
        return sorted(peers, key=lambda p: int(p.node_id) ^ target)[:count]

    def peer_quality(self, node_id: NodeId) -> PeerQuality:
        """What this node knows of a peer: reachability (hook) and observed uptime."""
        hook = self.reachability
        reachable = None if hook is None else hook(node_id)
        return PeerQuality(reachable=reachable, uptime=self.uptime.uptime(node_id))

    def storage_for(self, peer: PeerAddress) -> StorageAPI:
        assert self.endpoint is not None
        if peer.node_id == self.context.key.node_id:
            if self.storage is None:
                raise RuntimeError("this node does not store shares")
            return LocalStorageClient(self.storage.server, self.context.key.node_id)
        via = self.nat.storage_endpoint(peer.node_id) if self.nat is not None else None
        return QuicStorageClient(via or self.endpoint, peer, timeout=30.0, stream_timeout=30.0)

    def api_backend(self) -> GridApplication:
        """The HTTP API's backend (created once, after ``start()``)."""
        if self.backend is None:
            enc = self.upkeep.encoding
            params = EncodingParams.create(enc.k, enc.n)
            self.backend = GridApplication(
                self.find_peers,
                self.storage_for,
                convergence_secret=self.context.convergence_secret,
                spool_dir=self.spool_dir,
                params=params,
                happy=enc.happy,
                node_info=self._node_info,
                peer_source=self.peer_list,
                quality=self.peer_quality,
                seen=SeenStore(self.context.node_dir.state_dir / "mutable_seen.json"),
            )
            self.backend.direct_uploader.on_uploaded = self._on_uploaded
            self.helper = wire_helper(self, self.backend)  # docs/helper.md
            if self.vdrive_factory is not None:
                self.vdrive = self.vdrive_factory(self)
                self.backend.vdrive = self.vdrive
            self.upkeep.keep_references(self.backend)
        return self.backend

    # -- status ----------------------------------------------------------------------
    def _node_info(self) -> dict[str, Any]:
        ctx = self.context
        doc: dict[str, Any] = {"node_id": ctx.key.node_id.b32, "backend": "grid"}
        doc |= {"nickname": ctx.config.node.nickname, "version": __version__}
        doc["encoding_source"] = self.upkeep.encoding.describe()
        if self._bound is not None:
            doc.update(self.status())
            doc["peers_connected"] = (
                len(self.endpoint.connected_peers) if self.endpoint is not None else 0
            )
            doc["started_at"] = self.started_at
            if self.seed_watch is not None:
                doc["seeds"] = self.seed_watch.report(self.nicknames)
            if self.dht is not None:
                doc["dht"] = {
                    "routing_table_size": len(self.dht.table),
                    "buckets": len(self.dht.table.bucket_sizes()),
                    "records": len(self.dht.store),
                }
            doc["storage"] = {
                "used": doc.get("storage_used", 0),
                "quota": self.context.config.storage.quota,
                "enabled": self.storage is not None,
            }
            if self.storage is not None:
                doc["storage"]["shares"] = self.storage.server.stat().shares
            adv = self._self_address
            if adv is not None:
                doc["advertised"] = f"{adv.host}:{adv.port}"
            if self.port_mapper is not None:  # portmap
                doc["portmap"] = self.port_mapper.status()
            doc["introducer"] = self.context.config.node.introducer
            if self.nat is not None:
                doc["nat"] = self.nat.status()
        return doc

    async def peer_list(self) -> list[PeerInfo]:
        """Every routing-table contact, with RTT (a ping each, concurrently, 2 s max)."""
        if self.dht is None or self.endpoint is None:
            return []
        return await list_peers(
            self.dht,
            self.endpoint,
            self.nat,
            self.nicknames,
            self.storage_peers,
            self.context.known_peers,
        )

    def _rescan_storage(self) -> None:
        now = time.monotonic()
        if self._storage_scanned_at is None or now - self._storage_scanned_at >= slower(
            STORAGE_RESCAN_SECONDS, self.context.config.limits
        ):
            self._storage_scanned_at = now
            if self.storage is None:
                self._storage_used = disk_usage(self.context.node_dir.storage_dir)

    def status(self) -> ServiceStatus:
        if self._bound is None:
            raise RuntimeError("status() before start()")
        self._rescan_storage()
        used = self._storage_used
        details: dict[str, Any] = {"service": "grid", "storage_enabled": self.storage is not None}
        if self.storage is not None:
            st = self.storage.server.stat()
            used = st.used
            details["storage"] = {
                "shares": st.shares,
                "uploads": st.uploads,
                "available": st.available,
                "max_bytes": st.max_bytes,
            }
        if self.dht is not None:
            details["dht"] = self.dht.status()
        if self.last_join is not None:
            details["join"] = {
                "reached": len(self.last_join.reached),
                "failed": len(self.last_join.failed),
                "joined_at": self.joined_at,
            }
        if self.endpoint is not None:
            details["connections"] = len(self.endpoint.connected_peers)
            counters = self.endpoint.stats  # sent and received since it started
            details["traffic"] = {
                k: counters[k] for k in ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out")
            }
        details.update(self.upkeep.status())
        if self.nat is not None:
            details["nat"] = self.nat.status()
        if self.relay_service is not None:
            details["relay_service"] = self.relay_service.status()
        details["helper"] = helper_status(self)
        details["limits"] = limits_status(self.context.config.limits, self.endpoint)
        if self.port_mapper is not None:  # portmap
            details["portmap"] = self.port_mapper.status()
        return ServiceStatus(
            listen_host=self._bound[0],
            listen_port=self._bound[1],
            peers_known=len(self.dht.table) if self.dht is not None else 0,
            storage_used=used,
            details=details,
        )


def grid_service_factory(
    vdrive_factory: VdriveFactory | None = None,
) -> Callable[[NodeContext], GridService]:
    """A :data:`~p2pstore.node.service.ServiceFactory` with an optional vdrive hook."""

    def make(context: NodeContext) -> GridService:
        return GridService(context, vdrive_factory=vdrive_factory)

    return make
