"""Leases that follow who still wants a file (docs/maintenance.md, "Leases").

A file stays alive while someone references it: its uploader (the lease book and
renewer, ``p2pstore.grid.lease_renewal``), the node that publishes a drive linking
it, and anyone who pinned it. This module keeps the last two:

- :class:`PinBook`: the caps this node's user pinned (``private/pins.json``).
- :class:`ReferenceKeeper`: every ``interval`` (a third of the lease duration, so a
  lease is renewed twice before it could run out), walks the drives this node
  publishes (its private drive; the shared drive on the vdrive node), collects the
  verify cap of every file and directory object reachable from them plus the
  pins, and renews this node's lease on each at every peer holding a share, one
  every ``pace`` seconds. A file unlinked from every drive and unpinned is simply not renewed
  any more: it expires one lease duration after its last renewal. A walk that
  reached every directory without an error is also handed to ``on_walked`` (the
  node's lease book lets go of its uploads that were linked and are not any more;
  :class:`Walk`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from p2pstore.base.fsutil import read_bounded, write_text_atomic
from p2pstore.base.tasks import TaskOwner
from p2pstore.immutable import CapError, ReadCap, parse_cap
from p2pstore.immutable import VerifyCap as FileVerifyCap
from p2pstore.mutable import MutableCap, MutableCapError, is_mutable_cap, parse_mutable_cap
from p2pstore.mutable import VerifyCap as MutableVerifyCap

from .contract import DirEntry, VdriveOps
from .errors import BadRequest, NotFound, Unavailable, Unrecoverable
from .vpath import VPath

log = logging.getLogger(__name__)

MAX_PINS = 100_000
MAX_LABEL = 200
MAX_PIN_FILE = 64 << 20

#: what a pin keeps: an immutable file, or a mutable file (its root and latest version)
VerifyCap = FileVerifyCap | MutableVerifyCap
Renew = Callable[[VerifyCap], Awaitable[Mapping[str, str | None]]]
#: what a change linked, for :meth:`ReferenceKeeper.keep_linked`: a file's or
#: directory object's verify cap, with the directory cap to list when it is one
Linked = tuple[VerifyCap, str | None]
#: ``on_walked(own, found)`` after a complete walk (see :class:`Walk`) -> figures for
#: the round's status
OnWalked = Callable[[set[VerifyCap], set[VerifyCap]], Mapping[str, int]]


class BadPin(BadRequest):
    default_code = "bad-cap"


class NoSuchPin(NotFound):
    default_code = "not-pinned"


@dataclass(frozen=True, slots=True)
class Pin:
    verify_cap: VerifyCap
    label: str
    pinned_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "verify_cap": self.verify_cap.to_string(),
            "label": self.label,
            "pinned_at": self.pinned_at,
        }


def pin_cap(text: str) -> VerifyCap:
    """The verify cap a pin keeps, from a read or verify cap string (of an immutable
    or a mutable file)."""
    text = text.strip()
    if is_mutable_cap(text):
        try:
            return parse_mutable_cap(text).verify_cap()
        except MutableCapError as e:
            raise BadPin(f"not a cap: {e}") from None
    try:
        cap = parse_cap(text)
    except CapError as e:
        raise BadPin(f"not a cap: {e}") from None
    if isinstance(cap, ReadCap | FileVerifyCap):
        return cap.verify_cap()
    raise BadPin("a literal file lives inside its cap: there are no shares to keep")


class PinBook:
    """``private/pins.json``: a JSON list of pins (verify caps only, never read caps),
    rewritten atomically (mode 0600) on every change."""

    def __init__(self, path: Path | None, pins: dict[VerifyCap, Pin] | None = None) -> None:
        self.path = path  # None: kept in memory only (test backends)
        self._pins = pins or {}

    @classmethod
    def load(cls, path: Path) -> PinBook:
        pins: dict[VerifyCap, Pin] = {}
        try:
            doc = json.loads(read_bounded(path, MAX_PIN_FILE))
        except FileNotFoundError:
            return cls(path, pins)
        except (OSError, ValueError) as e:
            log.warning("%s unreadable (%s): starting with no pins", path, e)
            return cls(path, pins)
        for item in doc if isinstance(doc, list) else []:
            try:
                vc = pin_cap(str(item["verify_cap"]))
                pins[vc] = Pin(vc, str(item.get("label", ""))[:MAX_LABEL], float(item["pinned_at"]))
            except (KeyError, TypeError, ValueError, BadPin) as e:
                log.warning("%s: skipping a bad pin (%s)", path, e)
        return cls(path, pins)

    def __len__(self) -> int:
        return len(self._pins)

    def entries(self) -> list[Pin]:
        return sorted(self._pins.values(), key=lambda p: (p.pinned_at, p.label))

    def caps(self) -> list[VerifyCap]:
        return list(self._pins)

    def pin(self, vc: VerifyCap, label: str, now: float) -> bool:
        """Pin ``vc`` (again: the label is updated). Returns whether it is new."""
        if not label.isprintable() or len(label) > MAX_LABEL:
            raise BadPin(f"a label is at most {MAX_LABEL} printable characters")
        new = vc not in self._pins
        if new and len(self._pins) >= MAX_PINS:
            raise BadPin(f"at most {MAX_PINS} pins")
        old = self._pins.get(vc)
        self._pins[vc] = Pin(vc, label, old.pinned_at if old else now)
        self._save()
        return new

    def unpin(self, vc: VerifyCap) -> None:
        if self._pins.pop(vc, None) is None:
            raise NoSuchPin("that file is not pinned here")
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        text = json.dumps([p.to_json() for p in self.entries()], indent=1) + "\n"
        write_text_atomic(self.path, text, mode=0o600)


class PinOps:
    """The pin operations of an :class:`~.contract.Application` (``pin``, ``unpin``,
    ``pin_list``); the backend supplies ``pin_book`` and :meth:`_keep_now`."""

    pin_book: PinBook | None = None

    async def _keep_now(self, vc: VerifyCap) -> int:
        """Renew this node's lease on the file now; returns the holders renewed."""
        raise NotImplementedError

    def _book(self) -> PinBook:
        if self.pin_book is None:
            raise Unavailable("this node keeps no pins", code="pins-unavailable")
        return self.pin_book

    async def pin(self, cap: ReadCap | VerifyCap | MutableCap, label: str) -> Mapping[str, Any]:
        book = self._book()
        vc = cap.verify_cap()
        holders = await self._keep_now(vc)
        if holders == 0:
            raise Unrecoverable(
                "no share of this file was found, so there is nothing to keep alive "
                "(check the cap, or whether the file expired)",
                code="no-shares",
            )
        new = book.pin(vc, label, time.time())
        return {"verify_cap": vc.to_string(), "label": label, "new": new, "holders": holders}

    async def unpin(self, cap: ReadCap | VerifyCap | MutableCap) -> None:
        self._book().unpin(cap.verify_cap())

    async def pin_list(self) -> list[Mapping[str, Any]]:
        return [p.to_json() for p in self._book().entries()]


#: ``list_dircap(directory cap)`` -> its entries
ListDircap = Callable[[str], Awaitable[Sequence[DirEntry]]]


class UploadBook(Protocol):
    """The node's lease book as the keeper sees it (p2pstore/grid/lease_renewal.py)."""

    def holds(self, vc: VerifyCap) -> bool:
        """It renews ``vc``."""
        ...

    def seen_linked(self, vc: VerifyCap) -> bool:
        """A walk reached ``vc`` in the drives' own tree since it was taken in."""
        ...

    def adopt(self, vc: VerifyCap) -> None:
        """Renew ``vc`` from now on (just renewed)."""
        ...


#: the most files and directories waiting to be renewed because they were linked
MAX_LINKED = 100_000


def _linked_entry(e: DirEntry) -> Linked | None:
    """A listed entry as :meth:`ReferenceKeeper.keep_linked` takes it."""
    if not e.verify_cap:
        return None
    try:
        vc = pin_cap(e.verify_cap)
    except BadPin:
        return None
    dircap = e.cap if e.kind == "dir" and isinstance(vc, FileVerifyCap) else None
    return vc, dircap


@dataclass(frozen=True, slots=True)
class Walk:
    """What a walk of the drives found: ``found``, every file and directory object
    it reached (each once, in the order met); ``own``, those of them reached
    without passing through a live directory, and not live directories themselves
    (what this node's drives hold alone; a live directory is shared with its other
    writers); ``problems``, none when it reached everything."""

    found: list[VerifyCap]
    own: set[VerifyCap]
    problems: list[str]


@dataclass(frozen=True, slots=True)
class KeeperConfig:
    interval: float  # seconds between two rounds
    pace: float = 0.5  # seconds between two renewals
    max_files: int = 1_000_000  # a walk stops collecting past this many files
    max_dirs: int = 100_000


class ReferenceKeeper:
    """See the module docstring."""

    def __init__(
        self,
        drives: VdriveOps | None,
        roots: Sequence[VPath],
        pins: PinBook,
        renew: Renew,
        config: KeeperConfig,
        on_walked: OnWalked | None = None,
        *,
        book: UploadBook | None = None,
        list_dircap: ListDircap | None = None,
    ) -> None:
        self.drives, self.roots, self.pins = drives, list(roots), pins
        self.renew, self.config, self.on_walked = renew, config, on_walked
        self.book, self.list_dircap = book, list_dircap
        self._linked: asyncio.Queue[Linked] = asyncio.Queue(MAX_LINKED)
        self._linked_waiting: set[VerifyCap] = set()
        self.kept_when_linked = 0
        self._tasks = TaskOwner()
        self.rounds = 0
        self.last: dict[str, Any] = {}
        self.running = False

    def start(self, first_delay: float) -> None:
        self._tasks.start(self._run(first_delay), name="reference-keeper")
        self._tasks.start(self._keep_linked(), name="reference-keeper-links")

    def keep_linked(self, items: Sequence[Linked]) -> None:
        """What a change on this node just linked. Each file or directory object
        the lease book does not hold (let go after an earlier unlink, or uploaded by
        someone else) is renewed now and taken into the book, rather than left to
        the keeper's next round, when its lease may have run out. A directory's
        content is gone through likewise unless the book holds the directory and a
        walk has reached it (then its content was reached too, and is renewed while
        it stays linked). Live directories are renewed, not entered. One at a time,
        in the background: never blocks the change."""
        book = self.book
        for vc, dircap in items:
            if vc in self._linked_waiting:
                continue
            if book is not None and book.holds(vc) and (dircap is None or book.seen_linked(vc)):
                continue
            try:
                self._linked.put_nowait((vc, dircap))
            except asyncio.QueueFull:
                log.warning("too many linked files to keep at once; the next round will")
                return
            self._linked_waiting.add(vc)

    async def _keep_linked(self) -> None:
        while True:
            vc, dircap = await self._linked.get()
            try:
                if self.book is None or not self.book.holds(vc):
                    why = await self._renew_one(vc)
                    if why is None:
                        self.kept_when_linked += 1
                        if self.book is not None:
                            self.book.adopt(vc)
                    else:
                        log.warning("renewing a file just linked failed: %s", why)
                if dircap is not None and self.list_dircap is not None:
                    entries = await self.list_dircap(dircap)
                    self.keep_linked([item for e in entries if (item := _linked_entry(e))])
            except Exception as e:
                log.warning("keeping what was just linked failed: %s", e)
            finally:
                self._linked_waiting.discard(vc)

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        while True:
            try:
                await self.run_round()
            except Exception:
                log.exception("keeping referenced files alive: the round failed")
            await asyncio.sleep(self.config.interval * random.uniform(0.9, 1.1))

    async def walk(self) -> Walk:
        """Every file and directory object reachable from the roots (the roots' own
        directory objects too), and the problems met (a directory that could not be
        listed is skipped, not fatal; a walk stopped at ``max_dirs`` or
        ``max_files`` says so): the walk reached everything when there is no
        problem. Directories are listed by path, so a drive that changed during the
        walk (its listings read at different sequence numbers) is a problem too: a
        file moved from a directory not yet listed into one already listed was not
        reached. A directory whose cap was met before is not entered again: its
        content is that cap's (a backup's snapshots share most of theirs; a live
        directory may be linked inside itself)."""
        walk = Walk([], set(), [])
        if self.drives is None:
            return walk
        found: dict[VerifyCap, None] = {}

        def met_before(text: str | None, own: bool) -> bool:
            """Records the verify cap ``text`` (in ``own`` too when reached outside
            live directories and not one itself); whether it was met before."""
            if not text:
                return False
            try:
                vc = pin_cap(text)
            except BadPin:
                return False  # not a coded file (a literal one)
            if own and isinstance(vc, FileVerifyCap):
                walk.own.add(vc)
            if vc in found:
                return True
            found[vc] = None
            return False

        for root in self.roots:
            try:
                met_before((await self.drives.vdrive_stat(root)).verify_cap, True)
            except Exception as e:
                walk.problems.append(f"{root}: {e}")
        todo = [(root, True) for root in self.roots]
        dirs = 0
        sequences: dict[str, set[int]] = {}  # per drive, of the listings of its own tree
        while todo and dirs < self.config.max_dirs and len(found) < self.config.max_files:
            path, own = todo.pop()
            dirs += 1
            try:
                listing = await self.drives.vdrive_list(path)
            except Exception as e:
                walk.problems.append(f"{path}: {e}")
                continue
            if own:
                sequences.setdefault(path.drive, set()).add(listing.sequence)
            for entry in listing.entries:
                if entry.kind == "dir":
                    live = bool(entry.verify_cap) and is_mutable_cap(entry.verify_cap or "")
                    if not met_before(entry.verify_cap, own):
                        todo.append((path.child(entry.name), own and not live))
                else:
                    met_before(entry.verify_cap, own)
        if todo:
            walk.problems.append(
                f"walk stopped after {dirs} directories and {len(found)} files, "
                f"{len(todo)} directories not listed"
            )
        for root in self.roots:  # the last await: nothing changes before on_walked
            seen = sequences.get(root.drive)
            if not seen or walk.problems:
                continue
            try:
                seen.add((await self.drives.vdrive_list(root)).sequence)
            except Exception as e:
                walk.problems.append(f"{root}: {e}")
        for drive, seen in sequences.items():
            if len(seen) > 1:  # listed by path: a change in between may hide an entry
                walk.problems.append(f"{drive}: the drive changed during the walk")
        walk.found.extend(found)
        return walk

    async def run_round(self) -> dict[str, Any]:
        """Renew this node's lease on every referenced file once; returns the round's
        figures (also kept for ``status``)."""
        self.running = True
        t0 = time.time()
        try:
            walk = await self.walk()
            caps, problems = walk.found, walk.problems
            from_drives = len(caps)
            complete = self.drives is not None and not problems
            walked: Mapping[str, int] = {}
            if complete and self.on_walked is not None:
                try:
                    walked = self.on_walked(walk.own, set(caps))
                except Exception as e:  # the renewals below must not depend on it
                    log.warning("following the drives' links failed: %s", e)
                    problems.append(f"following the drives' links failed: {e}")
                    complete = False
            wanted = dict.fromkeys(caps) | dict.fromkeys(self.pins.caps())  # each file once
            renewed = failed = 0
            for vc in wanted:
                why = await self._renew_one(vc)
                if why is None:
                    renewed += 1
                else:
                    failed += 1
                    problems.append(f"{vc!r}: {why}")
                await asyncio.sleep(self.config.pace)
        finally:
            self.running = False
        self.rounds += 1
        self.last = {
            "at": t0,
            "seconds": round(time.time() - t0, 1),
            "files_in_drives": from_drives,
            "pins": len(self.pins),
            "renewed": renewed,
            "failed": failed,
            "complete_walk": complete,
            **walked,
            "problems": problems[-5:],
        }
        if failed or problems:
            log.warning(
                "kept %d referenced files alive, %d failed (%s)",
                renewed,
                failed,
                "; ".join(problems[-3:]),
            )
        else:
            log.info("kept %d referenced files alive", renewed)
        return self.last

    async def _renew_one(self, vc: VerifyCap) -> str | None:
        """Renew one file; None when at least one holder accepted, else why not."""
        try:
            answers = await self.renew(vc)
        except Exception as e:
            return str(e)
        if any(why is None for why in answers.values()):
            return None
        return f"no holder renewed ({len(answers)} asked)" if answers else "no shares found"

    def status(self) -> dict[str, Any]:
        return {
            "roots": [str(r) for r in self.roots],
            "pins": len(self.pins),
            "interval": self.config.interval,
            "rounds": self.rounds,
            "kept_when_linked": self.kept_when_linked,
            "running": self.running,
            "last_round": self.last or None,
        }
