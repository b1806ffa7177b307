"""What the NAT manager needs from its sibling components, as typed Protocols, and
the small adapters over them: the DHT's server/client mode and node announcements
(:class:`ModalDht`, satisfied by :class:`dht.node.DhtNode`) and the port mapper
(:class:`PortMapping`, satisfied by :class:`~p2pstore.nat.portmap.mapper.PortMapper`).

Invariant: announcing and withdrawing never raise to the caller (the next round
retries); a port mapper's odd answer reads as "no mapping".
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from p2pstore.nat.peer_record import check_host, check_port
from p2pstore.nat.tracker import Addr

log = logging.getLogger(__name__)


class ModalDht(Protocol):
    """The DHT as the NAT manager drives it (docs/nat.md, "DHT mode")."""

    @property
    def server(self) -> bool: ...
    async def set_server(self, server: bool) -> None: ...
    async def announce(self, value: bytes, *, ttl: int | None = None) -> int: ...
    async def withdraw(self) -> int: ...


class PortMapping(Protocol):
    """A port mapper as the NAT manager reads it (docs/portmap.md)."""

    def mapped_address(self) -> tuple[str, int] | None: ...
    def status(self) -> dict[str, Any]: ...


async def announce(dht: ModalDht, value: bytes) -> bool:
    try:
        await dht.announce(value)
    except Exception as e:  # e.g. no DHT server reachable yet: the next round retries
        log.info("announcing the peer record failed: %s", e)
        return False
    return True


async def withdraw(dht: ModalDht) -> None:
    try:
        await dht.withdraw()
    except Exception as e:
        log.debug("withdrawing the announcement failed: %s", e)


def mapped_address(mapping: PortMapping | None) -> Addr | None:
    """A port mapper's external address as (host, port), if it has a valid one."""
    if mapping is None:
        return None
    value = mapping.mapped_address()
    if value is None:
        return None
    try:
        return check_host(value[0]), check_port(value[1])
    except Exception:
        return None


def mapper_status(mapping: PortMapping | None) -> dict[str, Any] | None:
    """The port mapper's own status (state, reason, gateway...)."""
    if mapping is None:
        return None
    try:
        return mapping.status()
    except Exception as e:
        return {"state": "error", "reason": str(e)[:200]}
