"""``[sftp]`` in the node config and the port the node keeps for it (docs/sftp.md)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from p2pstore.node.address import HostPort
from p2pstore.node.config import NodeSection, StorageSection, config_from_dict, load_config
from p2pstore.node.config_template import render_config
from p2pstore.node.errors import ConfigError
from p2pstore.node.sftp_wiring import STATE_FILE, sftp_port

P = Path("p2pstore.toml")


def test_off_by_default_on_loopback_with_a_kept_port() -> None:
    c = config_from_dict({}, P)
    assert not c.sftp.enabled
    assert c.sftp.listen == HostPort("127.0.0.1", 0)
    assert c.sftp.users_file == "sftp_users"


def test_values_and_errors() -> None:
    c = config_from_dict({"sftp": {"enabled": True, "listen": "127.0.0.1:2222"}}, P)
    assert c.sftp.enabled and c.sftp.listen.port == 2222
    assert config_from_dict({"sftp": {"listen": "::1"}}, P).sftp.listen == HostPort("::1", 0)
    for bad, key in (
        ({"enabled": "yes"}, "enabled"),
        ({"listen": "127.0.0.1:99999"}, "listen"),
        ({"listen": 22}, "listen"),
        ({"users": "x"}, "users"),
    ):
        with pytest.raises(ConfigError, match=rf"\[sftp\] {key}"):
            config_from_dict({"sftp": bad}, P)


def test_the_template_documents_the_section_and_still_loads(tmp_path: Path) -> None:
    text = render_config(NodeSection(), StorageSection())
    assert "# [sftp]" in text and "users_file" in text
    (tmp_path / "p2pstore.toml").write_text(text)
    assert not load_config(tmp_path / "p2pstore.toml").sftp.enabled


def test_a_picked_port_is_kept_and_moves_only_when_taken(tmp_path: Path) -> None:
    c = config_from_dict({"sftp": {"enabled": True}}, P)
    first = sftp_port(c, tmp_path)
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"port": first}
    assert sftp_port(c, tmp_path) == first
    with socket.socket() as s:
        s.bind(("127.0.0.1", first))
        s.listen()
        second = sftp_port(c, tmp_path)
    assert second != first
    assert sftp_port(c, tmp_path) == second


def test_a_configured_port_is_used_as_is(tmp_path: Path) -> None:
    c = config_from_dict({"sftp": {"enabled": True, "listen": "127.0.0.1:2222"}}, P)
    assert sftp_port(c, tmp_path) == 2222
    assert not (tmp_path / STATE_FILE).exists()


async def test_a_taken_configured_port_and_a_bad_users_file_are_config_errors(
    tmp_path: Path,
) -> None:
    from p2pstore.node.nodedir import NodeDir
    from p2pstore.node.sftp_wiring import start_sftp
    from p2pstore.testing.memory_app import MemoryApplication

    nd = NodeDir(tmp_path)
    nd.private_dir.mkdir()
    nd.state_dir.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = config_from_dict(
            {"sftp": {"enabled": True, "listen": f"127.0.0.1:{port}"}}, tmp_path / "p2pstore.toml"
        )
        with pytest.raises(ConfigError, match=r"\[sftp\] listen: cannot listen on 127.0.0.1:"):
            await start_sftp(c, nd, MemoryApplication())
    (tmp_path / "sftp_users").write_text("alice nowhere ssh-ed25519 AAAA\n")
    with pytest.raises(ConfigError, match=r"\[sftp\] users_file: .*sftp_users:1: "):
        await start_sftp(c, nd, MemoryApplication())
