"""Adapters from the NAT manager to its sibling components' APIs: the DHT's
server/client mode and node announcements (dhtmode), the relay client (relay) and
the port mapper (portmap).

Each is optional: with a DHT that has no client mode or announcements, a build
without the relay package, or no port mapper, the call is a no-op and the status
says so, so the node works (as a public node) whichever pieces are present.
Invariant: nothing here raises to the caller for a missing capability.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from quic_transport import Endpoint

from .record import check_host, check_port
from .tracker import Addr

log = logging.getLogger(__name__)


async def set_server(dht: Any, server: bool) -> bool:
    """Put the DHT in server (True) or client mode (``set_server`` may be a coroutine:
    the DHT makes itself known, or unknown, with a self-lookup); False if the DHT has
    no modes."""
    setter = getattr(dht, "set_server", None)
    if setter is None:
        return False
    result = setter(server)
    if hasattr(result, "__await__"):
        await result
    return True


def dht_mode(dht: Any, wanted_server: bool) -> str:
    """What the DHT reports ("server"/"client"), or "server (no client mode)"."""
    if getattr(dht, "set_server", None) is None:
        return "server (no client mode)"
    server = getattr(dht, "server", None)
    if server is None:
        server = getattr(dht, "is_server", wanted_server)
    if callable(server):
        server = server()
    return "server" if server else "client"


async def announce(dht: Any, value: bytes) -> bool:
    fn = getattr(dht, "announce", None)
    if fn is None:
        return False
    try:
        await fn(value)
    except Exception as e:  # e.g. no DHT server reachable yet: the next round retries
        log.info("announcing the peer record failed: %s", e)
        return False
    return True


async def withdraw(dht: Any) -> None:
    fn = getattr(dht, "withdraw", None)
    if fn is None:
        return
    try:
        result = fn()
        if hasattr(result, "__await__"):
            await result
    except Exception as e:
        log.debug("withdrawing the announcement failed: %s", e)


def make_relay_client(endpoint: Endpoint, on_lost: Callable[[Any, str], None]) -> Any:
    """The relay package's RelayClient on ``endpoint`` (``on_lost(reservation, reason)``
    called when a reservation dies), or None if the package is absent."""
    for name in ("p2pstore.nat.relay_client", "p2pstore.nat.relay"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = getattr(module, "RelayClient", None)
        if cls is not None:
            try:
                return cls(endpoint, on_lost=on_lost)
            except TypeError:
                return cls(endpoint)
    return None


def mapped_address(mapping: Any) -> Addr | None:
    """A port mapper's external address as (host, port), whatever shape it has."""
    if mapping is None:
        return None
    fn = getattr(mapping, "mapped_address", None)
    value = fn() if callable(fn) else mapping
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
    else:
        host, port = getattr(value, "host", None), getattr(value, "port", None)
    try:
        return check_host(host), check_port(port)
    except Exception:
        return None


def mapper_status(mapping: Any) -> dict[str, Any] | None:
    """The port mapper's own status (state, reason, gateway...), if it reports one."""
    fn = getattr(mapping, "status", None)
    if not callable(fn):
        return None
    try:
        doc = fn()
    except Exception as e:
        return {"state": "error", "reason": str(e)[:200]}
    return doc if isinstance(doc, dict) else None
