"""NatManager: the node side of NAT traversal, owned by GridService (docs/nat.md,
"Node behaviour").

It registers the NAT RPCs (``nat.dialback``, ``nat.probe``, ``nat.connect``,
``nat.punch``), runs the reachability checks, switches the DHT between server and
client mode from the verdict, keeps 1-2 *anchors* (reachable peers, each with a
relay reservation when ``use_relays``) while this node is private, keeps their
connections alive, and announces the node's signed peer record in the DHT. It
also remembers the peer records it learns from announcements (bounded) so
GridService can reach NATed storage peers through the
:class:`~p2pstore.nat.connector.Connector`.

Invariants:
- one background task (:meth:`_run`), ended by :meth:`close`, which also releases
  relay reservations and closes the punch service and connector;
- ``auto`` starts the DHT in server mode and only goes to client mode on a
  ``private`` verdict (so local grids and public nodes behave as before);
  forced modes set the DHT mode once at start;
- at most :data:`MAX_RECORDS` learned records; the anchor count never exceeds
  ``max_anchors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from p2pstore.base.tasks import TaskOwner
from p2pstore.nat import glue
from p2pstore.nat.connector import ConnectingEndpoint, Connector
from p2pstore.nat.errors import NatRemoteError
from p2pstore.nat.peer_record import PeerRecord, RelayAddress, decode_record
from p2pstore.nat.punch import PunchService
from p2pstore.nat.reachability import DialbackServer, ProbeResponder, ReachabilityChecker
from p2pstore.nat.relay.client import RelayClient, Reservation
from p2pstore.nat.tracker import (
    Addr,
    ObservedChanged,
    ReachabilityTracker,
    TrackerConfig,
    VerdictChanged,
)
from quic_transport import Endpoint, NodeKey, PeerAddress, addrclass
from quic_transport.identity import NodeId

log = logging.getLogger(__name__)
MAX_RECORDS = 1024
ANCHOR_RETRY = 60.0  # seconds before a candidate that failed is tried again


@dataclass(frozen=True, slots=True)
class NatSettings:
    reachability: str = "auto"  # auto | public | private
    hole_punching: bool = True
    use_relays: bool = True
    max_anchors: int = 2
    keepalive: float = 15.0  # well under the 30 s UDP conntrack timeout
    recheck_interval: float = 900.0
    retry_interval: float = 30.0
    first_check_delay: float = 1.0
    tick: float = 1.0
    idle_tick: float = 30.0  # the round's period when nothing is pending


@dataclass(slots=True)
class Anchor:
    peer: PeerAddress
    reservation: Reservation | None = None  # None: a rendezvous only (no relayed port)
    failures: int = 0


class NatManager:
    """See the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        key: NodeKey,
        dht: glue.ModalDht,
        settings: NatSettings,
        *,
        stores: bool,
        candidates: Callable[[], Sequence[PeerAddress]],
        extra_addresses: Callable[[], Sequence[Addr]] = lambda: (),
        port_mapping: Callable[[], glue.PortMapping | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.key = key
        self.dht = dht
        self.settings = settings
        self.stores = stores
        self.candidates = candidates
        self.extra_addresses = extra_addresses
        self.port_mapping = port_mapping
        self.clock = clock
        self.wall_clock = wall_clock
        self.tracker = ReachabilityTracker(
            TrackerConfig(
                mode=settings.reachability,
                recheck_interval=settings.recheck_interval,
                retry_interval=settings.retry_interval,
            ),
            local_addresses=frozenset({endpoint.local_address}),
        )
        self.responder = ProbeResponder(endpoint)
        self.dialback = DialbackServer(endpoint, clock=clock, verdict=lambda: self.verdict)
        self.punch = PunchService(
            endpoint,
            clock=clock,
            enabled=settings.hole_punching,
            rendezvous=lambda nid: nid in self.anchors,
        )
        self.connector = Connector(
            endpoint,
            hole_punching=settings.hole_punching,
            use_relays=settings.use_relays,
            clock=clock,
            own_nat=lambda: self.tracker.nat_type(self.clock()),
        )
        self.checker = ReachabilityChecker(
            endpoint, self.responder, self.tracker, candidates, self._extra, clock=clock
        )
        self.relay_client: RelayClient | None = None  # None unless use_relays
        self.anchors: dict[NodeId, Anchor] = {}
        self.records: OrderedDict[NodeId, PeerRecord] = OrderedDict()
        self.record: PeerRecord | None = None
        self.announced_at: float | None = None
        self.listeners: list[Callable[[str], None]] = []
        #: awaited after every verdict change and once at start when the verdict is
        #: already known (forced modes): e.g. GridService.set_relay_reachable
        self.verdict_hooks: list[Callable[[str], Awaitable[None]]] = []
        self._tasks = TaskOwner()
        self._dirty_record = True
        self._last_keepalive = 0.0
        self._announce_after = 0.0
        self._lost_relays: set[NodeId] = set()
        self._mapped: Addr | None = None
        self._anchor_backoff: dict[NodeId, float] = {}  # failed candidate -> retry after

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.responder.register()
        self.dialback.register()
        self.punch.register()
        if self.settings.use_relays:
            self.relay_client = RelayClient(self.endpoint, on_lost=self._relay_lost)
        self.tracker.request_check(self.clock() + self.settings.first_check_delay)
        self._tasks.start(self._run(), name="nat-manager")

    async def close(self) -> None:
        await self._tasks.close()
        for anchor in list(self.anchors.values()):
            await self._release(anchor)
        self.anchors.clear()
        if self.relay_client is not None:
            with contextlib.suppress(Exception):
                await self.relay_client.close()
        await self.punch.close()
        await self.connector.close()

    @property
    def verdict(self) -> str:
        return self.tracker.verdict

    @property
    def dht_server(self) -> bool:
        return self.verdict != "private"

    # -- learned records (announcements) ---------------------------------------------
    def learn(self, value: bytes, expected: NodeId | None) -> PeerRecord | None:
        """Verify an announced peer record and remember it; None if invalid."""
        try:
            rec = decode_record(value, expected=expected)
        except NatRemoteError as e:
            log.debug("ignoring an invalid peer record: %s", e)
            return None
        old = self.records.pop(rec.node_id, None)
        if old is not None and old.seq > rec.seq:
            rec = old  # never roll back to an older record
        self.records[rec.node_id] = rec
        while len(self.records) > MAX_RECORDS:
            self.records.popitem(last=False)
        return rec

    def address_of(self, rec: PeerRecord) -> PeerAddress:
        """A nominal address for a learned peer (calls go through the Connector)."""
        current = self.endpoint.peer_address(rec.node_id)
        if current is not None:
            return PeerAddress(rec.node_id, *current)
        for r in rec.relays:
            if r.relayed is not None:
                return PeerAddress(rec.node_id, *r.relayed)
        if rec.direct:
            return PeerAddress(rec.node_id, *rec.direct[0])
        if rec.relays:
            return PeerAddress(rec.node_id, rec.relays[0].host, rec.relays[0].relay_port)
        return PeerAddress(rec.node_id, "0.0.0.0", 1)

    def peer_reachable(self, node_id: NodeId) -> bool | None:
        """Whether a peer is publicly reachable, as far as we know: its own dial-back
        reply or its record says so (placement prefers reachable peers); None if we
        do not know."""
        said = self.tracker.peer_verdicts(self.clock()).get(node_id)
        if said in ("public", "private"):
            return said == "public"
        rec = self.records.get(node_id)
        return None if rec is None else rec.reachable

    def storage_endpoint(self, node_id: NodeId) -> ConnectingEndpoint | None:
        """For a peer known only by a private record: calls through the Connector."""
        rec = self.records.get(node_id)
        if rec is None or rec.reachable:
            return None
        return ConnectingEndpoint(self.endpoint, self.connector, rec)

    def connection_kind(self, node_id: NodeId) -> str | None:
        """How the open connection to ``node_id`` was made: direct/punched/relayed."""
        route = self.connector.route(node_id)
        if route is not None:
            return route.how
        at = self.endpoint.peer_address(node_id)
        if at is None:
            return None
        # a peer that came in through our relay reservation: a virtual path key
        return "relayed" if at[0].endswith(".relay.invalid") else "direct"

    # -- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._apply_dht_mode()
            if self.verdict != "unknown":
                await self._run_hooks(self.verdict)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("setting the DHT mode failed")
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end NAT maintenance
                log.exception("NAT maintenance round failed")
            await asyncio.sleep(self._pause(self.clock()) * random.uniform(0.8, 1.2))

    def _pause(self, now: float) -> float:
        """Seconds to the next round: the tick while anything is pending (no verdict
        yet, a private node's anchors, a record to announce, a check due soon); else the
        next check, at most ``idle_tick`` (a port mapping appearing is noticed within
        it). An idle public node wakes twice a minute, not every second."""
        s = self.settings
        if self.verdict in ("private", "unknown") or self.anchors or self._dirty_record:
            return s.tick
        until = self.tracker.next_check - now
        if until <= 0 and not self.candidates():
            until = s.idle_tick  # a check is due but nobody to ask yet
        return max(s.tick, min(until, s.idle_tick))

    async def _tick(self) -> None:
        now = self.clock()
        mapped = glue.mapped_address(self.port_mapping())
        if mapped != self._mapped:  # a port mapping appeared, moved or went away
            self._mapped = mapped
            self.tracker.request_check(now)
            self._dirty_record = True
        if self.tracker.due(now) and self.candidates():
            await self._check()
        if self.verdict == "private":
            await self._maintain_anchors()
        elif self.anchors:
            for anchor in list(self.anchors.values()):
                await self._release(anchor)
            self.anchors.clear()
            self._dirty_record = True
        if self._dirty_record and now >= self._announce_after:
            await self._announce()

    async def _check(self) -> None:
        before = self.tracker.observed
        events = await self.checker.check_once()
        after = self.tracker.observed
        now = self.clock()
        # moved (not merely peers disagreeing under a symmetric NAT): confirm soon
        if before is not None and after != before and self.tracker.nat_type(now) != "symmetric":
            log.info("observed address moved: %s -> %s", before, after)
            self.tracker.request_check(now + self.settings.retry_interval)
        for ev in events:
            if isinstance(ev, VerdictChanged):
                log.info("reachability: %s -> %s", ev.old, ev.new)
                await self._apply_dht_mode()
                self._dirty_record = True
                for cb in list(self.listeners):
                    with contextlib.suppress(Exception):
                        cb(ev.new)
                await self._run_hooks(ev.new)
            elif isinstance(ev, ObservedChanged):
                log.debug("observed address: %s -> %s", ev.old, ev.new)
                self._dirty_record = True

    async def _run_hooks(self, verdict: str) -> None:
        for hook in list(self.verdict_hooks):
            try:
                await hook(verdict)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reachability hook failed")

    async def _apply_dht_mode(self) -> None:
        await self.dht.set_server(self.dht_server)

    def _extra(self) -> list[Addr]:
        out = list(self.extra_addresses())
        mapped = glue.mapped_address(self.port_mapping())
        if mapped is not None:
            out.append(mapped)
        return list(dict.fromkeys(out))

    # -- anchors (relays / rendezvous) -----------------------------------------------
    def _relay_lost(self, reservation: Reservation, reason: str) -> None:
        """RelayClient callback (sync): handled on the next tick."""
        relay_id = reservation.relay_id
        if len(self._lost_relays) < 64:
            log.info("relay reservation on %s lost: %s", relay_id.short(), reason)
            self._lost_relays.add(relay_id)

    async def _maintain_anchors(self) -> None:
        now = self.clock()
        for nid in list(self._lost_relays):
            self._lost_relays.discard(nid)
            anchor = self.anchors.pop(nid, None)
            if anchor is not None:
                anchor.reservation = None  # gone already: nothing to release
                self._dirty_record = True
        keep = now - self._last_keepalive >= self.settings.keepalive
        if keep:
            self._last_keepalive = now
            for nid, anchor in list(self.anchors.items()):
                try:
                    await self.endpoint.ping(anchor.peer, timeout=5.0)
                    anchor.failures = 0
                    if anchor.reservation is None and self.relay_client is not None:
                        # e.g. it refused while it did not yet know it was reachable
                        with contextlib.suppress(Exception):
                            anchor.reservation = await self.relay_client.reserve(anchor.peer)
                            self._dirty_record = True
                except asyncio.CancelledError:
                    raise
                except Exception:
                    anchor.failures += 1
                    if anchor.failures >= 2:
                        log.info("anchor %s lost", nid.short())
                        await self._release(anchor)
                        del self.anchors[nid]
                        self._dirty_record = True
                        # our NAT may have re-mapped us: confirm the verdict soon
                        self.tracker.request_check(now + self.settings.retry_interval)
        said = self.tracker.peer_verdicts(now)
        for nid in [n for n in self.anchors if said.get(n) == "private" or self._known_private(n)]:
            log.info("anchor %s is itself behind NAT: dropping it", nid.short())
            await self._release(self.anchors.pop(nid))
            self._dirty_record = True
        if len(self.anchors) >= self.settings.max_anchors:
            return
        pool = [
            p
            for p in self.candidates()
            if p.node_id not in self.anchors
            and p.node_id != self.endpoint.node_id
            and not self._known_private(p.node_id)
            and said.get(p.node_id) != "private"
            and self._anchor_backoff.get(p.node_id, 0.0) <= now
        ]
        random.shuffle(pool)
        # peers that told us (in a dial-back reply) they are public first; a NATed
        # peer cannot anchor us
        pool.sort(key=lambda p: said.get(p.node_id) != "public")
        for peer in pool[: self.settings.max_anchors - len(self.anchors)]:
            anchor = Anchor(peer)
            try:
                await self.endpoint.ping(peer, timeout=5.0)
                if self.relay_client is not None:
                    anchor.reservation = await self.relay_client.reserve(peer)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.info("anchor %s refused or unreachable: %s", peer.node_id.short(), e)
                if len(self._anchor_backoff) >= 1024:
                    self._anchor_backoff = {
                        k: t for k, t in self._anchor_backoff.items() if t > now
                    }
                self._anchor_backoff[peer.node_id] = now + ANCHOR_RETRY
                # still a rendezvous for hole punching if it answers (no relayed port)
                if not self.settings.hole_punching:
                    continue
                if self.endpoint.peer_address(peer.node_id) is None:
                    continue
            self.anchors[peer.node_id] = anchor
            self._dirty_record = True

    def _known_private(self, node_id: NodeId) -> bool:
        """A peer whose record says it is private cannot anchor us."""
        rec = self.records.get(node_id)
        return rec is not None and not rec.reachable

    async def _release(self, anchor: Anchor) -> None:
        if anchor.reservation is not None and self.relay_client is not None:
            with contextlib.suppress(Exception):
                await self.relay_client.release(anchor.reservation)
            anchor.reservation = None

    # -- the record ------------------------------------------------------------------
    def build_record(self) -> PeerRecord:
        now = self.clock()
        if self.verdict == "public":
            direct = self.tracker.reachable_addresses(now)[:4]
            if not direct and self.tracker.observed is not None:
                direct = [self.tracker.observed]
        else:
            direct = [a for a in self._extra() if a in self.tracker.reachable_addresses(now)][:4]
        direct = [a for a in direct if addrclass.is_ip(a[0])]  # records carry IP literals only
        relays = []
        for anchor in list(self.anchors.values())[:4]:
            res = anchor.reservation
            relayed = res.port if res is not None else 0
            host = res.host if res is not None and res.host else anchor.peer.host
            if not addrclass.is_ip(host):  # the relay gave a name: use the address we reach it at
                host = anchor.peer.host
            if not self.settings.hole_punching and not relayed:
                continue
            with contextlib.suppress(NatRemoteError):
                relays.append(RelayAddress(anchor.peer.node_id, host, anchor.peer.port, relayed))
        seq = int(self.wall_clock() * 1000)
        if self.record is not None and seq <= self.record.seq:
            seq = self.record.seq + 1
        reach = "public" if self.verdict == "public" else "private"
        return PeerRecord.create(
            self.key,
            seq=seq,
            reach=reach,
            storage=self.stores,
            direct=tuple(direct),
            relays=tuple(relays),
            nat=self.tracker.nat_type(now),
        )

    async def _announce(self) -> None:
        self._dirty_record = False
        self.record = self.build_record()
        if self.verdict != "private":
            if self.announced_at is not None:  # public again: routing tables suffice
                await glue.withdraw(self.dht)
                self.announced_at = None
            return
        if await glue.announce(self.dht, self.record.encode()):
            self.announced_at = self.wall_clock()
        else:  # e.g. no DHT server reachable yet: retry in a while
            self._dirty_record = True
            self._announce_after = self.clock() + 10.0

    # -- status ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock()
        summary = self.tracker.summary(now)
        relays = []
        for anchor in self.anchors.values():
            res = anchor.reservation
            relays.append(
                {
                    "node_id": anchor.peer.node_id.b32,
                    "address": f"{anchor.peer.host}:{anchor.peer.port}",
                    "relayed": None if res is None else f"{res.host}:{res.port}",
                    "expires": None if res is None else res.expires,
                }
            )
        mapped = glue.mapped_address(self.port_mapping())
        return {
            "reachability": summary["verdict"],
            "mode": summary["mode"],
            "observed": summary["observed"],
            "nat_type": summary["nat_type"],
            "dht_mode": "server" if self.dht.server else "client",
            "reachable_addresses": [f"{h}:{p}" for h, p in self.tracker.reachable_addresses(now)],
            "checks": summary["checks"],
            "answers": summary["answers"],
            "reached_by": summary["reached_by"],
            "not_reached_by": summary["not_reached_by"],
            "next_check_in": max(0.0, round(self.tracker.next_check - now, 1)),
            "hole_punching": self.settings.hole_punching,
            "use_relays": self.settings.use_relays,
            "relay_support": self.relay_client is not None,
            "relays": relays,
            "port_mapping": None if mapped is None else f"{mapped[0]}:{mapped[1]}",
            "port_mapper": glue.mapper_status(self.port_mapping()),
            "announced_at": self.announced_at,
            "record_seq": None if self.record is None else self.record.seq,
            "peers_via": {k: v for k, v in self.connector.stats.items()},
            "punch": dict(self.punch.stats),
            "dialback_served": self.dialback.served,
            "dialback_refused": self.dialback.refused,
            "known_records": len(self.records),
        }
