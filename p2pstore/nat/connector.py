"""Connector: get an authenticated connection to a peer from its peer record.

Order of attempts (docs/nat.md, "Connecting to a peer"):

1. an open connection to the node ID already exists: use it (the transport keys
   connections by node ID, so any later ``endpoint.call(PeerAddress(B_id, ...))``
   reuses it whatever host/port it names);
2. the record's direct addresses (reachable nodes, port mappings);
3. hole punching (``hole_punching``, unless the record or our own tracker says a
   symmetric NAT is involved): for each rendezvous in the record, ask it
   ``nat.connect`` (:func:`~p2pstore.nat.punch.request_connect`) and dial the
   observed address it returns;
4. relays (``use_relays``): dial the record's relayed addresses.

Every attempt is a fresh ``Endpoint.dial`` (never joined to a dial to the same node
ID already in flight, e.g. a DHT query to the peer's stale address whose Initials
went out before the punch: seen in the netns test), bounded by a little more than
the endpoint's own dial can take (datagram-size probing plus ``connect_timeout``).
Concurrent ``connect`` calls for one node share one attempt. How each peer
was reached is remembered (bounded) for ``peers``: ``direct``, ``punched`` or
``relayed``. Attempt tasks belong to the connector and end in :meth:`close`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from p2pstore.nat.errors import NatLocalError
from p2pstore.nat.peer_record import PeerRecord
from p2pstore.nat.punch import request_connect
from quic_transport import Endpoint, PeerAddress, RpcError
from quic_transport.identity import NodeId

log = logging.getLogger(__name__)
MAX_ROUTES = 1024
HOW = ("direct", "punched", "relayed")


@dataclass(frozen=True, slots=True)
class Route:
    """How we reached a peer: ``how`` in :data:`HOW`, at ``address``, ``via`` the
    rendezvous or relay node (None for direct), at monotonic time ``at``."""

    how: str
    address: tuple[str, int]
    via: NodeId | None
    at: float


class Connector:
    """See the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        hole_punching: bool = True,
        use_relays: bool = True,
        clock: Callable[[], float] = time.monotonic,
        own_nat: Callable[[], str] = lambda: "unknown",
    ) -> None:
        self.endpoint = endpoint
        self.own_nat = own_nat
        self.hole_punching = hole_punching
        self.use_relays = use_relays
        self.clock = clock
        self._routes: OrderedDict[NodeId, Route] = OrderedDict()
        self._attempts: dict[NodeId, asyncio.Task[PeerAddress]] = {}
        self.stats = {"direct": 0, "punched": 0, "relayed": 0, "failed": 0}

    @property
    def dial_wait(self) -> float:
        """Longer than the endpoint's own dial can take (datagram-size probing, then
        ``connect_timeout``), so a failed dial has ended before the next one starts."""
        c = self.endpoint.config
        return c.connect_timeout + c.pmtu_probe_timeout * (c.pmtu_probe_rounds + 1) + 1.0

    def route(self, node_id: NodeId) -> Route | None:
        """How the open connection to ``node_id`` was made, if we made it."""
        if self.endpoint.peer_address(node_id) is None:
            return None
        return self._routes.get(node_id)

    def routes(self) -> dict[NodeId, Route]:
        return {n: r for n in list(self._routes) if (r := self.route(n)) is not None}

    async def close(self) -> None:
        tasks = list(self._attempts.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._attempts.clear()

    async def connect(self, record: PeerRecord) -> PeerAddress:
        """A dialable address of ``record``'s node with a connection open to it now;
        NatLocalError if every way failed."""
        nid = record.node_id
        current = self.endpoint.peer_address(nid)
        if current is not None:
            return PeerAddress(nid, *current)
        task = self._attempts.get(nid)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._attempt(record))
            self._attempts[nid] = task
            task.add_done_callback(lambda t: self._finished(nid, t))
        return await asyncio.shield(task)

    def _finished(self, nid: NodeId, task: asyncio.Task[PeerAddress]) -> None:
        if self._attempts.get(nid) is task:
            del self._attempts[nid]
        if not task.cancelled():
            task.exception()  # retrieved by the waiters

    def _remember(self, nid: NodeId, how: str, addr: tuple[str, int], via: NodeId | None) -> None:
        self._routes.pop(nid, None)
        self._routes[nid] = Route(how, addr, via, self.clock())
        while len(self._routes) > MAX_ROUTES:
            self._routes.popitem(last=False)
        self.stats[how] += 1

    async def _dial(self, peer: PeerAddress) -> bool:
        try:
            # a fresh dial: never join one in flight to a stale address (whose
            # Initials went out before the punch and back off past our timeout)
            await self.endpoint.dial(peer, timeout=self.dial_wait)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("dial %s at %s:%d failed: %s", peer.node_id.short(), peer.host, peer.port, e)
            return False

    async def _attempt(self, record: PeerRecord) -> PeerAddress:
        nid = record.node_id
        errors: list[str] = []
        for host, port in record.direct:
            peer = PeerAddress(nid, host, port)
            if await self._dial(peer):
                self._remember(nid, "direct", (host, port), None)
                return peer
            errors.append(f"direct {host}:{port}")
        # a symmetric NAT on either side maps per destination: the address the
        # rendezvous observes is useless to us, so go straight to the relay
        symmetric = "symmetric" in (record.nat, self.own_nat())
        if symmetric:
            errors.append("punching skipped (symmetric NAT)")
        if self.hole_punching and not symmetric:
            for rv in record.relays:
                if rv.relay_id == self.endpoint.node_id:
                    continue  # we are its relay: it is connected to us already (or gone)
                rendezvous = PeerAddress(*rv.rendezvous)
                try:
                    observed, _ = await request_connect(
                        self.endpoint, rendezvous, nid, timeout=self.dial_wait
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    why = e.code if isinstance(e, RpcError) and e.code else type(e).__name__
                    errors.append(f"rendezvous {rv.relay_id.short()}: {why}")
                    continue
                peer = PeerAddress(nid, *observed)
                if await self._dial(peer):
                    self._remember(nid, "punched", observed, rv.relay_id)
                    return peer
                errors.append(f"punched {observed[0]}:{observed[1]}")
                break  # one punch attempt; a second rendezvous sees the same mapping
        if self.use_relays:
            for rv in record.relays:
                relayed = rv.relayed
                if relayed is None:
                    continue
                peer = PeerAddress(nid, *relayed)
                if await self._dial(peer):
                    self._remember(nid, "relayed", relayed, rv.relay_id)
                    return peer
                errors.append(f"relayed {relayed[0]}:{relayed[1]}")
        self.stats["failed"] += 1
        raise NatLocalError(
            f"cannot reach {nid.short()}: " + ("; ".join(errors) or "no usable address")
        )


class ConnectingEndpoint:
    """The part of an Endpoint a storage client uses (``call``, ``call_stream``), but
    every call first makes sure a connection to the record's node is open through the
    :class:`Connector` and sends to the address it was reached at."""

    def __init__(self, endpoint: Endpoint, connector: Connector, record: PeerRecord) -> None:
        self.endpoint = endpoint
        self.connector = connector
        self.record = record

    async def call(
        self,
        peer: Any,
        method: str,
        body: Any,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Any:
        address = await self.connector.connect(self.record)
        return await self.endpoint.call(address, method, body, timeout=timeout)

    async def call_stream(
        self,
        peer: Any,
        method: str,
        header: Any,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> Any:
        address = await self.connector.connect(self.record)
        return await self.endpoint.call_stream(address, method, header, chunks, timeout=timeout)
