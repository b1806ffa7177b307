"""The SFTP server in one process: asyncssh's client against :class:`SftpServer` over
the in-memory application (real encoding, drives in memory), on 127.0.0.1 port 0."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from p2pstore.app.vpath import parse_vpath
from p2pstore.immutable import EncodingParams
from p2pstore.sftp.server import SftpServer
from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.testing.memory_vdrive import MemoryVdrive

KEY = asyncssh.generate_private_key("ssh-ed25519")
PUB = KEY.export_public_key().decode().strip()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SftpServer]:
    app = MemoryApplication(params=EncodingParams.create(2, 3, 128 * 1024), vdrive=MemoryVdrive())
    await app.vdrive_mkdir(parse_vpath("shared:/pub"), parents=False, expected_sequence=None)
    (tmp_path / "sftp_users").write_text(
        f"alice private:/ {PUB}\nreader ro:shared:/pub {PUB}\nsub shared:/pub {PUB}\n"
    )
    srv = SftpServer(
        app,
        host="127.0.0.1",
        port=0,
        host_key_path=tmp_path / "host_key",
        users_path=tmp_path / "sftp_users",
        spool_dir=tmp_path / "spool",
        mtimes_path=tmp_path / "mtimes.json",
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def _connect(
    srv: SftpServer, user: str, key: asyncssh.SSHKey = KEY
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", srv.port, username=user, client_keys=[key], known_hosts=None
    )


async def test_write_list_read_rename_remove(server: SftpServer, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # several read-ahead blocks
    async with await _connect(server, "alice") as conn, conn.start_sftp_client() as sftp:
        await sftp.mkdir("/docs")
        async with sftp.open("/docs/a.bin", "wb") as f:
            await f.write(data)
        assert (await sftp.stat("/docs/a.bin")).size == len(data)
        assert sorted(await sftp.listdir("/docs")) == [".", "..", "a.bin"]
        async with sftp.open("/docs/a.bin", "rb") as f:
            assert await f.read() == data
            await f.seek(1_500_000)
            assert await f.read(10) == data[1_500_000:1_500_010]
        await sftp.utime("/docs/a.bin", (1_600_000_000, 1_600_000_000))
        assert (await sftp.stat("/docs/a.bin")).mtime == 1_600_000_000
        await sftp.posix_rename("/docs/a.bin", "/docs/b.bin")
        assert (await sftp.stat("/docs/b.bin")).mtime == 1_600_000_000  # kept on rename
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.stat("/docs/a.bin")
        with pytest.raises(asyncssh.SFTPFailure):  # not empty
            await sftp.rmdir("/docs")
        await sftp.remove("/docs/b.bin")
        await sftp.rmdir("/docs")
        assert await sftp.listdir("/") == [".", ".."]
    assert not list((tmp_path / "spool").iterdir())  # spool files are gone


async def test_an_overwrite_replaces_and_an_unclosed_write_stores_nothing(
    server: SftpServer,
) -> None:
    async with await _connect(server, "alice") as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/f", "wb") as f:
            await f.write(b"first version")
        async with sftp.open("/f", "wb") as f:
            await f.write(b"second")
        async with sftp.open("/f", "rb") as f:
            assert await f.read() == b"second"
        async with sftp.open("/f", "r+b") as f:  # a change inside the file: spooled whole
            await f.seek(3)
            await f.write(b"ON")
        async with sftp.open("/f", "rb") as f:
            assert await f.read() == b"secONd"
        f2 = await sftp.open("/never", "wb")
        await f2.write(b"x")
    async with await _connect(server, "alice") as conn, conn.start_sftp_client() as sftp:
        assert not await sftp.exists("/never")


async def test_no_escape_from_the_mapped_directory(server: SftpServer) -> None:
    async with await _connect(server, "sub") as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/../../in-pub", "wb") as f:
            await f.write(b"x")
        assert await sftp.realpath("../../..") == "/"
        assert await sftp.listdir("/..") == [".", "..", "in-pub"]
        assert await sftp.listdir("../../") == [".", "..", "in-pub"]
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.rmdir("/..")
    async with await _connect(server, "alice") as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/") == [".", ".."]  # private: nothing came through


async def test_a_read_only_login_reads_and_is_denied_every_change(server: SftpServer) -> None:
    async with (
        await _connect(server, "sub") as conn,
        conn.start_sftp_client() as sftp,
        sftp.open("/r", "wb") as f,
    ):
        await f.write(b"readable")
    async with await _connect(server, "reader") as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/r", "rb") as f:
            assert await f.read() == b"readable"
        assert (await sftp.stat("/r")).permissions & 0o222 == 0
        for attempt in (
            sftp.open("/w", "wb"),
            sftp.mkdir("/d"),
            sftp.remove("/r"),
            sftp.rename("/r", "/s"),
            sftp.utime("/r", (1, 1)),
        ):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await attempt


async def test_only_listed_keys_log_in(server: SftpServer) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(server, "alice", other)
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(server, "mallory")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            server.port,
            username="alice",
            password="x",
            client_keys=None,
            known_hosts=None,
        )


async def test_the_host_key_is_private_and_kept(server: SftpServer) -> None:
    path = server.host_key_path
    assert path.stat().st_mode & 0o777 == 0o600
