"""TransportConfig: every limit, timeout and window of the transport in one frozen value.

Invariants: all sizes are positive; ``min_datagram_size`` (1,200 bytes, the QUIC
minimum of RFC 9000 section 14) <= ``max_datagram_size`` <= 65,527 (the largest
UDP payload without IPv6 jumbograms; IPv4 carries at most 65,507). Stock aioquic
breaks above 16 KiB; quic_tuned.py lifts that limit.
``upload_rate`` / ``download_rate`` are bytes of UDP datagrams per second for the
whole endpoint, None meaning unlimited (docs/limits.md).
"""

from __future__ import annotations

from dataclasses import dataclass

QUIC_MIN_DATAGRAM = 1200
MAX_DATAGRAM = 65527  # largest UDP payload (IPv6, no jumbograms)
IPV4_MAX_DATAGRAM = 65507  # 65,535 - 20 (IPv4 header) - 8 (UDP header)


@dataclass(frozen=True, slots=True)
class TransportConfig:
    # --- messages and frames ---------------------------------------------------
    max_message_bytes: int = 1 << 20  # one CBOR message (request, reply, header)
    max_data_frame_bytes: int = 1 << 20  # one bulk DATA frame payload
    # --- timeouts (seconds) ----------------------------------------------------
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0
    request_read_timeout: float = 10.0  # an incoming request must arrive whole in this time
    handler_timeout: float = 300.0  # a handler running longer is cancelled
    close_timeout: float = 1.0  # graceful close waits this long for CONNECTION_CLOSE to leave
    # Silent peers (liveness.py): with streams open, PING after peer_probe_after s of
    # silence; close the connection when that PING goes unanswered peer_silent_timeout s.
    peer_probe_after: float = 1.0
    peer_silent_timeout: float = 4.0
    # --- concurrency bounds ------------------------------------------------------
    max_connections: int = 256
    # accepted connections from one host (IPv6: /64; loopback exempt): one machine
    # with free node IDs cannot take every slot
    max_connections_per_host: int = 32
    max_concurrent_streams: int = 64  # incoming streams handled at once per connection
    # --- flow control ------------------------------------------------------------
    bulk_window: int = 8 << 20  # app-level credit a bulk receiver grants (bytes buffered)
    connection_buffer_bytes: int = 64 << 20  # all streams of one connection together
    # QUIC windows (quic_tuned.py): advanced by delivery, never doubled on receipt.
    quic_max_data: int = 32 << 20  # connection: bytes beyond those received
    quic_max_stream_data: int = 10 << 20  # stream: bytes beyond those delivered
    socket_buffer_bytes: int = 4 << 20  # SO_RCVBUF / SO_SNDBUF
    recv_batch: int = 256  # datagrams drained per readiness event before transmitting
    # --- datagram size (path MTU discovery) -------------------------------------
    min_datagram_size: int = QUIC_MIN_DATAGRAM
    max_datagram_size: int = IPV4_MAX_DATAGRAM  # upper bound for probing
    pmtu_probe: bool = True
    pmtu_probe_timeout: float = 0.3  # per probing round
    pmtu_probe_rounds: int = 2
    # --- bandwidth caps (ratelimit.py, docs/limits.md); None = unlimited ----------
    upload_rate: int | None = None  # bytes of datagrams sent per second
    download_rate: int | None = None  # bytes of datagrams read per second
    # the uplink's queue (uplink.py): the queueing delay, in seconds, above which all
    # non-loopback connections together are paced below the rate the peers receive;
    # None = never (each connection's own congestion control only)
    uplink_delay_target: float | None = 0.1

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_data_frame_bytes",
            "max_connections",
            "max_connections_per_host",
            "max_concurrent_streams",
            "bulk_window",
            "connection_buffer_bytes",
            "quic_max_data",
            "quic_max_stream_data",
            "socket_buffer_bytes",
            "recv_batch",
            "pmtu_probe_rounds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransportConfig.{name} must be positive")
        for name in (
            "connect_timeout",
            "idle_timeout",
            "request_read_timeout",
            "handler_timeout",
            "close_timeout",
            "peer_probe_after",
            "peer_silent_timeout",
            "pmtu_probe_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransportConfig.{name} must be positive")
        for name in ("upload_rate", "download_rate"):
            rate = getattr(self, name)
            if rate is not None and (isinstance(rate, bool) or rate <= 0):
                raise ValueError(f"TransportConfig.{name} must be positive or None")
        target = self.uplink_delay_target
        if target is not None and (isinstance(target, bool) or not 0 < target <= 10):
            raise ValueError("TransportConfig.uplink_delay_target must be in (0, 10] s or None")
        if not QUIC_MIN_DATAGRAM <= self.min_datagram_size <= self.max_datagram_size:
            raise ValueError("need 1200 <= min_datagram_size <= max_datagram_size")
        if self.max_datagram_size > MAX_DATAGRAM:
            raise ValueError(f"max_datagram_size above {MAX_DATAGRAM} (largest UDP payload)")
        if self.bulk_window < 2 * 65536:
            raise ValueError("bulk_window must be at least 128 KiB")
