"""Kademlia routing table (sans-I/O): k-buckets by XOR distance, LRS eviction, replacements.

Owns which contacts a node knows and in what order. No sockets, no event loop, no
hidden clock: every method that depends on time takes ``now`` (monotonic seconds);
methods that need a network action (pinging the oldest contact of a full bucket)
*return* the action for the caller to perform, then the caller reports the outcome.

Layout: bucket ``i`` (0..159) holds contacts whose XOR distance ``d`` to this node has
``d.bit_length() == i + 1``, i.e. ``2**i <= d < 2**(i+1)``. This is the paper's split
tree where only the bucket holding our own ID is ever split (section 2.4), written as
a fixed array; there is no range arithmetic to get off by one.

Invariants:
- Each bucket holds at most ``k`` live contacts ordered least- to most-recently seen,
  and a replacement cache of at most ``replacement_size`` contacts (most recent last).
- A contact is in at most one of (bucket entries, replacement cache).
- Hearing from a known contact moves it to the tail (paper section 2.2).
- A full bucket never drops its oldest contact unheard: ``observe`` returns the oldest
  contact to ping (unless we heard from it less than ``ping_after`` seconds ago: then
  it is known good and the newcomer just waits in the replacement cache); only
  ``ping_result(..., ok=False)`` (or repeated RPC failures, ``failed``) evicts it, and
  the most recent replacement then takes its place.
- A contact is evicted for RPC failures only after ``stale_failures`` consecutive
  failures when a replacement is waiting, or ``max_failures`` when none is (a single
  timeout never evicts: paper section 4.1).
"""

from __future__ import annotations

import heapq
import json
import os
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dht.contact import Contact
from dht.errors import MessageError
from quic_transport.identity import ID_BITS, NodeId

STATE_VERSION = 1
MAX_SAVED_CONTACTS = ID_BITS * 40


@dataclass(slots=True)
class _Entry:
    contact: Contact
    ival: int
    last_seen: float
    failures: int = 0


@dataclass(slots=True)
class _Bucket:
    entries: OrderedDict[bytes, _Entry] = field(default_factory=OrderedDict)
    replacements: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)
    pending_ping: bytes | None = None


class RoutingTable:
    """The k-bucket table of one node. See the module docstring for the invariants."""

    def __init__(
        self,
        self_id: NodeId,
        *,
        k: int = 20,
        replacement_size: int | None = None,
        stale_failures: int = 2,
        max_failures: int = 5,
        ping_after: float = 0.0,
        now: float = 0.0,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.self_id = self_id
        self.k = k
        self.replacement_size = k if replacement_size is None else replacement_size
        self.stale_failures = stale_failures
        self.max_failures = max_failures
        self.ping_after = ping_after
        self._self_int = int(self_id)
        # Buckets are created on first use (most of the 160 stay empty for ever).
        self._buckets: dict[int, _Bucket] = {}
        self._last_lookup = [now] * ID_BITS
        self._count = 0
        self._flat: list[_Entry] | None = None  # all entries; rebuilt after changes

    # ---- geometry -------------------------------------------------------------------
    def bucket_index(self, node_id: NodeId) -> int:
        d = self._self_int ^ int(node_id)
        if d == 0:
            raise ValueError("our own ID has no bucket")
        return d.bit_length() - 1

    def _bucket(self, index: int) -> _Bucket:
        b = self._buckets.get(index)
        if b is None:
            b = self._buckets[index] = _Bucket()
        return b

    # ---- updates --------------------------------------------------------------------
    def observe(self, contact: Contact, now: float) -> Contact | None:
        """We heard from ``contact`` (its ID verified). Returns a contact to ping, if any.

        Returned contact: the least-recently-seen entry of a full bucket; the caller
        pings it and reports with :meth:`ping_result`. Meanwhile ``contact`` waits in
        the replacement cache.
        """
        nid = contact.node_id
        if nid == self.self_id:
            return None
        key = nid.raw  # bytes keys: their hash is cached
        b = self._bucket(self.bucket_index(nid))
        entry = b.entries.get(key)
        if entry is not None:
            entry.contact = contact  # ID verified by the transport; address may move
            entry.last_seen = now
            entry.failures = 0
            b.entries.move_to_end(key)
            return None
        if len(b.entries) < self.k:
            b.replacements.pop(key, None)
            b.entries[key] = _Entry(contact, int(nid), now)
            self._count += 1
            self._flat = None
            return None
        b.replacements.pop(key, None)
        b.replacements[key] = contact
        while len(b.replacements) > self.replacement_size:
            b.replacements.popitem(last=False)
        oldest = next(iter(b.entries.values()))
        if b.pending_ping is None and now - oldest.last_seen >= self.ping_after:
            b.pending_ping = oldest.contact.node_id.raw
            return oldest.contact
        return None

    def ping_result(self, node_id: NodeId, ok: bool, now: float) -> None:
        """Outcome of pinging a contact returned by :meth:`observe`."""
        key = node_id.raw
        b = self._bucket(self.bucket_index(node_id))
        if b.pending_ping == key:
            b.pending_ping = None
        entry = b.entries.get(key)
        if entry is None:
            return
        if ok:
            entry.last_seen = now
            entry.failures = 0
            b.entries.move_to_end(key)
        else:
            self._evict(b, key, now)

    def failed(self, node_id: NodeId, now: float) -> bool:
        """An RPC to ``node_id`` failed. Returns True if the contact was evicted."""
        if node_id == self.self_id:
            return False
        key = node_id.raw
        b = self._bucket(self.bucket_index(node_id))
        b.replacements.pop(key, None)
        entry = b.entries.get(key)
        if entry is None:
            return False
        entry.failures += 1
        if (entry.failures >= self.stale_failures and b.replacements) or (
            entry.failures >= self.max_failures
        ):
            self._evict(b, key, now)
            return True
        return False

    def remove(self, node_id: NodeId, now: float = 0.0) -> None:
        """Forget a contact entirely (e.g. it proved malicious)."""
        if node_id == self.self_id:
            return
        key = node_id.raw
        b = self._bucket(self.bucket_index(node_id))
        b.replacements.pop(key, None)
        if key in b.entries:
            self._evict(b, key, now)

    def _evict(self, b: _Bucket, key: bytes, now: float) -> None:
        del b.entries[key]
        self._count -= 1
        self._flat = None
        if b.pending_ping == key:
            b.pending_ping = None
        if b.replacements:
            rkey, repl = b.replacements.popitem(last=True)
            # A replacement was heard from recently (it is only cached on contact).
            b.entries[rkey] = _Entry(repl, int(repl.node_id), now)
            self._count += 1

    # ---- queries --------------------------------------------------------------------
    def closest(
        self, target: NodeId, count: int | None = None, exclude: Iterable[NodeId] = ()
    ) -> list[Contact]:
        """The ``count`` (default k) known contacts closest to ``target``, nearest first."""
        n = self.k if count is None else count
        t = int(target)
        ex = {int(x) for x in exclude}
        if self._flat is None:
            self._flat = [e for b in self._buckets.values() for e in b.entries.values()]
        entries = self._flat
        if ex:
            entries = [e for e in entries if e.ival not in ex]
        return [e.contact for e in heapq.nsmallest(n, entries, key=lambda e: e.ival ^ t)]

    def contacts(self) -> list[Contact]:
        return [e.contact for b in self._buckets.values() for e in b.entries.values()]

    def get(self, node_id: NodeId) -> Contact | None:
        if node_id == self.self_id:
            return None
        b = self._buckets.get(self.bucket_index(node_id))
        e = b.entries.get(node_id.raw) if b is not None else None
        return e.contact if e is not None else None

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, NodeId) and self.get(node_id) is not None

    def __len__(self) -> int:
        return self._count

    def bucket_sizes(self) -> dict[int, int]:
        return {i: len(b.entries) for i, b in sorted(self._buckets.items()) if b.entries}

    def replacements_in(self, index: int) -> list[Contact]:
        return list(self._bucket(index).replacements.values())

    def entries_in(self, index: int) -> list[Contact]:
        """Bucket ``index`` least-recently-seen first."""
        return [e.contact for e in self._bucket(index).entries.values()]

    # ---- refresh --------------------------------------------------------------------
    def lookup_done(self, target: NodeId, now: float) -> None:
        """A lookup for ``target`` completed: its bucket counts as refreshed."""
        if target != self.self_id:
            self._last_lookup[self.bucket_index(target)] = now

    def mark_refreshed(self, now: float) -> None:
        """Count every bucket as just refreshed (a node that just joined)."""
        self._last_lookup = [now] * ID_BITS

    def refresh_targets(self, now: float, interval: float, rng: random.Random) -> list[NodeId]:
        """Random IDs in each bucket with no lookup for ``interval`` seconds.

        Buckets closer than our nearest contact are skipped: the self-lookup that
        refresh also performs covers them (paper section 2.3, join procedure).
        """
        nonempty = sorted(i for i, b in self._buckets.items() if b.entries)
        if not nonempty:
            return []
        return [
            self.random_id_in(i, rng)
            for i in range(nonempty[0], ID_BITS)
            if now - self._last_lookup[i] >= interval
        ]

    def empty_buckets(self) -> list[int]:
        """Empty buckets at or beyond the bucket of our k-th nearest contact.

        After the self-lookup of a join we know our neighbourhood; a bucket at least as
        far as the k-th neighbour would hold about k/2 or more nodes in a uniform
        network, so if it is empty we simply have not met anyone there yet (paper
        section 2.3: a joining node refreshes the buckets beyond its closest neighbour;
        we refresh only the empty ones, which is what makes the difference).
        """
        near = self.closest(self.self_id, self.k)
        if len(near) < self.k:
            return []
        start = self.bucket_index(near[-1].node_id)
        return [
            i for i in range(start, ID_BITS) if not (b := self._buckets.get(i)) or not b.entries
        ]

    def random_id_in(self, index: int, rng: random.Random) -> NodeId:
        """A uniformly random ID whose distance from us falls in bucket ``index``."""
        d = (1 << index) | rng.getrandbits(index) if index else 1
        return NodeId((self._self_int ^ d).to_bytes(20, "big"))

    # ---- persistence (JSON, never pickle) -----------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON/CBOR-safe state for rejoining: our ID and known contacts, freshest first."""
        entries = sorted(
            (e for b in self._buckets.values() for e in b.entries.values()),
            key=lambda e: -e.last_seen,
        )
        return {
            "version": STATE_VERSION,
            "self": self.self_id.b32,
            "contacts": [e.contact.to_json() for e in entries],
        }


def contacts_from_state(state: Any) -> list[Contact]:
    """Validate a saved state and return its contacts (rejoin candidates, not trusted)."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise MessageError(f"routing state must be a version-{STATE_VERSION} object")
    items = state.get("contacts")
    if not isinstance(items, list) or len(items) > MAX_SAVED_CONTACTS:
        raise MessageError(f"routing state contacts must be a list of <= {MAX_SAVED_CONTACTS}")
    return [Contact.from_json(item) for item in items]


def save_contacts(path: Path, table: RoutingTable) -> None:
    """Write the table's state as JSON atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(table.to_state(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_contacts(path: Path) -> list[Contact]:
    """Read contacts saved by :func:`save_contacts`; a missing file gives ``[]``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    if len(text) > MAX_SAVED_CONTACTS * 400:
        raise MessageError(f"{path}: routing state file too large")
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise MessageError(f"{path}: not JSON ({e})") from None
    return contacts_from_state(state)
