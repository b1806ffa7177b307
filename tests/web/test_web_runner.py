"""NodeRunner serves the HTTP API with the service's backend: published in
status.json, closed before the service, a taken web_port is a config error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from p2pstore.api_client import NodeClient, NodeUnreachable
from p2pstore.node.address import HostPort
from p2pstore.node.nodedir import CreateOptions, NodeDir, create_node_dir
from p2pstore.node.runner import EXIT_CONFIG, EXIT_OK, NodeRunner
from p2pstore.node.service import NodeContext, ServiceStatus
from p2pstore.testing.memory_app import MemoryApplication


class ApiService:
    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self.loop: asyncio.AbstractEventLoop | None = None
        self.api_port: int | None = None
        self.api_open_at_close: bool | None = None
        self.closed = False

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    def api_backend(self) -> MemoryApplication:
        return MemoryApplication()

    async def close(self) -> None:
        self.closed = True
        if self.api_port is not None:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.api_port)
                w.close()
                self.api_open_at_close = True
            except OSError:
                self.api_open_at_close = False

    def status(self) -> ServiceStatus:
        return ServiceStatus(listen_host="127.0.0.1", listen_port=1, peers_known=0, storage_used=0)


def make_node(tmp_path: Path, web_port: int = 0) -> NodeDir:
    options = CreateOptions(listen=HostPort("127.0.0.1", 0), web_port=web_port)
    nd, _ = create_node_dir(tmp_path / "node", options)
    return nd


def test_runner_serves_and_closes_api_first(tmp_path: Path) -> None:
    nd = make_node(tmp_path)
    services: list[ApiService] = []

    def factory(ctx: NodeContext) -> ApiService:
        services.append(ApiService(ctx))
        return services[-1]

    runner = NodeRunner(
        nd.root, service_factory=factory, log_to_stderr=False, install_signal_handlers=False
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        url = None
        while time.monotonic() < deadline and url is None:
            with contextlib.suppress(OSError, ValueError):
                url = json.loads(nd.status_path.read_text()).get("api_url")
            time.sleep(0.02)
        assert url and url.startswith("http://127.0.0.1:")
        client = NodeClient.for_node(nd.root)
        assert client.url == url and client.status()["backend"] == "memory"
        services[0].api_port = client.port
    finally:
        svc = services[0]
        assert svc.loop is not None
        svc.loop.call_soon_threadsafe(svc.context.request_stop, "test")
        thread.join(20)
    assert result == [EXIT_OK]
    assert svc.closed and svc.api_open_at_close is False
    with pytest.raises(NodeUnreachable, match="no node is running"):
        NodeClient.for_node(nd.root)


def test_taken_web_port_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        nd = make_node(tmp_path, web_port=s.getsockname()[1])
        services: list[ApiService] = []

        def factory(ctx: NodeContext) -> ApiService:
            services.append(ApiService(ctx))
            return services[-1]

        runner = NodeRunner(
            nd.root, service_factory=factory, log_to_stderr=False, install_signal_handlers=False
        )
        assert runner.run() == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "[node] web_port: cannot listen on 127.0.0.1 port" in err
    assert services[0].closed and not nd.status_path.exists()
