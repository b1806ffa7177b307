"""The record store of one node (sans-I/O): validated records with expiry and limits.

Invariants:
- Every stored record passed ``dht.records.validate`` for its key at store time, and a
  record is never returned once expired (``get`` checks ``now`` on every read).
- A stored record is only replaced by a valid record with a strictly higher sequence
  number; an identical record is accepted as a no-op (republish); anything else is
  refused with ``RecordError("stale", ...)``.
- At most ``max_records`` records and ``max_bytes`` of record data are held.
- At most ``max_per_publisher`` records and ``max_bytes_per_publisher`` bytes per
  signing key: a publisher over its quota displaces *its own* record farthest from
  this node (never someone else's), or is refused if the new key is farther still.
- When the whole store is full, a record for a new key displaces the held record
  whose key is farthest from this node (``self_id``, XOR distance), if the new key is
  closer; otherwise it is refused (``RecordError("full", ...)``). A node is
  responsible for the keys near it (Kademlia stores a key on the k nodes closest to
  it), so a flood of far keys cannot push out the records this node should serve,
  and placing keys near a chosen node costs a search per bit of closeness. Without
  ``self_id`` every key is at the same distance: new keys are refused when full.
  (docs/dht.md, "Record store limits".)
"""

from __future__ import annotations

import heapq
from collections import Counter

from dht.errors import RecordError
from dht.records import Record, is_live, validate
from quic_transport.identity import NodeId


def _size(r: Record) -> int:
    return len(r.value) + len(r.name) + 160


class RecordStore:
    def __init__(
        self,
        *,
        max_records: int = 20_000,
        max_bytes: int = 32 * 1024 * 1024,
        self_id: NodeId | None = None,
        max_per_publisher: int = 64,
        max_bytes_per_publisher: int = 1024 * 1024,
    ) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_per_publisher = max_per_publisher
        self.max_bytes_per_publisher = max_bytes_per_publisher
        self._self = None if self_id is None else int(self_id)
        self._records: dict[NodeId, Record] = {}
        self._bytes = 0
        self._pub_count: Counter[bytes] = Counter()
        self._pub_bytes: Counter[bytes] = Counter()
        # farthest-first heaps with lazy deletion: (-distance, key raw)
        self._far: list[tuple[int, bytes]] = []
        self._far_by_pub: dict[bytes, list[tuple[int, bytes]]] = {}
        self.evicted = 0

    def _dist(self, key: NodeId) -> int:
        return 0 if self._self is None else int(key) ^ self._self

    def put(self, record: Record, now: float) -> bool:
        """Validate and store; True if stored, False if this exact record was held."""
        key = record.key
        validate(record, now=now, key=key)
        old = self.get(key, now)
        if old is not None:
            if old == record:
                return False
            if record.seq <= old.seq:
                raise RecordError(
                    "stale", f"seq {record.seq} does not exceed the held seq {old.seq}"
                )
            self._drop(key)
        size = _size(record)
        pub = record.public_key
        dist = self._dist(key)
        while (
            self._pub_count[pub] >= self.max_per_publisher
            or self._pub_bytes[pub] + size > self.max_bytes_per_publisher
        ):
            victim = self._farthest(self._far_by_pub.get(pub, []))
            if victim is None or self._dist(victim) <= dist:
                raise RecordError("full", "this publisher's quota on this node is used up")
            self._drop(victim)
            self.evicted += 1
        if len(self._records) >= self.max_records or self._bytes + size > self.max_bytes:
            self.expire(now)
        while len(self._records) >= self.max_records or self._bytes + size > self.max_bytes:
            victim = self._farthest(self._far)
            if victim is None or self._dist(victim) <= dist:
                raise RecordError("full", "record store is full")
            self._drop(victim)
            self.evicted += 1
        self._records[key] = record
        self._bytes += size
        self._pub_count[pub] += 1
        self._pub_bytes[pub] += size
        entry = (-dist, key.raw)
        heapq.heappush(self._far, entry)
        mine = self._far_by_pub.setdefault(pub, [])
        heapq.heappush(mine, entry)
        if len(mine) > 4 * self._pub_count[pub] + 16:  # updates leave stale entries
            live = {raw for _, raw in mine if NodeId(raw) in self._records}
            mine[:] = [(-self._dist(NodeId(raw)), raw) for raw in live]
            heapq.heapify(mine)
        return True

    def _farthest(self, heap: list[tuple[int, bytes]]) -> NodeId | None:
        """The held key farthest from this node in ``heap`` (stale entries dropped)."""
        while heap:
            neg, raw = heap[0]
            key = NodeId(raw)
            if key in self._records and -neg == self._dist(key):
                return key
            heapq.heappop(heap)
        return None

    def get(self, key: NodeId, now: float) -> Record | None:
        r = self._records.get(key)
        if r is None:
            return None
        if not is_live(r, now):
            self._drop(key)
            return None
        return r

    def _drop(self, key: NodeId) -> None:
        r = self._records.pop(key, None)
        if r is None:
            return
        size = _size(r)
        self._bytes -= size
        pub = r.public_key
        self._pub_count[pub] -= 1
        self._pub_bytes[pub] -= size
        if self._pub_count[pub] <= 0:
            del self._pub_count[pub]
            del self._pub_bytes[pub]
            self._far_by_pub.pop(pub, None)
        if len(self._far) > 4 * len(self._records) + 64:  # lazy deletion: compact
            self._far = [(-self._dist(k), k.raw) for k in self._records]
            heapq.heapify(self._far)

    def expire(self, now: float) -> int:
        dead = [k for k, r in self._records.items() if not is_live(r, now)]
        for k in dead:
            self._drop(k)
        return len(dead)

    def key_list(self) -> list[NodeId]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def bytes_used(self) -> int:
        return self._bytes
