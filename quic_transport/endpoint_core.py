"""The endpoint's engine: the socket, the connection table and the datagram pump.

:class:`EndpointCore` owns the UDP socket, the demultiplexing of datagrams to
connections by destination connection ID, admission of new connections (limits,
penalties, making room), per-connection timers, flushing, the liveness watchdog
and the handler registry; it is the :class:`~.peer_connection.ConnectionOwner` every
connection reports to. :class:`~.endpoint.Endpoint` adds the public face on top
(dialing, calls, fetches, virtual paths, close).

I/O discipline (docs/transport.md, "Transport performance"): the socket is
drained in batches of up to ``recv_batch`` datagrams per readiness event, and
each touched connection transmits once per batch; application sends schedule
one flush per event-loop iteration. Socket buffers are 4 MiB.

Invariants:
- Every connection in ``_conns`` has all its live connection IDs in ``_by_cid``
  and a timer armed at ``quic.get_timer()``; both are removed when it closes.
- At most ``max_connections`` connections are open (not closing). When full, the
  least recently used idle connection is closed to make room; if none is idle,
  new Initials are dropped and dials fail with LocalError.
- ``_peers`` maps a node ID only to an authenticated (READY) connection.
- A datagram addressed to a virtual path key (paths.py) goes to that path's
  ``send`` callable or is dropped; it never reaches the socket (nor the upload
  cap: the connection carrying the path, e.g. to a relay, is capped instead).
- Bandwidth caps (ratelimit.py, docs/limits.md): with ``upload_rate`` set every
  connection's pacer asks the shared :class:`SendGate` before each packet and
  :meth:`_service` settles the charge with the bytes sent; with ``download_rate``
  set the socket is read by :meth:`_on_readable_capped`, which stops reading (the
  reader is removed and re-added by a timer) while the bucket is in debt. Without
  caps the only cost is a byte count per datagram sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicHeader, pull_quic_header

from . import addrclass, echo, paths, pmtu, rpc
from .admission import Admission
from .auth import make_certificate
from .config import TransportConfig
from .identity import NodeId, NodeKey
from .liveness import LivenessRule, Verdict
from .messages import check_name
from .paths import PathSend
from .peer_connection import READY, PeerConnection
from .quic_tuned import TransportQuicConnection
from .ratelimit import SendGate, TokenBucket, burst_for
from .rpc import (
    CallContext,
    FetchHandler,
    Handler,
    StreamHandler,
)
from .sizing import DatagramSizer
from .streams import ERR_PROTOCOL, ERR_SILENT, Stream
from .uplink import AdaptiveGate, UplinkControl

log = logging.getLogger(__name__)

ALPN = "p2pstore/1"
CID_LENGTH = 8
PING_METHOD = "transport.ping"
#: how long a misbehaving peer's address is refused new connections (penalize)
PENALTY_SECONDS = 30.0


class EndpointCore:
    """See the module docstring. Not used alone: :class:`~.endpoint.Endpoint` is the endpoint."""

    def __init__(self, key: NodeKey, sock: socket.socket, config: TransportConfig) -> None:
        self.key = key
        self.node_id: NodeId = key.node_id
        self.config = config
        self.handlers: dict[str, Handler] = {}
        self.stream_handlers: dict[str, StreamHandler] = {}
        self.fetch_handlers: dict[str, FetchHandler] = {}
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._family = sock.family
        self._local = sock.getsockname()[:2]
        self._conns: set[PeerConnection] = set()
        self._by_cid: dict[bytes, PeerConnection] = {}
        self._peers: dict[NodeId, PeerConnection] = {}
        self._dialing: dict[NodeId, asyncio.Task[PeerConnection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dirty: set[PeerConnection] = set()
        self._flush_scheduled = False
        self._closed = False
        self._all_closed = asyncio.Event()
        self._peer_gone_hooks: list[Callable[[NodeId], None]] = []
        self._conn_lost_hooks: list[Callable[[NodeId], None]] = []
        self._sizer = DatagramSizer(config, self._send_raw)
        self._stats = {
            "datagrams_in": 0,
            "datagrams_out": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "send_dropped": 0,
            "batches": 0,
        }
        self._paths: dict[tuple[str, int], PathSend] = {}  # virtual paths (paths.py)
        self._origins: dict[tuple[str, int], tuple[str, int]] = {}  # key -> remote address
        clock = self._loop.time
        up, down = config.upload_rate, config.download_rate
        self._up = None if up is None else SendGate(TokenBucket(up, burst_for(up), clock))
        target = config.uplink_delay_target  # the uplink's queue (uplink.py)
        self._uplink = None if target is None else AdaptiveGate(UplinkControl(target, clock), clock)
        self._down = None if down is None else TokenBucket(down, burst_for(down), clock)
        self._read_paused: asyncio.TimerHandle | None = None
        self._read_pauses = 0
        # Silent-peer watchdog (liveness.py): armed only while some connection has
        # streams open, so an idle endpoint runs no timer for it.
        self._liveness = LivenessRule(config.peer_probe_after, config.peer_silent_timeout)
        self._watchdog: asyncio.TimerHandle | None = None
        self._ping_uid = 0
        self._echo_limiter = echo.ReplyLimiter()  # path challenges answered (echo.py)
        # addresses (IP, IPv6 /64) refused new connections until a loop time (penalize)
        self._penalty: dict[str, float] = {}
        self._reader = self._on_readable if self._down is None else self._on_readable_capped
        cert, private = make_certificate(key)
        self._server_conf = QuicConfiguration(
            is_client=False,
            alpn_protocols=[ALPN],
            certificate=cert,
            private_key=private,
            connection_id_length=CID_LENGTH,
            idle_timeout=config.idle_timeout,
            max_data=config.quic_max_data,
            max_stream_data=config.quic_max_stream_data,
            max_datagram_size=config.min_datagram_size,
        )
        self._loop.add_reader(sock.fileno(), self._reader)
        self._admission = Admission(
            versions=self._server_conf.supported_versions,
            cid_length=CID_LENGTH,
            send=self._send_raw,
            clock=self._loop.time,
        )
        self.register(PING_METHOD, _ping_handler)

    # -- public API --------------------------------------------------------------------
    @property
    def local_address(self) -> tuple[str, int]:
        return (str(self._local[0]), int(self._local[1]))

    def register(self, method: str, handler: Handler) -> None:
        """Serve unary calls of ``method``: ``await handler(ctx, body) -> result``."""
        self.handlers[_check_method(method)] = handler

    def register_stream(self, method: str, handler: StreamHandler) -> None:
        """Serve uploads: ``await handler(ctx, header, reader: BulkReader) -> result``."""
        self.stream_handlers[_check_method(method)] = handler

    def register_fetch(self, method: str, handler: FetchHandler) -> None:
        """Serve downloads: ``handler(ctx, header)`` returns an async iterable of bytes."""
        self.fetch_handlers[_check_method(method)] = handler

    def caller_address(self, addr: tuple[str, int]) -> tuple[str, int]:
        """What handlers see as the caller's address for a connection at ``addr``:
        the origin of a virtual path when known, else ``addr`` itself."""
        if self._origins:
            origin = self._origins.get((addr[0], addr[1]))
            if origin is not None:
                return origin
        return (addr[0], addr[1])

    def now(self) -> float:
        return self._loop.time()

    def _make_room(self) -> bool:
        """Below max_connections, or made so by closing the least recently used idle one."""
        # Connections already closing only wait out their drain period (a few RTTs).
        live = [c for c in self._conns if not c.closing]
        if len(live) < self.config.max_connections:
            return True
        idle = [c for c in live if c.state == READY and not c.streams]
        if idle:
            victim = min(idle, key=lambda c: c.last_used)
            victim.close(0, "connection limit: closing the least recently used")
            return True
        # None idle: a connection whose streams are only requests that never arrived
        # whole (trickled bytes) and that made no call of ours for request_read_timeout
        # is not in use either: the least useful such one goes.
        stale_before = self._loop.time() - self.config.request_read_timeout
        useless = [c for c in live if c.state == READY and c.last_useful < stale_before]
        if not useless:
            return False
        victim = min(useless, key=lambda c: c.last_useful)
        victim.close(0, "connection limit: closing one with no complete request")
        self._stats["evicted_useless"] = self._stats.get("evicted_useless", 0) + 1
        return True

    def _host_full(self, addr: tuple[str, int]) -> bool:
        """``max_connections_per_host`` connections from this host (IPv6 /64) already;
        loopback is exempt (a local grid shares one address)."""
        host = str(addr[0])
        if addrclass.classify(host) == addrclass.LOOPBACK:
            return False
        key = echo.source_key(host)
        n = sum(1 for c in self._conns if not c.closing and echo.source_key(c.addr[0]) == key)
        return n >= self.config.max_connections_per_host

    def _new_quic(self, addr: tuple[Any, ...], **kwargs: Any) -> TransportQuicConnection:
        # no uplink between (loopback), or already gated (a relayed path's datagrams go
        # out on the connection to its relay)
        local = paths.is_virtual(addr) or addrclass.classify(str(addr[0])) == addrclass.LOOPBACK
        return TransportQuicConnection(
            stream_window=self.config.quic_max_stream_data,
            connection_window=self.config.quic_max_data,
            send_gate=self._up,
            uplink=None if local else self._uplink,
            **kwargs,
        )

    # -- silent peers (liveness.py) -------------------------------------------------------
    def watch(self) -> None:
        """A stream was opened: make sure the silent-peer watchdog is running."""
        if self._watchdog is None and not self._closed:
            self._watchdog = self._loop.call_later(self._liveness.tick, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        if self._closed:
            return
        now = self._loop.time()
        busy = False
        rule = self._liveness
        for conn in list(self._conns):
            if conn.state != READY or conn.closing or not conn.streams:
                conn.probe_sent_at = None
                continue
            busy = True
            verdict = rule.verdict(now, conn.last_received, conn.probe_sent_at)
            if verdict is Verdict.PROBE:
                self._ping_uid += 1
                conn.quic.send_ping(self._ping_uid)
                conn.probe_sent_at = now
                self._dirty.add(conn)
            elif verdict is Verdict.DEAD and self._read_paused is None:
                # (while a download cap pauses reading, silence may be our own doing)
                self._silent(conn, now - conn.last_received)
        if self._dirty:
            self._flush()
        if busy:
            self._watchdog = self._loop.call_later(rule.tick, self._watch)

    def _silent(self, conn: PeerConnection, quiet: float) -> None:
        """Close a connection whose peer stopped answering; its streams fail now."""
        reason = f"peer silent for {quiet:.1f} s"
        log.info("%r: %s with %d stream(s) open: closing", conn, reason, len(conn.streams))
        self._stats["silent_closed"] = self._stats.get("silent_closed", 0) + 1
        conn.close(ERR_SILENT, reason)
        with contextlib.suppress(Exception):
            self._service(conn)  # one CONNECTION_CLOSE, in case it is only slow
        conn.terminated(ERR_SILENT, reason)

    def connection_ready(self, conn: PeerConnection) -> None:
        assert conn.peer_id is not None
        self._peers[conn.peer_id] = conn

    def connection_closed(self, conn: PeerConnection) -> None:
        self._conns.discard(conn)
        self._dirty.discard(conn)
        for cid in list(conn.cids):
            self.remove_cid(conn, cid)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.peer_id is not None and self._peers.get(conn.peer_id) is conn:
            del self._peers[conn.peer_id]
        # both sides may have dialed: the peer is gone with its last connection, whichever
        if conn.peer_id is not None and not any(c.peer_id == conn.peer_id for c in self._conns):
            self._peer_gone(conn.peer_id)
        elif conn.peer_id is not None:  # e.g. a restarted peer's old connection timing out
            self._peer_gone(conn.peer_id, hooks=self._conn_lost_hooks)
        if not self._conns:
            self._all_closed.set()

    def on_peer_gone(self, hook: Callable[[NodeId], None]) -> None:
        """Call ``hook(node_id)`` when the last connection to an authenticated peer
        closes (it went away, fell silent, or was evicted), e.g. so a storage server
        drops that peer's unfinished uploads at once. Hooks must not block."""
        self._peer_gone_hooks.append(hook)

    def on_connection_lost(self, hook: Callable[[NodeId], None]) -> None:
        """Call ``hook(node_id)`` when a connection to a peer closes while another one
        to it remains (a restarted peer's old connection, a duplicate dial): e.g. to
        drop the uploads it made over the old one. Hooks must not block."""
        self._conn_lost_hooks.append(hook)

    def _peer_gone(
        self, node_id: NodeId, hooks: list[Callable[[NodeId], None]] | None = None
    ) -> None:
        for hook in self._peer_gone_hooks if hooks is None else hooks:
            try:
                hook(node_id)
            except Exception:  # a hook's bug must not break the connection table
                log.exception("peer-gone hook failed")

    def add_cid(self, conn: PeerConnection, cid: bytes) -> None:
        self._by_cid[cid] = conn
        conn.cids.add(cid)

    def remove_cid(self, conn: PeerConnection, cid: bytes) -> None:
        if self._by_cid.get(cid) is conn:
            del self._by_cid[cid]
        conn.cids.discard(cid)

    async def serve_stream(self, conn: PeerConnection, stream: Stream) -> None:
        await rpc.serve(self, conn, stream)

    # -- socket I/O ----------------------------------------------------------------------
    def _send_raw(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Send one datagram; False only if it is too large to leave this host
        (EMSGSIZE: the interface MTU or the kernel's cached path MTU)."""
        if paths.is_virtual(addr):
            return self._send_path(data, addr)
        if self._up is not None:
            self._up.charge(len(data))
        try:
            self._sock.sendto(data, addr)
            self._stats["datagrams_out"] += 1
            self._stats["bytes_out"] += len(data)
        except BlockingIOError:
            self._stats["send_dropped"] += 1
        except OSError as e:
            self._stats["send_dropped"] += 1
            if e.errno == errno.EMSGSIZE:
                return False
            log.debug("sendto %s failed: %s", addr, e)
        return True

    def _send_path(self, data: bytes, addr: Any) -> bool:
        send = self._paths.get((addr[0], addr[1]))
        if send is None:  # detached: never hand a virtual host to the socket
            self._stats["send_dropped"] += 1
            return False
        send(data)
        self._stats["datagrams_out"] += 1
        self._stats["bytes_out"] += len(data)
        return True

    def _on_readable(self) -> None:
        sock = self._sock
        clock = self._loop.time
        n = 0
        for _ in range(self.config.recv_batch):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ICMP errors surfacing on the socket
                log.debug("recvfrom failed: %s", e)
                continue
            n += 1
            self._on_datagram(data, addr, clock())
        self._stats["datagrams_in"] += n
        self._stats["batches"] += 1
        self._flush()

    def _on_readable_capped(self) -> None:
        """:meth:`_on_readable` under a download cap: every datagram read is charged
        to the bucket; once it is in debt the reader is removed until the debt is paid
        off. Unread datagrams wait in the (short, see ratelimit.receive_buffer_for)
        kernel queue; a sender that keeps outrunning the cap loses packets there and
        its congestion control backs off. Nothing already read is ever discarded."""
        bucket = self._down
        assert bucket is not None
        sock = self._sock
        clock = self._loop.time
        n = 0
        for _ in range(self.config.recv_batch):
            if not bucket.ready():
                self._loop.remove_reader(sock.fileno())
                self._read_paused = self._loop.call_later(bucket.delay(), self._resume_reading)
                self._read_pauses += 1
                break
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("recvfrom failed: %s", e)
                continue
            n += 1
            bucket.consume(len(data))
            self._on_datagram(data, addr, clock())
        self._stats["datagrams_in"] += n
        self._stats["batches"] += 1
        self._flush()

    def _resume_reading(self) -> None:
        self._read_paused = None
        if self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._reader)

    def _on_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self._stats["bytes_in"] += len(data)
        if not data:
            return
        first = data[0]
        if first & 0x80 == 0:  # short header: DCID has our fixed length
            if first & 0x40 == 0:
                if pmtu.is_probe_packet(data):
                    self._sizer.on_packet(data, (addr[0], addr[1]))
                elif (reply := echo.reply_to(data)) is not None:
                    self._echo(reply, addr, now)
                return
            conn = self._by_cid.get(data[1 : 1 + CID_LENGTH])
            if conn is None:
                return
        else:
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
            except ValueError:
                return
            conn = self._by_cid.get(header.destination_cid)
            if conn is None:
                conn = self._accept(data, header, addr)
                if conn is None:
                    return
                self._feed(conn, data, addr, now)
                if not conn.quic.opened_by_valid_packet():
                    # Not a decryptable Initial (noise, or spoofed): keep no state for it,
                    # or junk would hold connection slots until the auth deadline.
                    conn.terminated(ERR_PROTOCOL, "invalid Initial")
                    return
                self._dirty.add(conn)
                return
        self._feed(conn, data, addr, now)
        self._dirty.add(conn)

    def _feed(self, conn: PeerConnection, data: bytes, addr: Any, now: float) -> None:
        conn.last_received = now
        try:
            conn.quic.receive_datagram(data, addr, now)
        except Exception:  # aioquic should not raise; if it does, only this peer suffers
            log.exception("aioquic failed on a datagram from %s", addr)
            conn.close(ERR_PROTOCOL, "internal error")

    def penalize(self, addr: tuple[str, int], reason: str) -> None:
        """Refuse new connections from ``addr``'s host (IPv6: its /64) for
        :data:`PENALTY_SECONDS` (a peer that sent a message over the decoding budget)."""
        self._stats["penalized"] = self._stats.get("penalized", 0) + 1
        key = _penalty_key(addr)
        self._penalty.pop(key, None)
        self._penalty[key] = self._loop.time() + PENALTY_SECONDS
        while len(self._penalty) > 4096:
            del self._penalty[next(iter(self._penalty))]
        log.info("refusing %s for %.0f s: %s", key, PENALTY_SECONDS, reason)

    def _penalized(self, addr: tuple[str, int]) -> bool:
        if not self._penalty:
            return False
        key = _penalty_key(addr)
        until = self._penalty.get(key)
        if until is None:
            return False
        if self._loop.time() >= until:
            del self._penalty[key]
            return False
        return True

    def _accept(self, data: bytes, header: QuicHeader, addr: Any) -> PeerConnection | None:
        if self._closed:
            return None
        if self._penalized((str(addr[0]), int(addr[1]))):
            self._stats["penalty_dropped"] = self._stats.get("penalty_dropped", 0) + 1
            return None
        if self._host_full((str(addr[0]), int(addr[1]))):
            self._stats["host_limit_dropped"] = self._stats.get("host_limit_dropped", 0) + 1
            return None
        admitted = self._admission.admit(data, header, addr, under_pressure=self._under_pressure())
        if admitted is None or not self._make_room():
            return None
        size = self._sizer.size_for_listener((addr[0], addr[1]))
        conf = dataclasses.replace(self._server_conf, max_datagram_size=size)
        quic = self._new_quic(
            addr,
            configuration=conf,
            original_destination_connection_id=admitted.original_dcid,
            retry_source_connection_id=admitted.retry_source,
        )
        conn = PeerConnection(self, quic, (addr[0], addr[1]), expected=None)
        conn.auth_deadline = self._loop.call_later(self.config.connect_timeout, conn.auth_timed_out)
        self._conns.add(conn)
        self._all_closed.clear()
        self.add_cid(conn, header.destination_cid)
        self.add_cid(conn, quic.host_cid)
        return conn

    def _echo(self, reply: bytes, addr: Any, now: float) -> None:
        """Answer a path challenge (echo.py): same size, rate-limited per source."""
        if isinstance(addr[0], str) and addr[0].endswith(paths.VIRTUAL_SUFFIX):
            return  # a relayed path: the relay validates its own circuits
        if not self._echo_limiter.allow(str(addr[0]), now):
            self._stats["echo_refused"] = self._stats.get("echo_refused", 0) + 1
            return
        self._send_raw(reply, (addr[0], addr[1]))
        self._stats["echo_replies"] = self._stats.get("echo_replies", 0) + 1

    def _under_pressure(self) -> bool:
        live = sum(1 for c in self._conns if not c.closing)
        return live >= self.config.max_connections // 2

    def schedule_flush(self, conn: PeerConnection) -> None:
        self._dirty.add(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        rounds = 0
        while self._dirty and rounds < 4:
            rounds += 1
            dirty, self._dirty = self._dirty, set()
            for conn in dirty:
                try:
                    self._service(conn)
                except Exception:  # a bug must cost one connection, not the endpoint
                    log.exception("servicing %r failed", conn)
                    conn.terminated(ERR_PROTOCOL, "internal error")
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _service(self, conn: PeerConnection) -> None:
        now = self._loop.time()
        conn.process_events()
        if conn not in self._conns:
            return
        sendto = self._sock.sendto
        sent = 0
        nbytes = 0
        for data, addr in conn.quic.datagrams_to_send(now=now):
            if addr[0].__class__ is str and addr[0].endswith(paths.VIRTUAL_SUFFIX):
                self._send_path(data, addr)  # not counted: settle() refunds its charge
                continue
            nbytes += len(data)
            try:
                sendto(data, addr)
                sent += 1
            except BlockingIOError:
                self._stats["send_dropped"] += 1
            except OSError as e:
                log.debug("sendto %s failed: %s", addr, e)
                self._stats["send_dropped"] += 1
        self._stats["datagrams_out"] += sent
        self._stats["bytes_out"] += nbytes
        conn.sent_some()  # wakes senders waiting for their backlog to leave
        if self._up is not None:
            self._up.settle(nbytes)
        conn.process_events()  # datagrams_to_send may end a closing connection
        if conn not in self._conns:
            return
        at = conn.quic.get_timer()
        if at != conn.timer_at:
            if conn.timer is not None:
                conn.timer.cancel()
            conn.timer_at = at
            conn.timer = None if at is None else self._loop.call_at(at, self._on_timer, conn)

    def _on_timer(self, conn: PeerConnection) -> None:
        conn.timer = None
        conn.timer_at = None
        if conn not in self._conns:
            return
        conn.quic.handle_timer(now=self._loop.time())
        self._dirty.add(conn)
        self._flush()


def _penalty_key(addr: tuple[str, int]) -> str:
    """A host (IPv6: its /64); on loopback, where a whole local grid shares one IP,
    the address with its port."""
    host = str(addr[0])
    if addrclass.classify(host) == addrclass.LOOPBACK:
        return f"{host}|{addr[1]}"
    return echo.source_key(host)


def _check_method(method: str) -> str:
    check_name(method, "method")
    return method


async def _ping_handler(ctx: CallContext, body: Any) -> None:
    return None
