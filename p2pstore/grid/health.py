"""File health: check (where are the shares), verify (is every byte right) and repair
(regenerate missing shares and place them), from a verify cap alone.

These are library calls for the CLI, shell and web UI. Verification and regeneration
reuse the format's synchronous reference driver (``p2pstore.immutable.reader``),
run in a worker thread whose share reads are bridged back to the event loop
(:class:`~.regenerate.LoopShareSource`), so the checking logic exists once.

Invariants:
- Nothing here needs the read key: a verify cap (or a read cap, reduced to one) is
  enough, and no plaintext is ever produced.
- ``verify`` checks every byte of every share copy found (header, extension copy,
  share chain, both whole hash trees in bounded chunks, every block); memory stays
  bounded whatever the file size.
- ``renew`` adds this node's lease wherever a share of the file is held.
- ``repair`` only ever completes a regenerated share that is byte-identical to the
  original (the reader checks the re-encoded extension block before yielding
  trailers), and places it on the closest peers that hold no share first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic

from p2pstore.base.tasks import bounded
from p2pstore.immutable import (
    ReadCap,
    VerifyCap,
    check_shares,
)
from quic_transport.identity import NodeId

from .errors import GridLocalError, RepairError
from .peers import READ_CHUNK, FindPeers, P, StorageFor, describe
from .placement import PeerKey, SharePlacer, happiness, holdings_of, rank_peers
from .quality import QualitySource
from .regenerate import LoopShareSource, list_existing, replace_shares
from .sender import SendConfig

#: shares verified at once (each holds up to a few MiB of blocks while checked)
VERIFY_AT_ONCE = 4


@dataclass(frozen=True, slots=True)
class HealthConfig:
    lookup_count: int | None = None  # None means 2*N
    op_timeout: float = 30.0
    max_read: int = READ_CHUNK  # within the servers' max_read, with room for framing
    happy: int = 7
    send: SendConfig = field(default_factory=SendConfig)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Which shares of a file exist where (as the peers report; not verified)."""

    storage_index: bytes
    k: int
    n: int
    shares: dict[int, tuple[str, ...]]  # share number -> base32 peers holding it
    happiness: int
    peers_asked: int
    unreachable: dict[str, str]  # base32 peer -> why it did not answer

    @property
    def recoverable(self) -> bool:
        return len(self.shares) >= self.k

    @property
    def missing(self) -> list[int]:
        return [s for s in range(self.n) if s not in self.shares]

    def healthy(self, happy: int) -> bool:
        return not self.missing and self.happiness >= happy


#: verify reasons that say nothing about the bytes held (unreachable, absent, too few
#: shares to judge): no reason to tell the holder its copy is corrupt
NOT_CORRUPT = ("read failed", "missing", "cannot verify")


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Every share copy found and whether every byte of it checks out."""

    check: CheckResult
    copies: dict[tuple[int, str], str | None]  # (share, base32 peer) -> None or why bad

    @property
    def good_shares(self) -> dict[int, tuple[str, ...]]:
        out: dict[int, list[str]] = {}
        for (share, peer), why in sorted(self.copies.items()):
            if why is None:
                out.setdefault(share, []).append(peer)
        return {s: tuple(p) for s, p in out.items()}

    @property
    def recoverable(self) -> bool:
        return len(self.good_shares) >= self.check.k


@dataclass(frozen=True, slots=True)
class RepairResult:
    before: CheckResult
    repaired: dict[int, str]  # share number -> base32 peer it was placed on
    failed: dict[int, str]  # share number -> why it could not be placed
    happiness: int  # after repair
    healthy: bool  # every share placed and happiness >= happy


Located = tuple[dict[PeerKey, P], dict[int, list[PeerKey]], dict[PeerKey, str]]


def _verify_cap(cap: ReadCap | VerifyCap) -> VerifyCap:
    if isinstance(cap, ReadCap):
        return cap.verify_cap()
    if isinstance(cap, VerifyCap):
        return cap
    raise GridLocalError("health operations need a read or verify cap of a coded file")


class Health(Generic[P]):
    def __init__(
        self,
        find_peers: FindPeers[P],
        storage_for: StorageFor[P],
        config: HealthConfig | None = None,
        *,
        quality: QualitySource | None = None,
    ) -> None:
        self.find_peers = find_peers
        self.storage_for = storage_for
        self.config = config or HealthConfig()
        self.quality = quality  # repair places like upload (placement.rank_peers)
        #: told of every share copy a verify finds corrupt: (holder, storage index,
        #: share, why); the node asks the holder to check and delete it (best effort)
        self.on_corrupt: Callable[[P, bytes, int, str], Awaitable[None]] | None = None

    async def locate(self, vc: VerifyCap) -> Located[P]:
        """The peers a download would search, which shares each holds, and which did
        not answer (maintenance reuses one located view for its plan and its repair)."""
        found = await self.find_peers(vc.storage_index, self.config.lookup_count or 2 * vc.n)
        peers: dict[PeerKey, P] = {}
        for p in found:
            peers.setdefault(p.node_id.raw, p)
        existing, dead = await list_existing(
            vc.storage_index, peers, self.storage_for, self.config.op_timeout
        )
        existing = {s: v for s, v in existing.items() if 0 <= s < vc.n}
        return peers, existing, dead

    @staticmethod
    def _check_result(
        vc: VerifyCap,
        peers: Mapping[PeerKey, P],
        existing: Mapping[int, list[PeerKey]],
        dead: Mapping[PeerKey, str],
    ) -> CheckResult:
        holdings = holdings_of(existing)
        return CheckResult(
            vc.storage_index,
            vc.k,
            vc.n,
            {s: tuple(NodeId(p).b32 for p in ps) for s, ps in sorted(existing.items())},
            happiness(holdings),
            len(peers),
            {NodeId(p).b32: why for p, why in dead.items()},
        )

    async def check(self, cap: ReadCap | VerifyCap) -> CheckResult:
        """Ask the peers near the storage index which shares they hold."""
        vc = _verify_cap(cap)
        peers, existing, dead = await self.locate(vc)
        return self._check_result(vc, peers, existing, dead)

    async def verify(self, cap: ReadCap | VerifyCap) -> VerifyResult:
        """Fetch and hash-check every byte of every share copy found."""
        vc = _verify_cap(cap)
        peers, existing, dead = await self.locate(vc)
        check = self._check_result(vc, peers, existing, dead)
        copies: dict[tuple[int, str], str | None] = {}
        bad: list[tuple[P, int, str]] = []
        # Round r checks the r-th copy of each share; shares with fewer copies are
        # filled in with their first copy so at least k shares can open the file.
        rounds = max((len(v) for v in existing.values()), default=0)
        loop = asyncio.get_running_loop()
        for r in range(rounds):
            assignment = {s: ps[r] if r < len(ps) else ps[0] for s, ps in existing.items()}
            apis = {s: self.storage_for(peers[p]) for s, p in assignment.items()}
            src = LoopShareSource(
                loop,
                vc.storage_index,
                apis,
                max_read=self.config.max_read,
                timeout=self.config.op_timeout,
            )
            # never waited for on the loop: its threads' reads run on the loop
            pool = ThreadPoolExecutor(VERIFY_AT_ONCE, thread_name_prefix="p2ps-verify")
            try:
                report = await asyncio.to_thread(
                    check_shares, vc, src, sorted(assignment), executor=pool
                )
            finally:
                src.stop()  # checks still running give up at their next read
                pool.shutdown(wait=False, cancel_futures=True)
            for s, why in report.items():
                if r < len(existing[s]):  # fill-ins were recorded in round 0
                    copies[(s, NodeId(assignment[s]).b32)] = why
                    if why is not None and not why.startswith(NOT_CORRUPT):
                        bad.append((peers[assignment[s]], s, why))
        if self.on_corrupt is not None and bad:
            tell = self.on_corrupt
            await asyncio.gather(
                *(
                    bounded(tell(p, vc.storage_index, s, why), self.config.op_timeout)
                    for p, s, why in bad
                ),
                return_exceptions=True,
            )
        return VerifyResult(check, copies)

    async def renew(self, cap: ReadCap | VerifyCap) -> dict[str, str | None]:
        """Add or extend this node's lease on the file at every peer holding a share.
        Returns ``{peer b32: None if renewed, else why not}``."""
        vc = _verify_cap(cap)
        peers, existing, _ = await self.locate(vc)
        holders = sorted({p for ps in existing.values() for p in ps})

        async def one(p: PeerKey) -> str | None:
            try:
                api = self.storage_for(peers[p])
                await bounded(api.add_lease(vc.storage_index), self.config.op_timeout)
            except Exception as e:
                return describe(e)
            return None

        results = await asyncio.gather(*(one(p) for p in holders))
        return {NodeId(p).b32: r for p, r in zip(holders, results, strict=True)}

    async def repair(
        self,
        cap: ReadCap | VerifyCap,
        *,
        verify: bool = False,
        happy: int | None = None,
        lease: int | None = None,
        located: Located[P] | None = None,
    ) -> RepairResult:
        """Regenerate every missing share (with ``verify``, also every share with no
        intact copy) and place it on the closest peers that lack one. ``lease``: the
        term (seconds) of the new shares' leases (a custodian carries over the lease
        of the shares they replace); ``located``: a view from :meth:`locate` to reuse."""
        vc = _verify_cap(cap)
        happy = self.config.happy if happy is None else happy
        peers, existing, dead = located if located is not None else await self.locate(vc)
        before = self._check_result(vc, peers, existing, dead)
        bad_copies: list[tuple[int, PeerKey]] = []
        if verify:
            result = await self.verify(vc)
            by_b32 = {NodeId(p).b32: p for p in peers}
            existing = {s: [by_b32[b] for b in bs] for s, bs in result.good_shares.items()}
            bad_copies = [(s, by_b32[b]) for (s, b), why in result.copies.items() if why]
        ranked = [
            p for p in rank_peers(vc.storage_index, peers, quality=self.quality) if p not in dead
        ]
        placer = SharePlacer(vc.n, ranked, existing)
        placer.excluded.update(dead)
        for share, peer in bad_copies:
            # that peer refuses the share (share-exists) and holds a bad copy: skip it
            placer.tried[share].add(peer)
        if len(placer.placed) < vc.k:
            raise RepairError(
                f"only {len(placer.placed)} good shares found, need {vc.k} to regenerate"
            )
        missing = placer.unplaced()
        if missing:
            await replace_shares(vc, placer, peers, self.storage_for, self.config.send, lease=lease)
        failed = {s: placer.reasons.get(s, "not placed") for s in missing if s not in placer.placed}
        # Health is the configured happiness too: a file whose shares sit on too few
        # peers gets copies of shares on peers that hold none (docs/grid.md, "Repair").
        spread = _unpack(placer, happy, vc.k) if not failed else {}
        if spread:
            await replace_shares(vc, placer, peers, self.storage_for, self.config.send, lease=lease)
            for share, holder in spread.items():
                if share not in placer.placed:  # not copied: its old copy still counts
                    placer.extra[holder].discard(share)
                    placer.placed[share] = holder
        done = [s for s in missing if s in placer.placed]
        done += [s for s, holder in spread.items() if placer.placed[s] != holder]
        repaired = {s: NodeId(placer.placed[s]).b32 for s in done}
        h = placer.happiness()
        return RepairResult(before, repaired, failed, h, not failed and h >= happy)


def _unpack(placer: SharePlacer, happy: int, k: int) -> dict[int, PeerKey]:
    """Shares to copy onto peers that hold none, until the file could reach ``happy``
    distinct holders: one share at a time from the peer holding the most, while at
    least ``k`` other placed shares remain to regenerate from. The shares become
    unplaced (their current copies stay, as extra copies); returns share -> holder."""
    free = [
        p
        for p in placer.ranked
        if p not in placer.excluded and placer.load(p) == 0 and p not in placer.extra
    ]
    need = min(happy - placer.happiness(), len(free))
    out: dict[int, PeerKey] = {}
    while need > 0 and len(placer.placed) - 1 >= k:
        counts: dict[PeerKey, list[int]] = {}
        for share, peer in placer.placed.items():
            counts.setdefault(peer, []).append(share)
        peer, shares = max(counts.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))
        if len(shares) < 2:
            break  # every holder has one share: nothing to spread
        share = max(shares)
        del placer.placed[share]
        placer.extra.setdefault(peer, set()).add(share)
        out[share] = peer
        need -= 1
    return out
