"""Endpoint: one UDP socket per node that both listens and dials, driving aioquic.

The public face of a node's QUIC endpoint: dialing peers (one connection per
peer pair), RPC calls, bulk streams and fetches, pings, virtual paths (relayed
peers) and closing. The engine under it (socket, connection table, datagram
pump, admission, timers) is :class:`~.endpoint_core.EndpointCore`
(docs/transport.md).

Invariants:
- Every task the endpoint starts is tracked and awaited in :meth:`aclose`.
- A dial to a peer already being dialed joins that dial; a READY connection is
  reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
import sys
import time
from typing import Any

from aioquic.quic.configuration import QuicConfiguration

from . import paths, pmtu, rpc
from .config import TransportConfig
from .endpoint_core import ALPN, CID_LENGTH, PING_METHOD, EndpointCore
from .errors import ConnectError, EndpointClosed, LocalError, RpcTimeout
from .identity import NodeId, NodeKey
from .paths import PathSend
from .peer_connection import READY, PeerConnection
from .ratelimit import receive_buffer_for
from .rpc import (
    BulkReader,
    Chunks,
    PeerAddress,
)
from .streams import ERR_SHUTDOWN

log = logging.getLogger(__name__)

# Linux's IPv4 don't-fragment switch: Python's socket module names it only from 3.12,
# so on 3.11 the numbers from <linux/in.h> (IP_MTU_DISCOVER 10, IP_PMTUDISC_DO 2).
# Without it the kernel fragments oversized datagrams at the source.
_LINUX = sys.platform.startswith("linux")
IP_MTU_DISCOVER: int | None = getattr(socket, "IP_MTU_DISCOVER", 10 if _LINUX else None)
IP_PMTUDISC_DO: int = getattr(socket, "IP_PMTUDISC_DO", 2)


class Endpoint(EndpointCore):
    """A node's QUIC endpoint. Create with :func:`open_endpoint`; close with :meth:`aclose`."""

    @property
    def stats(self) -> dict[str, int]:
        """Counters: datagrams in/out, sends dropped, receive batches, Retries sent."""
        return {**self._stats, "retries": self._admission.retries}

    @property
    def limits(self) -> dict[str, int | None]:
        """Bandwidth caps (bytes/s, None = unlimited) and how often they held traffic
        back: packets deferred by the upload gate, pauses of socket reading."""
        return {
            "upload_rate": self.config.upload_rate,
            "download_rate": self.config.download_rate,
            "max_connections": self.config.max_connections,
            "upload_deferred": 0 if self._up is None else self._up.deferred,
            # the uplink's queue (uplink.py): the rate set now, times a queue set one
            **self._uplink_figures(),
            "read_pauses": self._read_pauses,
        }

    def _uplink_figures(self) -> dict[str, int | None]:
        gate = self._uplink
        if gate is None:
            return {"uplink_rate": None, "uplink_engaged": 0, "uplink_deferred": 0}
        rate = gate.control.current()
        return {
            "uplink_rate": None if rate is None else int(rate),
            "uplink_engaged": gate.control.engaged,
            "uplink_deferred": gate.deferred,
        }

    @property
    def connected_peers(self) -> list[NodeId]:
        return [n for n, c in self._peers.items() if c.state == READY and not c.closing]

    async def dial(self, peer: PeerAddress, *, timeout: float) -> None:  # noqa: ASYNC109
        """Open a connection to ``peer`` now, without joining a dial to the same node ID
        already in flight (NAT hole punching, docs/nat.md: that dial may aim at a stale
        address, or have sent its Initials before the hole existed). Returns once the
        peer is authenticated (later calls to its node ID use this connection);
        ConnectError if not within ``timeout``, and the attempt is abandoned."""
        if self._closed:
            raise EndpointClosed("endpoint is closed")
        if peer.node_id == self.node_id:
            raise LocalError("refusing to dial this endpoint's own node ID")
        task = self._loop.create_task(self._dial(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            raise ConnectError(
                f"no authenticated connection to {peer.host}:{peer.port} within {timeout} s"
            ) from None
        except asyncio.CancelledError:
            task.cancel()
            raise

    def peer_address(self, node_id: NodeId) -> tuple[str, int] | None:
        """The UDP address of our authenticated connection to ``node_id`` (what we
        observe for that peer, e.g. its NAT mapping toward us), or None."""
        conn = self._peers.get(node_id)
        if conn is None or conn.state != READY or conn.closing:
            return None
        return conn.addr

    def send_raw(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one non-QUIC UDP datagram from this endpoint's socket (NAT hole punching,
        docs/nat.md). ``data`` must have the QUIC fixed bit (0x40) clear and must not
        look like a datagram-size probe, so every receiver's endpoint drops it."""
        if not data or data[0] & 0x40 or pmtu.is_probe_packet(data) or len(data) > 1200:
            raise LocalError("send_raw: 1..1200 non-QUIC bytes (first byte & 0x40 == 0)")
        if self._closed:
            raise EndpointClosed("endpoint is closed")
        self._send_raw(data, addr)

    # -- virtual paths (paths.py, docs/relay.md) -------------------------------------------
    def attach_path(
        self, key: tuple[str, int], send: PathSend, origin: tuple[str, int] | None = None
    ) -> None:
        """Datagrams this endpoint sends to ``key`` (a ``paths.virtual_key``) go to
        ``send(data)`` instead of the socket; ``inject(data, key)`` feeds datagrams in.
        ``send`` must not block or raise (queue or drop). ``origin``: the remote peer's
        address as the carrier (relay) observed it; handlers see it as ``ctx.host/port``."""
        paths.check_key(key)
        if self._closed:
            raise EndpointClosed("endpoint is closed")
        self._paths[key] = send
        if origin is not None:
            self._origins[key] = (str(origin[0]), int(origin[1]))

    def detach_path(self, key: tuple[str, int]) -> None:
        """Forget the path; connections on it are closed (their close frames dropped)."""
        self._origins.pop(key, None)
        if self._paths.pop(key, None) is None:
            return
        for conn in list(self._conns):
            if conn.addr == key and not conn.closing:
                conn.close(ERR_SHUTDOWN, "relay path closed")

    def inject(self, data: bytes, key: tuple[str, int]) -> None:
        """Process ``data`` as a datagram received from the virtual path ``key``
        (dropped unless the path is attached). Replies are flushed once per loop turn."""
        if self._closed or key not in self._paths:
            self._stats["inject_dropped"] = self._stats.get("inject_dropped", 0) + 1
            return
        self._stats["datagrams_in"] += 1
        self._on_datagram(data, key, self._loop.time())
        if self._dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    @property
    def virtual_paths(self) -> list[tuple[str, int]]:
        return list(self._paths)

    async def call(
        self,
        peer: PeerAddress,
        method: str,
        body: Any,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Any:
        started = self._loop.time()
        conn = await self._connection(peer, timeout)
        sent, mark = self._loop.time(), conn.send_mark()
        try:
            return await rpc.call(conn, method, body, max(timeout - (sent - started), 0.001))
        except RpcTimeout:
            self._drop_if_silent(conn, sent, mark)
            raise

    async def call_stream(
        self,
        peer: PeerAddress,
        method: str,
        header: Any,
        chunks: Chunks,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> Any:
        """Upload ``chunks`` to the peer's stream handler; returns its result.

        ``timeout`` bounds each wait for progress (credit, reply), not the transfer.
        """
        conn = await self._connection(peer, timeout)
        started, mark = self._loop.time(), conn.send_mark()
        try:
            return await rpc.call_stream(conn, method, header, chunks, timeout)
        except RpcTimeout:
            self._drop_if_silent(conn, started, mark)
            raise

    async def fetch(
        self,
        peer: PeerAddress,
        method: str,
        header: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> BulkReader:
        """Ask the peer's fetch handler for a payload; read it from the returned reader.

        Use ``async with await ep.fetch(...) as reader: async for chunk in reader``.
        ``timeout`` bounds each wait for the next piece.
        """
        conn = await self._connection(peer, timeout)
        return rpc.open_fetch(conn, method, header, timeout)

    async def ping(self, peer: PeerAddress, *, timeout: float = 5.0) -> float:  # noqa: ASYNC109
        """Round-trip time in seconds of an empty call (dials first if needed; the dial is
        not counted in the result but is bounded by ``timeout`` too)."""
        conn = await self._connection(peer, timeout)
        started, mark = self._loop.time(), conn.send_mark()
        t0 = time.perf_counter()
        try:
            await rpc.call(conn, PING_METHOD, None, timeout)
        except RpcTimeout:
            self._drop_if_silent(conn, started, mark)
            raise
        return time.perf_counter() - t0

    def _drop_if_silent(self, conn: PeerConnection, since: float, mark: int | None) -> None:
        """A call timed out and the peer acknowledged nothing sent since it began (the
        packet ``mark`` on): the connection is dead (e.g. the peer restarted and lost
        its state), so close it now and let the next call redial instead of waiting
        for the idle timeout. Acknowledgements, not arrivals, decide: a datagram the
        peer sent just before it died can still arrive during the call. Where they
        cannot be read, not one datagram from the peer since ``since`` decides."""
        acked = conn.acked_since(mark)
        silent = conn.last_received < since if acked is None else not acked
        if silent and not conn.closing:
            conn.close(ERR_SHUTDOWN, "peer silent during a call")

    async def disconnect(self, node_id: NodeId) -> None:
        """Gracefully close the connection to ``node_id`` if there is one."""
        conn = self._peers.get(node_id)
        if conn is not None:
            conn.close(0, "closed by application")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._dialing.values()):
            task.cancel()
        for conn in list(self._conns):
            conn.close(ERR_SHUTDOWN, "endpoint closing")
        self._flush()
        if self._conns:
            try:
                async with asyncio.timeout(self.config.close_timeout):
                    await self._all_closed.wait()
            except TimeoutError:
                pass
        for conn in list(self._conns):
            conn.terminated(ERR_SHUTDOWN, "endpoint closed")
        tasks = set(self._tasks)
        for conn_tasks in [c.tasks for c in list(self._conns)]:
            tasks |= conn_tasks
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._read_paused is not None:
            self._read_paused.cancel()
            self._read_paused = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    # -- connections -------------------------------------------------------------------
    async def _connection(self, peer: PeerAddress, wait: float) -> PeerConnection:
        """The READY connection to ``peer``, dialing (shared by concurrent callers) if
        needed; ConnectError if none within ``wait`` seconds (or ``connect_timeout``)."""
        if self._closed:
            raise EndpointClosed("endpoint is closed")
        conn = self._peers.get(peer.node_id)
        if conn is not None and conn.state == READY and not conn.closing:
            return conn
        if peer.node_id == self.node_id:
            raise LocalError("refusing to dial this endpoint's own node ID")
        task = self._dialing.get(peer.node_id)
        if task is None:
            task = self._loop.create_task(self._dial(peer))
            self._dialing[peer.node_id] = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._dial_done, peer.node_id))
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(task)
        except TimeoutError:
            raise ConnectError(
                f"no authenticated connection to {peer.host}:{peer.port} within {wait} s"
            ) from None
        except asyncio.CancelledError:
            if task.cancelled() and self._closed:
                raise EndpointClosed("endpoint closed while dialing") from None
            raise

    def _dial_done(self, node_id: NodeId, task: asyncio.Task[PeerConnection]) -> None:
        if self._dialing.get(node_id) is task:
            del self._dialing[node_id]
        if not task.cancelled():
            task.exception()  # retrieved by waiters; silence "never retrieved"

    async def _resolve(self, host: str, port: int) -> tuple[Any, ...]:
        """A socket address in the form recvfrom reports (4-tuple for IPv6)."""
        if paths.is_virtual((host, port)):
            if (host, port) not in self._paths:
                raise ConnectError(f"no virtual path {host}:{port} (relay circuit gone)")
            return (host, port)
        try:
            ip = ipaddress.ip_address(host)
            if ip.version == 4 and self._family == socket.AF_INET:
                return (str(ip), port)
        except ValueError:
            pass
        try:
            infos = await self._loop.getaddrinfo(
                host, port, family=self._family, type=socket.SOCK_DGRAM
            )
        except OSError as e:
            raise ConnectError(f"cannot resolve {host}: {e}") from None
        if not infos:
            raise ConnectError(f"cannot resolve {host}")
        return tuple(infos[0][4])

    async def _dial(self, peer: PeerAddress) -> PeerConnection:
        sockaddr = await self._resolve(peer.host, peer.port)
        addr = (str(sockaddr[0]), int(sockaddr[1]))
        size = await self._sizer.discover(addr)
        conf = QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            verify_mode=ssl.CERT_NONE,  # pinned by node ID instead: auth.check_server_key
            server_name=None,
            connection_id_length=CID_LENGTH,
            idle_timeout=self.config.idle_timeout,
            max_data=self.config.quic_max_data,
            max_stream_data=self.config.quic_max_stream_data,
            max_datagram_size=size,
        )
        if not self._make_room():
            raise LocalError(f"connection limit ({self.config.max_connections}) reached, none idle")
        quic = self._new_quic(addr, configuration=conf)
        conn = PeerConnection(self, quic, addr, expected=peer.node_id)
        self._conns.add(conn)
        self._all_closed.clear()
        self.add_cid(conn, quic.host_cid)
        quic.connect(sockaddr, now=self._loop.time())
        self.schedule_flush(conn)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await asyncio.shield(conn.ready)
        except TimeoutError:
            conn.close(ERR_SHUTDOWN, "connect timeout")
            raise ConnectError(
                f"no authenticated connection to {peer.host}:{peer.port} "
                f"within {self.config.connect_timeout} s"
            ) from None
        except asyncio.CancelledError:
            conn.close(ERR_SHUTDOWN, "dial cancelled")
            raise
        return conn


def _set_socket_options(sock: socket.socket, config: TransportConfig) -> None:
    rcvbuf = config.socket_buffer_bytes
    if config.download_rate is not None:
        rcvbuf = receive_buffer_for(config.download_rate, rcvbuf)
    for force, plain, size in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF, rcvbuf),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF, config.socket_buffer_bytes),
    ):
        try:
            if force is None:
                raise OSError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
    # Don't fragment: datagram-size probes must fail rather than be fragmented (and a
    # datagram larger than the path must never leave as IP fragments, where one lost
    # fragment loses all of it).
    if sock.family == socket.AF_INET and IP_MTU_DISCOVER is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    if sock.family == socket.AF_INET6 and hasattr(socket, "IPV6_DONTFRAG"):
        # Without it the IPv6 stack fragments oversized datagrams at the source, and a
        # probe bigger than the path would be reassembled and acknowledged.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1)


async def open_endpoint(
    key: NodeKey,
    host: str = "127.0.0.1",
    port: int = 0,
    config: TransportConfig | None = None,
) -> Endpoint:
    """Bind one UDP socket (port 0 picks a free port) and start serving on it."""
    config = config or TransportConfig()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _set_socket_options(sock, config)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LocalError(f"cannot bind UDP {host}:{port}: {e.strerror}") from None
    return Endpoint(key, sock, config)
