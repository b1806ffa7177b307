"""Answering peers: the handlers of the five DHT methods (no outgoing calls).

:class:`RequestHandlers` owns no state of its own; it reads the node's routing table,
record store and announcement store, and reports callers through ``observe`` (the
node's routing-table upkeep, which may ping or hand records over).

Invariants:
- Every body is schema-checked (``dht.messages``) before anything else; a bad one is
  refused with ``RequestRejected("bad-request", ...)``, and store refusals carry the
  ``RecordError`` reason as the code. Nothing a caller sends can raise anything else.
- A caller enters the routing table only through ``observe`` with its transport-verified
  ID, and never when the request carries the client flag: such a caller is answered
  but removed from the table if it was there (it switched to client mode).
- Responses list at most k contacts (never the caller) and at most
  ``ann_max_returned`` announcements, and announcements only when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dht.announce import Announcement, AnnouncementStore
from dht.clock import Clock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.errors import MessageError, RecordError, RequestRejected
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
from dht.routing import RoutingTable
from dht.store import RecordStore
from dht.transport import CallerInfo, DhtTransport
from quic_transport.identity import NodeId


class RequestHandlers:
    def __init__(
        self,
        *,
        table: RoutingTable,
        store: RecordStore,
        anns: AnnouncementStore,
        config: DhtConfig,
        clock: Clock,
        observe: Callable[[Contact], None],
    ) -> None:
        self.table = table
        self.store = store
        self.anns = anns
        self.config = config
        self.clock = clock
        self._observe = observe

    def register(self, transport: DhtTransport) -> None:
        transport.register(PING, self.on_ping)
        transport.register(FIND_NODE, self.on_find_node)
        transport.register(GET, self.on_get)
        transport.register(PUT, self.on_put)
        transport.register(ANNOUNCE, self.on_announce)

    def _caller(self, ctx: CallerInfo, client: bool) -> None:
        if client:
            # A client-mode caller is answered but never routed to (it may be behind
            # NAT); if it used to be a server, forget it now.
            self.table.remove(ctx.peer_id, self.clock.monotonic())
            return
        try:
            contact = Contact(ctx.peer_id, ctx.host, ctx.port)
        except MessageError:
            return  # an address we could not dial back; still answer the request
        self._observe(contact)

    async def on_ping(self, ctx: CallerInfo, body: Any) -> Any:
        try:
            req = PingRequest.from_body(body)
        except MessageError as e:
            raise RequestRejected("bad-request", str(e)) from None
        self._caller(ctx, req.client)
        return PingResponse().to_body()

    async def on_find_node(self, ctx: CallerInfo, body: Any) -> Any:
        try:
            req = FindNodeRequest.from_body(body)
        except MessageError as e:
            raise RequestRejected("bad-request", str(e)) from None
        self._caller(ctx, req.client)
        nodes = self.table.closest(req.target, self.config.k, exclude=(ctx.peer_id,))
        return NodesResponse(tuple(nodes), self._anns_for(req.target, req.want_anns)).to_body()

    async def on_get(self, ctx: CallerInfo, body: Any) -> Any:
        try:
            req = GetRequest.from_body(body)
        except MessageError as e:
            raise RequestRejected("bad-request", str(e)) from None
        self._caller(ctx, req.client)
        nodes = self.table.closest(req.key, self.config.k, exclude=(ctx.peer_id,))
        record = self.store.get(req.key, self.clock.time())
        anns = self._anns_for(req.key, req.want_anns)
        return GetResponse(tuple(nodes), record, anns).to_body()

    def _anns_for(self, target: NodeId, wanted: bool) -> tuple[Announcement, ...]:
        if not wanted:
            return ()
        n = self.config.ann_max_returned
        return tuple(self.anns.closest(target, n, self.clock.time()))

    async def on_put(self, ctx: CallerInfo, body: Any) -> Any:
        try:
            req = PutRequest.from_body(body)
        except MessageError as e:
            raise RequestRejected("bad-request", str(e)) from None
        self._caller(ctx, req.client)
        try:
            stored = self.store.put(req.record, self.clock.time())
        except RecordError as e:
            raise RequestRejected(e.reason, e.message) from None
        return PutResponse(stored).to_body()

    async def on_announce(self, ctx: CallerInfo, body: Any) -> Any:
        try:
            req = AnnounceRequest.from_body(body)
        except MessageError as e:
            raise RequestRejected("bad-request", str(e)) from None
        self._caller(ctx, req.client)
        try:
            stored = self.anns.put(req.ann, self.clock.time())
        except RecordError as e:
            raise RequestRejected(e.reason, e.message) from None
        return PutResponse(stored).to_body()
