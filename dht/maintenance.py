"""A DHT node's background upkeep: the maintenance tick and record handover.

Functions over a :class:`Maintained` node (this module is the node's own upkeep,
split out to keep ``node.py`` small; it sees the node only through that Protocol):

- :func:`run_maintenance` is the node's one maintenance task (started by
  ``Maintained.start``, cancelled by ``close``): every ``maintenance_interval *
  U(0.5, 1.5)`` it expires stored records and announcements, re-bootstraps with
  back-off when the routing table is empty, else refreshes at most
  ``max_refresh_per_tick`` stale buckets, republishes due records and re-announces
  the node's announcement when due. Work is spread over ticks, never one burst, and
  an exception in one tick is logged without ending maintenance.
- :func:`hand_over` gives a newly met contact the records and node announcements
  it should hold (paper section 2.5; an announcement's key is its announcer's node
  ID), at most ``HANDOVER_MAX`` in all per newcomer.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from dht.announce import Announcement, AnnouncementStore, Announcer
from dht.clock import Clock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.errors import DhtLocalError, RecordError
from dht.messages import ANNOUNCE, PUT, AnnounceRequest, PutRequest
from dht.records import Record, Signer
from dht.routing import RoutingTable
from dht.store import RecordStore
from quic_transport.identity import NodeId

log = logging.getLogger("dht.node")


@dataclass(slots=True)
class Published:
    """A record this node publishes and keeps republishing."""

    signer: Signer
    record: Record
    due: float  # monotonic time of the next republish


class Maintained(Protocol):
    """What the upkeep needs from its node (:class:`dht.node.Maintained` satisfies
    it; this module never imports the node)."""

    node_id: NodeId
    config: DhtConfig
    clock: Clock
    rng: random.Random
    seeds: list[Contact]
    saved_contacts: list[Contact]
    table: RoutingTable
    store: RecordStore
    anns: AnnouncementStore
    announcer: Announcer | None
    published: dict[NodeId, Published]

    @property
    def server(self) -> bool: ...
    async def bootstrap(self) -> int: ...
    async def lookup(self, target: NodeId) -> list[Contact]: ...
    async def put(self, record: Record) -> int: ...
    def sign(
        self, signer: Signer, name: bytes, seq: int, value: bytes, ttl: int | None
    ) -> Record: ...
    def next_republish(self) -> float: ...
    def next_reannounce(self) -> float: ...
    async def send_announcement(self, ann: Announcement) -> int: ...
    async def store_one(self, contact: Contact, method: str, body: dict[str, Any]) -> bool: ...


# Records handed to one newly met node at most (bounds work per new contact).
HANDOVER_MAX = 200


async def run_maintenance(node: Maintained) -> None:
    """Jittered periodic tick until cancelled."""
    state = {"backoff": node.config.maintenance_interval, "next_rebootstrap": 0.0}
    while True:
        iv = node.config.maintenance_interval
        await node.clock.sleep(iv * node.rng.uniform(0.5, 1.5))
        try:
            await tick(node, state)
        except Exception:  # a bug in one tick must not end maintenance for good
            log.exception("DHT maintenance tick failed")


async def tick(node: Maintained, state: dict[str, float]) -> None:
    now = node.clock.monotonic()
    node.store.expire(node.clock.time())
    node.anns.expire(node.clock.time())
    if not len(node.table):
        if now >= state["next_rebootstrap"] and (node.seeds or node.saved_contacts):
            log.info("routing table empty: re-bootstrapping from seeds")
            with contextlib.suppress(DhtLocalError):
                await node.bootstrap()
            if not len(node.table):
                state["backoff"] = min(state["backoff"] * 2, node.config.rebootstrap_backoff_max)
                state["next_rebootstrap"] = now + state["backoff"]
            else:
                state["backoff"] = node.config.maintenance_interval
        return
    await refresh_some(node, now)
    await republish_due(node, now)
    await reannounce_due(node, now)


async def refresh_some(node: Maintained, now: float) -> None:
    targets = node.table.refresh_targets(now, node.config.refresh_interval, node.rng)
    node.rng.shuffle(targets)
    for t in targets[: node.config.max_refresh_per_tick]:
        await node.lookup(t)
    if targets and node.rng.random() < 0.5:
        await node.lookup(node.node_id)  # keep our neighbourhood fresh


async def republish_due(node: Maintained, now: float) -> None:
    for key, pub in list(node.published.items()):
        if pub.due > now:
            continue
        rec = pub.record
        remaining = rec.expires - node.clock.time()
        if remaining < node.config.record_ttl / 2:
            # Re-sign with a fresh lifetime; a higher seq so stores accept it.
            rec = node.sign(pub.signer, rec.name, rec.seq + 1, rec.value, None)
        pub.record = rec
        pub.due = node.next_republish()
        try:
            await node.put(rec)
        except RecordError as e:
            log.warning("republish of %s failed: %s", key.short(), e)


async def reannounce_due(node: Maintained, now: float) -> None:
    a = node.announcer
    if a is None or a.current is None or a.due > now:
        return
    a.due = node.next_reannounce()
    ann = a.refreshed(node.clock.time())
    if ann is not None:
        await node.send_announcement(ann)


async def hand_over(node: Maintained, newcomer: Contact) -> None:
    """Give a new contact the records it should hold (paper section 2.5).

    Only when this node is the closest holder it knows of (apart from the
    newcomer) and the newcomer is closer than this node, so one node, not k,
    sends each record. At most ``HANDOVER_MAX`` records per newcomer.
    """
    sent = 0
    for key in node.store.key_list():
        if sent >= HANDOVER_MAX:
            break
        rec = node.store.get(key, node.clock.time())
        if rec is None:
            continue
        if not _should_hand_over(node, newcomer, key):
            continue
        sent += 1
        await node.store_one(newcomer, PUT, PutRequest(rec, client=not node.server).to_body())
    # Node announcements, by the same rule with the announcer's ID as the key.
    for nid in node.anns.node_ids():
        if sent >= HANDOVER_MAX:
            break
        ann = node.anns.get(nid, node.clock.time())
        if ann is None or not _should_hand_over(node, newcomer, nid):
            continue
        sent += 1
        await node.store_one(
            newcomer, ANNOUNCE, AnnounceRequest(ann, client=not node.server).to_body()
        )


def _should_hand_over(node: Maintained, newcomer: Contact, key: NodeId) -> bool:
    mine = node.node_id.distance(key)
    if newcomer.node_id.distance(key) >= mine:
        return False
    others = node.table.closest(key, 1, exclude=(newcomer.node_id,))
    return not (others and others[0].node_id.distance(key) < mine)
