"""``p2pstore run DIR``: run one node in the foreground until SIGTERM/SIGINT/SIGHUP.

:class:`NodeRunner` owns the process around the node's services: it loads and
validates config, keys and the bootstrap list (:meth:`NodeRunner.prepare`), takes the
pid-file lock, sets up logging, starts the injected service, keeps
``run/status.json`` fresh, and on a signal shuts the service down cleanly.

Invariants:
- Nothing is started before everything is validated: a config error exits with
  :data:`EXIT_CONFIG` (78, ``EX_CONFIG``; the systemd unit does not restart on it)
  and a message naming the file, the key and the problem.
- At most one runner per node directory (the pid-file lock); the lock, the pid
  file and ``status.json`` are released/removed on every exit path that Python
  controls; after SIGKILL the kernel releases the lock and the files are stale.
- Signals only set an ``asyncio.Event``; shutdown runs in the main task:
  ``service.close()`` bounded by ``[node] shutdown_timeout``, then the known-peers
  store is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from p2pstore.base.fsutil import write_text_atomic
from p2pstore.immutable.allocator import trim_heap
from p2pstore.immutable.gf256 import describe as erasure_coder
from quic_transport.identity import IdentityError, NodeKey, b32encode

from .. import __version__
from .advertise import own_bootstrap_text, own_seed
from .bootstrap import BootstrapList, load_bootstrap_file, read_bootstrap_text
from .config import NodeConfig, load_config
from .errors import (  # the exit codes re-exported: the runner's
    EXIT_CONFIG as EXIT_CONFIG,
)
from .errors import (
    EXIT_FAILURE as EXIT_FAILURE,
)
from .errors import (
    EXIT_OK as EXIT_OK,
)
from .errors import (
    BootstrapErrors,
    ConfigError,
    NodeDirError,
    NodeError,
)
from .known_peers import KnownPeers
from .logsetup import setup_logging
from .nodedir import NodeDir, protect_bootstrap_files
from .pidfile import AlreadyRunning, PidLock
from .ports import reclaim_ports
from .service import (
    ApiBackendProvider,
    NodeContext,
    NodeService,
    ServiceFactory,
    ServiceStatus,
)
from .status_file import STATUS_FORMAT

if TYPE_CHECKING:
    from p2pstore.sftp.server import SftpServer
    from p2pstore.web.server import ApiServer

#: status details that change with every packet: not a reason to rewrite the file
VOLATILE = frozenset({"traffic", "limits"})
#: less than this moved between two status looks: the node is quiet (trim the heap)
QUIET_BYTES = 1 << 20
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """The validated inputs of a run (secrets excluded from repr)."""

    node_dir: NodeDir
    config: NodeConfig
    key: NodeKey
    bootstrap: BootstrapList
    convergence_secret: bytes
    api_token: str

    def __repr__(self) -> str:
        return f"Prepared({self.node_dir.root}, node_id={self.key.node_id.b32})"


_BIND_ERRNOS = frozenset(
    {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.EAFNOSUPPORT, errno.EINVAL}
)


def _is_bind_error(e: BaseException) -> bool:
    """An error binding the listen address (reported as a ``[node] listen`` problem)."""
    return isinstance(e, socket.gaierror) or (isinstance(e, OSError) and e.errno in _BIND_ERRNOS)


def prepare(root: Path) -> Prepared:
    """Load and validate everything a run needs; raises :class:`NodeError`."""
    nd = NodeDir(root.absolute())
    nd.require_node()
    config = load_config(nd.config_path)
    try:
        key = nd.load_key()
    except IdentityError as e:
        raise NodeDirError(nd.key_path, str(e)) from None
    for path in protect_bootstrap_files([config.bootstrap_path, nd.bootstrap_self_path]):
        log.warning(
            "%s was readable by other users; it may hold the shared drive's read "
            "secret, so it is now mode 0600",
            path,
        )
    try:
        bootstrap = load_bootstrap_file(config.bootstrap_path)
    except BootstrapErrors as e:
        raise ConfigError(config.path, "[node] bootstrap_file", str(e)) from None
    return Prepared(
        node_dir=nd,
        config=config,
        key=key,
        bootstrap=bootstrap,
        convergence_secret=nd.load_convergence_secret(),
        api_token=nd.load_api_token(),
    )


class NodeRunner:
    """Runs one node; ``service_factory`` defaults to the assembled grid node
    (:class:`~p2pstore.node.grid_service.GridService`)."""

    def __init__(
        self,
        root: Path,
        *,
        service_factory: ServiceFactory | None = None,
        log_to_stderr: bool = True,
        out: TextIO | None = None,
        install_signal_handlers: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        if service_factory is None:
            # The network stack loads only to run.
            from p2pstore.node.vdrive_wiring import grid_vdrive_factory

            from .grid_service import grid_service_factory

            service_factory = grid_service_factory(vdrive_factory=grid_vdrive_factory)
        self.service_factory: ServiceFactory = service_factory
        self.log_to_stderr = log_to_stderr
        self.out = out if out is not None else sys.stdout
        self.install_signal_handlers = install_signal_handlers
        self.clock = clock
        self.stop_reason: str | None = None
        self._stop: asyncio.Event | None = None
        self._started_at = 0.0
        self._status_key, self._status_at = "", 0.0  # what the status file last said, when
        # status documents made, and the newest one written: a refresh writes its file
        # in a worker thread, and an older document must never replace a newer one
        self._status_made = self._status_written = 0
        self._status_lock = threading.Lock()
        self._moved = 0  # bytes sent + received at the last status look
        self._quiet = False  # the last status look found the node quiet
        self._connections: int | None = None  # open at the last status look
        self._api: ApiServer | None = None
        self._sftp: SftpServer | None = None

    @staticmethod
    def _reclaim_ports(p: Prepared) -> Prepared:
        """Ports picked at creation that are taken now move (docs/node.md, "Ports")."""
        node = p.config.node
        moved = reclaim_ports(
            p.node_dir.state_dir, p.config.path, node.listen.host, node.listen.port, node.web_port
        )
        return replace(p, config=load_config(p.node_dir.config_path)) if moved else p

    def request_stop(self, reason: str) -> None:
        """Ask the running node to shut down. Call it from the event loop's thread (signal
        handlers installed by the runner and service code running in the loop do)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._stop is not None:
            self._stop.set()

    def run(self) -> int:
        """Run to completion; returns the process exit code. Errors go to stderr."""
        try:
            prepared = prepare(self.root)
        except NodeError as e:
            print(f"p2pstore: {e}", file=sys.stderr)
            return EXIT_CONFIG
        nd = prepared.node_dir
        lock = PidLock(nd.pid_path)
        try:
            nd.ensure_runtime_dirs()
            lock.acquire()
        except AlreadyRunning as e:
            print(f"p2pstore: {e}", file=sys.stderr)
            return EXIT_FAILURE
        except OSError as e:
            print(f"p2pstore: {nd.root}: cannot prepare the node directory: {e}", file=sys.stderr)
            return EXIT_FAILURE
        secrets = [
            b32encode(prepared.key.seed),
            b32encode(prepared.convergence_secret),
            prepared.api_token,
        ]
        try:
            teardown = setup_logging(
                nd.log_path, prepared.config.logging, secrets=secrets, to_stderr=self.log_to_stderr
            )
        except OSError as e:
            lock.release()
            print(f"p2pstore: cannot open the log {nd.log_path}: {e.strerror}", file=sys.stderr)
            return EXIT_FAILURE
        try:
            log.info(
                "p2pstore %s starting: node %s, directory %s, pid %d",
                __version__,
                prepared.key.node_id.b32,
                nd.root,
                os.getpid(),
            )
            prepared = self._reclaim_ports(prepared)
            return asyncio.run(self._serve(prepared))
        except Exception:
            log.exception("node crashed")
            return EXIT_FAILURE
        finally:
            try:
                nd.status_path.unlink(missing_ok=True)
            finally:
                lock.release()
                log.info("stopped (%s)", self.stop_reason or "exit")
                teardown()

    async def _serve(self, p: Prepared) -> int:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self.install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            return await self._serve_inner(p)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop_reason is not None:
            log.warning("%s: shutdown already in progress", sig.name)
            return
        log.info("%s received: shutting down", sig.name)
        self.request_stop(sig.name)

    async def _serve_inner(self, p: Prepared) -> int:
        nd, config = p.node_dir, p.config
        known = KnownPeers.load(
            nd.known_peers_path, max_peers=config.dht.remember_peers, clock=self.clock
        )
        log.info(
            "bootstrap list %s: %d seeds%s; %d known peers",
            config.bootstrap_path,
            len(p.bootstrap.seeds),
            ", vdrive key set" if p.bootstrap.vdrive else "",
            len(known),
        )
        context = NodeContext(
            node_dir=nd,
            config=config,
            key=p.key,
            bootstrap=p.bootstrap,
            known_peers=known,
            request_stop=self.request_stop,
            convergence_secret=p.convergence_secret,
            api_token=p.api_token,
            clock=self.clock,
        )
        service = self.service_factory(context)
        self._started_at = self.clock()
        log.info("erasure coding: %s", erasure_coder())
        self._write_status(p, service, "starting", None)
        try:
            await service.start()
        except Exception as e:
            self.stop_reason = "start failed"
            if _is_bind_error(e):
                message = (
                    f"{config.path}: [node] listen: cannot listen on {config.node.listen}: "
                    f"{getattr(e, 'strerror', None) or e}"
                )
                log.error("%s", message)
                print(f"p2pstore: {message}", file=sys.stderr)
                rc = EXIT_CONFIG
            else:
                log.exception("service failed to start")
                print(
                    f"p2pstore: the node failed to start: {e} (see {nd.log_path})", file=sys.stderr
                )
                rc = EXIT_FAILURE
            await self._close_service(p, service)  # close() must undo a partial start
            return rc
        rc = await self._start_api(p, service)
        if rc == EXIT_OK:
            rc = await self._start_sftp(p, service)
        if rc != EXIT_OK:
            self.stop_reason = "start failed"
            await self._close_api()
            await self._close_service(p, service)
            return rc
        try:
            status = service.status()
            seed = own_seed(config, p.key, status["listen_port"])
            log.info("running; listening on UDP %s port %d", status["listen_host"], seed.port)
            if config.node.introducer:
                text = own_bootstrap_text(seed, p.bootstrap, config, p.key)
                write_text_atomic(nd.bootstrap_self_path, text, mode=0o600)
                print(
                    "introducer bootstrap line (share it; also in "
                    f"{nd.bootstrap_self_path}):\n{text}",
                    end="",
                    file=self.out,
                    flush=True,
                )
                log.info("introducer line: %s", seed.to_line())
            self._write_status(p, service, "running", status)  # `start` waits for this
            await self._wait_loop(p, service, known)
        except Exception:
            log.exception("node failed")
            self.stop_reason = self.stop_reason or "error"
            rc = EXIT_FAILURE
        finally:
            rc = await self._shutdown(p, service, known, rc)
        return rc

    async def _wait_loop(self, p: Prepared, service: NodeService, known: KnownPeers) -> None:
        assert self._stop is not None
        # the low-power profile refreshes the status file less often (docs/limits.md)
        interval = p.config.node.status_interval * p.config.limits.background_factor
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if self._stop.is_set():
                break
            try:
                status = service.status()
                await self._refresh_status(p, status)
                self._trim_when_quiet(status)
                if known.dirty:
                    known.save()
            except Exception:  # a status bug must not take the node down
                log.exception("status refresh failed")

    def _trim_when_quiet(self, status: ServiceStatus) -> None:
        """When the node goes quiet (less than :data:`QUIET_BYTES` moved since the
        last status look), and at every quiet look that finds fewer connections open
        than the look before, collect garbage cycles and give the heap the node no
        longer uses back to the system: an idle home daemon should be small.

        A closed QUIC connection is reference cycles (aioquic's callbacks) that only
        a full collection frees, and an idle process allocates too little to run
        one often: the connections of a busy spell idle out a minute after it, those of
        DHT maintenance all along, and a 25-node grid's nodes held up to 7,000 such
        objects, 1.7 MB of RSS (docs/local-grid.md, "Memory"). A release takes
        about 1 ms (``gc.freeze`` keeps the imports out of the collection), at most
        once per look, never while data moves."""
        details = status.get("details", {})
        traffic = details.get("traffic")
        if not isinstance(traffic, dict):
            return
        moved = int(traffic.get("bytes_in", 0)) + int(traffic.get("bytes_out", 0))
        count = details.get("connections")
        open_now = count if isinstance(count, int) else None
        closed = (
            open_now is not None and self._connections is not None and open_now < self._connections
        )
        quiet = moved - self._moved < QUIET_BYTES
        release = quiet and (not self._quiet or closed)
        self._moved, self._quiet, self._connections = moved, quiet, open_now
        if release:
            gc.collect()
            trim_heap()

    async def _start_api(self, p: Prepared, service: NodeService) -> int:
        """Serve the HTTP API if the service provides a backend; an exit code."""
        if not isinstance(service, ApiBackendProvider):
            log.info("the node service provides no API backend: no HTTP API")
            return EXIT_OK
        from p2pstore.web.context import BOOTSTRAP
        from p2pstore.web.server import ApiServer

        server = ApiServer(service.api_backend(), p.api_token, port=p.config.node.web_port)
        server.app[BOOTSTRAP] = lambda: self._bootstrap_info(p, service)  # GET /api/v1/bootstrap
        try:
            await server.start()
        except OSError as e:
            await server.close()
            message = (
                f"{p.config.path}: [node] web_port: cannot listen on 127.0.0.1 port "
                f"{p.config.node.web_port}: {e.strerror or e}"
            )
            log.error("%s", message)
            print(f"p2pstore: {message}", file=sys.stderr)
            return EXIT_CONFIG
        self._api = server
        return EXIT_OK

    async def _start_sftp(self, p: Prepared, service: NodeService) -> int:
        """Serve SFTP if ``[sftp] enabled`` (docs/sftp.md); an exit code."""
        if not p.config.sftp.enabled or not isinstance(service, ApiBackendProvider):
            return EXIT_OK
        from .sftp_wiring import start_sftp

        try:
            self._sftp = await start_sftp(p.config, p.node_dir, service.api_backend())
        except ConfigError as e:
            log.error("%s", e)
            print(f"p2pstore: {e}", file=sys.stderr)
            return EXIT_CONFIG
        return EXIT_OK

    @staticmethod
    def _bootstrap_info(p: Prepared, service: NodeService) -> dict[str, Any]:
        """What ``GET /api/v1/bootstrap`` answers: the list file as it is now, and
        this node's own line (+ its list's vdrive line) if it is an introducer."""
        try:
            text: str | None = read_bootstrap_text(p.config.bootstrap_path)
        except BootstrapErrors:
            text = None
        own = None
        if p.config.node.introducer:
            seed = own_seed(p.config, p.key, service.status()["listen_port"])
            own = own_bootstrap_text(seed, p.bootstrap, p.config, p.key)
        return {
            "introducer": p.config.node.introducer,
            "bootstrap": text,
            "self": own,
            "seeds": len(p.bootstrap.seeds),
        }

    async def _close_api(self) -> None:
        """Stop the front ends (SFTP, then HTTP)."""
        sftp, self._sftp = self._sftp, None
        if sftp is not None:
            try:
                await sftp.close()
            except Exception:
                log.exception("closing the SFTP server failed")
        server, self._api = self._api, None
        if server is not None:
            try:
                await server.close()
            except Exception:
                log.exception("closing the HTTP API failed")

    async def _shutdown(self, p: Prepared, service: NodeService, known: KnownPeers, rc: int) -> int:
        self._write_status(p, service, "stopping", None)
        await self._close_api()  # no new requests reach a closing service
        if not await self._close_service(p, service):
            rc = EXIT_FAILURE
        try:
            if known.dirty:
                known.save()
        except OSError as e:
            log.error("could not save %s: %s", known.path, e.strerror)
        return rc

    async def _close_service(self, p: Prepared, service: NodeService) -> bool:
        """``service.close()`` bounded by ``shutdown_timeout``; False if it failed."""
        timeout = p.config.node.shutdown_timeout
        try:
            await asyncio.wait_for(service.close(), timeout)
        except TimeoutError:
            log.error("service did not close within %d s; exiting anyway", timeout)
            return False
        except Exception:
            log.exception("service failed while closing")
            return False
        return True

    def _write_status(
        self, p: Prepared, service: NodeService, state: str, status: ServiceStatus | None
    ) -> None:
        """Write the status file now (start-up and shutdown: ``start`` and ``stop``
        wait for what it says)."""
        made = self._status_doc(p, state, status)
        if made is not None:
            self._put_status(p, *made)

    async def _refresh_status(self, p: Prepared, status: ServiceStatus) -> None:
        """The wait loop's refresh: the document is made on the event loop and the
        file written in a worker thread. On ext4 a rename over the old file waits
        for the new one's data to reach the disk, behind whatever else is being
        written: during an upload a storage node's refresh waited up to 237 ms for
        its shares' writes and syncs, and the event loop must not wait with it."""
        made = self._status_doc(p, "running", status)
        if made is not None:
            await asyncio.to_thread(self._put_status, p, *made)

    def _status_doc(
        self, p: Prepared, state: str, status: ServiceStatus | None
    ) -> tuple[int, str] | None:
        """The status document to write (numbered), or None when nothing a reader
        cares about changed since the last one."""
        doc: dict[str, Any] = {
            "format": STATUS_FORMAT,
            "version": __version__,
            "state": state,
            "pid": os.getpid(),
            "node_id": p.key.node_id.b32,
            "nickname": p.config.node.nickname,
            "introducer": p.config.node.introducer,
            "started_at": self._started_at,
            "updated_at": self.clock(),
            "erasure_coder": erasure_coder(),
        }
        if status is not None:
            doc.update(
                listen_host=status["listen_host"],
                listen_port=status["listen_port"],
                peers_known=status["peers_known"],
                storage_used=status["storage_used"],
                details=status.get("details", {}),
            )
            doc["advertised"] = str(own_seed(p.config, p.key, status["listen_port"]).address)
        if self._api is not None and state == "running":
            doc.update(api_url=self._api.url, web_port=self._api.port)
        if self._sftp is not None and state == "running":
            doc.update(sftp_listen=self._sftp.address)
        # An idle node should cost nothing: rewrite the file when something a reader
        # cares about changed (not the clock or the traffic counters), or once a minute.
        same = {k: v for k, v in doc.items() if k not in ("updated_at", "details")}
        same["details"] = {k: v for k, v in (doc.get("details") or {}).items() if k not in VOLATILE}
        key = json.dumps(same, sort_keys=True, default=str)
        now = time.monotonic()
        if state == "running" and key == self._status_key and now - self._status_at < 60:
            return None
        self._status_key, self._status_at = key, now
        self._status_made += 1
        return self._status_made, json.dumps(doc, indent=1) + "\n"

    def _put_status(self, p: Prepared, number: int, text: str) -> None:
        """Write status document ``number`` unless a newer one was written already
        (from the event loop or a worker thread)."""
        with self._status_lock:
            if number <= self._status_written:
                return
            self._status_written = number
            try:
                write_text_atomic(p.node_dir.status_path, text, durable=False)
            except OSError as e:
                log.warning("could not write %s: %s", p.node_dir.status_path, e.strerror)
