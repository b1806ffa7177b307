"""The ``[helper]`` section of the node config (docs/helper.md, "Settings"): serving
as an upload helper for others, and using helpers for this node's own uploads.

Serving: ``enabled`` (default false), ``max_uploads``, ``max_bytes_per_day``,
``accept`` (node IDs allowed; empty: any peer), ``keep_partial`` (how long an
unfinished upload waits for its caller). Using: ``use`` ("never", "always" or
"slow"), ``slow_below`` (bytes per second: "slow" means this node's measured
upload rate is below it), ``helpers`` (node IDs to try in order; "seeds" stands
for every seed of the bootstrap list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quic_transport.identity import NodeId

from .config_table import Section, node_ids
from .size import parse_duration, parse_size

if TYPE_CHECKING:  # the grid is imported only by a node, never by the CLI's config
    from p2pstore.grid.helper import HelperConfig
    from p2pstore.grid.helper_client import HelperUse

SEEDS = "seeds"
#: ``use`` (``p2pstore.grid.helper_client.USES``, which checks them again)
USES = ("never", "always", "slow")
_SEEDS = frozenset({SEEDS})


@dataclass(frozen=True, slots=True)
class HelperSection:
    enabled: bool = False
    max_uploads: int = 4
    max_bytes_per_day: int = 50 * 10**9
    accept: tuple[str, ...] = ()
    keep_partial: int = 2 * 86400
    use: str = "never"
    slow_below: int = 2_500_000
    helpers: tuple[str, ...] = (SEEDS,)

    def serving(self, reserve: int) -> HelperConfig:
        from p2pstore.grid.helper import HelperConfig

        accept = frozenset(NodeId.from_b32(a).raw for a in self.accept) or None
        return HelperConfig(
            enabled=self.enabled,
            max_uploads=self.max_uploads,
            max_bytes_per_day=self.max_bytes_per_day,
            accept=accept,
            keep_partial=float(self.keep_partial),
            reserve=reserve,
        )

    def using(self) -> HelperUse:
        from p2pstore.grid.helper_client import HelperUse

        return HelperUse(use=self.use, slow_below=self.slow_below)


def _use(value: Any) -> str:
    if value not in USES:
        raise ValueError(f"expected one of {', '.join(repr(u) for u in USES)}, got {value!r}")
    return str(value)


def helper_section(s: Section) -> HelperSection:
    d = HelperSection()
    out = HelperSection(
        enabled=s.get("enabled", bool, d.enabled),
        max_uploads=s.int_range("max_uploads", d.max_uploads, 1, 1000),
        max_bytes_per_day=s.convert("max_bytes_per_day", d.max_bytes_per_day, parse_size),
        accept=s.convert("accept", d.accept, node_ids),
        keep_partial=s.convert("keep_partial", d.keep_partial, parse_duration),
        use=s.convert("use", d.use, _use),
        slow_below=s.convert("slow_below", d.slow_below, parse_size),
        helpers=s.convert("helpers", d.helpers, lambda v: node_ids(v, also=_SEEDS)),
    )
    s.finish()
    if out.keep_partial < 60:
        raise s.error("keep_partial", "must be at least 60 s")
    return out
