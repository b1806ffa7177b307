"""The contract between :class:`~p2pstore.node.runner.NodeRunner` and the node's services.

The runner owns the process: config, keys, logging, pid/status files, signals. The
*service* owns the network: by default :class:`~p2pstore.node.grid_service.GridService`
(QUIC endpoint, DHT, storage server, grid client); tests pass their own
:data:`ServiceFactory`.

Invariants the runner relies on:
- ``start()`` returns once the node is serving (its UDP port bound) or raises; an
  ``OSError`` from binding (address in use or not local, ``socket.gaierror``) is
  reported as a problem with ``[node] listen``.
- ``close()`` is called exactly once after ``start()``, whether ``start()``
  succeeded or raised (so it must undo a partial start), and also when the node
  is stopping because of an error. It must finish within
  ``[node] shutdown_timeout``: refuse new work, fail open uploads with an error to
  their clients, leave shares on disk consistent (partial shares stay in temp files,
  never renamed into place), then cancel and await every background task.
- ``status()`` is cheap and synchronous (called every ``status_interval``).
- A service that hits a fatal error in a background task calls
  ``context.request_stop(reason)`` instead of raising into nowhere.
- Optionally (:class:`ApiBackendProvider`), a service has ``api_backend()``: after
  ``start()`` the runner serves the local HTTP API (``p2pstore.web``) on 127.0.0.1
  port ``[node] web_port`` with that backend, and closes the HTTP server *before*
  ``close()``. A service without it gets no HTTP API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NotRequired, Protocol, TypedDict, runtime_checkable

from quic_transport.identity import NodeKey

from .bootstrap import BootstrapList
from .config import NodeConfig
from .known_peers import KnownPeers
from .nodedir import NodeDir

if TYPE_CHECKING:
    from p2pstore.app.contract import Application


class ServiceStatus(TypedDict):
    """What ``p2pstore status`` shows; ``listen_port`` is the port actually bound."""

    listen_host: str
    listen_port: int
    peers_known: int
    storage_used: int  # bytes of shares on disk
    details: NotRequired[dict[str, object]]  # anything else worth showing (JSON-able)


@dataclass(frozen=True, slots=True)
class NodeContext:
    """Everything a service needs, loaded and validated by the runner."""

    node_dir: NodeDir
    config: NodeConfig
    key: NodeKey
    bootstrap: BootstrapList
    known_peers: KnownPeers
    request_stop: Callable[[str], None]
    convergence_secret: bytes = field(repr=False)
    api_token: str = field(repr=False)
    clock: Callable[[], float] = time.time


class NodeService(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> ServiceStatus: ...


@runtime_checkable
class ApiBackendProvider(Protocol):
    """A service that the local HTTP API can serve (called once, after ``start()``)."""

    def api_backend(self) -> Application: ...


ServiceFactory = Callable[[NodeContext], NodeService]
