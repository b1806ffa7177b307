"""The CLI in-process: create options, bootstrap commands, systemd unit, log rotation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from p2pstore.cli import main
from p2pstore.node.bootstrap import Seed, VdriveKey
from p2pstore.node.config import LoggingSection, load_config
from p2pstore.node.logsetup import setup_logging
from p2pstore.node.main import node_environment
from p2pstore.node.systemd import render_unit, systemd_quote, unit_name
from quic_transport.identity import NodeId

SEED = Seed(NodeId(bytes(range(20))), "192.0.2.7", 3456, "intro")


def test_identity_subcommand_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["identity", "--key", str(tmp_path / "k")]) == 0
    assert "created" in capsys.readouterr().out


def test_create_node_with_literal_bootstrap_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = f"# pasted from chat\n{SEED.to_line()}\n{VdriveKey(bytes(32)).to_line()}\n"
    rc = main(
        [
            "create-node",
            str(tmp_path / "n"),
            "--bootstrap",
            text,
            "--listen",
            "[::1]:4567",
            "--web-port",
            "0",
            "--nickname",
            "bob",
            "--storage-quota",
            "10GB",
        ]
    )
    assert rc == 0
    config = load_config(tmp_path / "n" / "p2pstore.toml")
    assert str(config.node.listen) == "[::1]:4567" and config.storage.quota == 10**10
    listed = (tmp_path / "n" / "bootstrap.txt").read_text()
    assert SEED.to_line() in listed and "p2ps-vdrive" in listed
    assert "node ID:" in capsys.readouterr().out


def test_create_node_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create-node", str(tmp_path / "a"), "--bootstrap", "nope.txt"]) == 78
    assert "neither an existing file nor bootstrap text" in capsys.readouterr().err
    bad = "p2ps-seed abc 1.2.3.4:5"
    assert main(["create-node", str(tmp_path / "a"), "--bootstrap", bad]) == 78
    assert "--bootstrap text, line 1: node ID" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["create-node", str(tmp_path / "a"), "--storage-quota", "12 furlongs"])
    assert "unknown unit 'furlongs'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["create-node", str(tmp_path / "a"), "--listen", "1.2.3.4:99999"])
    assert not (tmp_path / "a").exists()


def test_bootstrap_add_show_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "n"
    assert main(["create-node", str(node), "--listen", "127.0.0.1:4000", "--web-port", "0"]) == 0
    capsys.readouterr()
    assert main(["bootstrap", "add", str(node), SEED.to_line()]) == 0
    assert "added" in capsys.readouterr().out
    moved = Seed(SEED.node_id, "192.0.2.8", 3456)
    assert main(["bootstrap", "add", str(node), moved.to_line()]) == 0
    assert "updated" in capsys.readouterr().out
    assert main(["bootstrap", "add", str(node), moved.to_line()]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert main(["bootstrap", "add", str(node), VdriveKey(bytes(32)).to_line()]) == 0
    assert main(["bootstrap", "add", str(node), VdriveKey(b"\x01" * 32).to_line()]) == 1
    assert "NOT applied" in capsys.readouterr().err
    text = (node / "bootstrap.txt").read_text()
    assert "192.0.2.8:3456  # intro" in text and text.startswith("# p2pstore bootstrap list")

    assert main(["bootstrap", "show", str(node)]) == 0
    shown = capsys.readouterr().out.splitlines()
    node_id = json.loads(_status_json(node, capsys))["node_id"]
    assert shown == [f"p2ps-seed {node_id} 127.0.0.1:4000  # n", VdriveKey(bytes(32)).to_line()]

    assert main(["bootstrap", "check", str(node / "bootstrap.txt")]) == 0
    assert "ok: 1 seeds, vdrive key set" in capsys.readouterr().out


def _status_json(node: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["status", str(node), "--json"]) == 3
    return capsys.readouterr().out


def test_bootstrap_show_needs_a_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "n"
    main(["create-node", str(node), "--listen", "127.0.0.1:0", "--web-port", "0"])
    capsys.readouterr()
    assert main(["bootstrap", "show", str(node)]) == 1
    assert "port 0" in capsys.readouterr().err


def test_status_of_a_non_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(tmp_path)]) == 1
    assert "not a p2pstore node directory" in capsys.readouterr().err


def test_systemd_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = tmp_path / "my node"
    main(["create-node", str(node), "--web-port", "0"])
    capsys.readouterr()
    unit = render_unit(node, ["/opt/p2p store/bin/p2pstore"])
    assert f'ExecStart="/opt/p2p store/bin/p2pstore" run "{node}"' in unit
    assert "Restart=on-failure" in unit and "RestartPreventExitStatus=78" in unit
    assert "\nEnvironment=PYTHONNODEBUGRANGES=1\n" in unit  # main.node_environment
    for name, value in node_environment({}).items():
        assert f"\nEnvironment={name}={value}\n" in unit
    assert unit_name(node) == "p2pstore-my-node.service"
    assert systemd_quote("100%$x") == '"100%%$$x"'
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["systemd-unit", str(node), "--install"]) == 0
    written = tmp_path / "xdg" / "systemd" / "user" / "p2pstore-my-node.service"
    assert "ExecStart=" in written.read_text()
    assert "systemctl --user daemon-reload" in capsys.readouterr().out


def test_log_rotation(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    teardown = setup_logging(
        path, LoggingSection(max_bytes=10_000, backup_count=2), secrets=[], to_stderr=False
    )
    try:
        log = logging.getLogger("p2pstore.test.rotation")
        for i in range(600):
            log.info("line %d %s", i, "x" * 80)
    finally:
        teardown()
    assert path.stat().st_size <= 10_000
    assert (tmp_path / "node.log.1").exists() and (tmp_path / "node.log.2").exists()
    assert not (tmp_path / "node.log.3").exists()
    first = path.read_text().splitlines()[0]
    assert first[:4].isdigit() and "Z INFO p2pstore.test.rotation: line" in first
