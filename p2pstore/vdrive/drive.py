"""Reading a drive (root record -> verified pointer -> directories) and the
:class:`Vdrive` component a node holds (shared + private drive).

:class:`DriveReader` fetches the drive's record from the DHT, checks it against the
*pinned* public key (from the bootstrap list, or the node's own key for its private
drive) and the record signature, opens the sealed pointer with the read secret,
and refuses a pointer older than the highest this node has seen
(:class:`~.record.SeenStore`, persisted). A fetched pointer is reused for
``max_age`` seconds; directory objects are cached by cap (``CachingStore``).

Invariants:
- nothing from the DHT is used before ``dht.records.validate`` passed for the
  expected key (so for the pinned key and name) and the pointer opened;
- the pointer a reader returns never has a lower sequence than one it returned
  before (in this process or, through the seen file, before a restart).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dht.errors import RecordError
from dht.records import Record, record_key, validate
from p2pstore.grid.mutable import MutableFiles
from p2pstore.mutable import ReadCap as MutableReadCap
from p2pstore.mutable import WriteCap
from quic_transport.identity import NodeId

from .dirnode import DirCap, Directory, Entry
from .errors import VdriveLocalError, VdriveRemoteError
from .live import LABEL, LiveReader, LiveWriter, ReadOnly, is_live_drive, parse_live_cap
from .objects import ObjectStore
from .ops import EMPTY_DIRCAP, Op, OpenLive, Path, list_dir, load_dir, resolve
from .root_record import EMPTY_POINTER, RootPointer, SeenStore, open_pointer
from .writer import ChangeResult, DriveWriter, Outcome


class RecordSource(Protocol):
    async def get(self, key: NodeId) -> Record | None: ...


class DriveReader:
    def __init__(
        self,
        *,
        source: RecordSource,
        public_key: bytes,
        name: bytes,
        read_secret: bytes,
        store: ObjectStore,
        seen: SeenStore,
        clock: Callable[[], float] = time.time,
        max_age: float = 1.0,
        label: str = "shared",
    ) -> None:
        self.source = source
        self.public_key = public_key
        self.name = name
        self.read_secret = read_secret
        self.store = store
        self.seen = seen
        self.clock = clock
        self.max_age = max_age
        self.label = label
        self.key = record_key(public_key, name)
        self.drive_id = self.key.b32
        self._current: RootPointer | None = None
        self._fetched_at = float("-inf")

    def invalidate(self) -> None:
        self._fetched_at = float("-inf")

    async def pointer(self, *, fresh: bool = False) -> RootPointer:
        now = self.clock()
        if not fresh and self._current is not None and now - self._fetched_at < self.max_age:
            return self._current
        rec = await self.source.get(self.key)
        if rec is None:
            if self._current is not None:
                return self._current
            if self.seen.highest(self.drive_id) > 0:
                raise VdriveRemoteError(
                    "grid-error",
                    f"the {self.label} drive's record cannot be found in the DHT right now",
                )
            return EMPTY_POINTER
        ptr = self.accept(rec, now)
        self._fetched_at = now
        return ptr

    def accept(self, rec: Record, now: float) -> RootPointer:
        """Validate ``rec`` for this drive and return its pointer (or the newer one held)."""
        try:
            validate(rec, now=now, key=self.key)
        except RecordError as e:
            raise VdriveRemoteError(
                "bad-record", f"{self.label} drive record refused: {e}"
            ) from None
        if rec.public_key != self.public_key or rec.name != self.name:
            raise VdriveRemoteError(
                "bad-record", f"{self.label} drive record is not signed by the pinned key"
            )
        ptr = open_pointer(
            rec.value, read_secret=self.read_secret, public_key=self.public_key, name=self.name
        )
        cur = self._current
        if cur is not None and ptr.sequence < cur.sequence:
            # An older copy answered (e.g. a lagging or malicious DHT node): keep ours.
            self.seen.check(self.drive_id, cur)
            return cur
        self.seen.check(self.drive_id, ptr)
        self._current = ptr
        return ptr


class Writer(Protocol):
    async def apply(
        self, op: Op, *, expected_sequence: int | None, op_id: bytes | None = None
    ) -> ChangeResult: ...

    async def settle(self, op_id: bytes) -> Outcome: ...


class LocalWriter:
    """A :class:`DriveWriter` on this node, called as this node."""

    def __init__(self, writer: DriveWriter, node_id: NodeId) -> None:
        self.writer = writer
        self.node_id = node_id

    async def apply(
        self, op: Op, *, expected_sequence: int | None, op_id: bytes | None = None
    ) -> ChangeResult:
        return await self.writer.apply(
            op, expected_sequence=expected_sequence, writer=self.node_id, op_id=op_id
        )

    async def settle(self, op_id: bytes) -> Outcome:
        return await self.writer.settle(op_id, writer=self.node_id)


class PointerSource(Protocol):
    """Where a drive's current pointer comes from: :class:`DriveReader` (a DHT
    record) or :class:`~.live.LiveReader` (a live directory's mutable root)."""

    async def pointer(self, *, fresh: bool = False) -> RootPointer: ...

    def invalidate(self) -> None: ...


@dataclass
class Drive:
    """One drive as this node sees it. ``local`` is set when this node is its writer;
    reads then come from the authoritative head instead of the DHT."""

    label: str
    store: ObjectStore
    reader: PointerSource | None
    writer: Writer | None
    local: DriveWriter | None = None
    #: enters live directories linked in this drive (set by :class:`Vdrive`)
    open_live: OpenLive | None = None

    async def head(self) -> RootPointer:
        if self.local is not None:
            return await self.local.current()
        if self.reader is None:
            raise VdriveLocalError(
                "vdrive-unavailable", f"this node cannot read the {self.label} drive"
            )
        return await self.reader.pointer()

    async def list(self, path: Path) -> tuple[Directory, int]:
        ptr = await self.head()
        return await list_dir(self.store, ptr.root, path, self.open_live), ptr.sequence

    async def stat(self, path: Path) -> tuple[Entry | None, int]:
        """The entry at ``path``; None for the root."""
        ptr = await self.head()
        return await resolve(self.store, ptr.root, path, self.open_live), ptr.sequence

    async def root_cap(self) -> DirCap | None:
        return (await self.head()).root

    def _writer(self) -> Writer:
        if self.writer is None:
            raise VdriveLocalError(
                "vdrive-unavailable", f"this node has no way to change the {self.label} drive"
            )
        return self.writer

    async def change(
        self, op: Op, *, expected_sequence: int | None, op_id: bytes | None = None
    ) -> ChangeResult:
        """Make one change; ``op_id`` (random, 8-32 bytes, from the requester) makes a
        retry of the same change safe and lets :meth:`settle` learn its outcome."""
        writer = self._writer()
        try:
            return await writer.apply(op, expected_sequence=expected_sequence, op_id=op_id)
        finally:
            if self.reader is not None:
                self.reader.invalidate()

    async def settle(self, op_id: bytes) -> Outcome:
        """Whether the change with ``op_id`` was made; if not, it never will be."""
        return await self._writer().settle(op_id)


class Vdrive:
    """What a node holds: its view of the shared drive and its own private drive."""

    def __init__(
        self,
        *,
        shared: Drive | None,
        private: Drive | None,
        store: ObjectStore,
        live: MutableFiles[Any] | None = None,
    ) -> None:
        self.shared = shared
        self.private = private
        self.store = store
        #: mutable files, for live directories addressed by cap (``p2ps:dir:mut...``)
        self.live = live
        #: one lock per live directory this node changes (unused ones are dropped)
        self._live_locks: weakref.WeakValueDictionary[bytes, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        for d in (shared, private):
            if d is not None:
                d.open_live = self.open_live

    async def open_live(self, cap: MutableReadCap) -> DirCap:
        """The latest root of a live directory linked somewhere (read access only)."""
        if self.live is None:
            raise VdriveLocalError("vdrive-unavailable", "this node has no mutable files")
        return (await LiveReader(self.live, cap).pointer()).root or EMPTY_DIRCAP

    def drive(self, label: str) -> Drive:
        if is_live_drive(label):
            return self._live_drive(label)
        d = self.shared if label == "shared" else self.private
        if d is None:
            raise VdriveLocalError(
                "vdrive-unavailable",
                f"no {label} drive on this node"
                + (" (the bootstrap list has no p2ps-vdrive line)" if label == "shared" else ""),
            )
        return d

    def _live_drive(self, label: str) -> Drive:
        """A live directory opened by its cap: a drive whose root is its latest
        version (docs/mutable.md, "Live directories")."""
        cap = parse_live_cap(label)
        if self.live is None:
            raise VdriveLocalError("vdrive-unavailable", "this node has no mutable files")
        writer: Writer = ReadOnly()
        if isinstance(cap, WriteCap):
            lock = self._live_locks.setdefault(cap.public_key, asyncio.Lock())
            writer = LiveWriter(self.live, self.store, cap, lock)
        return Drive(LABEL, self.store, LiveReader(self.live, cap), writer, None, self.open_live)

    async def make_dir(self, d: Directory) -> DirCap:
        """Store a whole directory object and return its read-only cap (a snapshot
        linked nowhere yet; the same entries give the same cap: convergent)."""
        return DirCap(await self.store.put(d.encode()))

    async def list_cap(self, cap: DirCap) -> Directory:
        """List a directory handed over as a read-only directory cap."""
        return await load_dir(self.store, cap)
