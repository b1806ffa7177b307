"""Mutable files on the in-memory application, for tests of the front ends (the
shell's commands, the web UI's pages) that need no grid.

:class:`MemoryMutableApplication` is a :class:`MemoryApplication` with the backend's
mutable operations (:class:`p2pstore.app.mutable.MutableOps`), keeping the same
rules as the grid (docs/mutable.md, "Protocol") with one "peer": real caps
(:class:`p2pstore.mutable.WriteCap`), every version an immutable file uploaded with a
random key into the memory store, sequences from 1 growing by one, a write cap with
no file behind it is ``404 file-not-found``, ``expected_sequence`` other than the
latest is ``409 mutable-conflict`` (details: the latest ``sequence``) and nothing is
uploaded, and the check of a mutable cap is the check of its latest version plus
the root. The publish is atomic under one lock (a memory store has no races
between peers to lose; a test makes a conflict by publishing from a second client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from p2pstore.app.contract import CheckReport, ProgressFn
from p2pstore.app.errors import Conflict, NotFound
from p2pstore.app.mutable import MutableLatest, MutableResult, directory_body
from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.mutable import MutableCap, VerifyCap, WriteCap
from p2pstore.storage.slots import slot_index
from quic_transport.identity import b32encode

from .memory_app import MemoryApplication


@dataclass(frozen=True, slots=True)
class _Root:
    sequence: int
    version: ReadCap | LiteralCap
    time: float


def _index(cap: MutableCap) -> str:
    return b32encode(slot_index(cap.verify_cap().public_key))


class MemoryMutableApplication(MemoryApplication):
    """See the module docstring; ``clock`` stamps publish times."""

    def __init__(self, *, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.mutable: dict[bytes, _Root] = {}  # public key -> latest root
        self._mut_lock = asyncio.Lock()

    async def mutable_publish(
        self,
        chunks: AsyncIterator[bytes],
        *,
        cap: WriteCap | None,
        size_hint: int | None,
        expected_sequence: int | None = None,
        directory: bool = False,
        progress: ProgressFn | None = None,
    ) -> MutableResult:
        if directory:  # as the grid backend: a live directory's versions are directories
            chunks = await directory_body(chunks)
        async with self._mut_lock:
            if cap is None:
                cap = WriteCap.generate(directory=directory)
                current = 0
            else:
                current = self._root(cap).sequence
            if expected_sequence is not None and expected_sequence != current:
                raise Conflict(
                    f"the latest version is {current}, not {expected_sequence}: someone else "
                    "published meanwhile; read it and try again",
                    code="mutable-conflict",
                    details={"sequence": current},
                )
            up = await self.upload(chunks, size_hint=size_hint, mode="random", progress=progress)
            self.mutable[cap.public_key] = _Root(current + 1, up.cap, self.clock())
        details = {"backend": "memory", "roots_stored": 1, "peers_asked": 1}
        return MutableResult(cap, current + 1, up.size, {**details, "storage_index": _index(cap)})

    def _root(self, cap: MutableCap) -> _Root:
        root = self.mutable.get(cap.verify_cap().public_key)
        if root is None:
            raise NotFound("no root of this mutable file was found", code="file-not-found")
        return root

    def _report(self, cap: MutableCap, root: _Root) -> dict[str, Any]:
        return {
            "storage_index": _index(cap),
            "sequence": root.sequence,
            "peers_asked": 1,
            "holding_latest": 1,
            "stale": [],
            "bad": {},
            "unreachable": {},
        }

    async def mutable_latest(self, cap: MutableCap) -> MutableLatest:
        root = self._root(cap)
        report = self._report(cap, root)
        if isinstance(cap, VerifyCap):  # it reads nothing
            return MutableLatest(None, root.sequence, None, None, report)
        return MutableLatest(root.version, root.sequence, root.time, root.version.size, report)

    async def mutable_check(self, cap: MutableCap, *, verify: bool, repair: bool) -> CheckReport:
        root = self._root(cap)
        details: dict[str, Any] = {"mutable": self._report(cap, root), "roots_spread": 0}
        if isinstance(root.version, LiteralCap):
            return CheckReport(True, True, 1, 1, 1, verify, details=details)
        inner = await self.check(root.version, verify=verify, repair=repair)
        return CheckReport(
            healthy=inner.healthy,
            recoverable=inner.recoverable,
            shares_needed=inner.shares_needed,
            shares_total=inner.shares_total,
            shares_good=inner.shares_good,
            verified=verify,
            problems=inner.problems,
            repair_attempted=inner.repair_attempted,
            repaired=inner.repaired,
            details={**details, **inner.details},
        )
