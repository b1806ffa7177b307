"""The single writer of a drive: applies changes copy-on-write and publishes the root.

:class:`DriveWriter` is the vdrive node's logic (for the shared drive) and every
node's own logic for its private drive. It knows no wire: the RPC adapter
(``rpc.py``) hands it requests with the caller's verified node ID.

Invariants:
- changes are serialized by one ``asyncio.Lock``: each request sees the result of
  the previous one, and gets a definite answer: the new sequence (ok), the current
  sequence (``sequence-mismatch`` when ``expected_sequence`` differs), or an error
  naming why (``refused``, ``not-found``, ``exists``, ...);
- the head (sequence, root cap) is written to ``state_path`` (private, 0600: it is
  a secret) *before* the record is published, so the sequence never goes back and
  never names two roots, even across a crash between the two steps;
- a failed change writes no head and publishes nothing (directory objects it
  already stored are unreachable garbage, which leases let expire).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dht.records import Record, Signer, record_key
from p2pstore.base.fsutil import write_text_atomic
from quic_transport.identity import NodeId

from .dirnode import parse_dircap
from .errors import VdriveLocalError, VdriveRemoteError, conflict
from .objects import ObjectStore
from .ops import Op, apply_op
from .root_record import EMPTY_POINTER, RootPointer, open_pointer, seal_pointer

log = logging.getLogger(__name__)


class RecordPublisher(Protocol):
    """What a writer needs from the DHT (``dht.DhtNode`` fits)."""

    async def publish(
        self, signer: Signer, name: bytes, value: bytes, *, ttl: int | None = None
    ) -> Record: ...

    async def get(self, key: NodeId) -> Record | None: ...


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """Who may change the drive: the owner always; others if ``open`` or listed."""

    owner: NodeId
    allowed: frozenset[NodeId] = frozenset()
    open: bool = False
    #: writers added at run time (invitations; consulted at every change)
    extra: Callable[[], Collection[NodeId]] | None = None

    def permits(self, writer: NodeId) -> bool:
        if self.open or writer == self.owner or writer in self.allowed:
            return True
        return self.extra is not None and writer in self.extra()

    @classmethod
    def only_owner(cls, owner: NodeId) -> WritePolicy:
        return cls(owner)

    @classmethod
    def from_list(
        cls,
        owner: NodeId,
        allowed: Collection[NodeId],
        *,
        open: bool,
        extra: Callable[[], Collection[NodeId]] | None = None,
    ) -> WritePolicy:
        return cls(owner, frozenset(allowed), open, extra)


RECENT_OPS = 1024  # op ids remembered per drive
PER_WRITER = 128  # ... and per writer: one writer's flood evicts only its own ids
#: the mark an op id gets when its requester was told "not made" (``settle``)
GIVEN_UP = -1


@dataclass(frozen=True, slots=True)
class ChangeResult:
    sequence: int
    changed: bool  # False for a no-op (sequence unchanged, nothing published)
    loaded: int = 0  # directories read
    written: int = 0  # directory objects stored
    published: bool = True
    replayed: bool = False  # the answer of an earlier, identical request (same op id)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a change with a given op id (``settle``)."""

    applied: bool
    sequence: int  # the sequence the change produced; the current head's if not made


class DriveWriter:
    def __init__(
        self,
        *,
        signer: Signer,
        name: bytes,
        read_secret: bytes,
        store: ObjectStore,
        dht: RecordPublisher,
        policy: WritePolicy,
        state_path: Path | None,
        label: str = "shared",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.name = name
        self.read_secret = read_secret
        self.store = store
        self.dht = dht
        self.policy = policy
        self.state_path = state_path
        self.label = label
        self.clock = clock
        self.head: RootPointer = EMPTY_POINTER
        self._lock = asyncio.Lock()
        self._loaded = False
        self._unpublished = False  # the head is newer than what the DHT was given
        #: op id (hex) -> sequence it produced: the last RECENT_OPS changes, saved with
        #: the head in the same atomic write, so a retried change is answered, not redone
        self._recent: dict[str, int] = {}

    @property
    def public_key(self) -> bytes:
        return bytes(self.signer.public_key)

    async def load(self) -> RootPointer:
        """Recover the head: the newer of the local state file and our DHT record."""
        async with self._lock:
            return await self._load_locked()

    async def current(self) -> RootPointer:
        """The head, loading it on first use."""
        if not self._loaded:
            await self.load()
        return self.head

    async def _load_locked(self) -> RootPointer:
        head = self._read_state()
        try:
            rec = await self.dht.get(record_key(self.public_key, self.name))
        except Exception as e:  # the DHT may be unreachable at start
            log.warning("%s drive: cannot fetch our record at start: %s", self.label, e)
            rec = None
        if rec is not None and rec.public_key == self.public_key:
            try:
                ptr = open_pointer(
                    rec.value,
                    read_secret=self.read_secret,
                    public_key=self.public_key,
                    name=self.name,
                )
                if ptr.sequence > head.sequence:
                    head = ptr
            except VdriveRemoteError as e:
                log.warning("%s drive: our own record does not open: %s", self.label, e)
        # Publish the head again after every start: the record may be missing or older
        # (stopped between saving and publishing), and the DHT node only keeps
        # republishing (extending the life of) records it published in this process.
        self._unpublished = head.sequence > 0
        self.head = head
        self._loaded = True
        return head

    def _read_state(self) -> RootPointer:
        if self.state_path is None:
            return self.head
        try:
            obj: Any = json.loads(self.state_path.read_bytes()[: 1 << 16])
            if obj.get("format") != "p2pstore-vdrive-head-v1":
                raise ValueError("unknown format")
            recent = obj.get("recent_ops", {})
            if isinstance(recent, dict):
                self._recent = {
                    str(k): v for k, v in recent.items() if isinstance(v, int) and len(k) <= 100
                }
            return RootPointer(obj["sequence"], parse_dircap(obj["root"]), float(obj["time"]))
        except FileNotFoundError:
            return EMPTY_POINTER
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # Refuse to start from scratch silently: that would reuse sequence numbers.
            raise VdriveLocalError(
                "bad-state", f"{self.state_path}: unreadable vdrive head ({e}); fix or remove it"
            ) from None

    def _commit(self, p: RootPointer, key: str | None = None, sequence: int = 0) -> None:
        """Save head ``p`` with the op ids (plus ``key`` -> ``sequence``), then adopt
        both in memory: an id is recorded if and only if its change is saved."""
        recent = dict(self._recent)
        if key is not None:
            _remember(recent, key, sequence)
        if self.state_path is not None and p.root is not None:
            data = {
                "format": "p2pstore-vdrive-head-v1",
                "sequence": p.sequence,
                "root": p.root.to_string(),
                "time": p.time,
                "recent_ops": recent,
            }
            try:
                self.state_path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(self.state_path, json.dumps(data) + "\n", mode=0o600)
            except OSError as e:
                raise VdriveLocalError(
                    "bad-state", f"cannot save the {self.label} drive's head: {e.strerror or e}"
                ) from None
        self._recent = recent
        self.head = p

    async def apply(
        self,
        op: Op,
        *,
        expected_sequence: int | None,
        writer: NodeId,
        op_id: bytes | None = None,
    ) -> ChangeResult:
        """Apply one change for ``writer``; raises VdriveLocalError with a definite code.
        ``op_id`` (a random id the requester made for this change): a change with an id
        already applied is answered with its result again instead of being redone, so
        a requester that lost the answer can retry (docs/vdrive.md, "Retries")."""
        if not self.policy.permits(writer):
            raise VdriveLocalError(
                "refused",
                f"node {writer.b32} may not change the {self.label} drive "
                "(not in the vdrive node's [vdrive] writers): ask its operator for an "
                "invitation with write access (`p2pstore invite --write NAME` there)",
            )
        async with self._lock:
            if not self._loaded:
                await self._load_locked()
            if self._unpublished:
                await self._publish(self.head)
            head = self.head
            key = _key(writer, op_id) if op_id else None
            if key is not None and key in self._recent:
                if self._recent[key] == GIVEN_UP:
                    raise VdriveLocalError(
                        "abandoned",
                        "this change arrived after its requester was told it was not made; "
                        "it was not made: send it again to make it",
                    )
                return ChangeResult(self._recent[key], True, replayed=True)
            if expected_sequence is not None and expected_sequence != head.sequence:
                raise conflict(head.sequence, expected_sequence, self.label)
            now = self.clock()
            new_root, ed = await apply_op(self.store, head.root, op, now)
            if new_root is None:  # nothing to change; still an answer to remember
                if key is not None:
                    self._commit(head, key, head.sequence)
                return ChangeResult(head.sequence, False, ed.loaded, ed.written)
            ptr = RootPointer(head.sequence + 1, new_root, now)
            self._commit(ptr, key, ptr.sequence)
            published = await self._publish(ptr)
            return ChangeResult(ptr.sequence, True, ed.loaded, ed.written, published)

    async def settle(self, op_id: bytes, *, writer: NodeId) -> Outcome:
        """Was the change with ``op_id`` made? A definite answer: if it was not, the id
        is marked given up (saved with the head), so the request arriving later is
        refused (``abandoned``) instead of making a change its requester was told
        did not happen (docs/vdrive.md, "Retries")."""
        if not self.policy.permits(writer):
            raise VdriveLocalError(
                "refused", f"node {writer.b32} may not ask about {self.label} drive changes"
            )
        async with self._lock:
            if not self._loaded:
                await self._load_locked()
            key = _key(writer, op_id)
            seq = self._recent.get(key)
            if seq is not None and seq != GIVEN_UP:
                return Outcome(True, seq)
            if seq is None:
                self._commit(self.head, key, GIVEN_UP)
            return Outcome(False, self.head.sequence)

    async def publish_pending(self) -> bool:
        """Publish the head if an earlier publish failed; True when nothing is pending."""
        async with self._lock:
            if self._unpublished:
                return await self._publish(self.head)
            return True

    async def confirm_published(self) -> bool:
        """True if the DHT returns our head; else mark it for publishing again.

        ``DhtNode.publish`` succeeds even when it stored the record on no node (e.g.
        before the node joined), so a start-up publish is checked by reading back."""
        async with self._lock:
            if self.head.sequence == 0:
                return True
            try:
                rec = await self.dht.get(record_key(self.public_key, self.name))
                ok = rec is not None and (
                    open_pointer(
                        rec.value,
                        read_secret=self.read_secret,
                        public_key=self.public_key,
                        name=self.name,
                    ).sequence
                    >= self.head.sequence
                )
            except Exception as e:
                log.info("%s drive: reading our record back failed: %s", self.label, e)
                ok = False
            if not ok:
                self._unpublished = True
            return ok

    async def _publish(self, ptr: RootPointer) -> bool:
        value = seal_pointer(
            ptr, read_secret=self.read_secret, public_key=self.public_key, name=self.name
        )
        try:
            await self.dht.publish(self.signer, self.name, value)
        except Exception as e:
            # The head stands (it may already be on some DHT nodes); the next change
            # (or publish_pending) publishes it again. The answer says so.
            log.warning("%s drive: publishing sequence %d failed: %s", self.label, ptr.sequence, e)
            self._unpublished = True
            return False
        self._unpublished = False
        return True


def _key(writer: NodeId, op_id: bytes) -> str:
    """Op ids are per writer: one writer can neither see nor settle another's."""
    return f"{writer.b32[:16]}:{op_id.hex()}"


def _remember(recent: dict[str, int], key: str, sequence: int) -> None:
    """Add ``key``; past :data:`PER_WRITER` ids of that writer its oldest goes, past
    :data:`RECENT_OPS` in all the oldest of any."""
    recent[key] = sequence
    prefix = key.split(":", 1)[0] + ":"
    mine = [k for k in recent if k.startswith(prefix)]
    if len(mine) > PER_WRITER:
        del recent[mine[0]]
    while len(recent) > RECENT_OPS:
        del recent[next(iter(recent))]
