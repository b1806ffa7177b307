"""Driving one iterative lookup over the network (Kademlia paper section 2.3).

:class:`~dht.lookup.Lookup` is the sans-I/O state machine (which contacts to ask
next, when a request counts as slow, when the lookup is done); :func:`drive_lookup`
is its asyncio loop: it starts the queries the state machine asks for, feeds the
answers back, collects the best record and the newest node announcements seen,
and cancels whatever is still running when the lookup ends. The node
(:mod:`dht.node`) builds the lookup and the query function.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dht.announce import Announcement, ann_order
from dht.contact import Contact
from dht.lookup import Lookup
from dht.records import Record, record_order
from quic_transport.identity import NodeId


@dataclass(frozen=True, slots=True)
class Answer:
    """One peer's answer to a lookup request: closer contacts, a record (value
    lookups), node announcements."""

    nodes: tuple[Contact, ...]
    record: Record | None
    anns: tuple[Announcement, ...]


@dataclass(slots=True)
class Gathered:
    """What a lookup collects besides contacts: the best record, the sequence number
    each answering node returned (value lookups), the newest announcement per node."""

    best: Record | None
    held: dict[NodeId, int]
    anns: dict[NodeId, Announcement]


async def drive_lookup(
    lk: Lookup,
    query: Callable[[Contact], Awaitable[Answer | None]],
    monotonic: Callable[[], float],
    abandoned: Callable[[NodeId], None],
    gathered: Gathered,
) -> None:
    """Run ``lk`` to completion. ``query(contact)`` is one request (None: the peer
    failed); ``abandoned(node_id)`` is told of requests still running at the end that
    the lookup had already presumed failed (they count as failures)."""
    anns = gathered.anns
    pending: dict[asyncio.Task[Any], Contact] = {}
    try:
        while True:
            for c in lk.next_queries(monotonic()):
                pending[asyncio.ensure_future(query(c))] = c
            if not pending:
                break
            now = monotonic()
            wake = lk.next_wakeup(now)
            done, _ = await asyncio.wait(
                pending,
                timeout=None if wake is None else max(0.0, wake - now),
                return_when=asyncio.FIRST_COMPLETED,
            )
            now = monotonic()
            for t in done:
                c = pending.pop(t)
                res = t.result()
                if res is None:
                    lk.on_failure(c.node_id, now)
                    continue
                lk.on_response(c.node_id, res.nodes, now)
                for a in res.anns:
                    nid = a.node_id
                    if nid not in anns or ann_order(a) > ann_order(anns[nid]):
                        anns[nid] = a
                rec = res.record
                if rec is not None:
                    gathered.held[c.node_id] = rec.seq
                    if gathered.best is None or record_order(rec) > record_order(gathered.best):
                        gathered.best = rec
            if lk.is_done(now):
                break
    finally:
        # Abandoned requests that were already presumed failed count as failures.
        slow = set(lk.slow_ids(monotonic()))
        for t, c in pending.items():
            t.cancel()
            if c.node_id in slow:
                abandoned(c.node_id)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
