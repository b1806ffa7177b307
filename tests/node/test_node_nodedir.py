"""Creating node directories, pid-file locking, secret files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from p2pstore.node.address import HostPort
from p2pstore.node.bootstrap import BootstrapList, Seed
from p2pstore.node.config import load_config
from p2pstore.node.errors import NodeDirError, SecretFileError
from p2pstore.node.nodedir import CreateOptions, NodeDir, create_node_dir
from p2pstore.node.pidfile import AlreadyRunning, PidLock, probe, remove_stale
from quic_transport.identity import NodeId


def test_create_node_layout_and_permissions(tmp_path: Path) -> None:
    seed = Seed(NodeId(bytes(20)), "10.0.0.1", 3456, "intro")
    nd, key = create_node_dir(
        tmp_path / "n",
        CreateOptions(
            nickname="bob",
            listen=HostPort("127.0.0.1", 0),
            web_port=8080,
            storage_quota=10**10,
            bootstrap=BootstrapList((seed,)),
        ),
    )
    for path in (nd.key_path, nd.convergence_path, nd.api_token_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(nd.private_dir.stat().st_mode) == 0o700
    for d in (nd.storage_dir, nd.logs_dir, nd.run_dir, nd.state_dir):
        assert d.is_dir()
    assert nd.load_key().node_id == key.node_id
    assert len(nd.load_convergence_secret()) == 32
    assert len(nd.load_api_token()) == 52
    config = load_config(nd.config_path)
    assert config.node.nickname == "bob" and config.storage.quota == 10**10
    assert config.node.web_port == 8080 and config.storage.enabled
    assert "intro" in nd.default_bootstrap_path.read_text()
    assert not list(tmp_path.glob(".n.creating-*"))


def test_introducer_defaults(tmp_path: Path) -> None:
    nd, _ = create_node_dir(tmp_path / "intro", CreateOptions(introducer=True))
    config = load_config(nd.config_path)
    assert config.node.introducer and not config.storage.enabled
    assert config.node.listen.host == "0.0.0.0" and config.node.listen.port > 0
    assert config.node.nickname == "intro"


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    nd, key = create_node_dir(tmp_path / "n", CreateOptions())
    with pytest.raises(NodeDirError, match="already a p2pstore node"):
        create_node_dir(tmp_path / "n", CreateOptions())
    assert nd.load_key().node_id == key.node_id
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(NodeDirError, match="not empty"):
        create_node_dir(tmp_path / "other", CreateOptions())
    (tmp_path / "f").write_text("x")
    with pytest.raises(NodeDirError, match="not a directory"):
        create_node_dir(tmp_path / "f", CreateOptions())
    (tmp_path / "empty").mkdir()
    create_node_dir(tmp_path / "empty", CreateOptions())  # an empty directory is fine


def test_secret_files_refused_if_readable_by_others(tmp_path: Path) -> None:
    nd, _ = create_node_dir(tmp_path / "n", CreateOptions())
    os.chmod(nd.convergence_path, 0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        nd.load_convergence_secret()
    os.chmod(nd.api_token_path, 0o600)
    nd.api_token_path.write_text("not-a-token\n")
    with pytest.raises(SecretFileError, match="API token"):
        nd.load_api_token()


def test_require_node(tmp_path: Path) -> None:
    with pytest.raises(NodeDirError, match="no such directory"):
        NodeDir(tmp_path / "nope").require_node()
    with pytest.raises(NodeDirError, match="not a p2pstore node directory"):
        NodeDir(tmp_path).require_node()


def test_pid_lock_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "node.pid"
    assert probe(path).state == "stopped"
    lock = PidLock(path)
    lock.acquire()
    assert probe(path).state == "running" and probe(path).pid == os.getpid()
    assert remove_stale(path).state == "running" and path.exists()
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        PidLock(path).acquire(retry_for=0.1)
    lock.release()
    assert not path.exists() and probe(path).state == "stopped"


def test_stale_pid_file_from_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "node.pid"
    code = (
        "import sys, os, signal; from pathlib import Path;"
        "from p2pstore.node.pidfile import PidLock;"
        "PidLock(Path(sys.argv[1])).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert proc.returncode == -9
    state = probe(path)
    assert state.state == "stale" and state.pid is not None
    lock = PidLock(path)
    lock.acquire()  # a stale file does not block a new owner
    assert probe(path).pid == os.getpid()
    lock.release()
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    assert remove_stale(path).state == "stale" and not path.exists()


def test_bootstrap_lists_holding_the_read_secret_are_private(tmp_path: Path) -> None:
    """An introducer's bootstrap.txt has the shared drive's read secret: 0600, and a
    node directory made before (0644) is fixed when the node is prepared to run."""
    from p2pstore.node.runner import prepare

    nd, _key = create_node_dir(
        tmp_path / "intro",
        CreateOptions(introducer=True, nickname="i", listen=HostPort("127.0.0.1", 0)),
    )
    assert "p2ps-vdrive" in nd.default_bootstrap_path.read_text()
    assert stat.S_IMODE(nd.default_bootstrap_path.stat().st_mode) == 0o600
    os.chmod(nd.default_bootstrap_path, 0o644)  # as older versions wrote it
    prepare(nd.root)
    assert stat.S_IMODE(nd.default_bootstrap_path.stat().st_mode) == 0o600
