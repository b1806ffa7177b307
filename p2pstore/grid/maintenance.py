"""Maintenance policy: what a node holding shares of a storage index does about it.

Sans-I/O: :func:`plan` takes what one check saw and returns a :class:`Plan`. The
async :class:`~.custodian.Maintainer` (real nodes) and the churn simulation
(``benchmarks/churn.py``) both decide with it, so the figures the simulation reports
are those of the rule the nodes run (docs/maintenance.md).

The rule, for one storage index and the node ``me`` that holds shares of it:

- The *window* is the ``lookup_count`` (2N) storage peers nearest the storage index,
  the peers a download searches. Only holders that answered count.
- **Far holder** (``me`` is not in the window): its shares are invisible to
  downloads. Each of its shares that no peer in the window holds is *moved*: copied
  to the nearest peer in the window holding fewest shares, and only then deleted
  here. A share the window already holds is left alone; its far copy is renewed by
  no one and expires with its lease.
- **Custodian** (the holder in the window nearest the storage index, every node
  computes the same one from the same answers): repairs when fewer than
  ``min_shares`` distinct shares (default N-1) or fewer than ``happy`` distinct
  holders (capped at the peers that answered) are found, and reports a file with
  fewer than k shares as unrecoverable.
- **Other holders** do nothing but check again later (``follower_factor`` times
  less often), so they take over when the custodian is gone.
- A holder that does not answer but was seen holding shares within
  ``offline_grace`` still counts (:func:`remember`): a home machine that is off for
  a day is not a lost share, and repairing for every such absence would copy the
  grid's data again and again.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .placement import PeerKey, happiness


@dataclass(frozen=True, slots=True)
class MaintenanceConfig:
    enabled: bool = True
    #: seconds between two checks of one storage index by its custodian
    check_interval: float = 86400.0
    #: repair below this many distinct shares (None: N-1)
    min_shares: int | None = None
    #: repair below this many distinct holders (capped at the live peers found)
    happy: int = 7
    #: at least this many seconds between the start of two checks (rate limit)
    pace: float = 2.0
    #: holders that are not the custodian check this many times less often
    follower_factor: int = 3
    #: peers a download searches (None: 2N)
    lookup_count: int | None = None
    #: seconds between two full hash checks of the shares held here (bit rot)
    verify_interval: float = 30 * 86400.0
    #: a holder seen with shares this recently still counts when it does not answer
    #: (home machines are off for hours or days; None: 3 check intervals)
    offline_grace: float | None = None
    #: a share closed this recently (capped at check_interval) is not checked yet:
    #: its upload may still be closing the file's other shares
    settle: float = 60.0

    @property
    def grace(self) -> float:
        return 3 * self.check_interval if self.offline_grace is None else self.offline_grace

    def __post_init__(self) -> None:
        if not (self.check_interval > 0 and self.verify_interval > 0):
            raise ValueError("check_interval and verify_interval must be positive")
        if self.pace < 0:
            raise ValueError("pace must not be negative")
        if self.follower_factor < 1:
            raise ValueError("follower_factor must be at least 1")
        if self.happy < 1:
            raise ValueError("happy must be at least 1")
        if self.min_shares is not None and self.min_shares < 1:
            raise ValueError("min_shares must be at least 1")


class Role(enum.Enum):
    CUSTODIAN = "custodian"
    HOLDER = "holder"
    FAR = "far"


class Action(enum.Enum):
    NONE = "none"
    REPAIR = "repair"
    MOVE = "move"
    UNRECOVERABLE = "unrecoverable"


@dataclass(frozen=True, slots=True)
class Plan:
    role: Role
    action: Action
    reason: str
    shares_found: int
    holders: int
    #: share -> peer to copy it to (far holders)
    moves: dict[int, PeerKey] = field(default_factory=dict)
    #: the happiness a repair should reach
    target_happy: int = 0


def plan(
    me: PeerKey,
    window: Sequence[PeerKey],
    holdings: Mapping[PeerKey, set[int]],
    mine: set[int],
    *,
    k: int,
    n: int,
    config: MaintenanceConfig,
) -> Plan:
    """Decide for one storage index. ``window``: the peers a download searches,
    nearest the storage index first; ``holdings``: the shares each peer that answered
    holds (an empty set for one that holds none; peers that did not answer are
    absent); ``mine``: the shares ``me`` holds."""
    held = {p: set(s) for p, s in holdings.items() if s}
    if mine:
        held[me] = set(mine)
    searched = set(window)
    near = {p: s for p, s in held.items() if p in searched}
    found: set[int] = set().union(*near.values())
    h = happiness(near)
    if me not in window:
        return _plan_far(window, holdings, near, mine, found, h)
    holders = [p for p in window if p in near]
    if not holders or holders[0] != me:
        return Plan(Role.HOLDER, Action.NONE, "not the custodian", len(found), h)
    if len(found) < k:
        why = f"only {len(found)} of the {k} shares needed were found"
        return Plan(Role.CUSTODIAN, Action.UNRECOVERABLE, why, len(found), h)
    live = sum(1 for p in window if p in holdings or p == me)
    target = min(config.happy, live, n)
    min_shares = n - 1 if config.min_shares is None else min(config.min_shares, n)
    if len(found) < min_shares:
        why = f"{len(found)} of {n} shares found (threshold {min_shares})"
        return Plan(Role.CUSTODIAN, Action.REPAIR, why, len(found), h, target_happy=target)
    if h < target:
        why = f"shares on {h} distinct peers (threshold {target})"
        return Plan(Role.CUSTODIAN, Action.REPAIR, why, len(found), h, target_happy=target)
    return Plan(Role.CUSTODIAN, Action.NONE, "healthy", len(found), h, target_happy=target)


def _plan_far(
    window: Sequence[PeerKey],
    holdings: Mapping[PeerKey, set[int]],
    near: Mapping[PeerKey, set[int]],
    mine: set[int],
    found: set[int],
    h: int,
) -> Plan:
    load = {p: len(near.get(p, ())) for p in window if p in holdings}
    moves: dict[int, PeerKey] = {}
    for share in sorted(mine - found):
        # the nearest answering peer with the fewest shares (a stable sort keeps rank)
        candidates = sorted((p for p in load if share not in near.get(p, ())), key=load.__getitem__)
        if not candidates:
            break
        target = candidates[0]
        moves[share] = target
        load[target] += 1
    if moves:
        why = f"this node is outside the {len(window)} peers a download searches"
        return Plan(Role.FAR, Action.MOVE, why, len(found), h, moves=moves)
    return Plan(Role.FAR, Action.NONE, "every share held here is also held nearer", len(found), h)


Seen = dict[PeerKey, tuple[frozenset[int], float]]


def remember(
    seen: Seen,
    window: Sequence[PeerKey],
    holdings: Mapping[PeerKey, set[int]],
    now: float,
    grace: float,
) -> tuple[list[PeerKey], dict[PeerKey, set[int]]]:
    """Update ``seen`` (peer -> shares it held, when) with what answered now, forget
    what is older than ``grace``, and return the window and holdings to plan with:
    holders seen within ``grace`` that did not answer now count as holding what they
    held (after the peers that answered, so they are never the custodian)."""
    for peer, shares in holdings.items():
        if shares:
            seen[peer] = (frozenset(shares), now)
        else:
            seen.pop(peer, None)
    for peer in [p for p, (_, t) in seen.items() if now - t > grace]:
        del seen[peer]
    out_window = list(window)
    out_holdings = {p: set(s) for p, s in holdings.items()}
    for peer, (held, _) in seen.items():
        if peer not in holdings:
            out_holdings[peer] = set(held)
            if peer not in window:
                out_window.append(peer)
    return out_window, out_holdings


def next_check(role: Role, config: MaintenanceConfig) -> float:
    """Seconds until this node checks a storage index again, by its role in the last
    check (before jitter)."""
    if role is Role.HOLDER:
        return config.check_interval * config.follower_factor
    return config.check_interval
