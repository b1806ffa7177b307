"""The maintenance loop of a storage node: check what it holds, repair and move.

A :class:`Maintainer` walks the storage indexes its storage server holds, one check
at a time (at most one every ``pace`` seconds), each storage index again after
``check_interval`` (``follower_factor`` times that when another holder is the
custodian), first checks spread at random over one interval. A check derives the
file's verify cap from a local share (header + extension block: no read key, no
plaintext), locates the shares as a download would, decides with
:func:`~.maintenance.plan` and acts (docs/maintenance.md):

- repair through :meth:`Health.repair`, the new shares' leases carrying over the
  lease of the shares here (a file nobody renews still expires);
- move a share this node holds outside the download window: copy it to a peer in
  the window, confirm that peer lists it at its size, then delete it here;
- every ``verify_interval`` (and at the first check after start), hash-check every
  byte of the shares held here; a corrupt one is deleted (the custodian then
  regenerates it from good copies);
- when regeneration fails, verify every copy: a corrupt copy held here is deleted,
  others are reported (never deleted: only their holders can).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic

from p2pstore.base.tasks import TaskOwner, bounded
from p2pstore.immutable import (
    EXT_SIZE,
    HEADER_SIZE,
    ExtensionBlock,
    ShareHeader,
    VerifyCap,
    check_shares,
)
from p2pstore.mutable import MutableError, check_root
from p2pstore.mutable import VerifyCap as MutableVerifyCap
from p2pstore.storage import ShareExists
from p2pstore.storage.api import LocalStorageClient
from p2pstore.storage.server import StorageServer
from p2pstore.storage.slots import decode_record
from quic_transport.identity import NodeId

from .errors import GridError
from .health import Health, Located
from .lease_renewal import si_short
from .maintenance import (
    Action,
    MaintenanceConfig,
    Plan,
    Role,
    Seen,
    next_check,
    plan,
    remember,
)
from .mutable import MutableConfig, MutableFiles
from .peers import P, describe
from .placement import holdings_of
from .regenerate import LoopShareSource

log = logging.getLogger(__name__)

DAY = 86400.0
RESCAN_MAX = 300.0  # seconds: new storage indexes are noticed at least this often
#: seconds between two scrubs of one storage index asked for by peers (``suspect``)
SUSPECT_GAP = 600.0
#: scrubs asked for by peers accepted per minute, all storage indexes together
SUSPECTS_PER_MINUTE = 6


class MaintenanceError(GridError):
    """A check could not be made (an unreadable local share, a move that failed)."""


def derive_verify_cap(server: StorageServer, si: bytes, shares: list[int]) -> VerifyCap:
    """The verify cap of the file whose shares are held here, from the first local
    share with a sane header and extension block. Raises MaintenanceError."""
    reasons = []
    for shnum in shares:
        try:
            h = ShareHeader.parse(server.read(si, shnum, 0, HEADER_SIZE))
            ext = ExtensionBlock.from_bytes(server.read(si, shnum, h.ext_offset, EXT_SIZE))
            if ext.storage_index != si or h.share_number != shnum:
                raise MaintenanceError("the extension block names another storage index")
            if (ext.params.k, ext.params.n) != (h.k, h.n):
                raise MaintenanceError("header and extension block disagree on k/N")
            return VerifyCap(ext.params.k, ext.params.n, ext.size, si, ext.hash())
        except Exception as e:  # a corrupt or unreadable share: try the next one
            reasons.append(f"share {shnum}: {describe(e)}")
    raise MaintenanceError("no local share gives a verify cap (" + "; ".join(reasons) + ")")


class _TooYoung(Exception):
    """A share here was closed moments ago: check again in ``wait`` seconds."""

    def __init__(self, wait: float) -> None:
        self.wait = wait


class Maintainer(Generic[P]):
    def __init__(
        self,
        server: StorageServer,
        me: NodeId,
        health: Health[P],
        config: MaintenanceConfig,
        *,
        rng: random.Random | None = None,
        ready: Callable[[], bool] | None = None,
        slot_replicas: int = 10,
    ) -> None:
        self.server, self.me, self.health, self.config = server, me, health, config
        #: surveys and copies mutable files' roots on the N (``slot_replicas``) nearest
        self._slots: MutableFiles[P] = MutableFiles(
            health.find_peers, health.storage_for, None, MutableConfig(replicas=slot_replicas)
        )
        #: checks wait until this says the node sees the grid (joined): a node alone
        #: would find too few shares and raise false alarms
        self.ready = ready
        self._rng = rng or random.Random()
        self._due: dict[bytes, float] = {}  # storage index -> loop time of its next check
        self._role: dict[bytes, Role] = {}
        self._caps: dict[bytes, VerifyCap] = {}
        self._scrubbed: dict[bytes, float] = {}  # storage index -> loop time of last scrub
        self._seen: dict[bytes, Seen] = {}  # storage index -> holders seen (remember())
        self._suspected: dict[bytes, float] = {}  # storage index -> loop time of a report
        self._wake = asyncio.Event()
        self._rescan_at = 0.0
        self._tasks = TaskOwner()
        self._checked: deque[float] = deque()  # wall times of checks in the last day
        self.counts = dict.fromkeys(
            (
                "checks",
                "repairs",
                "shares_repaired",
                "moves",
                "bytes_sent",
                "unrecoverable",
                "corrupt_removed",
                "roots_spread",
                "failures",
            ),
            0,
        )
        self.recent_failures: deque[dict[str, Any]] = deque(maxlen=10)

    def __repr__(self) -> str:
        return f"Maintainer({len(self._due)} storage indexes, {self.config.check_interval}s)"

    def start(self) -> None:
        if self.config.enabled:
            self._tasks.start(self._run(), name="maintenance")

    async def close(self) -> None:
        await self._tasks.close()

    # -- scheduling -------------------------------------------------------------------
    async def rescan(self) -> None:
        """Notice storage indexes that arrived or left since the last scan."""
        now = asyncio.get_running_loop().time()
        held = set(await asyncio.to_thread(self._held))
        for si in list(self._due):
            if si not in held:
                self._forget(si)
        for si in held - self._due.keys():
            self._due[si] = now + self._rng.uniform(0, self.config.check_interval)
        self._rescan_at = now + min(self.config.check_interval, RESCAN_MAX)

    def _held(self) -> list[bytes]:
        """Storage indexes with shares or a slot (a mutable file's signed root,
        docs/storage.md "Slots") here."""
        s = self.server
        held = (si for prefix in s.list_prefixes() for si in s.storage_indexes_in(prefix))
        return [si for si in held if s.list_shares(si) or s.slot_read(si) is not None]

    def _forget(self, si: bytes) -> None:
        self._due.pop(si, None)
        self._role.pop(si, None)
        self._caps.pop(si, None)
        self._scrubbed.pop(si, None)
        self._seen.pop(si, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.ready is not None and not self.ready():
                await asyncio.sleep(1.0)
                continue
            if loop.time() >= self._rescan_at:
                await self.rescan()
            now = loop.time()
            si = min(self._due, key=self._due.__getitem__, default=None)
            if si is None or self._due[si] > now:
                wake = self._rescan_at if si is None else min(self._due[si], self._rescan_at)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.05, wake - now))
                continue
            await self.check(si)
            await asyncio.sleep(self.config.pace)

    async def suspect(self, si: bytes) -> bool:
        """A peer found a copy held here failing its hash check (``maintenance.suspect``):
        scrub this storage index at once, deleting what is corrupt; the custodian then
        regenerates it. We check our own bytes, never trust the claim; at most once
        per :data:`SUSPECT_GAP` per storage index. Returns whether a scrub was queued."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._suspected.get(si, -math.inf) < SUSPECT_GAP:
            return False
        recent = [t for t in self._suspected.values() if now - t < 60.0]
        if len(recent) >= SUSPECTS_PER_MINUTE:  # all reporters together: a bounded cost
            return False
        if si not in self._due and not await asyncio.to_thread(self.server.list_shares, si):
            return False
        while len(self._suspected) >= 4096:  # the oldest reports go first
            del self._suspected[next(iter(self._suspected))]
        self._suspected.pop(si, None)
        self._suspected[si] = now
        self._scrubbed.pop(si, None)
        self._due[si] = now
        self._wake.set()
        return True

    # -- one check ----------------------------------------------------------------------
    async def check(self, si: bytes) -> Plan | None:
        """Check one storage index held here and act on it; never raises (a failure is
        counted and kept among the recent failures). None when nothing is held."""
        loop = asyncio.get_running_loop()
        role = Role.CUSTODIAN
        wait: float | None = None
        try:
            result = await self._check(si)
            if result is None:
                return None
            role = result.role
            return result
        except _TooYoung as e:
            wait = e.wait
            return None
        except Exception as e:
            self._fail(si, describe(e) if not isinstance(e, GridError) else str(e))
            return None
        finally:
            if si in self._due:
                jitter = self._rng.uniform(0.9, 1.1)
                due = next_check(role, self.config) * jitter if wait is None else wait + 1.0
                self._due[si] = loop.time() + due
                self._role[si] = role

    async def _check(self, si: bytes) -> Plan | None:
        mine = await asyncio.to_thread(self.server.list_shares, si)
        if not mine:
            if not await self._keep_slot(si):
                self._forget(si)
            return None
        vc = self._caps.get(si)
        if vc is None:
            vc = await asyncio.to_thread(derive_verify_cap, self.server, si, sorted(mine))
            self._caps[si] = vc
        now = asyncio.get_running_loop().time()
        if now - self._scrubbed.get(si, -math.inf) >= self.config.verify_interval:
            self._scrubbed[si] = now
            if await self._scrub(vc, sorted(mine)):
                mine = await asyncio.to_thread(self.server.list_shares, si)
                if not mine:
                    self._forget(si)
                    return None
        age = await asyncio.to_thread(self._age, si, mine)
        settle = min(self.config.check_interval, self.config.settle)
        if age < settle:  # an upload may still be closing its other shares: soon
            raise _TooYoung(settle - age)
        located = await self.health.locate(vc)
        peers, existing, dead = located
        holdings = {p: set[int]() for p in peers if p not in dead} | holdings_of(existing)
        target = int.from_bytes(si, "big")
        window = sorted(peers, key=lambda p: int.from_bytes(p, "big") ^ target)
        seen = self._seen.setdefault(si, {})
        now = asyncio.get_running_loop().time()
        window, holdings = remember(seen, window, holdings, now, self.config.grace)
        decided = plan(self.me.raw, window, holdings, set(mine), k=vc.k, n=vc.n, config=self.config)
        self._count_check()
        if decided.action is Action.REPAIR:
            await self._repair(vc, decided, located, share_size=max(mine.values()))
        elif decided.action is Action.MOVE:
            for share, peer in decided.moves.items():
                await self._move(si, share, mine[share], peers[peer])
        elif decided.action is Action.UNRECOVERABLE:
            self.counts["unrecoverable"] += 1
            self._fail(si, decided.reason)
        return decided

    def _age(self, si: bytes, mine: dict[int, int]) -> float:
        """Seconds since the newest share held here was closed."""
        newest = 0.0
        for share in mine:
            with contextlib.suppress(OSError):
                newest = max(newest, self.server.share_path(si, share).stat().st_mtime)
        return time.time() - newest

    def _count_check(self) -> None:
        now = time.time()
        self.counts["checks"] += 1
        self._checked.append(now)
        while self._checked and self._checked[0] < now - DAY:
            self._checked.popleft()

    def _fail(self, si: bytes, reason: str) -> None:
        self.counts["failures"] += 1
        self.recent_failures.append({"si": si_short(si), "at": time.time(), "reason": reason})
        log.warning("maintenance of %s: %s", si_short(si), reason)

    def lease_left(self, si: bytes) -> int | None:
        """Seconds left on the longest live lease here (what repaired and moved shares
        carry over), or None when no lease is live: nobody keeps the file any more."""
        now = self.server.clock()
        left = max((le.expires for le in self.server.leases(si)), default=now) - now
        return int(left) if left >= 1 else None

    async def _keep_slot(self, si: bytes) -> bool:
        """A mutable file's root held here (docs/mutable.md, "Keeping roots"): make
        sure the peers nearest its slot hold the latest root, this node included,
        each copy with no more lease than is left here. False if no slot is here."""
        raw = await asyncio.to_thread(self.server.slot_read, si)
        if raw is None:
            return False
        lease = await asyncio.to_thread(self.lease_left, si)
        if lease is None:
            return True  # nobody keeps it any more: let it expire
        record = decode_record(raw)
        cap = MutableVerifyCap(record.pk)
        try:
            check_root(record, cap)
        except MutableError:
            return True  # not a mutable file's root: nothing to keep (never surveyed)
        s = await self._slots.survey(cap)
        self._count_check()
        # the newest root: the one held here may be newer than any the nearest hold
        # (this node left the nearest set); then it is the one to copy to them
        if s.latest is not None and s.latest.sequence > record.seq:
            await asyncio.to_thread(
                self.server.slot_write, si, s.latest.record.encode(), self.me, lease
            )
        elif s.latest is None or s.latest.sequence < record.seq:
            s.latest = check_root(record, cap)
        spread = await self._slots.spread(s, lease=lease)
        if spread:
            self.counts["roots_spread"] += spread
            log.info("maintenance of %s: root copied to %d peers", si_short(si), spread)
        return True

    # -- acting -------------------------------------------------------------------------
    async def _repair(
        self, vc: VerifyCap, decided: Plan, located: Located[P], share_size: int
    ) -> None:
        si = vc.storage_index
        lease = await asyncio.to_thread(self.lease_left, si)
        if lease is None:
            log.info("maintenance of %s: no live lease here, not repaired", si_short(si))
            return
        log.info("maintenance of %s: repairing (%s)", si_short(si), decided.reason)
        try:
            result = await self.health.repair(
                vc, happy=decided.target_happy, lease=lease, located=located
            )
        except Exception as e:
            self._fail(si, f"repair from the shares found failed ({describe(e)}); verifying")
            await self._drop_corrupt(vc)
            result = await self.health.repair(
                vc, verify=True, happy=decided.target_happy, lease=lease
            )
        if result.repaired:
            self.counts["repairs"] += 1
            self.counts["shares_repaired"] += len(result.repaired)
            self.counts["bytes_sent"] += len(result.repaired) * share_size
        if result.failed:
            first = next(iter(result.failed.items()))
            self._fail(
                si, f"{len(result.failed)} share(s) not placed (share {first[0]}: {first[1]})"
            )

    async def _scrub(self, vc: VerifyCap, shares: list[int]) -> bool:
        """Hash-check every byte of the shares held here; delete the corrupt ones.
        Returns whether any was deleted."""
        si = vc.storage_index
        local = LocalStorageClient(self.server, self.me)
        src = LoopShareSource(
            asyncio.get_running_loop(),
            si,
            dict.fromkeys(shares, local),
            max_read=self.health.config.max_read,
            timeout=self.health.config.op_timeout,
            max_ranges=self.server.config.max_readv_ranges,
        )
        try:
            report = await asyncio.to_thread(check_shares, vc, src, shares, alone=True)
        finally:
            src.stop()
        removed = False
        for share, why in sorted(report.items()):
            if why is None or why.startswith("read failed"):  # a refusal is not corruption
                continue
            if await asyncio.to_thread(self.server.remove_share, si, share):
                removed = True
                self.counts["corrupt_removed"] += 1
                self._fail(si, f"share {share} here is corrupt ({why}): deleted")
        return removed

    async def _drop_corrupt(self, vc: VerifyCap) -> None:
        """Verify every copy; delete the corrupt ones held here, report the others."""
        result = await self.health.verify(vc)
        me = self.me.b32
        for (share, peer), why in sorted(result.copies.items()):
            if why is None:
                continue
            if peer == me:
                if await asyncio.to_thread(self.server.remove_share, vc.storage_index, share):
                    self.counts["corrupt_removed"] += 1
                self._caps.pop(vc.storage_index, None)
            self._fail(vc.storage_index, f"share {share} on {peer[:12]} is corrupt: {why}")

    async def _move(self, si: bytes, share: int, size: int, peer: P) -> None:
        """Copy a share held here to ``peer``, confirm it is listed there at its size,
        then delete it here. Any failure keeps the copy here (and is reported)."""
        lease = await asyncio.to_thread(self.lease_left, si)
        if lease is None:
            return  # nobody keeps the file: let it expire where it is
        api = self.health.storage_for(peer)
        cfg = self.health.config
        try:
            await bounded(api.allocate(si, share, size, lease), cfg.op_timeout)
        except ShareExists:
            return  # it arrived meanwhile; the far copy here expires with its lease
        try:
            offset = 0
            while offset < size:
                want = min(cfg.send.max_write, size - offset)
                data = await asyncio.to_thread(self.server.read, si, share, offset, want)
                if not data:
                    raise MaintenanceError(f"share {share} here ended at byte {offset}")
                await bounded(api.write(si, share, offset, data), cfg.op_timeout)
                offset += len(data)
            await bounded(api.close_share(si, share), cfg.op_timeout)
        except BaseException:
            # (if the abort fails too, the server drops the upload when it idles out)
            with contextlib.suppress(Exception):
                await asyncio.shield(bounded(api.abort(si, share), cfg.op_timeout))
            raise
        listed = await bounded(api.list_shares(si), cfg.op_timeout)
        if listed.get(share) != size:
            raise MaintenanceError(
                f"{NodeId(peer.node_id.raw).b32[:12]} does not list the moved share"
            )
        await asyncio.to_thread(self.server.remove_share, si, share)
        self.counts["moves"] += 1
        self.counts["bytes_sent"] += size
        log.info("maintenance of %s: share %d moved nearer", si_short(si), share)

    def status(self) -> dict[str, Any]:
        now = time.time()
        while self._checked and self._checked[0] < now - DAY:
            self._checked.popleft()
        roles = list(self._role.values())
        return {
            "enabled": self.config.enabled,
            "check_interval": self.config.check_interval,
            "storage_indexes": len(self._due),
            "custodian_of": roles.count(Role.CUSTODIAN),
            "checked_last_day": len(self._checked),
            **self.counts,
            "recent_failures": list(self.recent_failures),
        }
