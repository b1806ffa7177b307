"""NodeRunner in-process: startup validation, status file, signals, clean shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from p2pstore.node.address import HostPort
from p2pstore.node.bootstrap import parse_bootstrap
from p2pstore.node.logsetup import RedactSecrets
from p2pstore.node.nodedir import CreateOptions, NodeDir, create_node_dir
from p2pstore.node.runner import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, NodeRunner
from p2pstore.node.service import NodeContext, ServiceStatus
from quic_transport.identity import NodeId, b32encode
from tests.loop_gaps import record_gaps


class FakeService:
    """Records calls; optionally hangs in close() or asks to stop from start()."""

    instances: ClassVar[list[FakeService]] = []

    def __init__(self, context: NodeContext, *, hang: bool = False, stop_at_start: bool = True):
        self.context = context
        self.hang = hang
        self.stop_at_start = stop_at_start
        self.calls: list[str] = []
        FakeService.instances.append(self)

    async def start(self) -> None:
        self.calls.append("start")
        self.context.known_peers.saw(NodeId(bytes(20)), "10.0.0.1", 4000, when=123.0)
        if self.stop_at_start:
            self.context.request_stop("test")

    async def close(self) -> None:
        self.calls.append("close")
        if self.hang:
            await asyncio.sleep(60)

    def status(self) -> ServiceStatus:
        self.calls.append("status")
        return ServiceStatus(
            listen_host="127.0.0.1", listen_port=4321, peers_known=7, storage_used=99
        )


def make_node(tmp_path: Path, **kw: object) -> NodeDir:
    options = CreateOptions(listen=HostPort("127.0.0.1", 0), web_port=0, **kw)  # type: ignore[arg-type]
    nd, _ = create_node_dir(tmp_path / "node", options)
    return nd


def test_clean_run_with_injected_service(tmp_path: Path) -> None:
    nd = make_node(tmp_path)
    FakeService.instances.clear()
    runner = NodeRunner(nd.root, service_factory=FakeService, log_to_stderr=False)
    assert runner.run() == EXIT_OK
    (svc,) = FakeService.instances
    assert svc.calls[0] == "start" and svc.calls[-1] == "close"
    assert not nd.pid_path.exists() and not nd.status_path.exists()
    saved = json.loads(nd.known_peers_path.read_text())
    assert saved["peers"][0]["port"] == 4000
    log = nd.log_path.read_text()
    assert "starting" in log and "stopped (test)" in log


def test_config_error_stops_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nd = make_node(tmp_path)
    text = nd.config_path.read_text().replace('quota = "unlimited"', 'quota = "12 parsecs"')
    nd.config_path.write_text(text)
    FakeService.instances.clear()
    assert NodeRunner(nd.root, service_factory=FakeService).run() == EXIT_CONFIG
    assert not FakeService.instances
    err = capsys.readouterr().err
    assert f"{nd.config_path}: [storage] quota: '12 parsecs': unknown unit 'parsecs'" in err
    assert not nd.pid_path.exists()


def test_bad_bootstrap_list_names_file_key_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nd = make_node(tmp_path)
    with nd.default_bootstrap_path.open("a") as f:
        f.write("p2ps-seed tooshort 1.2.3.4:5\n")
    bad_line = len(nd.default_bootstrap_path.read_text().splitlines())
    assert NodeRunner(nd.root, service_factory=FakeService).run() == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "p2pstore.toml: [node] bootstrap_file:" in err
    assert f"bootstrap.txt, line {bad_line}: node ID" in err


def test_port_conflict_reported_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        nd, _ = create_node_dir(
            tmp_path / "n", CreateOptions(listen=HostPort("127.0.0.1", port), web_port=0)
        )
        rc = NodeRunner(nd.root, log_to_stderr=False).run()
    assert rc == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"[node] listen: cannot listen on 127.0.0.1:{port}" in err
    assert not nd.pid_path.exists() and not nd.status_path.exists()


def test_shutdown_timeout(tmp_path: Path) -> None:
    nd = make_node(tmp_path)
    text = nd.config_path.read_text().replace('shutdown_timeout = "20s"', 'shutdown_timeout = "1s"')
    nd.config_path.write_text(text)

    def factory(ctx: NodeContext) -> FakeService:
        return FakeService(ctx, hang=True)

    t0 = time.monotonic()
    assert NodeRunner(nd.root, service_factory=factory, log_to_stderr=False).run() == EXIT_FAILURE
    assert time.monotonic() - t0 < 10
    assert "did not close within 1 s" in nd.log_path.read_text()
    assert not nd.pid_path.exists()


def test_sigterm_listen_only_introducer_and_no_secrets_logged(tmp_path: Path) -> None:
    nd = make_node(tmp_path, introducer=True)
    text = nd.config_path.read_text().replace('level = "INFO"', 'level = "DEBUG"')
    nd.config_path.write_text(text)
    seen: dict[str, object] = {}

    def watcher() -> None:
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    doc = json.loads(nd.status_path.read_text())
                except (OSError, ValueError):
                    doc = {}
                if doc.get("state") == "running":
                    seen.update(doc)
                    seen["self_line"] = nd.bootstrap_self_path.read_text()
                    break
                time.sleep(0.02)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # never leave the runner waiting

    out = io.StringIO()
    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        rc = NodeRunner(nd.root, log_to_stderr=False, out=out).run()
    finally:
        thread.join()
    assert rc == EXIT_OK
    assert seen["state"] == "running" and seen["pid"] == os.getpid()
    port = seen["listen_port"]
    assert isinstance(port, int) and port > 0
    line = f"p2ps-seed {nd.load_key().node_id.b32} 127.0.0.1:{port}  # node"
    # the introducer serves the vdrive: its line follows the seed line (docs/vdrive.md)
    seed_line, vdrive_line, params_line = seen["self_line"].splitlines()
    assert seed_line == line and vdrive_line.startswith("p2ps-vdrive ")
    # and the grid's encoding, signed by the vdrive key (docs/bootstrap.md)
    assert params_line.startswith("p2ps-params 3 10 7 ") and params_line.endswith("# grid")
    assert parse_bootstrap(seen["self_line"]).params is not None
    assert line in out.getvalue()
    log = nd.log_path.read_text()
    assert "SIGTERM received" in log
    for secret in (
        b32encode(nd.load_key().seed),
        b32encode(nd.load_convergence_secret()),
        nd.load_api_token(),
    ):
        assert secret not in log
    assert not nd.pid_path.exists()


def test_second_runner_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nd = make_node(tmp_path)
    from p2pstore.node.pidfile import PidLock

    lock = PidLock(nd.pid_path)
    lock.acquire()
    try:
        assert NodeRunner(nd.root, service_factory=FakeService).run() == EXIT_FAILURE
        assert "already running" in capsys.readouterr().err
    finally:
        lock.release()


def test_redaction_filter() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "token %s here", ("sekrit-123",), None
    )
    assert RedactSecrets(["sekrit-123"]).filter(record)
    assert record.getMessage() == "token [REDACTED] here"


class BrokenStart(FakeService):
    async def start(self) -> None:
        self.calls.append("start")
        raise RuntimeError("disk on fire")


def test_failed_start_still_closes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nd = make_node(tmp_path)
    FakeService.instances.clear()
    assert NodeRunner(nd.root, service_factory=BrokenStart, log_to_stderr=False).run() == 1
    (svc,) = FakeService.instances
    assert svc.calls == ["start", "close"]
    assert "the node failed to start: disk on fire" in capsys.readouterr().err
    assert not nd.pid_path.exists() and not nd.status_path.exists()


class FlakyStatus(FakeService):
    def __init__(self, context: NodeContext) -> None:
        super().__init__(context, stop_at_start=False)
        self.n = 0

    def status(self) -> ServiceStatus:
        self.n += 1
        if self.n == 2:
            raise ValueError("status bug")
        if self.n == 3:
            self.context.request_stop("enough")
        return super().status()


def test_status_error_does_not_stop_the_node(tmp_path: Path) -> None:
    nd = make_node(tmp_path)
    text = nd.config_path.read_text().replace('status_interval = "15s"', 'status_interval = "1s"')
    nd.config_path.write_text(text)
    FakeService.instances.clear()
    assert NodeRunner(nd.root, service_factory=FlakyStatus, log_to_stderr=False).run() == 0
    assert "status refresh failed" in nd.log_path.read_text()
    assert "stopped (enough)" in nd.log_path.read_text()


def test_a_quiet_node_releases_memory_when_it_goes_quiet_and_when_connections_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2pstore.node import runner as runner_mod

    calls: list[str] = []
    monkeypatch.setattr(runner_mod.gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(runner_mod, "trim_heap", lambda: calls.append("trim") or True)
    runner = NodeRunner(tmp_path, service_factory=FakeService)

    def look(moved: int, connections: int | None) -> int:
        before = len(calls)
        details: dict[str, Any] = {"traffic": {"bytes_in": moved, "bytes_out": 0}}
        if connections is not None:
            details["connections"] = connections
        runner._trim_when_quiet({"details": details})
        return (len(calls) - before) // 2  # releases: one collect + one trim each

    assert look(50 << 20, 8) == 0  # data moving: nothing
    assert look(50 << 20, 8) == 1  # went quiet: release
    assert look(50 << 20, 8) == 0  # quiet, the busy spell's connections still open
    assert look(50 << 20, 2) == 1  # they idled out: their cycles are garbage now
    assert look(50 << 20, 2) == 0  # then nothing while nothing changes
    assert look(50 << 20, 4) == 0  # DHT maintenance opens two
    assert look(50 << 20, 2) == 1  # and they close
    assert look(50 << 20, None) == 0  # no count: nothing to compare
    assert look(50 << 20, 1) == 0
    assert look(60 << 20, 0) == 0  # moving again: never while data moves
    assert look(60 << 20, 0) == 1  # a new quiet spell
    assert calls[:2] == ["collect", "trim"]


class GrowingStorage(FakeService):
    """Stores more at every status look (as during an upload), so that every
    refresh rewrites the status file; asks to stop at the third look."""

    def __init__(self, context: NodeContext) -> None:
        super().__init__(context, stop_at_start=False)
        self.n = 0

    def status(self) -> ServiceStatus:
        self.n += 1
        if self.n == 3:
            self.context.request_stop("enough")
        return ServiceStatus(
            listen_host="127.0.0.1", listen_port=4321, peers_known=7, storage_used=self.n
        )


def test_a_slow_status_write_does_not_hold_up_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh's file write runs in a worker thread: on a busy disk the rename
    can wait for a long time, and the node's traffic must not wait with it."""
    from p2pstore.node import runner as runner_mod

    nd = make_node(tmp_path)
    text = nd.config_path.read_text().replace('status_interval = "15s"', 'status_interval = "1s"')
    nd.config_path.write_text(text)
    real = runner_mod.write_text_atomic
    writers: list[str] = []

    def slow_write(path: Path, text: str, **kw: Any) -> None:
        if json.loads(text).get("storage_used", 0) >= 2:  # the refreshes, not start-up's
            writers.append(threading.current_thread().name)
            time.sleep(0.4)
        real(path, text, **kw)

    monkeypatch.setattr(runner_mod, "write_text_atomic", slow_write)
    gaps: list[float] = []

    class Ticking(GrowingStorage):
        async def start(self) -> None:
            await super().start()
            asyncio.get_running_loop().create_task(record_gaps(gaps, 0.02))

    runner = NodeRunner(nd.root, service_factory=Ticking, log_to_stderr=False)
    assert runner.run() == 0
    assert len(writers) == 2 and threading.main_thread().name not in writers
    assert len(gaps) > 20 and max(gaps) < 0.35  # it ticked on through both 0.4 s writes


def test_an_older_status_document_never_replaces_a_newer_one(tmp_path: Path) -> None:
    nd = make_node(tmp_path)
    runner = NodeRunner(nd.root, service_factory=FakeService)
    p: Any = type("P", (), {"node_dir": nd})()
    runner._put_status(p, 2, "newer\n")
    runner._put_status(p, 1, "older\n")  # a refresh's thread that lost the race
    assert nd.status_path.read_text() == "newer\n"
    runner._put_status(p, 3, "newest\n")
    assert nd.status_path.read_text() == "newest\n"
