"""The SFTP server of a real node (docs/sftp.md), driven by OpenSSH's ``sftp`` in
batch mode and by rclone's SFTP backend: a local grid of real node processes, one
node with ``[sftp] enabled``. Skips, saying why, without ``sftp``/``ssh-keygen``
(rclone's part: without ``rclone``); ``make sftp-tools`` installs them."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nat_grid import set_config
from tests.realgrid import cli, local_grid

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (shutil.which("sftp") and shutil.which("ssh-keygen")),
        reason="OpenSSH's sftp client is not installed (make sftp-tools)",
    ),
]


class Node:
    def __init__(self, path: Path, key: Path, port: int) -> None:
        self.path, self.key, self.port = path, key, port

    def sftp(
        self, user: str, commands: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        batch = self.path.parent / f"batch-{user}.txt"
        batch.write_text(commands)
        proc = subprocess.run(
            [
                "sftp", "-b", str(batch), "-i", str(self.key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-P", str(self.port), f"{user}@127.0.0.1",
            ],
            capture_output=True, text=True, timeout=60, cwd=self.path.parent,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"sftp {user} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def users(self, text: str) -> None:
        path = self.path / "sftp_users"
        path.write_text(text)
        os.chmod(path, 0o600)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("sftp")
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (root / "id_ed25519.pub").read_text().strip()
    with local_grid(root / "grid", nodes=3) as grid:
        path = grid.node(1)
        cli("mkdir", "--node", path, "private:/ro")
        cli("stop", path)
        set_config(path, "sftp", {"enabled": True})
        n = Node(path, key, 0)
        n.users(f"alice private:/ {pub} test\nreader ro:private:/ro {pub}\n")
        cli("start", path)
        status = json.loads(cli("status", path, "--json").stdout)
        n.port = int(status["sftp_listen"].rsplit(":", 1)[1])
        n.pub = pub  # type: ignore[attr-defined]
        yield n


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("hello sftp\n")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(40))


def _same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), cmp.report()
    for name in cmp.common_files:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    for sub in cmp.common_dirs:
        _same_tree(a / sub, b / sub)


def test_put_list_get_rename_remove(node: Node, tmp_path: Path) -> None:
    up = tmp_path / "up"
    _tree(up)
    node.sftp("alice", f"mkdir /t\nput -r {up} /t/tree\n")
    listing = node.sftp("alice", "ls -l /t/tree\nls -l /t/tree/sub\n").stdout
    assert "a.txt" in listing and "b.bin" in listing and "300000" in listing
    down = tmp_path / "down"
    node.sftp("alice", f"get -r /t/tree {down}\n")
    _same_tree(up, down)
    node.sftp(
        "alice",
        "rename /t/tree/a.txt /t/tree/renamed.txt\n"
        "rm /t/tree/sub/deeper/c.bin\nrmdir /t/tree/sub/deeper\n"
        "mkdir /t/new\nrmdir /t/new\n",
    )
    after = node.sftp("alice", "ls /t/tree\nls /t/tree/sub\n").stdout
    assert "renamed.txt" in after and "a.txt" not in after and "deeper" not in after
    denied = node.sftp("alice", "rmdir /t/tree\n", check=False)
    assert denied.returncode != 0  # not empty


def test_escapes_stay_inside_and_read_only_is_enforced(node: Node, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    node.sftp("alice", f"cd /../../..\nput {tmp_path / 'f.txt'} /../esc.txt\n")
    out = node.sftp("alice", "cd ../../../..\npwd\nls /\n").stdout
    assert "Remote working directory: /\n" in out and "esc.txt" in out  # landed in alice's /
    ls = cli("ls", "--node", node.path, "--json", "private:/").stdout
    assert "esc.txt" in {e["name"] for e in json.loads(ls)["entries"]}
    for command in (f"put {tmp_path / 'f.txt'} /x.txt", "mkdir /d", "rmdir /", "rm /nothing"):
        proc = node.sftp("reader", command + "\n", check=False)
        assert proc.returncode != 0, command
    proc = node.sftp("reader", f"put {tmp_path / 'f.txt'} /x.txt\n", check=False)
    assert "Permission denied" in proc.stderr
    assert "esc.txt" not in node.sftp("reader", "ls /..\n").stdout  # its root is private:/ro


def test_a_directory_cap_user_reads_only(node: Node, tmp_path: Path) -> None:
    up = tmp_path / "capped"
    _tree(up)
    node.sftp("alice", f"put -r {up} /capped\n")
    entries = json.loads(cli("ls", "--node", node.path, "--json", "private:/").stdout)["entries"]
    dircap = next(e["cap"] for e in entries if e["name"] == "capped")
    assert dircap.startswith("p2ps:dir:")
    users = (node.path / "sftp_users").read_text()
    node.users(users + f"guest {dircap} {node.pub}\n")  # type: ignore[attr-defined]
    down = tmp_path / "guest-down"
    node.sftp("guest", f"get -r / {down}\n")
    _same_tree(up, down)
    proc = node.sftp("guest", "mkdir /nope\n", check=False)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr


@pytest.mark.skipif(not shutil.which("rclone"), reason="rclone is not installed (make sftp-tools)")
def test_rclone_sync_check_and_a_second_sync_transfers_nothing(node: Node, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    old = time.time() - 86400 * 3
    for p in src.rglob("*"):
        os.utime(p, (old, old))
    host_key = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(node.path / "private" / "sftp_host_key")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{node.port} {host_key}\n")  # the node's key is checked
    # disable_concurrent_writes: rclone 1.60 (Debian 12) sends a malformed last
    # write packet when writing concurrently, which asyncssh refuses (docs/sftp.md)
    remote = (
        f":sftp,host=127.0.0.1,port={node.port},user=alice,key_file={node.key},"
        f"known_hosts_file={known},disable_concurrent_writes=true:/rc"
    )
    env = dict(os.environ, RCLONE_CONFIG="/dev/null")

    def rclone(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["rclone", *args], capture_output=True, text=True, timeout=120, env=env
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    rclone("sync", str(src), remote)
    rclone("check", str(src), remote)
    second = rclone("sync", str(src), remote, "--stats-one-line", "-v", "--use-json-log")
    stats = [
        json.loads(line)["stats"]
        for line in second.stderr.splitlines()
        if line.startswith("{") and "stats" in json.loads(line)
    ]
    assert stats and stats[-1]["transfers"] == 0, second.stderr
