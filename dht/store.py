"""The record store of one node (sans-I/O): validated records with expiry and limits.

Invariants:
- Every stored record passed ``dht.records.validate`` for its key at store time, and a
  record is never returned once expired (``get`` checks ``now`` on every read).
- A stored record is only replaced by a valid record with a strictly higher sequence
  number; an identical record is accepted as a no-op (republish); anything else is
  refused with ``RecordError("stale", ...)``.
- At most ``max_records`` records and ``max_bytes`` of record data are held; when full,
  records for new keys are refused (``RecordError("full", ...)``) rather than evicting
  records already accepted.
"""

from __future__ import annotations

from dht.errors import RecordError
from dht.records import Record, is_live, validate
from quic_transport.identity import NodeId


def _size(r: Record) -> int:
    return len(r.value) + len(r.name) + 160


class RecordStore:
    def __init__(self, *, max_records: int = 20_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records: dict[NodeId, Record] = {}
        self._bytes = 0

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
        elif len(self._records) >= self.max_records or self._bytes + _size(record) > (
            self.max_bytes
        ):
            self.expire(now)
            if len(self._records) >= self.max_records or self._bytes + _size(record) > (
                self.max_bytes
            ):
                raise RecordError("full", "record store is full")
        self._records[key] = record
        self._bytes += _size(record)
        return True

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
        if r is not None:
            self._bytes -= _size(r)

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
