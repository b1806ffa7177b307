"""The asyncio DHT node: request handlers, lookups, records, and background maintenance.

Owns one :class:`RoutingTable`, one :class:`RecordStore` and the records this node
publishes. All protocol decisions live in the sans-I/O modules (``routing``,
``lookup``, ``records``, ``store``, ``messages``); this module moves messages between
them and the transport and schedules work.

Invariants:
- Callers enter the routing table only from the transport's verified ``ctx.peer_id``
  or after answering our request; contacts merely *named* in responses are lookup
  candidates, never table entries.
- Every incoming body and every response is schema-checked (``dht.messages``) and
  every record validated (``dht.records.validate``) before use; a peer that answers
  garbage or forged records counts as failed for that lookup and is dropped from the
  table, and the lookup continues with the others.
- Every background task (maintenance loop, pings of full buckets' oldest contacts)
  belongs to the node and ends in :meth:`close`. Refresh and republish are spread
  over time with jitter, never one burst.
- Server/client mode (runtime switch, :meth:`set_server`): a client-mode node flags
  every request it sends (``"client": true``); a receiver never adds a flagged caller
  to its routing table (and removes it if it was there), but answers it normally. A
  client-mode node does not count itself among the holders of a record.
- Node announcements (``dht.announce``) are validated like records, kept in a
  bounded :class:`AnnouncementStore` separate from the routing table, and only ever
  returned in the ``anns`` field of responses, never as contacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dht.announce import (
    Announcement,
    AnnouncementStore,
    Announcer,
    validate_announcement,
)
from dht.clock import Clock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.errors import (
    DhtLocalError,
    MessageError,
    PeerCallError,
    RecordError,
)
from dht.lookup import Lookup, LookupStats
from dht.lookup_driver import Answer, Gathered, drive_lookup
from dht.maintenance import Published, hand_over, run_maintenance
from dht.messages import (
    ANNOUNCE,
    FIND_NODE,
    GET,
    PING,
    PUT,
    AnnounceRequest,
    FindNodeRequest,
    GetRequest,
    GetResponse,
    NodesResponse,
    PingRequest,
    PingResponse,
    PutRequest,
    PutResponse,
)
from dht.records import Record, Signer, record_key, sign_record, validate
from dht.routing import RoutingTable
from dht.serving import RequestHandlers
from dht.store import RecordStore
from dht.transport import DhtTransport
from quic_transport.identity import NodeId

from .stats import percentiles

log = logging.getLogger(__name__)

# Join-time lookups into empty buckets only need to meet some nodes there (and be
# met by them), not to find that region's exact k closest: stop once 3 have answered.
JOIN_REFRESH_BETA = 3


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    contacts: list[Contact]  # up to k live nodes, closest first
    stats: LookupStats
    record: Record | None = None  # best valid record seen (value lookups only)
    # Valid, unwithdrawn node announcements seen (newest per node), announcers closest
    # to the target first, at most k (lookups that asked for them only).
    announcements: tuple[Announcement, ...] = ()


def _host_filter(may_dial: Callable[[str], bool] | None) -> Callable[[Contact], bool] | None:
    if may_dial is None:
        return None
    return lambda c: may_dial(c.host)


#: a lookup keeps at most this many candidates per IP address from replies (loopback
#: excepted), so forged contacts cannot aim its dials at one host (docs/dht.md)
MAX_CONTACTS_PER_HOST = 4


class DhtNode:
    """One Kademlia node. ``start()`` bootstraps and starts maintenance; ``close()`` ends it."""

    def __init__(
        self,
        node_id: NodeId,
        transport: DhtTransport,
        *,
        clock: Clock,
        seeds: Sequence[Contact] = (),
        config: DhtConfig | None = None,
        rng: random.Random | None = None,
        saved_contacts: Sequence[Contact] = (),
        server: bool = True,
        signer: Signer | None = None,
        may_dial: Callable[[str], bool] | None = None,
    ) -> None:
        self.node_id = node_id
        # contacts learned from peers are dialled only if this says their host may be
        # (the address-class rule, quic_transport/addrclass.py; None: any host)
        self.may_dial = may_dial
        self.config = config or DhtConfig()
        self.transport = transport
        self.clock = clock
        self.rng = rng or random.Random()
        self.seeds = [s for s in seeds if s.node_id != node_id]
        self.saved_contacts = [c for c in saved_contacts if c.node_id != node_id]
        cfg = self.config
        self.table = RoutingTable(
            node_id,
            k=cfg.k,
            stale_failures=cfg.stale_failures,
            max_failures=cfg.max_failures,
            ping_after=cfg.ping_after,
        )
        self.store = RecordStore(
            max_records=cfg.store_max_records, max_bytes=cfg.store_max_bytes, self_id=node_id
        )
        self.anns = AnnouncementStore(node_id, max_count=cfg.ann_max_count)
        self._server = server
        self.handlers = RequestHandlers(
            table=self.table,
            store=self.store,
            anns=self.anns,
            config=cfg,
            clock=clock,
            observe=self._observe,
        )
        self.announcer: Announcer | None = None
        if signer is not None:
            self.announcer = Announcer(signer, ttl=cfg.announce_ttl, interval=cfg.announce_interval)
            if self.announcer.node_id != node_id:
                raise DhtLocalError("signer's public key does not match the node ID")
        self.published: dict[NodeId, Published] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._registered = False
        self._closed = False
        self.rpcs_sent = 0
        self.lookup_times: deque[float] = deque(maxlen=200)  # seconds, newest last

    # ---- lifecycle -----------------------------------------------------------------
    def register_handlers(self) -> None:
        """Register the five DHT methods on the transport (idempotent)."""
        if self._registered:
            return
        self.handlers.register(self.transport)
        self._registered = True

    async def start(self, *, bootstrap: bool = True) -> None:
        """Register handlers, join the network (if ``bootstrap``), start maintenance."""
        if self._closed:
            raise DhtLocalError("node is closed")
        self.register_handlers()
        if bootstrap:
            await self.bootstrap()
        self.table.mark_refreshed(self.clock.monotonic())
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(run_maintenance(self))

    async def close(self) -> None:
        """Stop background work and wait for it to end. Handlers stay registered but the
        node no longer initiates anything."""
        self._closed = True
        tasks = list(self._tasks)
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._maintenance = None

    async def bootstrap(self) -> int:
        """Join via the seeds (and saved contacts): self-lookup; returns the table size.

        Seeds are only lookup candidates: each enters the table once it answers.
        """
        candidates = self.saved_contacts + self.seeds
        if not candidates and not len(self.table):
            raise DhtLocalError("no seeds and no contacts to bootstrap from")
        await self._lookup(self.node_id, FIND_NODE, extra=candidates)
        # Populate the regions the self-lookup left empty, so no part of the ID space
        # is unreachable through us (without this, a node whose join only met peers
        # in its own half of the space never learns anyone in the other half).
        empty = self.table.empty_buckets()[: self.config.join_refresh_max]
        if empty:
            await asyncio.gather(
                *(
                    self._lookup(
                        self.table.random_id_in(i, self.rng),
                        FIND_NODE,
                        extra=self.seeds,
                        beta=JOIN_REFRESH_BETA,
                    )
                    for i in empty
                )
            )
        return len(self.table)

    # ---- server / client mode -------------------------------------------------------
    @property
    def server(self) -> bool:
        """True: a DHT server (others add us to their tables); False: client mode."""
        return self._server

    async def set_server(self, server: bool) -> None:
        """Switch mode at runtime. Either way the node then runs a self-lookup (when it
        knows anyone): as a server it makes itself known to its neighbourhood, which
        adds it; as a client its flagged requests make them drop it at once."""
        if server == self._server:
            return
        self._server = server
        log.info("DHT mode: %s", "server" if server else "client")
        if not self._closed and (len(self.table) or self.seeds or self.saved_contacts):
            await self._lookup(self.node_id, FIND_NODE)

    # ---- public operations ---------------------------------------------------------
    async def lookup(self, target: NodeId) -> list[Contact]:
        """The k closest live nodes to ``target`` (iterative FIND_NODE)."""
        return (await self._lookup(target, FIND_NODE)).contacts

    async def lookup_detailed(self, target: NodeId) -> LookupOutcome:
        """The k closest live nodes plus the node announcements seen near ``target``."""
        return await self._lookup(target, FIND_NODE, want_anns=True)

    async def put(self, record: Record) -> int:
        """Store a valid record on the k closest nodes; returns how many hold it now
        (counting this node when it is among the k closest)."""
        validate(record, now=self.clock.time(), key=record.key)
        outcome = await self._lookup(record.key, FIND_NODE)
        return await self._store_on(record, outcome.contacts)

    async def get(self, key: NodeId) -> Record | None:
        """The best valid record for ``key`` (highest seq), or None.

        Runs a full value lookup (no early exit on the first value, so a stale copy
        cannot win), then writes the winner back to the closest answering nodes that
        returned an older record or none.
        """
        return (await self._lookup(key, GET)).record

    async def get_detailed(self, key: NodeId) -> LookupOutcome:
        """Like :meth:`get`, with the lookup's closest nodes, statistics and the node
        announcements seen near ``key``."""
        return await self._lookup(key, GET, want_anns=True)

    # ---- node announcements ----------------------------------------------------------
    async def announce(self, value: bytes, *, ttl: int | None = None) -> int:
        """Sign ``value`` (1..1024 bytes, opaque) as this node's announcement, store it
        on the k servers closest to our own ID and keep re-announcing it (with a fresh
        lifetime as needed) until :meth:`withdraw`. Returns how many servers hold it
        (counting this node when it is a server). Needs ``signer`` at construction."""
        if self.announcer is None:
            raise DhtLocalError("this node has no signer: it cannot announce")
        try:
            ann = self.announcer.make(value, ttl, self.clock.time())
        except RecordError as e:
            raise DhtLocalError(f"cannot announce: {e}") from None
        self.announcer.due = self.next_reannounce()
        return await self.send_announcement(ann)

    async def withdraw(self) -> int:
        """Stop announcing; replace our announcement on the servers with a withdrawal
        (readers then see none). Returns how many servers took the withdrawal."""
        if self.announcer is None:
            return 0
        w = self.announcer.withdrawal(self.clock.time())
        return 0 if w is None else await self.send_announcement(w)

    @property
    def announcement(self) -> Announcement | None:
        """Our current announcement (None if never announced or withdrawn)."""
        return None if self.announcer is None else self.announcer.current

    def next_reannounce(self) -> float:
        iv = self.config.announce_interval
        return self.clock.monotonic() + iv * self.rng.uniform(0.75, 1.0)

    async def send_announcement(self, ann: Announcement) -> int:
        outcome = await self._lookup(self.node_id, FIND_NODE)
        body = AnnounceRequest(ann, client=not self._server).to_body()
        results = await asyncio.gather(
            *(self.store_one(c, ANNOUNCE, body) for c in outcome.contacts)
        )
        stored = sum(results)
        if self._server:
            try:
                self.anns.put(ann, self.clock.time())
                stored += 1
            except RecordError as e:
                log.debug("local announcement store refused %r: %s", ann, e)
        return stored

    async def publish(
        self, signer: Signer, name: bytes, value: bytes, *, ttl: int | None = None
    ) -> Record:
        """Sign ``value`` under (``signer``, ``name``) with the next sequence number,
        store it on the k closest nodes and keep republishing it until :meth:`unpublish`.
        """
        key = record_key(bytes(signer.public_key), name)
        current = await self.get(key)
        seq = 0 if current is None else current.seq + 1
        mine = self.published.get(key)
        if mine is not None:
            seq = max(seq, mine.record.seq + 1)
        record = self.sign(signer, name, seq, value, ttl)
        await self.put(record)
        self.published[key] = Published(signer, record, self.next_republish())
        return record

    def unpublish(self, key: NodeId) -> None:
        """Stop republishing ``key`` (copies expire on their own)."""
        self.published.pop(key, None)

    def sign(self, signer: Signer, name: bytes, seq: int, value: bytes, ttl: int | None) -> Record:
        life = self.config.record_ttl if ttl is None else ttl
        return sign_record(signer, name, seq, value, expires=int(self.clock.time()) + life)

    # ---- lookups -------------------------------------------------------------------
    async def _lookup(
        self,
        target: NodeId,
        method: str,
        extra: Sequence[Contact] = (),
        *,
        beta: int | None = None,
        want_anns: bool = False,
    ) -> LookupOutcome:
        started = self.clock.monotonic()
        cfg = self.config
        initial = self.table.closest(target, cfg.k)
        if not initial:
            initial = list(self.seeds) + list(self.saved_contacts)
        lk = Lookup(
            target,
            [*initial, *extra],
            k=cfg.k,
            alpha=cfg.alpha,
            beta=cfg.beta if beta is None else beta,
            timeout=cfg.request_timeout,
            max_queries=cfg.max_queries,
            slow_after=cfg.slow_after,
            self_id=self.node_id,
            accept=_host_filter(self.may_dial),
            max_per_host=MAX_CONTACTS_PER_HOST,
        )
        now_wall = self.clock.time()
        best: Record | None = self.store.get(target, now_wall) if method == GET else None
        anns: dict[NodeId, Announcement] = {}
        if want_anns:
            for a in self.anns.closest(target, cfg.k, now_wall):
                anns[a.node_id] = a
        gathered = Gathered(best, {}, anns)

        def query(c: Contact) -> Awaitable[Answer | None]:
            return self._query(c, method, target, want_anns)

        def abandoned(node_id: NodeId) -> None:
            self.table.failed(node_id, self.clock.monotonic())

        await drive_lookup(lk, query, self.clock.monotonic, abandoned, gathered)
        self.lookup_times.append(self.clock.monotonic() - started)  # for status()
        best, held = gathered.best, gathered.held
        self.table.lookup_done(target, self.clock.monotonic())
        contacts = lk.result()
        if method == GET and best is not None:
            stale = [c for c in contacts if held.get(c.node_id, -1) < best.seq]
            if stale:
                await self._store_on(best, stale, include_self=False)
            mine = self.store.get(target, self.clock.time())
            if mine is not None and mine.seq < best.seq:
                with contextlib.suppress(RecordError):
                    self.store.put(best, self.clock.time())
        tgt = int(target)
        found = sorted(
            (a for a in anns.values() if not a.withdrawn), key=lambda a: int(a.node_id) ^ tgt
        )
        return LookupOutcome(contacts, lk.stats(), best, tuple(found[: cfg.k]))

    async def _query(
        self, contact: Contact, method: str, target: NodeId, want_anns: bool
    ) -> Answer | None:
        """One lookup request. None means the peer failed or misbehaved."""
        client = not self._server
        req = (
            FindNodeRequest(target, client, want_anns)
            if method == FIND_NODE
            else GetRequest(target, client, want_anns)
        )
        reply = await self._rpc(contact, method, req.to_body())
        if reply is None:
            return None
        try:
            if method == FIND_NODE:
                nresp = NodesResponse.from_body(reply, max_nodes=self.config.k)
                return Answer(nresp.nodes, None, self._valid_anns(nresp.anns))
            resp = GetResponse.from_body(reply, max_nodes=self.config.k)
            record = resp.record
            if record is not None:
                try:
                    validate(record, now=self.clock.time(), key=target)
                except RecordError as e:
                    if e.reason != "expired":
                        raise
                    # Clocks differ a little between honest nodes: ignore the record,
                    # keep the peer and its contacts.
                    record = None
            return Answer(resp.nodes, record, self._valid_anns(resp.anns))
        except (MessageError, RecordError) as e:
            log.info("dropping %s: bad %s response: %s", contact, method, e)
            self.table.remove(contact.node_id)
            return None

    def _valid_anns(self, anns: tuple[Announcement, ...]) -> tuple[Announcement, ...]:
        """Validate announcements from a response; a forged one raises ``RecordError``
        (the peer then counts as failed), an expired one is skipped (clock skew)."""
        out = []
        now = self.clock.time()
        for a in anns:
            try:
                validate_announcement(a, now=now)
            except RecordError as e:
                if e.reason != "expired":
                    raise
                continue
            out.append(a)
        return tuple(out)

    async def _rpc(self, contact: Contact, method: str, body: Any) -> Any | None:
        """Call a peer; on success the peer enters/refreshes the table, on failure it is
        marked failed. Returns the raw reply, or None on failure."""
        self.rpcs_sent += 1
        timeout = self.config.request_timeout
        try:
            # The transport enforces ``timeout``; the outer bound guards against one that
            # does not, so a misbehaving transport still cannot stall a lookup.
            reply = await asyncio.wait_for(
                self.transport.call(contact, method, body, timeout=timeout), timeout * 1.5
            )
        except (PeerCallError, TimeoutError) as e:
            log.debug("%s to %s failed: %s", method, contact, e)
            self.table.failed(contact.node_id, self.clock.monotonic())
            return None
        except Exception as e:
            # The transport contract allows only PeerCallError; anything else is a
            # transport bug, but it concerns one peer and must not abort the lookup.
            log.warning("%s to %s raised %s: %s", method, contact, type(e).__name__, e)
            self.table.failed(contact.node_id, self.clock.monotonic())
            return None
        self._observe(contact)
        return reply

    async def _store_on(
        self, record: Record, contacts: Sequence[Contact], *, include_self: bool = True
    ) -> int:
        body = PutRequest(record, client=not self._server).to_body()
        results = await asyncio.gather(*(self.store_one(c, PUT, body) for c in contacts))
        stored = sum(results)
        # A client is in no one's table, so no lookup would ever ask it for the record.
        if include_self and self._server and self._among_closest(record.key, contacts):
            try:
                self.store.put(record, self.clock.time())
                stored += 1
            except RecordError as e:
                log.debug("local store refused %r: %s", record, e)
        return stored

    async def store_one(self, contact: Contact, method: str, body: dict[str, Any]) -> bool:
        """Send one ``dht.put`` or ``dht.announce``; True if the peer answered well."""
        reply = await self._rpc(contact, method, body)
        if reply is None:
            return False
        try:
            PutResponse.from_body(reply)
        except MessageError:
            return False
        return True

    def _among_closest(self, key: NodeId, contacts: Sequence[Contact]) -> bool:
        if len(contacts) < self.config.k:
            return True
        return self.node_id.distance(key) < max(c.node_id.distance(key) for c in contacts)

    # ---- routing-table upkeep --------------------------------------------------------
    def _observe(self, contact: Contact) -> None:
        known = contact.node_id in self.table
        to_ping = self.table.observe(contact, self.clock.monotonic())
        if self._closed:
            return
        if to_ping is not None:
            self._spawn(self._ping_oldest(to_ping))
        if (
            not known
            and self._server
            and (len(self.store) or len(self.anns))
            and contact.node_id in self.table
        ):
            self._spawn(hand_over(self, contact))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def runner() -> None:
            await coro

        task = asyncio.create_task(runner())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping_oldest(self, contact: Contact) -> None:
        ok = False
        for _ in range(self.config.ping_attempts):
            try:
                reply = await asyncio.wait_for(
                    self.transport.call(
                        contact,
                        PING,
                        PingRequest(client=not self._server).to_body(),
                        timeout=self.config.request_timeout,
                    ),
                    self.config.request_timeout * 1.5,
                )
                PingResponse.from_body(reply)
                ok = True
                break
            except (PeerCallError, TimeoutError, MessageError):
                continue
            except Exception as e:  # transport bug: count as no answer (see _rpc)
                log.warning("ping to %s raised %s: %s", contact, type(e).__name__, e)
                continue
        self.table.ping_result(contact.node_id, ok, self.clock.monotonic())

    async def ping(self, contact: Contact) -> bool:
        """Ping ``contact``; on success it enters the routing table."""
        reply = await self._rpc(contact, PING, PingRequest(client=not self._server).to_body())
        if reply is None:
            return False
        try:
            PingResponse.from_body(reply)
        except MessageError:
            self.table.remove(contact.node_id)
            return False
        return True

    # ---- maintenance -----------------------------------------------------------------
    def next_republish(self) -> float:
        iv = self.config.republish_interval
        return self.clock.monotonic() + iv * self.rng.uniform(0.75, 1.0)

    def status(self) -> dict[str, Any]:
        """A JSON-safe snapshot for status pages and logs."""
        return {
            "node_id": self.node_id.b32,
            "mode": "server" if self._server else "client",
            "contacts": len(self.table),
            "buckets": {str(i): n for i, n in self.table.bucket_sizes().items()},
            "records": len(self.store),
            "record_bytes": self.store.bytes_used,
            "published": len(self.published),
            "announcements": len(self.anns),
            "announced": self.announcement is not None,
            "rpcs_sent": self.rpcs_sent,
            "lookups": percentiles(self.lookup_times),
        }
