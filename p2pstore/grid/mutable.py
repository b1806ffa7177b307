"""Mutable files on the grid: find the latest root, publish a new version, spread
the latest root to the peers that lack it (docs/mutable.md, "Protocol").

The root of a mutable file lives in a storage slot (``storage.slot_read`` /
``storage.slot_write``) on the ``replicas`` storage peers nearest the slot's
storage index; each version's content is an immutable file uploaded with a random
key by the grid's :class:`~.upload.Uploader`.

Invariants:
- Every record a peer returns is decoded and its signature checked
  (``decode_record``), and its key and body checked against the cap
  (:func:`p2pstore.mutable.check_root`), before it counts; a peer that returns
  anything else is reported in ``bad`` and ignored.
- The latest root is :func:`p2pstore.mutable.choose` of the valid records; with a
  rollback guard (``seen``), a latest root older than one this node has seen, or a
  different root at the same sequence, is refused (``rollback``).
- Publishing is test-and-set on every peer: a server stores the new root only if
  its sequence is higher than what it holds. A peer that refuses because it holds
  another root of that sequence or higher means another writer published first:
  the publish fails with :class:`MutableConflict` (the caller reads the latest and
  tries again), never silently. Success needs the root stored on a majority of the
  peers asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol

from p2pstore.base.tasks import bounded
from p2pstore.immutable import VerifyCap as ImmutableVerifyCap
from p2pstore.immutable import parse_cap
from p2pstore.mutable import (
    MutableError,
    ReadCap,
    Root,
    VerifyCap,
    Version,
    VersionCap,
    WriteCap,
    check_root,
    choose,
    make_root,
    open_root,
)
from p2pstore.storage import StorageError
from p2pstore.storage.slots import SlotRecord, decode_record, slot_index
from quic_transport.identity import b32encode

from .errors import GridLocalError, GridRemoteError
from .peers import FindPeers, P, Progress, StorageFor, describe
from .upload import Uploader

AnyCap = WriteCap | ReadCap | VerifyCap
#: ``Health.renew``: renew this node's lease on an immutable file's shares
Renew = Callable[[ImmutableVerifyCap], Awaitable[Mapping[str, str | None]]]


class SeenGuard(Protocol):
    """The rollback guard (``vdrive.root_record.SeenStore`` in a node): raises for an
    older sequence than seen, or another root at the same sequence."""

    def check(self, drive_id: str, p: Any) -> None: ...


class MutableNotFound(GridRemoteError):
    """No peer holds a root of this mutable file."""


class MutableConflict(GridRemoteError):
    """Another writer published first. ``ours`` is the root this publish tried to
    store (it may still be held by a minority of peers, and may even be what readers
    choose: a caller that retries checks for it first)."""

    def __init__(self, message: str, *, sequence: int, ours: SlotRecord | None = None) -> None:
        super().__init__(message)
        self.sequence = sequence
        self.ours = ours


class MutableUnavailable(GridRemoteError):
    """Too few peers could be asked or stored the root."""


class MutableBad(GridRemoteError):
    """The latest root does not open or is a rollback."""


@dataclass(frozen=True, slots=True)
class MutableConfig:
    #: peers that keep each root (the grid's N)
    replicas: int = 10
    op_timeout: float = 15.0


@dataclass(slots=True)
class Survey:
    """What the peers nearest a slot hold. Peers are base32 node IDs."""

    storage_index: bytes
    asked: list[Any] = field(default_factory=list)
    held: dict[str, SlotRecord] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    latest: Root | None = None

    @property
    def stale(self) -> list[str]:
        """Reachable peers without the latest root (older, or none)."""
        if self.latest is None:
            return []
        want = self.latest.record
        return sorted([p for p, r in self.held.items() if r != want] + self.empty)

    @property
    def holding_latest(self) -> int:
        if self.latest is None:
            return 0
        return sum(1 for r in self.held.values() if r == self.latest.record)

    def report(self) -> dict[str, Any]:
        return {
            "storage_index": b32encode(self.storage_index),
            "sequence": 0 if self.latest is None else self.latest.sequence,
            "peers_asked": len(self.asked),
            "holding_latest": self.holding_latest,
            "stale": self.stale,
            "bad": dict(self.bad),
            "unreachable": dict(self.unreachable),
        }


@dataclass(frozen=True, slots=True)
class Published:
    version: Version
    stored: int
    asked: int
    survey: Survey


def _peer_b32(peer: Any) -> str:
    return str(peer.node_id.b32)


def _drive_id(cap: AnyCap) -> str:
    return "mut:" + b32encode(cap.verify_cap().public_key)


class MutableFiles(Generic[P]):
    def __init__(
        self,
        find_peers: FindPeers[P],
        storage_for: StorageFor[P],
        uploader: Uploader[P] | None,
        config: MutableConfig | None = None,
        *,
        seen: SeenGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.find_peers = find_peers
        self.storage_for = storage_for
        self.uploader = uploader
        self.config = config or MutableConfig()
        self.seen = seen
        self.clock = clock
        #: called with the file's verify cap after each successful publish (the node
        #: records it in its lease book: it keeps its own mutable files alive)
        self.on_published: Callable[[VerifyCap], None] | None = None

    # -- reading -------------------------------------------------------------------
    async def survey(self, cap: AnyCap) -> Survey:
        """Ask the nearest peers for the slot; validate what they return."""
        si = slot_index(cap.verify_cap().public_key)
        s = Survey(si)
        s.asked = list(await self.find_peers(si, self.config.replicas))

        async def one(peer: P) -> None:
            name = _peer_b32(peer)
            try:
                raw = await bounded(self.storage_for(peer).slot_read(si), self.config.op_timeout)
            except Exception as e:  # a refusal or transport failure: that peer only
                s.unreachable[name] = describe(e)
                return
            if raw is None:
                s.empty.append(name)
                return
            try:
                record = decode_record(raw)
                check_root(record, cap)
            except (StorageError, MutableError) as e:
                s.bad[name] = describe(e) if isinstance(e, StorageError) else str(e)[:200]
                return
            s.held[name] = record

        await asyncio.gather(*(one(p) for p in s.asked))
        best = choose(s.held.values())
        s.latest = None if best is None else check_root(best, cap)
        return s

    def _guard(self, cap: AnyCap, root: Root | Version) -> None:
        if self.seen is None:
            return
        try:
            self.seen.check(_drive_id(cap), root)
        except Exception as e:  # the guard's own error type (rollback)
            raise MutableBad(f"{e}; the peers may be stale or replaying an old root") from None

    async def latest(self, cap: ReadCap | WriteCap) -> tuple[Version, Survey]:
        """The latest version this node can verify (rollback-guarded)."""
        s = await self.survey(cap)
        if s.latest is None:
            raise self._none_found(s)
        try:
            v = open_root(s.latest.record, cap)
        except MutableError as e:
            raise MutableBad(str(e)) from None
        self._guard(cap, v)
        return v, s

    async def latest_root(self, cap: AnyCap) -> Survey:
        s = await self.survey(cap)
        if s.latest is None:
            raise self._none_found(s)
        self._guard(cap, s.latest)
        return s

    @staticmethod
    def _none_found(s: Survey) -> GridRemoteError:
        if not s.held and not s.empty:
            return MutableUnavailable(
                f"none of the {len(s.asked)} peers nearest this mutable file answered "
                f"({len(s.bad)} returned bad records)"
            )
        return MutableNotFound(
            f"no peer of {len(s.asked)} holds a version of this mutable file"
            + (f" ({len(s.bad)} returned bad records, ignored)" if s.bad else "")
        )

    # -- publishing ----------------------------------------------------------------
    async def create(
        self,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        directory: bool = False,
        progress: Progress | None = None,
    ) -> tuple[WriteCap, Published]:
        cap = WriteCap.generate(directory=directory)
        return cap, await self.publish(cap, chunks, size=size, progress=progress, create=True)

    async def publish(
        self,
        cap: WriteCap,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        expected_sequence: int | None = None,
        progress: Progress | None = None,
        create: bool = False,
    ) -> Published:
        """Upload ``chunks`` as the next version of ``cap``'s file.

        ``expected_sequence`` (optional) makes the publish fail with
        :class:`MutableConflict` unless the latest version is exactly that one."""
        s = await self.survey(cap)
        if s.latest is None and not create:
            raise self._none_found(s)
        current = 0 if s.latest is None else s.latest.sequence
        if s.latest is not None:
            self._guard(cap, s.latest)
        if expected_sequence is not None and expected_sequence != current:
            raise MutableConflict(
                f"the latest version is {current}, not {expected_sequence}: someone else "
                "published meanwhile; read it and try again",
                sequence=current,
            )
        if self.uploader is None:
            raise GridLocalError("this node cannot upload (no uploader)")
        up = await self.uploader.upload_random(chunks, size=size, progress=progress, announce=False)
        assert not isinstance(up.cap, ImmutableVerifyCap)  # a keyed upload: a read cap
        return await self.publish_version(cap, up.cap, s)

    async def publish_version(
        self, cap: WriteCap, version: VersionCap, s: Survey, *, reassert: bool = True
    ) -> Published:
        """Sign ``version`` (an uploaded file's read cap) as the next root after what
        ``s`` found and store it on the surveyed peers (test-and-set).

        Two writers that raced to the same sequence may each have stored their root
        on some peers and both see a refusal. One whose root a majority of the peers
        asked hold (so readers choose it: :func:`p2pstore.mutable.choose`) publishes
        the same version once more with the next sequence, so the peers converge on
        it, and is told success; any other is told :class:`MutableConflict`."""
        current = 0 if s.latest is None else s.latest.sequence
        record = make_root(cap, current + 1, version, self.clock())
        v = open_root(record, cap)
        reachable = [p for p in s.asked if _peer_b32(p) not in s.unreachable]
        if not reachable:
            raise MutableUnavailable("no peer near this mutable file can be reached")
        results = await asyncio.gather(*(self._put(p, s.storage_index, record) for p in reachable))
        stored = sum(1 for r in results if r is True)
        winners = [r for r in results if isinstance(r, SlotRecord)]
        need = len(s.asked) // 2 + 1
        if winners:
            top = max(w.seq for w in winners)
            if reassert and stored >= need and top == record.seq:
                again = await self.survey(cap)
                if again.latest is not None and again.latest.record == record:
                    return await self.publish_version(cap, version, again, reassert=False)
            raise MutableConflict(
                f"another writer published version {top} first (this one would have "
                f"been {record.seq}); read the latest and try again",
                sequence=top,
                ours=record,
            )
        if stored < need:
            raise MutableUnavailable(
                f"the new root was stored on {stored} of {len(s.asked)} peers "
                f"(at least {need} needed), so whether readers see it is unknown; "
                "read the latest and try again"
            )
        self._guard(cap, v)
        if self.on_published is not None:
            self.on_published(cap.verify_cap())
        return Published(v, stored, len(s.asked), s)

    async def _put(
        self, peer: P, si: bytes, record: SlotRecord, lease: int | None = None
    ) -> bool | SlotRecord | str:
        """True if stored; the winning record on a genuine conflict; else a reason."""
        try:
            ok, held = await bounded(
                self.storage_for(peer).slot_write(si, record.encode(), lease),
                self.config.op_timeout,
            )
        except Exception as e:  # that peer only
            return describe(e)
        if ok:
            return True
        try:
            other = decode_record(held)
        except StorageError as e:
            return f"refused with a bad record: {describe(e)}"
        if other.pk != record.pk or other.seq < record.seq or other == record:
            return "refused without cause"  # a broken or lying server: not a conflict
        return other

    # -- maintenance ---------------------------------------------------------------
    async def renew(self, cap: AnyCap, renew_version: Renew) -> dict[str, str | None]:
        """Add or extend this node's lease on the latest root at every peer holding
        it (copying it first to the nearest peers that lack it) and on the latest
        version's shares (``renew_version``: :meth:`Health.renew`). Returns
        ``{peer b32: None if renewed, else why not}`` as ``Health.renew`` does."""
        s = await self.latest_root(cap)
        assert s.latest is not None
        # leases only where the latest root is now held: never on an older root
        holders = [p for p in s.asked if s.held.get(_peer_b32(p)) == s.latest.record]
        holders += await self._spread(s)

        async def one(peer: P) -> str | None:
            try:
                api = self.storage_for(peer)
                await bounded(api.add_lease(s.storage_index), self.config.op_timeout)
            except Exception as e:
                return describe(e)
            return None

        outcome = await asyncio.gather(*(one(p) for p in holders))
        results = {_peer_b32(p): r for p, r in zip(holders, outcome, strict=True)}
        if s.latest.verify is not None:
            version = parse_cap(s.latest.verify)
            assert isinstance(version, ImmutableVerifyCap)
            for peer, why in (await renew_version(version)).items():
                results[peer] = why if results.get(peer) is None else results[peer]
        return results

    async def spread(self, s: Survey, *, lease: int | None = None) -> int:
        """Store the latest root on the reachable peers that lack it (anyone may:
        the root is signed). ``lease`` (seconds) bounds the lease the copies get: a
        storage node's maintenance passes what is left of its own, so keeping a root
        never extends its life. Returns how many peers stored it."""
        return len(await self._spread(s, lease))

    async def _spread(self, s: Survey, lease: int | None = None) -> list[P]:
        if s.latest is None:
            return []
        by_name = {_peer_b32(p): p for p in s.asked}
        todo = [by_name[n] for n in s.stale if n in by_name]
        record = s.latest.record
        results = await asyncio.gather(
            *(self._put(p, s.storage_index, record, lease) for p in todo)
        )
        return [p for p, r in zip(todo, results, strict=True) if r is True]


def renew_any(
    renew_file: Renew, files: MutableFiles[Any]
) -> Callable[[ImmutableVerifyCap | VerifyCap], Awaitable[Mapping[str, str | None]]]:
    """A lease renewer's ``renew`` for both kinds of verify cap: immutable files
    through ``renew_file`` (``Health.renew``), mutable files through ``files``."""

    async def renew(cap: ImmutableVerifyCap | VerifyCap) -> Mapping[str, str | None]:
        if isinstance(cap, VerifyCap):
            return await files.renew(cap, renew_file)
        return await renew_file(cap)

    return renew


__all__ = [
    "GridLocalError",
    "MutableBad",
    "MutableConfig",
    "MutableConflict",
    "MutableFiles",
    "MutableNotFound",
    "MutableUnavailable",
    "Published",
    "SeenGuard",
    "Survey",
]
