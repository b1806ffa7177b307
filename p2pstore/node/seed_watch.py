"""Bootstrap-seed reachability and peer nicknames, for the front page and ``status``.

:class:`SeedWatch` keeps one record per configured bootstrap seed: whether it is
reachable (``None`` until tried), the last round-trip time, when it last answered
and the last error. It is fed by the join attempts (:meth:`SeedWatch.record_join`)
and by its own periodic probe (:meth:`SeedWatch.run`): one ``endpoint.ping`` per
seed (the QUIC handshake proves the seed's key), at most ``parallel`` in flight,
each bounded by ``timeout``, every ``interval`` seconds.

:class:`Nicknames` serves the ``node.info`` RPC (``{"nickname", "version"}``) and
asks peers for theirs, caching the answers (bounded: at most ``MAX_NICKNAMES``
entries; a name is kept only if it is a printable string of at most
``MAX_NICKNAME_CHARS`` characters — a peer's answer is never trusted further).

Invariants:
- Memory is bounded by the seed list (``MAX_SEEDS``) and ``MAX_NICKNAMES``.
- The probe loop runs only inside :meth:`SeedWatch.run`, which its owner (the
  grid service) runs as a task and cancels at close; no task is created here.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from quic_transport import CallContext, Endpoint, PeerAddress
from quic_transport.identity import NodeId

from .bootstrap import Seed
from .join import JoinReport

INFO_METHOD = "node.info"
MAX_NICKNAME_CHARS = 64
MAX_NICKNAMES = 1024


@dataclass(slots=True)
class SeedState:
    seed: Seed
    reachable: bool | None = None
    rtt_ms: float | None = None
    last_contact: float | None = None
    error: str | None = None


class SeedWatch:
    """See the module docstring."""

    def __init__(
        self,
        seeds: Sequence[Seed],
        ping: Callable[[PeerAddress, float], Any],
        *,
        interval: float = 30.0,
        timeout: float = 3.0,
        parallel: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._states = [SeedState(s) for s in seeds]
        self._ping = ping
        self.interval = interval
        self.timeout = timeout
        self.parallel = max(1, parallel)
        self.clock = clock
        self.rounds = 0

    def _find(self, seed: Seed) -> SeedState | None:
        for st in self._states:
            if st.seed.node_id == seed.node_id and st.seed.same_address(seed):
                return st
        return None

    def record_join(self, report: JoinReport) -> None:
        """What a join attempt learned (remembered peers that are not seeds are ignored)."""
        now = self.clock()
        for seed in report.reached:
            st = self._find(seed)
            if st is not None:
                st.reachable, st.last_contact, st.error = True, now, None
        for seed, why in report.failed:
            st = self._find(seed)
            if st is not None:
                st.reachable, st.error = False, why[:200]

    async def _probe(self, st: SeedState) -> None:
        peer = PeerAddress(st.seed.node_id, st.seed.host, st.seed.port)
        try:
            rtt = await asyncio.wait_for(self._ping(peer, self.timeout), self.timeout + 1.0)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            st.reachable, st.error = False, f"no answer within {self.timeout:g} s"
            return
        except Exception as e:  # any failure to reach it is "unreachable", with why
            st.reachable, st.error = False, (str(e) or type(e).__name__)[:200]
            return
        st.reachable, st.error, st.last_contact = True, None, self.clock()
        st.rtt_ms = round(float(rtt) * 1000, 2)

    async def probe_all(self) -> None:
        """Ping every seed once (bounded concurrency)."""
        limit = asyncio.Semaphore(self.parallel)

        async def one(st: SeedState) -> None:
            async with limit:
                await self._probe(st)

        await asyncio.gather(*(one(st) for st in self._states))
        self.rounds += 1

    async def run(self, first_delay: float = 0.0) -> None:
        """Probe forever, every ``interval`` seconds (the owner cancels it)."""
        if not self._states:
            return
        await asyncio.sleep(first_delay)
        while True:
            await self.probe_all()
            await asyncio.sleep(self.interval)

    def report(self, nicknames: Nicknames | None = None) -> list[dict[str, Any]]:
        """The ``seeds`` status key (docs/web-ui.md, "Status keys")."""
        out: list[dict[str, Any]] = []
        for st in self._states:
            s = st.seed
            doc: dict[str, Any] = {
                "address": f"{s.host}:{s.port}" if ":" not in s.host else f"[{s.host}]:{s.port}",
                "node_id": s.node_id.b32,
                "reachable": st.reachable,
            }
            nick = nicknames.get(s.node_id) if nicknames is not None else None
            if nick or s.label:
                doc["nickname"] = nick or s.label
            if st.rtt_ms is not None:
                doc["rtt_ms"] = st.rtt_ms
            if st.last_contact is not None:
                doc["last_contact"] = st.last_contact
            if st.error is not None:
                doc["error"] = st.error
            out.append(doc)
        return out


def clean_nickname(value: Any) -> str | None:
    """A peer's nickname if it is acceptable for display, else ``None``."""
    if not isinstance(value, str) or not value or len(value) > MAX_NICKNAME_CHARS:
        return None
    if any(not c.isprintable() for c in value) or value != value.strip():
        return None
    return value


class Nicknames:
    """Serve ``node.info`` and cache the peers' answers (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, nickname: str, version: str) -> None:
        self._endpoint = endpoint
        self._info = {"nickname": nickname, "version": version}
        self._cache: OrderedDict[NodeId, str | None] = OrderedDict()
        endpoint.register(INFO_METHOD, self._serve)

    async def _serve(self, ctx: CallContext, body: Any) -> dict[str, str]:
        return dict(self._info)

    def get(self, node_id: NodeId) -> str | None:
        return self._cache.get(node_id)

    def known(self, node_id: NodeId) -> bool:
        return node_id in self._cache

    def _put(self, node_id: NodeId, nick: str | None) -> None:
        self._cache[node_id] = nick
        self._cache.move_to_end(node_id)
        while len(self._cache) > MAX_NICKNAMES:
            self._cache.popitem(last=False)

    async def fetch(self, peer: PeerAddress, timeout: float = 2.0) -> str | None:  # noqa: ASYNC109
        """Ask ``peer`` once; afterwards its answer (or lack of one) is cached."""
        if peer.node_id in self._cache:
            return self._cache[peer.node_id]
        try:
            reply = await self._endpoint.call(peer, INFO_METHOD, None, timeout=timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            return None  # not cached: asked again next time
        nick = clean_nickname(reply.get("nickname")) if isinstance(reply, dict) else None
        self._put(peer.node_id, nick)
        return nick
