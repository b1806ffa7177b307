"""Ports that cannot collide (docs/node.md, "Ports"; p2pstore/node/ports.py): a port
picked at creation and taken by the time the node starts is moved, with a log line;
a port the user configured stays a clear error."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

from p2pstore.node.config import load_config
from p2pstore.node.nodedir import CreateOptions, create_node_dir
from p2pstore.node.ports import ephemeral_low, pick_port

from ..realgrid import cli


def test_picked_ports_sit_below_the_ephemeral_range() -> None:
    rng = random.Random(5)
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        port = pick_port(kind, "127.0.0.1", rng=rng)
        assert 10_000 <= port < ephemeral_low()


def test_a_taken_port_picked_at_creation_moves_at_start(tmp_path: Path) -> None:
    nd, _ = create_node_dir(tmp_path / "node", CreateOptions(listen_host="127.0.0.1", nickname="n"))
    cfg = load_config(nd.config_path)
    udp, web = cfg.node.listen.port, cfg.node.web_port
    assert json.loads((nd.state_dir / "auto_ports.json").read_text()) == {
        "listen": True,
        "web_port": True,
    }
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t,
    ):
        u.bind(("127.0.0.1", udp))  # another process got them meanwhile
        t.bind(("127.0.0.1", web))
        t.listen()
        try:
            cli("start", nd.root, timeout=60)
            moved = load_config(nd.config_path)
            assert moved.node.listen.port != udp and moved.node.web_port != web
            status = json.loads(cli("status", nd.root, "--json").stdout)
            assert status["running"] and status["api"]["listen_port"] == moved.node.listen.port
            log = nd.log_path.read_text()
            assert f"UDP port {udp} (picked at creation) is taken: now " in log
            assert f"web port {web} (picked at creation) is taken: now " in log
        finally:
            cli("stop", nd.root, check=False, timeout=60)


def test_a_configured_port_that_is_taken_stays_an_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        node = tmp_path / "node"
        cli("create-node", node, "--listen", f"127.0.0.1:{port}")
        started = cli("start", node, check=False, timeout=60)
        assert started.returncode == 78 and "[node] listen: cannot listen on" in started.stderr
        assert load_config(node / "p2pstore.toml").node.listen.port == port  # not rewritten
