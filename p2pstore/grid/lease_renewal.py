"""Keeping this node's files alive: the lease book and the lease renewer.

Storage servers delete shares whose leases have all expired (docs/storage.md,
``[storage] lease_duration``, 31 days by default). A node therefore renews, at
every peer holding a share, the lease on each file it uploaded (docs/node.md,
"Leases").

:class:`LeaseBook` is the list of verify caps this node keeps alive, with the time
each was last renewed, persisted as an append-only text log
``DIR/private/leases.log``:

- one record per line, ASCII: ``<verify-cap-text> <unix-seconds>\\n`` (renewed
  then; seconds an integer or decimal number), ``<verify-cap-text> linked\\n`` (a
  drive this node publishes was found linking it) or ``<verify-cap-text> -\\n``
  (let go); the last time for a cap wins, ``linked`` holds until the cap is let go;
- a line that does not parse is skipped with a warning (never fatal), so a torn
  last line after a crash costs one record at most (a log not ending in a newline
  is compacted at load, so later appends start on a line of their own);
- the file is created with ``O_CREAT`` and mode 0600, and compacted (rewritten to a
  temporary file, fsynced and renamed over) when it holds more than
  ``2 * (live + marked) + 100`` lines, at load and after each renewal round.

An upload is kept by the book until it is let go: once the reference keeper has
found it linked from a drive this node publishes (``linked``) and a later walk of
every such drive, complete and without errors, no longer finds it there, it is let
go (:meth:`LeaseBook.follow_links`). Its shares then expire one lease duration after
their last renewal unless someone else still renews them (a pin, another drive). A
file never linked from those drives (a bare ``put``, a file put into the shared
drive from a node that does not publish it) is kept as long as the node runs.

Invariants:
- Only verify caps are stored (never read caps: a verify cap cannot decrypt), and
  literal caps are never stored (they have no shares, hence no lease). A mutable
  file's verify cap (``p2ps:mut-verify:``) stands for its root and latest version.
- Logs name a file by its storage index's short base32 form only.

:class:`LeaseRenewer` owns one background task (clock and sleep injected): every
``interval`` (jittered by +-10 %) it renews the caps last renewed more than
``renew_after`` ago, oldest first, ``max_per_round`` per round (more when a backlog
would otherwise outlast ``catch_up``), with at
most ``concurrency`` renewals in flight. A cap counts as renewed when at least one
holder accepted the lease; otherwise it stays due, one warning line is logged, and
it is skipped (in memory only) for ``min(interval * 2**failures, max_backoff)`` so
that files nobody holds any more cannot take every slot of every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pstore.base.tasks import TaskOwner
from p2pstore.immutable import LiteralCap, ReadCap, parse_cap
from p2pstore.immutable import VerifyCap as FileVerifyCap
from p2pstore.mutable import MutableCap, is_mutable_cap, parse_mutable_cap
from p2pstore.mutable import VerifyCap as MutableVerifyCap
from quic_transport.identity import b32encode

log = logging.getLogger(__name__)

#: what the book keeps alive: an immutable file, or a mutable file (its root and
#: latest version, docs/mutable.md "Leases")
VerifyCap = FileVerifyCap | MutableVerifyCap

#: ``renew(verify_cap)`` -> ``{peer b32: None if that holder renewed, else why not}``
Renew = Callable[[VerifyCap], Awaitable[Mapping[str, str | None]]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: longest line accepted when reading the log (a verify cap is ~120 characters)
MAX_LINE = 1024
#: the log's two records that are not times: found linked from a drive; let go
LINKED, LET_GO = "linked", "-"


def si_short(si: bytes) -> str:
    """The short form of a storage index used in log lines."""
    return b32encode(si)[:10]


class LeaseBook:
    """See the module docstring. Not thread-safe; used from the event loop."""

    def __init__(
        self,
        path: Path,
        entries: dict[VerifyCap, float],
        lines: int,
        linked: set[VerifyCap] | None = None,
    ) -> None:
        self.path = path
        self._entries = entries
        self._linked = set() if linked is None else linked & entries.keys()
        self._lines = lines
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"LeaseBook({self.path}, {len(self._entries)} caps)"

    @classmethod
    def load(cls, path: Path) -> LeaseBook:
        """Read the log (creating it 0600 if missing) and compact it when bloated."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        entries: dict[VerifyCap, float] = {}
        linked: set[VerifyCap] = set()
        lines = 0
        for number, raw in enumerate(data.split(b"\n"), 1):
            if not raw:
                continue
            lines += 1
            parsed = _parse_line(raw)
            if isinstance(parsed, str):
                log.warning("%s line %d skipped: %s", path.name, number, parsed)
                continue
            vc, at = parsed
            if at == LET_GO:
                entries.pop(vc, None)
                linked.discard(vc)
            elif at == LINKED:
                if vc in entries:
                    linked.add(vc)
            else:
                assert isinstance(at, float)
                entries.pop(vc, None)  # re-insert so dict order follows the log
                entries[vc] = at
        book = cls(path, entries, lines, linked)
        if data and not data.endswith(b"\n"):
            book.compact()  # a torn last line: the next append must start a new line
        else:
            book.maybe_compact()
        return book

    # -- queries ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cap: object) -> bool:
        return cap in self._entries

    def last_renewed(self, cap: VerifyCap) -> float | None:
        return self._entries.get(cap)

    def is_linked(self, cap: VerifyCap) -> bool:
        return cap in self._linked

    def count_linked(self) -> int:
        return len(self._linked)

    def due(self, before: float, limit: int | None = None) -> list[VerifyCap]:
        """Caps last renewed before ``before``, oldest first (at most ``limit``)."""
        due = sorted((at, i, vc) for i, (vc, at) in enumerate(self._entries.items()) if at < before)
        picked = due if limit is None else due[:limit]
        return [vc for _, _, vc in picked]

    def count_due(self, before: float) -> int:
        return sum(1 for at in self._entries.values() if at < before)

    # -- changes ---------------------------------------------------------------------
    def track(self, cap: ReadCap | VerifyCap | LiteralCap | MutableCap, now: float) -> bool:
        """Record that ``cap``'s lease was (re)added at ``now``. Literal caps are
        skipped (returns False): they have no shares and need no lease."""
        if isinstance(cap, LiteralCap):
            return False
        vc = cap.verify_cap()
        self.record(vc, now)
        return True

    def record(self, vc: VerifyCap, now: float) -> None:
        if not isinstance(vc, FileVerifyCap | MutableVerifyCap):
            raise TypeError("LeaseBook stores verify caps only")
        if not math.isfinite(now) or now < 0:
            raise ValueError(f"bad renewal time {now!r}")
        self._append(_line(vc, _fmt_time(now)))
        self._entries.pop(vc, None)
        self._entries[vc] = now

    def follow_links(self, own: Set[VerifyCap], reached: Set[VerifyCap]) -> tuple[int, int]:
        """After a complete walk of the drives this node publishes (no directory
        skipped, none left unlisted), ``reached`` being every file and directory
        object it reached and ``own`` those of them held by the drives' own tree
        (not only through a live directory): each cap kept here that is in ``own``
        is marked linked, and each marked linked that is not in ``reached`` any more
        (unlinked since) is let go. Returns ``(newly linked, let go)``. A walk that
        was not complete must not be passed here: a file it missed would be let go
        while still linked."""
        newly = gone = 0
        for vc in list(self._entries):
            if vc in reached:
                if vc in own and vc not in self._linked:
                    self._append(_line(vc, LINKED))
                    self._linked.add(vc)
                    newly += 1
            elif vc in self._linked:
                self._append(_line(vc, LET_GO))
                del self._entries[vc]
                self._linked.discard(vc)
                gone += 1
                log.info("lease book: %s unlinked, let go", si_short(vc.storage_index))
        self.maybe_compact()
        return newly, gone

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, line)
        self._lines += 1

    def maybe_compact(self) -> bool:
        """Rewrite the log with one line per cap (and one per mark) when it holds
        more than twice that plus 100 lines. Returns whether it did."""
        if self._lines <= 2 * (len(self._entries) + len(self._linked)) + 100:
            return False
        self.compact()
        return True

    def compact(self) -> None:
        body = b"".join(
            _line(vc, _fmt_time(at)) + (_line(vc, LINKED) if vc in self._linked else b"")
            for vc, at in self._entries.items()
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._close_fd()
        os.replace(tmp, self.path)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._lines = len(self._entries) + len(self._linked)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)

    def close(self) -> None:
        """Flush the log to disk and release its file descriptor."""
        self._close_fd()


def _line(vc: VerifyCap, field: str) -> bytes:
    """One record of the log: ``<verify-cap> SP <time | linked | -> LF``."""
    return f"{vc.to_string()} {field}\n".encode("ascii")


def _fmt_time(t: float) -> str:
    return str(int(t)) if t == int(t) else f"{t:.3f}"


def _parse_line(raw: bytes) -> tuple[VerifyCap, float | str] | str:
    if len(raw) > MAX_LINE:
        return "line too long"
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "not ASCII"
    parts = text.split(" ")
    if len(parts) != 2:
        return "expected '<verify-cap> <unix-seconds>'"
    try:
        cap = parse_mutable_cap(parts[0]) if is_mutable_cap(parts[0]) else parse_cap(parts[0])
    except Exception as e:  # every parse failure is the same: a bad line
        return f"bad cap ({type(e).__name__})"
    if not isinstance(cap, FileVerifyCap | MutableVerifyCap):
        return "not a verify cap"
    if parts[1] in (LINKED, LET_GO):
        return cap, parts[1]
    try:
        at = float(parts[1])
    except ValueError:
        return "bad time"
    if not math.isfinite(at) or at < 0:
        return "bad time"
    return cap, at


@dataclass(frozen=True, slots=True)
class RenewerConfig:
    interval: float = 3600.0
    #: renew a cap whose last renewal is older than this (default lease_duration / 3)
    renew_after: float = 31 * 86400 / 3
    max_per_round: int = 200
    #: a backlog of due caps is worked off within about this long: a round takes at
    #: least ``due x interval / catch_up`` of them (more than ``max_per_round`` when
    #: the book is large, so a book of 100,000 uploads is renewed in time too)
    catch_up: float = 86400.0
    concurrency: int = 4
    #: the interval is multiplied by a random factor in [1 - jitter, 1 + jitter]
    jitter: float = 0.1
    #: longest pause before a cap that failed is tried again
    max_backoff: float = 86400.0

    def __post_init__(self) -> None:
        if not (self.interval > 0 and self.renew_after >= 0):
            raise ValueError("interval must be positive and renew_after non-negative")
        if self.max_per_round < 1 or self.concurrency < 1:
            raise ValueError("max_per_round and concurrency must be at least 1")
        if not self.catch_up > 0:
            raise ValueError("catch_up must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class RoundReport:
    at: float
    renewed: int
    failed: int


class LeaseRenewer:
    """See the module docstring. ``start()`` launches the loop; ``close()`` ends it."""

    def __init__(
        self,
        book: LeaseBook,
        renew: Renew,
        config: RenewerConfig | None = None,
        *,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.book = book
        self.renew = renew
        self.config = config or RenewerConfig()
        self.clock = clock
        self.sleep = sleep
        self._rng = rng or random.Random()
        self._tasks = TaskOwner()
        self.last_round: RoundReport | None = None
        #: cap -> (consecutive failures, not before); in memory, reset at restart
        self._backoff: dict[VerifyCap, tuple[int, float]] = {}

    def __repr__(self) -> str:
        return f"LeaseRenewer({len(self.book)} caps)"

    def start(self, first_delay: float | None = None) -> None:
        if self._tasks:
            raise RuntimeError("LeaseRenewer already started")
        self._tasks.start(self._run(first_delay), name="lease-renewer")

    async def close(self) -> None:
        await self._tasks.close()

    def _delay(self) -> float:
        j = self.config.jitter
        return self.config.interval * self._rng.uniform(1 - j, 1 + j)

    async def _run(self, first_delay: float | None) -> None:
        await self.sleep(self._delay() if first_delay is None else first_delay)
        while True:
            try:
                await self.run_round()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end renewal for good
                log.exception("lease renewal round failed")
            await self.sleep(self._delay())

    async def run_round(self) -> RoundReport:
        """Renew the oldest due caps: ``max_per_round``, or more when that would not
        work off the backlog within ``catch_up``."""
        cfg = self.config
        now = self.clock()
        ready = [
            vc
            for vc in self.book.due(now - cfg.renew_after)
            if self._backoff.get(vc, (0, 0.0))[1] <= now
        ]
        take = max(cfg.max_per_round, math.ceil(len(ready) * cfg.interval / cfg.catch_up))
        due = ready[:take]
        limit = asyncio.Semaphore(cfg.concurrency)

        async def one(vc: VerifyCap) -> bool:
            async with limit:
                try:
                    results = await self.renew(vc)
                except Exception as e:
                    log.warning(
                        "lease renewal of %s failed: %s",
                        si_short(vc.storage_index),
                        type(e).__name__,
                    )
                    self._failed(vc, now)
                    return False
            if any(why is None for why in results.values()):
                if vc in self.book:  # not let go while the renewal was under way
                    self.book.record(vc, self.clock())
                self._backoff.pop(vc, None)
                return True
            self._failed(vc, now)
            log.warning(
                "lease renewal of %s: no holder accepted (%d asked)",
                si_short(vc.storage_index),
                len(results),
            )
            return False

        outcomes = await asyncio.gather(*(one(vc) for vc in due))
        renewed = sum(outcomes)
        report = RoundReport(now, renewed, len(outcomes) - renewed)
        self.last_round = report
        if due:
            log.info("lease renewal: %d renewed, %d failed", report.renewed, report.failed)
        self.book.maybe_compact()
        return report

    def _failed(self, vc: VerifyCap, now: float) -> None:
        fails = self._backoff.get(vc, (0, 0.0))[0] + 1
        pause = min(self.config.interval * 2.0 ** min(fails, 30), self.config.max_backoff)
        self._backoff[vc] = (fails, now + pause)

    def status(self) -> dict[str, Any]:
        last = self.last_round
        return {
            "tracked": len(self.book),
            "linked": self.book.count_linked(),
            "due": self.book.count_due(self.clock() - self.config.renew_after),
            "renewed_last_round": last.renewed if last else 0,
            "failed_last_round": last.failed if last else 0,
            "last_round_at": last.at if last else None,
        }
