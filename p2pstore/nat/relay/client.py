"""RelayClient: a NATed node's side of relay reservations (docs/relay.md).

``reserve(relay)`` asks a reachable peer running
:class:`~p2pstore.nat.relay.service.RelayService` for a relayed UDP port, then keeps
three loops per reservation until it is released or lost:

- *recv*: reads DATA records from the relay's ``relay.recv`` stream and injects
  each datagram into this node's endpoint through a virtual path, one per
  (reservation, remote source) (quic_transport/paths.py). The endpoint then
  treats the remote peer like any other: QUIC handshake, mutual authentication,
  RPCs, bulk streams, all end to end through the relay.
- *send*: what the endpoint sends to a virtual path is queued (bounded) and
  streamed to the relay as DATA records on ``relay.send``, with a PING every
  ``ping_interval`` when idle (keeps the relay's silence timer and the NAT
  mapping towards the relay alive).
- *renew*: ``relay.renew`` at half the remaining lifetime.

Invariants:
- every background task belongs to the client and ends in :meth:`release` /
  :meth:`close`; a reservation whose loop fails is *lost*: its paths are
  detached, it leaves :meth:`reservations`, and ``on_lost(res, reason)`` is called;
- the queue towards the relay holds at most ``queue_bytes`` per reservation
  (more is dropped and counted; QUIC retransmits);
- at most ``max_sources`` virtual paths per reservation (a relay cannot make
  this node hold unbounded state).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from p2pstore.nat.relay import wire
from p2pstore.nat.relay import work as relay_work
from p2pstore.nat.relay.errors import (
    RelayError,
    RelayLocalError,
    RelayRefused,
    RelayUnavailable,
    RelayWireError,
)
from quic_transport import BulkReader, Endpoint, PeerAddress, RpcError, TransportError
from quic_transport.identity import NodeId
from quic_transport.paths import virtual_key

log = logging.getLogger(__name__)

BATCH_BYTES = 256 * 1024
_instances = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A relayed address: peers dial ``PeerAddress(<this node>, host, port)``.

    ``expires`` is wall-clock UNIX time (advances with each renewal; read the
    current value from :meth:`RelayClient.reservations`); ``rid`` is the relay's
    reservation id.
    """

    relay_id: NodeId
    host: str
    port: int
    expires: float
    rid: int = 0


@dataclass(eq=False)
class _Active:
    res: Reservation
    relay: PeerAddress
    index: int
    ttl: float
    limits: dict[str, int | float]
    reader: BulkReader | None = None
    keys: dict[wire.Addr, tuple[str, int]] = field(default_factory=dict)
    queue: deque[bytes] = field(default_factory=deque)
    queued: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    bytes_in: int = 0
    bytes_out: int = 0
    next_source: int = 1
    dropped: Counter[str] = field(default_factory=Counter)
    task: asyncio.Task[None] | None = None
    released: bool = False


class RelayClient:
    """See the module docstring. ``clock`` is wall-clock seconds (for ``expires``)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        clock: Callable[[], float] = time.time,
        on_lost: Callable[[Reservation, str], None] | None = None,
        queue_bytes: int = 1 << 20,
        max_sources: int = 256,
        ping_interval: float = 5.0,
        timeout: float = 10.0,
        recv_timeout: float = 15.0,
        work_bits: int = relay_work.DEFAULT_BITS,
    ) -> None:
        self.endpoint = endpoint
        self.work_bits = work_bits
        self.clock = clock
        self.on_lost = on_lost
        self.queue_bytes = queue_bytes
        self.max_sources = max_sources
        self.ping_interval = ping_interval
        self.timeout = timeout
        self.recv_timeout = recv_timeout
        self._instance = next(_instances)
        self._indexes = itertools.count(1)
        self._active: dict[int, _Active] = {}
        self._lost: deque[dict[str, Any]] = deque(maxlen=16)
        self._closed = False

    # -- API ---------------------------------------------------------------------------
    async def reserve(self, relay: PeerAddress) -> Reservation:
        """Reserve a relayed port on ``relay``; raises RelayRefused / RelayUnavailable."""
        if self._closed:
            raise RelayLocalError("relay client is closed")
        name = relay.node_id.b32
        ep = self.endpoint
        # proof of work (relay/work.py), in a worker thread: ~0.2 s at 18 bits
        stamp = await asyncio.to_thread(
            relay_work.make_stamp, relay.node_id, ep.node_id, time.time(), self.work_bits
        )
        try:
            body = await ep.call(
                relay, wire.RESERVE, {"work": stamp.to_body()}, timeout=self.timeout
            )
            reply = wire.ReserveReply.from_body(body)
        except RpcError as e:
            raise RelayRefused(name, e.code, e.message) from None
        except TransportError as e:
            raise RelayUnavailable(name, str(e)) from None
        res = Reservation(
            relay.node_id,
            reply.host or relay.host,
            reply.port,
            self.clock() + reply.ttl,
            reply.rid,
        )
        a = _Active(res, relay, next(self._indexes), reply.ttl, reply.limits)
        try:
            a.reader = await ep.fetch(
                relay, wire.RECV, {"id": reply.rid}, timeout=self.recv_timeout
            )
        except TransportError as e:
            with contextlib.suppress(TransportError):
                await ep.call(relay, wire.RELEASE, {"id": reply.rid}, timeout=2.0)
            raise RelayUnavailable(name, f"cannot open relay.recv: {e}") from None
        if self.closed:  # closed while we were reserving
            a.reader.release()
            raise RelayLocalError("relay client is closed")
        self._active[a.index] = a
        a.task = asyncio.get_running_loop().create_task(
            self._run(a), name=f"relay-client-{a.index}"
        )
        log.info("relay: reserved %s:%d on %s (ttl %.0f s)", res.host, res.port, name, reply.ttl)
        return res

    @property
    def closed(self) -> bool:
        return self._closed

    def reservations(self) -> list[Reservation]:
        """Live reservations with their current ``expires``."""
        return [a.res for a in self._active.values()]

    async def release(self, res: Reservation) -> None:
        """End a reservation (tells the relay; never raises for a gone relay)."""
        a = self._find(res)
        if a is None:
            return
        a.released = True
        with contextlib.suppress(TransportError):
            await self.endpoint.call(a.relay, wire.RELEASE, {"id": a.res.rid}, timeout=2.0)
        await self._stop(a)

    async def close(self) -> None:
        self._closed = True
        for a in list(self._active.values()):
            await self.release(a.res)

    def status(self) -> list[dict[str, Any]]:
        """One entry per live reservation (for ``peers``/``status``), then recent losses."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        for a in self._active.values():
            out.append(
                {
                    "relay": a.res.relay_id.b32,
                    "address": f"{a.res.host}:{a.res.port}",
                    "id": a.res.rid,
                    "state": "active",
                    "expires_in": round(a.res.expires - now, 1),
                    "bytes_in": a.bytes_in,
                    "bytes_out": a.bytes_out,
                    "sources": [f"{h}:{p}" for h, p in a.keys],
                    "dropped": dict(a.dropped),
                }
            )
        out.extend(self._lost)
        return out

    # -- internals ---------------------------------------------------------------------
    def _find(self, res: Reservation) -> _Active | None:
        for a in self._active.values():
            if a.res.relay_id == res.relay_id and a.res.rid == res.rid:
                return a
        return None

    async def _stop(self, a: _Active) -> None:
        task = a.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._cleanup(a, "released")

    def _cleanup(self, a: _Active, reason: str) -> None:
        if self._active.pop(a.index, None) is None:
            return
        for key in a.keys.values():
            self.endpoint.detach_path(key)
        a.keys.clear()
        a.queue.clear()
        a.queued = 0
        if a.reader is not None:
            a.reader.release()
        if a.released:
            return
        log.warning("relay: lost %s:%d on %s: %s", a.res.host, a.res.port, a.relay.node_id, reason)
        self._lost.append(
            {
                "relay": a.res.relay_id.b32,
                "address": f"{a.res.host}:{a.res.port}",
                "id": a.res.rid,
                "state": "lost",
                "reason": reason,
                "bytes_in": a.bytes_in,
                "bytes_out": a.bytes_out,
            }
        )
        if self.on_lost is not None:
            try:
                self.on_lost(a.res, reason)
            except Exception:
                log.exception("relay on_lost callback failed")

    async def _run(self, a: _Active) -> None:
        loops = [
            asyncio.ensure_future(self._recv_loop(a)),
            asyncio.ensure_future(self._send_loop(a)),
            asyncio.ensure_future(self._renew_loop(a)),
        ]
        reason = "stopped"
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if isinstance(exc, RpcError):
                    reason = f"{exc.code}: {exc.message}"
                elif isinstance(exc, RelayError | TransportError):
                    reason = str(exc)
                elif exc is not None:
                    log.error("relay loop failed", exc_info=exc)
                    reason = f"internal error: {type(exc).__name__}"
                else:
                    reason = "relay ended the stream"
                break
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        # tell the relay (it may still hold the port, e.g. after a refused renewal)
        with contextlib.suppress(TransportError):
            await self.endpoint.call(a.relay, wire.RELEASE, {"id": a.res.rid}, timeout=1.0)
        self._cleanup(a, reason)

    async def _recv_loop(self, a: _Active) -> None:
        assert a.reader is not None
        decoder = wire.RecordDecoder()
        inject = self.endpoint.inject
        while chunk := await a.reader.read():
            for rec in decoder.feed(chunk):  # RelayWireError ends the reservation
                if isinstance(rec, wire.Data):
                    key = a.keys.get(rec.addr) or self._new_source(a, rec.addr)
                    if key is None:
                        continue
                    a.bytes_in += len(rec.datagram)
                    inject(rec.datagram, key)
                elif isinstance(rec, wire.Closed):
                    key = a.keys.pop(rec.addr, None)
                    if key is not None:
                        self.endpoint.detach_path(key)

    def _new_source(self, a: _Active, addr: wire.Addr) -> tuple[str, int] | None:
        if len(a.keys) >= self.max_sources:
            a.dropped["sources"] += 1
            return None
        key = virtual_key(f"s{a.next_source}", f"r{a.index}", f"c{self._instance}", port=addr[1])
        a.next_source += 1
        a.keys[addr] = key
        self.endpoint.attach_path(key, functools.partial(self._enqueue, a, addr), origin=addr)
        return key

    def _enqueue(self, a: _Active, addr: wire.Addr, data: bytes) -> None:
        """The endpoint's send callable for one virtual path (must not block or raise)."""
        if len(data) > wire.MAX_DATAGRAM or a.queued + len(data) + 22 > self.queue_bytes:
            a.dropped["queue"] += 1
            return
        rec = wire.encode_data(addr, data)
        a.queue.append(rec)
        a.queued += len(rec)
        a.bytes_out += len(data)
        a.wake.set()

    async def _records(self, a: _Active) -> AsyncIterator[bytes]:
        while True:
            if a.queue:
                parts = []
                size = 0
                while a.queue and (size == 0 or size + len(a.queue[0]) <= BATCH_BYTES):
                    rec = a.queue.popleft()
                    parts.append(rec)
                    size += len(rec)
                a.queued -= size
                yield b"".join(parts)
                continue
            a.wake.clear()
            try:
                async with asyncio.timeout(self.ping_interval):
                    await a.wake.wait()
            except TimeoutError:
                yield wire.PING

    async def _send_loop(self, a: _Active) -> None:
        await self.endpoint.call_stream(
            a.relay, wire.SEND, {"id": a.res.rid}, self._records(a), timeout=self.recv_timeout
        )

    async def _renew_loop(self, a: _Active) -> None:
        name = a.relay.node_id.b32
        while True:
            left = a.res.expires - self.clock()
            await asyncio.sleep(max(left / 2, 0.5))
            try:
                body = await self.endpoint.call(
                    a.relay, wire.RENEW, {"id": a.res.rid}, timeout=self.timeout
                )
                ttl = wire.ttl_of(body)
            except RpcError as e:
                raise RelayRefused(name, e.code, e.message) from None
            except TransportError as e:
                if self.clock() >= a.res.expires:
                    raise RelayUnavailable(name, f"renewal failed: {e}") from None
                continue  # try again at half the remaining time
            except RelayWireError:
                raise
            a.res = replace(a.res, expires=self.clock() + ttl)
