"""RelayService: the relay server side (TURN-like) on a reachable node (docs/relay.md).

A NATed peer B reserves a *relayed port* here with ``relay.reserve``; this
service opens a UDP socket for it on the endpoint's listen host (port 0).
Datagrams arriving there are forwarded to B as DATA records on B's
``relay.recv`` download stream, tagged with their source address; B sends
replies as DATA records on its ``relay.send`` upload stream and this service
sends them out of the relayed port to that source. QUIC and the transport's
mutual authentication run end to end between the remote peer and B: the relay
sees only ciphertext and cannot impersonate B.

All decisions (limits, accounting, expiry) are made by the sans-I/O
:class:`~p2pstore.nat.relay.limits.RelayBook`; this module shuttles bytes.

Invariants:
- a reservation's socket, reader callback and queues exist exactly while the
  book holds the reservation; ending it (any reason) closes the socket, ends
  both streams (``RpcError`` with the reason) and forgets the queue;
- the queue towards the client holds at most ``limits.queue_bytes``; datagrams
  beyond it are dropped and counted (``queue``), like any UDP congestion loss;
- replies are only sent to a source that is a live circuit of the reservation, and
  to one that has not echoed our path challenge (relay/limits.py) at most three
  times the bytes it sent;
- the sweeper task is the only background task; :meth:`close` ends it and
  every reservation, and unregisters the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from p2pstore.base.tasks import TaskOwner
from p2pstore.nat.relay import wire
from p2pstore.nat.relay import work as relay_work
from p2pstore.nat.relay.errors import RelayWireError
from p2pstore.nat.relay.limits import (
    Refusal,
    RelayBook,
    RelayLimits,
    ReservationState,
    Verdict,
)
from quic_transport import BulkReader, CallContext, Endpoint, RpcError, echo

log = logging.getLogger(__name__)

BATCH_BYTES = 256 * 1024  # records joined into one stream write
RECV_BATCH = 256  # datagrams drained from a relayed socket per readiness event
SOCKET_BUFFER = 1 << 20
IDLE_WAIT = 60.0  # seconds the sweep sleeps with nothing relayed (it is poked on work)
_REASON_CODES = {"byte-limit": "relay-byte-limit", "expired": "relay-expired"}


class _Port:
    """The I/O half of one reservation: its UDP socket and the queue towards the client."""

    def __init__(self, state: ReservationState, sock: socket.socket) -> None:
        self.state = state
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()
        self.reason = ""
        self.send_open = False

    def error(self) -> RpcError:
        code = _REASON_CODES.get(self.reason, "relay-closed")
        return RpcError(code, f"reservation {self.state.rid} ended: {self.reason}")


class RelayService:
    """See the module docstring. ``clock`` is monotonic seconds (the book's ``now``)."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: RelayLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        bind_host: str | None = None,
        public_host: str | None = None,
        ping_interval: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.wall_clock = wall_clock  # proof-of-work stamps name the minute (relay/work.py)
        self._stamps = relay_work.StampLedger()
        self.limits = limits or RelayLimits()
        self.clock = clock
        self.book = RelayBook(self.limits)
        self.bind_host = bind_host or endpoint.local_address[0]
        self.public_host = public_host
        self.ping_interval = ping_interval
        self.counters: Counter[str] = Counter()
        self._ports: dict[int, _Port] = {}
        self._tasks = TaskOwner()  # the sweeper
        self._poke = asyncio.Event()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._tasks or self._closed:
            return
        ep = self.endpoint
        ep.register(wire.RESERVE, self._on_reserve)
        ep.register(wire.RENEW, self._on_renew)
        ep.register(wire.RELEASE, self._on_release)
        ep.register_fetch(wire.RECV, self._on_recv)
        ep.register_stream(wire.SEND, self._on_send)
        self._tasks.start(self._sweep(), name="relay-sweeper")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ep = self.endpoint
        for name, fn in (
            (wire.RESERVE, self._on_reserve),
            (wire.RENEW, self._on_renew),
            (wire.RELEASE, self._on_release),
        ):
            if ep.handlers.get(name) == fn:
                del ep.handlers[name]
        if ep.fetch_handlers.get(wire.RECV) == self._on_recv:
            del ep.fetch_handlers[wire.RECV]
        if ep.stream_handlers.get(wire.SEND) == self._on_send:
            del ep.stream_handlers[wire.SEND]
        for rid in list(self._ports):
            self._end(rid, "relay-shutdown")
        await self._tasks.close()

    @property
    def serving(self) -> bool:
        return bool(self._tasks) and not self._closed

    def status(self) -> dict[str, Any]:
        now = self.clock()
        out = []
        for p in self._ports.values():
            s = p.state
            out.append(
                {
                    "id": s.rid,
                    "peer": s.peer.b32,
                    "port": p.port,
                    "age": round(now - s.created, 1),
                    "expires_in": round(s.expires - now, 1),
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                    "circuits": len(s.circuits),
                    "dropped": dict(s.dropped),
                    "attached": s.attached and p.send_open,
                }
            )
        counters = dict(self.book.counters)
        counters.update(self.counters)
        return {
            "serving": self.serving,
            "reservations": out,
            "counters": counters,
            "limits": self.limits.advertised()
            | {
                "max_reservations": self.limits.max_reservations,
                "max_reservations_per_peer": self.limits.max_reservations_per_peer,
            },
        }

    def relayed_ports(self) -> list[int]:
        return [p.port for p in self._ports.values()]

    # -- RPC handlers ------------------------------------------------------------------
    async def _on_reserve(self, ctx: CallContext, body: Any) -> Any:
        if self._closed:
            raise RpcError("relay-closed", "this relay is shutting down")
        if body is not None and (not isinstance(body, dict) or set(body) - {"work"}):
            raise RpcError("bad-request", "relay.reserve takes a map with at most 'work'")
        need = self.limits.work_bits
        if need:
            work = (body or {}).get("work")
            if work is None:
                raise RpcError(
                    "relay-work-required",
                    f"a reservation here needs a proof of work of {need} bits (docs/relay.md)",
                )
            try:
                stamp = relay_work.Stamp.from_body(work)
                relay_work.check_stamp(
                    stamp, self.endpoint.node_id, ctx.peer_id, self.wall_clock(), need
                )
                self._stamps.use(ctx.peer_id, stamp)
            except relay_work.WorkError as e:
                self.counters["refused:work"] += 1
                raise RpcError("relay-work-required", str(e)) from None
        try:
            state = self.book.reserve(ctx.peer_id, self.clock(), ctx.host)
        except Refusal as e:
            raise RpcError(e.code, e.message) from None
        finally:
            for ended in self.book.take_ended():  # idle ones given up for fair shares
                self._end(ended.rid, ended.reason)
        try:
            sock = _open_socket(self.bind_host)
        except OSError as e:
            self.book.end(state.rid, "bind-failed")
            raise RpcError(
                "relay-bind-failed", f"cannot open a relayed port: {e.strerror}"
            ) from None
        port = _Port(state, sock)
        self._ports[state.rid] = port
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable, port)
        self._poke.set()
        log.info(
            "relay: reservation %d for %s on UDP port %d",
            state.rid,
            ctx.peer_id.short(),
            port.port,
        )
        reply = wire.ReserveReply(
            state.rid,
            port.port,
            state.expires - state.created,
            self.public_host,
            self.limits.advertised(),
        )
        return reply.to_body()

    def _port_of(self, ctx: CallContext, body: Any) -> _Port:
        try:
            rid = wire.reservation_id(body)
            self.book.get(ctx.peer_id, rid)
        except RelayWireError as e:
            raise RpcError("bad-request", str(e)) from None
        except Refusal as e:
            raise RpcError(e.code, e.message) from None
        return self._ports[rid]

    async def _on_renew(self, ctx: CallContext, body: Any) -> Any:
        port = self._port_of(ctx, body)
        try:
            ttl = self.book.renew(ctx.peer_id, port.state.rid, self.clock())
        except Refusal as e:
            raise RpcError(e.code, e.message) from None
        self._poke.set()
        return {"ttl": ttl}

    async def _on_release(self, ctx: CallContext, body: Any) -> Any:
        port = self._port_of(ctx, body)
        self._end(port.state.rid, "released")
        return None

    async def _on_recv(self, ctx: CallContext, header: Any) -> AsyncIterator[bytes]:
        port = self._port_of(ctx, header)
        if port.state.attached:
            raise RpcError("relay-busy", f"reservation {port.state.rid} already has relay.recv")
        port.state.attached = True
        try:
            while True:
                if port.reason:
                    raise port.error()
                if port.queue:
                    yield self._take_batch(port)
                    continue
                port.wake.clear()
                try:
                    async with asyncio.timeout(self.ping_interval):
                        await port.wake.wait()
                except TimeoutError:
                    yield wire.PING
        finally:
            # whatever ended the stream (client gone, connection lost), the
            # reservation cannot deliver any more
            self._end(port.state.rid, "client-gone")

    def _take_batch(self, port: _Port) -> bytes:
        parts = []
        size = 0
        q = port.queue
        while q and (size == 0 or size + len(q[0]) <= BATCH_BYTES):
            rec = q.popleft()
            parts.append(rec)
            size += len(rec)
        port.queued -= size
        return b"".join(parts)

    async def _on_send(self, ctx: CallContext, header: Any, reader: BulkReader) -> Any:
        port = self._port_of(ctx, header)
        if port.send_open:
            raise RpcError("relay-busy", f"reservation {port.state.rid} already has relay.send")
        port.send_open = True
        pump = asyncio.ensure_future(self._pump_out(port, reader))
        ended = asyncio.ensure_future(port.ended.wait())
        try:
            await asyncio.wait({pump, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (pump, ended):
                t.cancel()
            await asyncio.gather(pump, ended, return_exceptions=True)
            self._end(port.state.rid, "client-gone")
        if not pump.cancelled():
            exc = pump.exception()
            if exc is not None:
                raise exc
            return pump.result()
        raise port.error()

    async def _pump_out(self, port: _Port, reader: BulkReader) -> dict[str, int]:
        decoder = wire.RecordDecoder()
        rid = port.state.rid
        book = self.book
        sent = 0
        while chunk := await reader.read():
            try:
                records = decoder.feed(chunk)
            except RelayWireError as e:
                self._end(rid, "protocol-error")
                raise RpcError("bad-request", f"malformed relay record: {e}") from None
            now = self.clock()
            book.heard(rid, now)
            for rec in records:
                if not isinstance(rec, wire.Data):
                    continue
                verdict = book.outbound(rid, rec.addr, len(rec.datagram), now)
                if verdict is Verdict.FORWARD:
                    try:
                        port.sock.sendto(rec.datagram, rec.addr)
                        sent += 1
                    except OSError:
                        self.counters["send-failed"] += 1
                        port.state.dropped["send-failed"] += 1
                elif verdict is Verdict.DROP_BYTES or verdict is Verdict.DROP_CLOSED:
                    self._end(rid, "byte-limit" if verdict is Verdict.DROP_BYTES else "closed")
                    raise port.error()
        return {"sent": sent}

    # -- relayed socket --------------------------------------------------------------
    def _on_readable(self, port: _Port) -> None:
        sock = port.sock
        book = self.book
        rid = port.state.rid
        limit = self.limits.queue_bytes
        now = self.clock()
        got = False
        for _ in range(RECV_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            if not data or len(data) > wire.MAX_DATAGRAM:
                self.counters["oversize"] += 1
                continue
            source = (str(addr[0]), int(addr[1]))
            token = echo.reply_token(data)
            if token is not None:  # a source answering our path challenge: not for B
                book.validate(rid, source, token)
                continue
            if port.queued + len(data) + 22 > limit:
                self.counters["queue"] += 1
                port.state.dropped["queue"] += 1
                continue
            verdict = book.inbound(rid, source, len(data), now)
            if verdict is Verdict.FORWARD:
                try:
                    rec = wire.encode_data(source, data)
                except RelayWireError:  # e.g. an IPv6 scope suffix
                    self.counters["address"] += 1
                    continue
                port.queue.append(rec)
                port.queued += len(rec)
                got = True
            elif verdict is Verdict.DROP_BYTES or verdict is Verdict.DROP_CLOSED:
                self._end(rid, "byte-limit" if verdict is Verdict.DROP_BYTES else "closed")
                return
        for ch in book.take_challenges():  # new sources must prove their address
            target = self._ports.get(ch.rid)
            if target is not None:
                with contextlib.suppress(OSError):
                    target.sock.sendto(echo.request(ch.token), ch.addr)
        for c in book.take_evicted():  # the client forgets evicted sources too
            if c.rid == rid:
                rec = wire.encode_closed(c.addr)
                port.queue.append(rec)
                port.queued += len(rec)
                got = True
        if got:
            port.wake.set()

    # -- ending ------------------------------------------------------------------------
    def _end(self, rid: int, reason: str) -> None:
        self.book.end(rid, reason)
        port = self._ports.pop(rid, None)
        if port is None:
            return
        port.reason = reason
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.sock.fileno())
        port.sock.close()
        port.queue.clear()
        port.queued = 0
        port.wake.set()
        port.ended.set()
        log.info("relay: reservation %d ended (%s)", rid, reason)

    async def _sweep(self) -> None:
        while True:
            now = self.clock()
            ended, closed = self.book.expire(now)
            for e in ended:
                self._end(e.rid, e.reason)
            for c in closed:
                port = self._ports.get(c.rid)
                if port is not None:
                    rec = wire.encode_closed(c.addr)
                    port.queue.append(rec)
                    port.queued += len(rec)
                    port.wake.set()
            deadline = self.book.next_deadline()
            # nothing relayed: sleep until poked (a reservation or circuit arrives)
            wait = IDLE_WAIT if deadline is None else min(max(deadline - now, 0.05), 1.0)
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._poke.wait()


def _open_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        if family == socket.AF_INET and hasattr(socket, "IP_MTU_DISCOVER"):
            # datagram-size probes from remote peers must not be fragmented on the way back
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.IPPROTO_IP,
                    socket.IP_MTU_DISCOVER,
                    getattr(socket, "IP_PMTUDISC_DO", 2),
                )
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    return sock
