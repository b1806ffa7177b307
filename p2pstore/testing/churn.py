"""A churn simulation of grid maintenance: sans-I/O, virtual clock (one step a day).

Nodes with random 160-bit IDs hold shares of files (k-of-N); every month a share of
the nodes leaves for good (with their shares) and as many fresh nodes join; every
node is offline part of the time (a two-state chain per day, offline spells of a
few days). A download searches the ``lookup`` online nodes nearest a file's storage
index; a file is *lost* when fewer than k distinct shares remain on nodes that have
not left, *unavailable* on a day when fewer than k are on online nodes in that
window.

With maintenance on, each day the custodian of every file (the nearest online
holder in the window) and every online far holder decide with the very functions
the nodes run, :func:`p2pstore.grid.maintenance.remember` (holders seen within the
offline grace still count; one memory per file here, one per node in a grid) and
:func:`p2pstore.grid.maintenance.plan`; a repair places the missing
shares on the nearest window peers holding none, then copies shares from crowded
holders to free peers until the target happiness (as ``Health.repair`` does); a
move copies a far share into the window and deletes the far copy. Holders that are
not the custodian check ``follower_factor`` times less often (counted, not run:
their plan is always "nothing to do").

What is not modelled: leases (every file stays referenced), transfer failures and
timing within a day, lookup misses. Messages per check are counted as one DHT
lookup (``alpha * log2(nodes)`` requests) plus one ``list_shares`` per window peer.
Traffic is counted in file sizes: a repair reads k shares (one file size) and
writes one share (1/k) per share placed; a move writes 1/k.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from p2pstore.grid.maintenance import Action, MaintenanceConfig, Seen, plan, remember
from p2pstore.grid.placement import happiness

DAY_PER_MONTH = 30


@dataclass(frozen=True)
class ChurnParams:
    nodes: int = 200
    files: int = 1000
    years: float = 5.0
    k: int = 3
    n: int = 10
    happy: int = 7
    monthly_departures: float = 0.05
    offline_fraction: float = 0.2
    offline_spell_days: float = 2.5
    follower_factor: int = 3
    alpha: int = 3
    grace_days: float = 3.0
    seed: int = 1

    @property
    def lookup(self) -> int:
        return 2 * self.n


@dataclass
class ChurnReport:
    maintenance: bool
    params: dict[str, Any]
    files_lost: int = 0
    files_unavailable_at_end: int = 0
    unavailable_file_days: int = 0
    min_health: int = 10**9  # fewest distinct shares any live file had on online nodes
    repairs: int = 0
    moves: int = 0
    shares_placed: int = 0
    repair_traffic_file_sizes: float = 0.0
    checks: float = 0.0
    messages: float = 0.0
    node_days: int = 0
    lost_ids: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        years = self.params["years"]
        files = self.params["files"]
        out = asdict(self)
        out.pop("lost_ids")
        out["repair_traffic_per_file_per_year"] = round(
            self.repair_traffic_file_sizes / max(1, files) / years, 4
        )
        out["checks_per_node_per_day"] = round(self.checks / max(1, self.node_days), 3)
        out["messages_per_node_per_day"] = round(self.messages / max(1, self.node_days), 2)
        out["repair_traffic_file_sizes"] = round(self.repair_traffic_file_sizes, 2)
        out.pop("checks")
        out.pop("messages")
        return out


class _World:
    def __init__(self, p: ChurnParams) -> None:
        self.p = p
        self.rng = random.Random(p.seed)
        self.alive: set[int] = set()
        self.online: set[int] = set()
        self.files = [self.rng.getrandbits(160) for _ in range(p.files)]
        # per file: node IDs by XOR distance (keys kept beside for bisect)
        self.rank: list[list[int]] = [[] for _ in self.files]
        self.rank_keys: list[list[int]] = [[] for _ in self.files]
        self.held: list[dict[int, set[int]]] = [{} for _ in self.files]
        self.files_of: dict[int, set[int]] = {}
        self.seen: list[Seen] = [{} for _ in self.files]  # the custodians' memory
        for _ in range(p.nodes):
            self.join()

    def join(self) -> int:
        node = self.rng.getrandbits(160)
        self.alive.add(node)
        self.online.add(node)
        self.files_of[node] = set()
        for f, si in enumerate(self.files):
            d = node ^ si
            i = bisect.bisect(self.rank_keys[f], d)
            self.rank_keys[f].insert(i, d)
            self.rank[f].insert(i, node)
        return node

    def leave(self, node: int) -> None:
        self.alive.discard(node)
        self.online.discard(node)
        for f in self.files_of.pop(node):
            self.held[f].pop(node, None)
        for f, si in enumerate(self.files):
            i = bisect.bisect_left(self.rank_keys[f], node ^ si)
            del self.rank_keys[f][i]
            del self.rank[f][i]

    def window(self, f: int) -> list[int]:
        out = []
        for node in self.rank[f]:
            if node in self.online:
                out.append(node)
                if len(out) == self.p.lookup:
                    break
        return out

    def put(self, f: int, node: int, share: int) -> None:
        self.held[f].setdefault(node, set()).add(share)
        self.files_of[node].add(f)

    def drop(self, f: int, node: int, share: int) -> None:
        shares = self.held[f].get(node)
        if shares is not None:
            shares.discard(share)
            if not shares:
                del self.held[f][node]
                self.files_of[node].discard(f)

    def upload(self, f: int) -> None:
        for share, node in enumerate(self.window(f)[: self.p.n]):
            self.put(f, node, share)

    def step_online(self) -> None:
        p = self.p
        go_on = 1.0 / p.offline_spell_days
        go_off = go_on * p.offline_fraction / (1.0 - p.offline_fraction)
        for node in self.alive:
            if node in self.online:
                if self.rng.random() < go_off:
                    self.online.discard(node)
            elif self.rng.random() < go_on:
                self.online.add(node)


def simulate(p: ChurnParams, *, maintenance: bool) -> ChurnReport:
    w = _World(p)
    report = ChurnReport(maintenance, asdict(p))
    cfg = MaintenanceConfig(
        happy=p.happy, follower_factor=p.follower_factor, offline_grace=p.grace_days * 86400
    )
    for f in range(p.files):
        w.upload(f)
    lookup_msgs = p.alpha * math.log2(max(2, p.nodes))
    days = int(p.years * 365)
    lost: set[int] = set()
    for day in range(days):
        if day % DAY_PER_MONTH == DAY_PER_MONTH - 1:
            leaving = w.rng.sample(sorted(w.alive), round(p.nodes * p.monthly_departures))
            for node in leaving:
                w.leave(node)
            for _ in leaving:
                w.join()
        w.step_online()
        report.node_days += len(w.online)
        for f in range(p.files):
            if f in lost:
                continue
            alive_shares = set().union(*w.held[f].values()) if w.held[f] else set()
            if len(alive_shares) < p.k:
                lost.add(f)
                continue
            window = w.window(f)
            _day(w, f, window, report, cfg, maintenance, lookup_msgs, day * 86400.0)
    report.files_lost = len(lost)
    report.lost_ids = sorted(lost)
    for f in range(p.files):
        if f not in lost and _found(w, f, w.window(f)) < p.k:
            report.files_unavailable_at_end += 1
    return report


def _found(w: _World, f: int, window: list[int]) -> int:
    shares: set[int] = set()
    for node in window:
        shares |= w.held[f].get(node, set())
    return len(shares)


def _day(
    w: _World,
    f: int,
    window: list[int],
    report: ChurnReport,
    cfg: MaintenanceConfig,
    maintenance: bool,
    lookup_msgs: float,
    now: float,
) -> None:
    p = w.p
    found = _found(w, f, window)
    report.min_health = min(report.min_health, found)
    if found < p.k:
        report.unavailable_file_days += 1
    if not maintenance:
        return
    in_window = set(window)
    window_keys = [_key(node) for node in window]  # the peer keys plan() takes, once
    holdings = {node: set(w.held[f].get(node, set())) for node in window}
    holders = [node for node in window if holdings[node]]
    per_check = lookup_msgs + len(window)
    followers = max(0, len(holders) - 1) / p.follower_factor
    report.checks += followers
    report.messages += followers * per_check
    if holders:
        report.checks += 1
        report.messages += per_check
        me = holders[0]
        seen_window, seen_holdings = remember(
            w.seen[f],
            window_keys,
            {key: holdings[node] for key, node in zip(window_keys, window, strict=True)},
            now,
            cfg.grace,
        )
        decided = plan(
            _key(me),
            seen_window,
            seen_holdings,
            holdings[me],
            k=p.k,
            n=p.n,
            config=cfg,
        )
        if decided.action is Action.REPAIR:
            _repair(w, f, window, holdings, decided.target_happy, report)
    for node, shares in list(w.held[f].items()):
        if node in in_window or node not in w.online:
            continue
        report.checks += 1
        report.messages += per_check
        view = {
            key: set(w.held[f].get(n, set())) for key, n in zip(window_keys, window, strict=True)
        }
        decided = plan(
            _key(node),
            window_keys,
            view,
            set(shares),
            k=p.k,
            n=p.n,
            config=cfg,
        )
        for share, target in decided.moves.items():
            w.put(f, int.from_bytes(target, "big"), share)
            w.drop(f, node, share)
            report.moves += 1
            report.repair_traffic_file_sizes += 1 / p.k


def _key(node: int) -> bytes:
    """A simulated node ID as the 20-byte peer key the maintenance functions take."""
    return node.to_bytes(20, "big")


def _repair(
    w: _World,
    f: int,
    window: list[int],
    holdings: dict[int, set[int]],
    target: int,
    report: ChurnReport,
) -> None:
    """As Health.repair: the missing shares onto the nearest window peers holding
    none, then copies from crowded holders onto free peers up to ``target``."""
    p = w.p
    found = set().union(*holdings.values())
    free = [node for node in window if not holdings[node]]
    placed = 0
    for share in range(p.n):
        if share in found or not free:
            continue
        node = free.pop(0)
        w.put(f, node, share)
        holdings[node] = {share}
        placed += 1
    while free and happiness({_key(n): s for n, s in holdings.items()}) < target:
        crowded = max(holdings, key=lambda n: len(holdings[n]))
        if len(holdings[crowded]) < 2:
            break
        share = max(holdings[crowded])
        holdings[crowded].discard(share)  # (its copy stays: counted as extra)
        node = free.pop(0)
        w.put(f, node, share)
        holdings[node] = {share}
        placed += 1
    if placed:
        report.repairs += 1
        report.shares_placed += placed
        report.repair_traffic_file_sizes += 1 + placed / p.k
