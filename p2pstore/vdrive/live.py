"""Live directories: a directory whose current version is named by a mutable file
(docs/mutable.md, "Live directories").

The mutable file's content is a directory object (the encoding of
:mod:`.dirnode`); its latest version is the directory's root. A live directory is
used as a drive of its own: the front ends address it as ``<dir cap>/a/b``
(:func:`p2pstore.app.vpath.parse_vpath`) and every drive operation works on it.

Invariants:
- Reads take the latest version the grid shows (rollback-guarded by the mutable
  layer) and resolve paths in it exactly as in a drive: children are immutable
  directory snapshots and file caps, so a read cap reaches only read caps.
- A change (mkdir, link, unlink, rename) is applied copy-on-write to the latest
  root (:func:`.ops.apply_op`), the new root object stored, and published as the
  next version with the mutable file's test-and-set. When another writer published
  first, the change is applied again on top of the new latest version (up to
  :data:`RETRIES` times), so two people changing one live directory both see their
  changes; with ``expected_sequence`` a concurrent change is a ``sequence-mismatch``
  instead. A failed operation stores nothing and publishes nothing.
- Only a write cap changes a live directory; a read cap is ``refused`` with a
  message that says so.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from p2pstore.grid.errors import GridRemoteError
from p2pstore.grid.mutable import (
    MutableBad,
    MutableConflict,
    MutableFiles,
    MutableNotFound,
    Survey,
)
from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.mutable import MutableCapError, Version, WriteCap, parse_mutable_cap
from p2pstore.mutable import ReadCap as MutableReadCap

from .dirnode import DirCap
from .errors import VdriveError, VdriveLocalError, VdriveRemoteError
from .objects import ObjectStore
from .ops import Op, apply_op, load_dir
from .root_record import RootPointer
from .writer import ChangeResult, Outcome

#: a change applied again on top of another writer's version at most this often,
#: after a random pause of up to BACKOFF x 2^attempt seconds (writers on other nodes
#: that keep colliding spread out)
RETRIES = 8
BACKOFF = 0.05
LABEL = "live directory"


def is_live_drive(label: str) -> bool:
    return label.startswith("p2ps:dir:mut")


def parse_live_cap(text: str) -> WriteCap | MutableReadCap:
    """A live directory's write or read cap; anything else is ``bad-cap``."""
    try:
        cap = parse_mutable_cap(text)
    except MutableCapError as e:
        raise VdriveLocalError("bad-cap", str(e)) from None
    if not cap.directory:
        raise VdriveLocalError("bad-cap", "a mutable file's cap is not a live directory")
    if not isinstance(cap, WriteCap | MutableReadCap):
        raise VdriveLocalError(
            "bad-cap", "a verify cap can check a live directory but not list it; use its read cap"
        )
    return cap


def _vdrive_error(e: GridRemoteError) -> VdriveError:
    if isinstance(e, MutableNotFound):
        return VdriveLocalError("not-found", f"no such live directory: {e}")
    if isinstance(e, MutableBad):
        return VdriveRemoteError("rollback", str(e))
    return VdriveRemoteError("grid-error", str(e)[:500])


def _root(v: Version) -> DirCap:
    if not isinstance(v.cap, ReadCap | LiteralCap):  # pragma: no cover - open_root checks
        raise VdriveRemoteError("bad-directory", "a live directory's version is not a file")
    return DirCap(v.cap)


class LiveReader:
    """The latest version of a live directory as a drive pointer (a
    :class:`.drive.PointerSource`)."""

    def __init__(self, files: MutableFiles[Any], cap: WriteCap | MutableReadCap) -> None:
        self.files = files
        self.cap = cap

    def invalidate(self) -> None:
        """Nothing cached: every read asks the peers."""

    async def latest(self) -> tuple[Version, Survey]:
        try:
            return await self.files.latest(self.cap)
        except GridRemoteError as e:
            raise _vdrive_error(e) from None

    async def pointer(self, *, fresh: bool = False) -> RootPointer:
        v, _ = await self.latest()
        return RootPointer(v.sequence, _root(v), v.time)


class LiveWriter:
    """Changes to a live directory, made with its write cap (a :class:`.drive.Writer`)."""

    def __init__(
        self,
        files: MutableFiles[Any],
        store: ObjectStore,
        cap: WriteCap,
        lock: asyncio.Lock,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.reader = LiveReader(files, cap)
        self.files = files
        self.store = store
        self.cap = cap
        self.lock = lock
        self.clock = clock
        self.sleep = sleep

    async def apply(
        self, op: Op, *, expected_sequence: int | None, op_id: bytes | None = None
    ) -> ChangeResult:
        async with self.lock:  # this node's changes to one live directory: one at a time
            return await self._apply(op, expected_sequence)

    async def _apply(self, op: Op, expected_sequence: int | None) -> ChangeResult:
        mine = None  # the root a publish that ended in a conflict tried to store
        for attempt in range(RETRIES):
            if attempt:
                await self.sleep(random.uniform(0, BACKOFF * 2**attempt))
            v, survey = await self.reader.latest()
            if mine is not None and v.root.record == mine:
                # the conflicting writer lost: readers choose our root after all
                return ChangeResult(v.sequence, True)
            if expected_sequence is not None and v.sequence != expected_sequence:
                raise _mismatch(v.sequence, expected_sequence)
            root = _root(v)
            await load_dir(self.store, root)  # a version that is no directory: bad-directory
            new_root, ed = await apply_op(self.store, root, op, self.clock())
            if new_root is None:
                return ChangeResult(v.sequence, False, ed.loaded, 0)
            try:
                pub = await self.files.publish_version(self.cap, new_root.inner, survey)
            except MutableConflict as e:
                if expected_sequence is not None:
                    raise _mismatch(e.sequence, expected_sequence) from None
                mine = e.ours
                continue  # another writer first: apply this change on top of theirs
            except GridRemoteError as e:
                raise _vdrive_error(e) from None
            return ChangeResult(pub.version.sequence, True, ed.loaded, ed.written)
        raise VdriveLocalError(
            "sequence-mismatch",
            f"the live directory changed {RETRIES} times while this change was made; try again",
        )

    async def settle(self, op_id: bytes) -> Outcome:
        raise VdriveLocalError(
            "bad-request",
            "a live directory keeps no record of changes by id: list it to see whether "
            "the change was made",
        )


class ReadOnly:
    """The writer of a live directory opened with its read cap: refuses every change."""

    async def apply(
        self, op: Op, *, expected_sequence: int | None, op_id: bytes | None = None
    ) -> ChangeResult:
        raise VdriveLocalError(
            "refused",
            "this is the read cap of a live directory: it shows every change but cannot "
            "make one; changes need its write cap (p2ps:dir:mut:...)",
        )

    async def settle(self, op_id: bytes) -> Outcome:
        raise VdriveLocalError("refused", "a live directory opened read-only makes no changes")


def _mismatch(current: int, expected: int) -> VdriveLocalError:
    return VdriveLocalError(
        "sequence-mismatch",
        f"the live directory changed (version {current}, expected {expected})",
        details={"sequence": current},
    )
