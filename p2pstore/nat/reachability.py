"""Dial-back reachability checks: ``nat.dialback`` / ``nat.probe`` (docs/nat.md).

Server side (:class:`DialbackServer`, on every node): a peer asks ``nat.dialback
{nonce, addrs}``; we reply with the address we observed for it and which of its
addresses answered ``nat.probe {nonce}`` when dialed from a FRESH endpoint (new UDP
socket on port 0, throwaway key), so a NAT mapping the asking peer already holds
toward us cannot let the probe in. Only the observed address and extra addresses on
the observed IP are dialed (no reflection toward third parties); calls are limited
per peer (one per ``per_peer_interval``) and in total (``max_concurrent``); over the
limit the reply is ``RpcError("busy")``.

Client side: :class:`ProbeResponder` answers ``nat.probe`` for nonces this node is
waiting for; :func:`ask_dialback` asks one peer and cross-checks its claim (a peer
saying "reached" while no probe with our nonce arrived is not believed);
:class:`ReachabilityChecker` asks a few peers per round and feeds a
:class:`~p2pstore.nat.tracker.ReachabilityTracker`.

Invariants: every temporary endpoint is closed before the handler returns; the
pending-nonce and per-peer tables are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from p2pstore.nat.errors import NatRemoteError
from p2pstore.nat.peer_record import check_host, check_port
from p2pstore.nat.tracker import VERDICTS, Addr, DialbackAnswer, Event, ReachabilityTracker
from quic_transport import (
    CallContext,
    Endpoint,
    NodeKey,
    PeerAddress,
    RpcError,
    TransportConfig,
    open_endpoint,
)
from quic_transport.identity import NodeId
from quic_transport.paths import is_virtual

log = logging.getLogger(__name__)

DIALBACK = "nat.dialback"
PROBE = "nat.probe"
NONCE_BYTES = 16
MAX_ADDRS = 4
MAX_PENDING = 256


@dataclass(frozen=True, slots=True)
class DialbackLimits:
    max_concurrent: int = 4
    per_peer_interval: float = 10.0
    dial_timeout: float = 3.0
    max_tracked_peers: int = 4096


def _addr_list(value: Any, field: str, limit: int = MAX_ADDRS) -> list[Addr]:
    if not isinstance(value, list) or len(value) > limit:
        raise NatRemoteError(f"{field}: expected at most {limit} [host, port] pairs", field=field)
    out: list[Addr] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise NatRemoteError(f"{field}: expected [host, port] pairs", field=field)
        out.append((check_host(item[0], field), check_port(item[1], field)))
    return out


def _nonce(body: Any) -> bytes:
    nonce = body.get("nonce") if isinstance(body, dict) else None
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise RpcError("bad_request", f"nonce must be {NONCE_BYTES} bytes")
    return nonce


class DialbackServer:
    """Serves ``nat.dialback`` on ``endpoint`` (see the module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: DialbackLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        verdict: Callable[[], str] = lambda: "unknown",
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits or DialbackLimits()
        self.clock = clock
        self.verdict = verdict
        self._last: dict[NodeId, float] = {}
        self._active = 0
        self.served = 0
        self.refused = 0

    def register(self) -> None:
        self.endpoint.register(DIALBACK, self._on_dialback)

    def _admit(self, peer: NodeId) -> None:
        now = self.clock()
        lim = self.limits
        last = self._last.get(peer)
        if last is not None and now - last < lim.per_peer_interval:
            self.refused += 1
            raise RpcError("busy", f"one dial-back per {lim.per_peer_interval:g} s per peer")
        if self._active >= lim.max_concurrent:
            self.refused += 1
            raise RpcError("busy", "too many dial-backs in progress")
        if len(self._last) >= lim.max_tracked_peers:
            cutoff = now - lim.per_peer_interval
            self._last = {k: t for k, t in self._last.items() if t >= cutoff}
            if len(self._last) >= lim.max_tracked_peers:
                self.refused += 1
                raise RpcError("busy", "too many peers asking for dial-backs")
        self._last[peer] = now

    async def _on_dialback(self, ctx: CallContext, body: Any) -> Any:
        nonce = _nonce(body)
        try:
            extra = _addr_list(body.get("addrs", []), "addrs")
        except NatRemoteError as e:
            raise RpcError("bad_request", str(e)) from None
        # ctx.host of a caller on a relay path is the source the relay *claims*
        # (Endpoint.caller_address): never dial that; the connection's own address
        # is then a virtual path key
        at = self.endpoint.peer_address(ctx.peer_id)
        try:
            check_host(ctx.host)
            if at is not None and is_virtual(at):
                raise NatRemoteError("relayed caller", field="caller")
        except NatRemoteError:
            msg = "a caller reached through a relay cannot be dialed back"
            raise RpcError("bad_request", msg) from None
        self._admit(ctx.peer_id)
        observed = (ctx.host, ctx.port)
        # Only the observed IP: a dial-back must never be aimed at a third party.
        targets = [observed] + [a for a in extra if a[0] == ctx.host and a != observed]
        targets = list(dict.fromkeys(targets))[: MAX_ADDRS + 1]
        self._active += 1
        try:
            results = await asyncio.gather(*(self._probe(ctx.peer_id, a, nonce) for a in targets))
        finally:
            self._active -= 1
        self.served += 1
        own = self.verdict()
        return {
            "reach": own if own in VERDICTS else "unknown",
            "observed": [ctx.host, ctx.port],
            "tried": [[h, p] for h, p in targets],
            "reached": [[h, p] for (h, p), ok in zip(targets, results, strict=True) if ok],
        }

    async def _probe(self, peer: NodeId, addr: Addr, nonce: bytes) -> bool:
        """Dial ``peer`` at ``addr`` from a new socket and key; True iff it answered."""
        t = self.limits.dial_timeout
        config = TransportConfig(connect_timeout=t, close_timeout=0.2, pmtu_probe=False)
        bind = self.endpoint.local_address[0]
        try:
            temp = await open_endpoint(NodeKey.generate(), bind, 0, config)
        except Exception as e:
            log.debug("dial-back: cannot open a temporary endpoint: %s", e)
            return False
        try:
            reply = await temp.call(
                PeerAddress(peer, addr[0], addr[1]), PROBE, {"nonce": nonce}, timeout=t
            )
            return isinstance(reply, dict) and reply.get("ok") is True
        except Exception as e:
            log.debug("dial-back to %s:%d failed: %s", addr[0], addr[1], e)
            return False
        finally:
            await temp.aclose()


class ProbeResponder:
    """Answers ``nat.probe`` for the nonces of our own pending dial-back requests."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._pending: dict[bytes, int] = {}  # nonce -> probes received
        self.probes = 0

    def register(self) -> None:
        self.endpoint.register(PROBE, self._on_probe)

    def expect(self, nonce: bytes) -> None:
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._pending[nonce] = 0

    def finish(self, nonce: bytes) -> int:
        """Stop waiting for ``nonce``; returns how many probes carried it."""
        return self._pending.pop(nonce, 0)

    async def _on_probe(self, ctx: CallContext, body: Any) -> Any:
        nonce = _nonce(body)
        if nonce not in self._pending:
            raise RpcError("unknown_nonce", "no dial-back with this nonce is pending")
        self._pending[nonce] += 1
        self.probes += 1
        return {"ok": True}


async def ask_dialback(
    endpoint: Endpoint,
    responder: ProbeResponder,
    peer: PeerAddress,
    addrs: Sequence[Addr] = (),
    *,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> DialbackAnswer:
    """Ask ``peer`` to dial us back; its answer, cross-checked against the probes that
    actually arrived. Raises NatRemoteError on a malformed reply, transport errors as is."""
    nonce = os.urandom(NONCE_BYTES)
    responder.expect(nonce)
    try:
        body = {"nonce": nonce, "addrs": [[h, p] for h, p in list(addrs)[:MAX_ADDRS]]}
        reply = await endpoint.call(peer, DIALBACK, body, timeout=timeout)
    finally:
        arrived = responder.finish(nonce)
    if not isinstance(reply, dict) or not {"observed", "tried", "reached"} <= set(reply):
        raise NatRemoteError("dial-back reply: expected {observed, tried, reached}", field="reply")
    observed = _addr_list([reply["observed"]], "observed", 1)[0]
    tried = tuple(_addr_list(reply["tried"], "tried", MAX_ADDRS + 1))
    reached = tuple(_addr_list(reply["reached"], "reached", MAX_ADDRS + 1))
    if not set(reached) <= set(tried):
        raise NatRemoteError("dial-back reply: reached an address it did not try", field="reached")
    if reached and not arrived:
        log.info("dial-back: %s claims to have reached us but no probe came", peer.node_id.short())
        reached = ()
    peer_reach = reply.get("reach", "unknown")
    if peer_reach not in VERDICTS:
        peer_reach = "unknown"
    return DialbackAnswer(peer.node_id, observed, tried, reached, peer_reach)


class ReachabilityChecker:
    """One check round: ask up to ``per_round`` peers (chosen at random among
    ``candidates()``) for a dial-back, concurrently, and feed the tracker."""

    def __init__(
        self,
        endpoint: Endpoint,
        responder: ProbeResponder,
        tracker: ReachabilityTracker,
        candidates: Callable[[], Sequence[PeerAddress]],
        extra_addresses: Callable[[], Sequence[Addr]] = lambda: (),
        *,
        per_round: int = 3,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.responder = responder
        self.tracker = tracker
        self.candidates = candidates
        self.extra_addresses = extra_addresses
        self.per_round = per_round
        self.timeout = timeout
        self.clock = clock
        self.rng = rng or random.Random()
        self.last_errors: dict[str, str] = {}

    async def check_once(self) -> list[Event]:
        peers = [p for p in self.candidates() if p.node_id != self.endpoint.node_id]
        peers = list({p.node_id: p for p in peers}.values())
        self.tracker.peers_available = len(peers)
        chosen = self.rng.sample(peers, min(self.per_round, len(peers)))
        extra = list(self.extra_addresses())
        results = await asyncio.gather(
            *(
                ask_dialback(self.endpoint, self.responder, p, extra, timeout=self.timeout)
                for p in chosen
            ),
            return_exceptions=True,
        )
        events: list[Event] = []
        answered = 0
        self.last_errors = {}
        for peer, result in zip(chosen, results, strict=True):
            if isinstance(result, DialbackAnswer):
                answered += 1
                events += self.tracker.record(result, self.clock())
            elif isinstance(result, asyncio.CancelledError):
                raise result
            else:
                self.last_errors[peer.node_id.b32] = f"{type(result).__name__}: {result}"[:200]
        events += self.tracker.check_finished(self.clock(), answered=answered)
        return events
