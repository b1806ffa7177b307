"""PortMapper: optional UDP port mapping on the home router (PCP / NAT-PMP / UPnP IGD).

A node behind a home NAT becomes directly dialable when the router forwards its
QUIC port. :class:`PortMapper` asks for that forwarding and keeps it alive:

- ``start()`` returns at once. Unless mapping is off (disabled in the config, or the
  node listens on loopback or a specific IPv6 address) it starts one background
  task, which finds the IPv4 default gateway (:mod:`.route`) and tries, with
  short timeouts, PCP (falling back to NAT-PMP when the router answers with version
  0) and then UPnP IGD (:mod:`.clients`).
- A granted mapping is renewed at half its lifetime (RFC 6886 section 3.3, RFC 6887
  section 11.2.1); the lifetime used is never more than the one requested. A failed
  renewal is retried at half the remaining time; once the lease has run out the
  mapping counts as lost and the whole search starts again.
- With no gateway, no answer or a refusal, the status is "unavailable" with the
  reason, logged at INFO once (never as an error), and the search is repeated
  every ``retry_interval`` (the machine may join another network).
- ``close()`` stops the task and deletes a held mapping (bounded by
  ``close_timeout``, failures ignored: the router drops it at expiry anyway).

Invariants: at most one background task, owned here and ended by ``close()``;
nothing here raises into the node (every :class:`PortmapError` becomes status);
``mapped_address()`` is the external (host, port) only while a lease is held.
``on_change`` (set by the reachability checker) is called whenever that address
changes, with the new value or None.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pstore.base.tasks import TaskOwner
from p2pstore.nat.portmap.clients import (
    DEFAULT_TIMEOUTS,
    Lease,
    Mapper,
    PcpMapper,
    PmpMapper,
    UpnpMapper,
    discover_igd,
)
from p2pstore.nat.portmap.errors import PortmapError, VersionMismatch
from p2pstore.nat.portmap.pmp import SERVER_PORT
from p2pstore.nat.portmap.route import default_gateway, local_address_towards
from p2pstore.nat.portmap.upnp import SSDP_ADDRESS

log = logging.getLogger(__name__)
METHODS = ("pcp", "nat-pmp", "upnp")
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PortmapSettings:
    """Tunables; the node sets ``lifetime`` from ``[portmap] lifetime``, tests the
    addresses and timings (fake routers on 127.0.0.1)."""

    lifetime: int = 7200  # requested lease, seconds (RFC 6886 section 3.3 recommends 2 h)
    methods: tuple[str, ...] = ("pcp", "upnp")  # "pcp" falls back to NAT-PMP itself
    server_port: int = SERVER_PORT  # PCP / NAT-PMP
    ssdp_address: Address = SSDP_ADDRESS
    udp_timeouts: tuple[float, ...] = DEFAULT_TIMEOUTS
    ssdp_wait: float = 1.5
    http_timeout: float = 3.0
    retry_interval: float = 1800.0
    min_renew_interval: float = 10.0
    close_timeout: float = 2.0
    description: str = "p2pstore"

    def __post_init__(self) -> None:
        if not 1 <= self.lifetime <= 0xFFFFFFFF:
            raise ValueError("lifetime must be 1..2^32-1 seconds")
        if not self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"methods must be among {METHODS}")
        if not self.udp_timeouts or min(self.udp_timeouts) <= 0:
            raise ValueError("udp_timeouts must be positive")


def off_reason(listen_host: str, enabled: bool) -> str | None:
    """Why mapping is not even tried for a node listening on ``listen_host``."""
    if not enabled:
        return "disabled in the config ([portmap] enabled = false)"
    try:
        ip = ipaddress.ip_address(listen_host.strip("[]").split("%")[0])
    except ValueError:
        return f"listen host {listen_host!r} is not an IP address"
    if ip.is_loopback:
        return "listening on loopback"
    if ip.version == 6 and not ip.is_unspecified:
        return "listening on an IPv6 address (port mapping is IPv4 only)"
    return None


def renew_delay(granted: int, requested: int, min_interval: float) -> float:
    """Seconds until a lease of ``granted`` seconds (0: permanent) is renewed."""
    life = min(granted, requested) if granted > 0 else requested
    return max(min_interval, life / 2)


class PortMapper:
    """See the module docstring."""

    def __init__(
        self,
        internal_port: int,
        *,
        internal_host: str | None = None,
        settings: PortmapSettings | None = None,
        off: str | None = None,
        gateway: Callable[[], str | None] = default_gateway,
        local_address: Callable[[str], str | None] = local_address_towards,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= internal_port <= 65535:
            raise ValueError(f"internal port {internal_port} out of range")
        self.internal_port = internal_port
        self.internal_host = internal_host
        self.settings = settings or PortmapSettings()
        self.off = off
        self._gateway = gateway
        self._local_address = local_address
        self._clock = clock
        self.on_change: Callable[[Address | None], None] | None = None
        self.state = "off" if off else "idle"
        self.reason: str | None = off
        self.gateway: str | None = None
        self.local_host: str | None = None
        self.attempts = 0
        self.renewals = 0
        self._mapper: Mapper | None = None
        self._lease: Lease | None = None
        self._expires = 0.0
        self._next_renew = 0.0
        self._logged_unavailable = False
        self._tasks = TaskOwner()  # the mapping loop
        self._first = asyncio.Event()

    @classmethod
    def for_node(
        cls, listen_host: str, port: int, *, enabled: bool, lifetime: int, **kwargs: Any
    ) -> PortMapper:
        """The mapper for a node listening on ``listen_host:port``."""
        specific = None
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(listen_host)
            if ip.version == 4 and not ip.is_unspecified:
                specific = str(ip)
        settings = kwargs.pop("settings", None) or PortmapSettings(lifetime=lifetime)
        return cls(
            port,
            internal_host=specific,
            settings=settings,
            off=off_reason(listen_host, enabled),
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"PortMapper(port={self.internal_port}, state={self.state})"

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self.off is not None:
            log.debug("port mapping off: %s", self.off)
            self._first.set()
            return
        if not self._tasks:
            self.state = "starting"
            self._tasks.start(self._run(), name="portmap")

    async def wait_first_attempt(self) -> None:
        """Return once the first search has succeeded or failed (or mapping is off)."""
        await self._first.wait()

    async def close(self) -> None:
        await self._tasks.close()
        mapper, lease = self._mapper, self._lease
        self._mapper = self._lease = None
        if mapper is not None and lease is not None:
            try:
                await asyncio.wait_for(mapper.unmap(), self.settings.close_timeout)
            except (PortmapError, TimeoutError) as e:
                log.info("port mapping: could not delete the %s mapping (%s)", mapper.method, e)
            else:
                log.info(
                    "port mapping: deleted %s mapping of external port %d",
                    mapper.method,
                    lease.external_port,
                )
            self._changed(None)
        if self.off is None:
            self.state, self.reason = "closed", None
        self._first.set()

    # -- what others read ------------------------------------------------------------
    def mapped_address(self) -> Address | None:
        lease = self._lease
        return None if lease is None else (lease.external_host, lease.external_port)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"state": self.state, "reason": self.reason}
        if self.gateway is not None:
            doc["gateway"] = self.gateway
        if self.local_host is not None:
            doc["internal"] = f"{self.local_host}:{self.internal_port}"
        lease = self._lease
        if lease is not None:
            doc["method"] = lease.method
            doc["external"] = f"{lease.external_host}:{lease.external_port}"
            doc["external_is_private"] = not ipaddress.ip_address(lease.external_host).is_global
            doc["lifetime"] = lease.lifetime
            doc["expires_in"] = round(max(0.0, self._expires - self._clock()), 1)
            doc["renew_in"] = round(max(0.0, self._next_renew - self._clock()), 1)
        if self.off is None:
            doc["attempts"] = self.attempts
            doc["renewals"] = self.renewals
        return doc

    # -- the background task ---------------------------------------------------------
    async def _run(self) -> None:
        s = self.settings
        while True:
            try:
                if self._lease is None:
                    ok = await self._search()
                    self._first.set()
                    if not ok:
                        await asyncio.sleep(s.retry_interval)
                        continue
                await asyncio.sleep(max(0.0, self._next_renew - self._clock()))
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end mapping for good, nor the node
                log.warning("port mapping: unexpected failure", exc_info=True)
                self._first.set()
                await asyncio.sleep(s.retry_interval)

    async def _search(self) -> bool:
        self.attempts += 1
        gateway = self._gateway()
        if gateway is None:
            return self._unavailable("no IPv4 default gateway")
        local = self.internal_host or self._local_address(gateway)
        if local is None:
            return self._unavailable(f"no local address towards the gateway {gateway}")
        self.gateway, self.local_host = gateway, local
        problems: list[str] = []
        for method in self.settings.methods:
            try:
                mapper, lease = await self._try(method, gateway, local)
            except PortmapError as e:
                problems.append(str(e))
                continue
            except (OSError, ValueError) as e:  # e.g. a local socket refused an address
                problems.append(f"{method}: {type(e).__name__}: {e}")
                continue
            self._hold(mapper, lease)
            self._logged_unavailable = False
            log.info(
                "port mapping: %s on %s maps external %s:%d to %s:%d for %s",
                lease.method,
                gateway,
                lease.external_host,
                lease.external_port,
                local,
                self.internal_port,
                f"{lease.lifetime} s" if lease.lifetime else "ever (deleted at close)",
            )
            if not ipaddress.ip_address(lease.external_host).is_global:
                log.info(
                    "port mapping: the router's external address %s is not public "
                    "(another NAT upstream?)",
                    lease.external_host,
                )
            return True
        return self._unavailable("; ".join(problems))

    async def _try(self, method: str, gateway: str, local: str) -> tuple[Mapper, Lease]:
        s = self.settings
        lifetime = s.lifetime
        if method == "pcp":
            pcp = PcpMapper(
                gateway,
                local,
                self.internal_port,
                server_port=s.server_port,
                timeouts=s.udp_timeouts,
            )
            try:
                return pcp, await pcp.map(lifetime)
            except VersionMismatch as e:
                if e.server_version != 0:
                    raise
            # RFC 6887 section 9: the server speaks NAT-PMP only
            method = "nat-pmp"
        if method == "nat-pmp":
            pmp = PmpMapper(
                gateway,
                self.internal_port,
                local_host=local,
                server_port=s.server_port,
                timeouts=s.udp_timeouts,
            )
            return pmp, await pmp.map(lifetime)
        service = await discover_igd(
            gateway,
            local_host=local,
            ssdp_address=s.ssdp_address,
            ssdp_wait=s.ssdp_wait,
            http_timeout=s.http_timeout,
        )
        upnp = UpnpMapper(
            service,
            local,
            self.internal_port,
            http_timeout=s.http_timeout,
            description=s.description,
        )
        return upnp, await upnp.map(lifetime)

    def _hold(self, mapper: Mapper, lease: Lease) -> None:
        s = self.settings
        now = self._clock()
        before = self.mapped_address()
        self._mapper, self._lease = mapper, lease
        life = min(lease.lifetime, s.lifetime) if lease.lifetime else s.lifetime
        self._expires = now + life
        self._next_renew = now + renew_delay(lease.lifetime, s.lifetime, s.min_renew_interval)
        self.state, self.reason = "mapped", None
        if self.mapped_address() != before:
            self._changed(self.mapped_address())

    async def _renew(self) -> None:
        assert self._mapper is not None and self._lease is not None
        mapper = self._mapper
        try:
            lease = await mapper.map(self.settings.lifetime)
        except (PortmapError, OSError, ValueError) as e:
            now = self._clock()
            remaining = self._expires - now
            if remaining > self.settings.min_renew_interval:
                log.debug("port mapping: renewal failed (%s); retrying", e)
                self._next_renew = now + max(self.settings.min_renew_interval, remaining / 2)
                return
            self._mapper = self._lease = None
            self._changed(None)
            self._unavailable(f"mapping lost: renewal failed ({e})")
            return
        self.renewals += 1
        self._hold(mapper, lease)

    def _unavailable(self, reason: str) -> bool:
        self.state, self.reason = "unavailable", reason
        if not self._logged_unavailable:
            log.info("port mapping unavailable (not an error): %s", reason)
            self._logged_unavailable = True
        else:
            log.debug("port mapping still unavailable: %s", reason)
        return False

    def _changed(self, address: Address | None) -> None:
        callback = self.on_change
        if callback is None:
            return
        try:
            callback(address)
        except Exception:
            log.exception("port mapping: on_change callback failed")
