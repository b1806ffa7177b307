"""Test helpers: an in-process record DHT and a one-process vdrive.

:class:`MemoryRecordDht` keeps the best record per key with the DHT's own rules
(``dht.records.validate``, highest sequence wins, publish = current + 1), so the
vdrive code runs against real signed records without a network. Tests that need a
network use real ``DhtNode``s on ``p2pstore.testing.dht_memnet`` instead
(tests/vdrive/test_vdrive_grid.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dht.records import Record, Signer, record_key, record_order, sign_record, validate
from p2pstore.vdrive.drive import Drive, DriveReader, LocalWriter, Vdrive
from p2pstore.vdrive.objects import CachingStore, MemoryObjectStore, ObjectStore
from p2pstore.vdrive.root_record import PRIVATE_NAME, SHARED_NAME, SeenStore, new_read_secret
from p2pstore.vdrive.writer import DriveWriter, WritePolicy
from quic_transport.identity import NodeId, NodeKey


class MemoryRecordDht:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.records: dict[NodeId, Record] = {}
        self.down = False
        self.black_hole = False  # publish "succeeds" but stores nothing (a lone node)
        self.gets = 0
        self.publishes = 0

    async def put(self, record: Record) -> int:
        validate(record, now=self.clock(), key=record.key)
        held = self.records.get(record.key)
        if held is None or record_order(record) > record_order(held):
            self.records[record.key] = record
        return 1

    async def get(self, key: NodeId) -> Record | None:
        if self.down:
            raise ConnectionError("DHT unreachable")
        self.gets += 1
        return self.records.get(key)

    async def publish(
        self, signer: Signer, name: bytes, value: bytes, *, ttl: int | None = None
    ) -> Record:
        if self.down:
            raise ConnectionError("DHT unreachable")
        self.publishes += 1
        key = record_key(bytes(signer.public_key), name)
        held = self.records.get(key)
        seq = 0 if held is None else held.seq + 1
        rec = sign_record(signer, name, seq, value, expires=int(self.clock()) + (ttl or 86400))
        if not self.black_hole:
            await self.put(rec)
        return rec


def local_vdrive(
    *,
    key: NodeKey | None = None,
    store: ObjectStore | None = None,
    dht: MemoryRecordDht | None = None,
    clock: Callable[[], float] = time.time,
) -> Vdrive:
    """A node that is its own vdrive node (shared + private drives, both local)."""
    key = key or NodeKey.generate()
    store = store or CachingStore(MemoryObjectStore())
    dht = dht or MemoryRecordDht(clock)
    drives = []
    for label, name in (("shared", SHARED_NAME), ("private", PRIVATE_NAME)):
        w = DriveWriter(
            signer=key,
            name=name,
            read_secret=new_read_secret(),
            store=store,
            dht=dht,
            policy=WritePolicy.only_owner(key.node_id),
            state_path=None,
            label=label,
            clock=clock,
        )
        reader = DriveReader(
            source=dht,
            public_key=key.public_key,
            name=name,
            read_secret=w.read_secret,
            store=store,
            seen=SeenStore(None),
            clock=clock,
            label=label,
        )
        drives.append(Drive(label, store, reader, LocalWriter(w, key.node_id), local=w))
    return Vdrive(shared=drives[0], private=drives[1], store=store)
