"""Coordinated UDP hole punching: ``nat.connect`` and ``nat.punch`` (docs/nat.md).

Three parties: A wants to reach B (behind NAT); R is reachable and holds an open
connection to B (B's relay or any peer B keeps a connection to).

1. A calls R ``nat.connect {"target": B_id}``.
2. R calls B over B's existing connection ``nat.punch {"peer": A_id, "addr": [host,
   port]}`` with A's address as R observed it.
3. B sends :data:`PUNCH_COUNT` punch datagrams (non-QUIC, dropped by every
   endpoint) from its endpoint socket toward A's address, the first at once and the
   rest spaced :data:`PUNCH_SPACING` s apart, so B's NAT gets a mapping/filter entry
   for A; B replies ``{"ok": true}`` right after the first.
4. R replies to A ``{"observed": [host, port], "you": [host, port]}``: B's address
   as R sees it (B's NAT mapping) and A's as R sees it.
5. A dials B at ``observed`` (the :class:`~p2pstore.nat.connector.Connector`).

Limits: R serves one ``nat.connect`` per caller per ``connect_interval``. B takes
``nat.punch`` only from its rendezvous peers (with ``rendezvous`` set: the
NatManager's anchors), but an anchor is any reachable peer B picked, so B also
bounds what one can aim (docs/nat.md, "Threat model"): the target must be an IP
address B may send to by its address class (quic_transport/addrclass.py: no
loopback, private or link-local target unless B itself is on such a network);
per target IP (IPv6: /64) at most ``target_burst`` punch sequences, then one per
``target_interval``, whoever asks; per anchor at most ``anchor_burst``, then one per
``anchor_interval``; at most ``max_active`` at once. A sequence is 5 datagrams of
19 bytes, so a hostile anchor makes B send a victim at most 190 bytes, then 95
bytes per 10 s, and B sends at most 570 bytes, then 95 bytes per 10 s, for it.
:class:`PunchService` plays both roles; its punch tasks end in :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from p2pstore.nat.errors import NatRemoteError
from p2pstore.nat.peer_record import check_host, check_port
from quic_transport import CallContext, Endpoint, PeerAddress, RpcError, addrclass, echo
from quic_transport.identity import ID_BYTES, NodeId
from quic_transport.paths import is_virtual

log = logging.getLogger(__name__)

CONNECT: Final = "nat.connect"
PUNCH: Final = "nat.punch"
#: first byte 0x00: the QUIC fixed bit is clear, and it is not the PMTU probe magic
PUNCH_MAGIC: Final = b"\x00p2ps-punch"
PUNCH_COUNT: Final = 5
PUNCH_SPACING: Final = 0.25

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PunchLimits:
    connect_interval: float = 1.0  # per caller, at the rendezvous
    max_active: int = 8  # punch sequences running at once, at the target
    call_timeout: float = 3.0
    max_tracked: int = 4096
    # at the target: sequences toward one IP (/64), and asked for by one anchor
    target_burst: int = 2
    target_interval: float = 10.0
    anchor_burst: int = 6
    anchor_interval: float = 10.0


class _Buckets:
    """Token buckets by key: ``burst`` at first, one more every ``interval`` s; at
    most ``max_keys`` keys (the oldest forgotten)."""

    def __init__(self, burst: int, interval: float, max_keys: int) -> None:
        self.burst, self.interval, self.max_keys = burst, interval, max_keys
        self._b: dict[object, tuple[float, float]] = {}

    def take(self, key: object, now: float) -> bool:
        tokens, at = self._b.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(now - at, 0.0) / self.interval)
        ok = tokens >= 1
        self._b[key] = (tokens - 1 if ok else tokens, now)
        while len(self._b) > self.max_keys:
            del self._b[next(iter(self._b))]
        return ok


def punch_packet() -> bytes:
    return PUNCH_MAGIC + os.urandom(8)


def parse_addr(value: Any, field: str) -> Addr:
    if not isinstance(value, list) or len(value) != 2:
        raise NatRemoteError(f"{field}: expected [host, port]", field=field)
    return check_host(value[0], field), check_port(value[1], field)


def _node_id(value: Any, field: str) -> NodeId:
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise RpcError("bad_request", f"{field} must be a {ID_BYTES}-byte node ID")
    return NodeId(value)


class PunchService:
    """Serves ``nat.connect`` (rendezvous role) and ``nat.punch`` (target role)."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: PunchLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
        rendezvous: Callable[[NodeId], bool] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits or PunchLimits()
        self.clock = clock
        self.enabled = enabled  # False: refuse to punch (config hole_punching = false)
        # who may ask us to punch (our anchors, the rendezvous our record names);
        # None: any connected peer. Anyone else could aim our punches at a third party.
        self.rendezvous = rendezvous
        self._closed = False
        self._last_connect: dict[NodeId, float] = {}
        self._active: dict[str, asyncio.Task[None]] = {}  # by target IP (/64)
        lim = self.limits
        self._per_target = _Buckets(lim.target_burst, lim.target_interval, lim.max_tracked)
        self._per_anchor = _Buckets(lim.anchor_burst, lim.anchor_interval, lim.max_tracked)
        self.stats = {"connects": 0, "punches": 0, "refused": 0, "datagrams": 0}

    def register(self) -> None:
        self.endpoint.register(CONNECT, self._on_connect)
        self.endpoint.register(PUNCH, self._on_punch)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._active.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._active.clear()

    # -- rendezvous ------------------------------------------------------------------
    def _admit_connect(self, caller: NodeId) -> None:
        now = self.clock()
        last = self._last_connect.get(caller)
        if last is not None and now - last < self.limits.connect_interval:
            self.stats["refused"] += 1
            raise RpcError("busy", "nat.connect: too many requests")
        if len(self._last_connect) >= self.limits.max_tracked:
            cutoff = now - self.limits.connect_interval
            self._last_connect = {k: t for k, t in self._last_connect.items() if t >= cutoff}
            if len(self._last_connect) >= self.limits.max_tracked:
                self.stats["refused"] += 1
                raise RpcError("busy", "nat.connect: too many callers")
        self._last_connect[caller] = now

    async def _on_connect(self, ctx: CallContext, body: Any) -> Any:
        if not isinstance(body, dict):
            raise RpcError("bad_request", "expected a map")
        target = _node_id(body.get("target"), "target")
        if target in (ctx.peer_id, self.endpoint.node_id):
            raise RpcError("bad_request", "target must be a third node")
        observed = self.endpoint.peer_address(target)
        if observed is None or not addrclass.is_ip(observed[0]):  # none, or only via a relay path
            raise RpcError("not_connected", f"no direct connection to {target.short()}")
        at = self.endpoint.peer_address(ctx.peer_id)  # a virtual key on a relay path
        if not addrclass.is_ip(ctx.host) or (at is not None and is_virtual(at)):
            raise RpcError("bad_request", "a caller reached through a relay cannot be punched to")
        self._admit_connect(ctx.peer_id)
        request = {"peer": ctx.peer_id.raw, "addr": [ctx.host, ctx.port]}
        try:
            reply = await self.endpoint.call(
                PeerAddress(target, *observed), PUNCH, request, timeout=self.limits.call_timeout
            )
        except RpcError as e:
            raise RpcError("punch_refused", f"target refused: {e.code}") from None
        except Exception as e:
            raise RpcError("unreachable", f"target did not answer: {type(e).__name__}") from None
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            raise RpcError("punch_refused", "target sent a malformed reply")
        self.stats["connects"] += 1
        # re-read: the connection may have moved while we waited
        observed = self.endpoint.peer_address(target) or observed
        return {"observed": [observed[0], observed[1]], "you": [ctx.host, ctx.port]}

    # -- target ----------------------------------------------------------------------
    async def _on_punch(self, ctx: CallContext, body: Any) -> Any:
        if not self.enabled or self._closed:
            raise RpcError("disabled", "hole punching is disabled on this node")
        if self.rendezvous is not None and not self.rendezvous(ctx.peer_id):
            self.stats["refused"] += 1
            raise RpcError(
                "not_rendezvous", "only this node's rendezvous peers may ask it to punch"
            )
        if not isinstance(body, dict):
            raise RpcError("bad_request", "expected a map")
        peer = _node_id(body.get("peer"), "peer")
        try:
            addr = parse_addr(body.get("addr"), "addr")
        except NatRemoteError as e:
            raise RpcError("bad_request", str(e)) from None
        if not addrclass.is_ip(addr[0]):  # punch only to what a socket reported: no DNS lookups
            raise RpcError("bad_request", "addr must be an IP address")
        own = self.endpoint.local_address[0]
        if not addrclass.may_send(addr[0], own):
            self.stats["refused"] += 1
            raise RpcError(
                "bad_request",
                f"will not punch toward a {addrclass.classify(addr[0])} address from {own}",
            )
        key = echo.source_key(addr[0])
        if key in self._active:
            return {"ok": True}  # already punching there
        if len(self._active) >= self.limits.max_active:
            self.stats["refused"] += 1
            raise RpcError("busy", "too many hole punches in progress")
        now = self.clock()
        if not self._per_anchor.take(ctx.peer_id, now):
            self.stats["refused"] += 1
            raise RpcError("busy", "too many punch requests from this rendezvous; retry later")
        if not self._per_target.take(key, now):
            self.stats["refused"] += 1
            raise RpcError("busy", "punched toward that address recently; retry later")
        self._send(addr)
        task = asyncio.get_running_loop().create_task(self._punch_rest(addr))
        self._active[key] = task
        task.add_done_callback(functools.partial(self._done, key))
        self.stats["punches"] += 1
        log.debug("punching toward %s:%d for %s", addr[0], addr[1], peer.short())
        return {"ok": True}

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._active.get(key) is task:
            del self._active[key]
        if not task.cancelled():
            task.exception()

    def _send(self, addr: Addr) -> None:
        with contextlib.suppress(Exception):  # endpoint closing: nothing to punch from
            self.endpoint.send_raw(punch_packet(), addr)
            self.stats["datagrams"] += 1

    async def _punch_rest(self, addr: Addr) -> None:
        for _ in range(PUNCH_COUNT - 1):
            await asyncio.sleep(PUNCH_SPACING)
            self._send(addr)


async def request_connect(
    endpoint: Endpoint,
    rendezvous: PeerAddress,
    target: NodeId,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> tuple[Addr, Addr]:
    """Ask ``rendezvous`` to have ``target`` punch toward us; returns (target's observed
    address, our address as the rendezvous sees it)."""
    reply = await endpoint.call(rendezvous, CONNECT, {"target": target.raw}, timeout=timeout)
    if not isinstance(reply, dict):
        raise NatRemoteError("nat.connect reply: expected a map", field="reply")
    return parse_addr(reply.get("observed"), "observed"), parse_addr(reply.get("you"), "you")
