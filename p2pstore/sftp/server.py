"""The SFTP server of a node: host key, logins by public key only, listening
(docs/sftp.md, "Security").

:class:`SftpServer` is the one I/O owner of the SSH side: ``start()`` reads the
users file (a bad file raises :class:`~.errors.UsersFileError`), loads or creates
the host key, binds (or raises ``OSError``); ``close()`` stops listening and ends
the sessions, and is safe after a failed or no start.

Invariants:
- Only public-key logins of users in the users file; password and
  keyboard-interactive logins are never offered; no shell, exec or forwarding.
- The users file is read again when it changes (checked at each login); if the
  new text is bad, the last good users stay and one error is logged.
- The host key file is created once, mode 0600, and never logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import asyncssh

from p2pstore.app.contract import Application
from p2pstore.base.fsutil import write_text_atomic

from .errors import SftpLocalError, UsersFileError
from .handler import SessionContext, SftpHandler
from .mtimes import MtimeBook
from .users import Mapping, Users, read_users

HOST_KEY_TYPE: Final = "ssh-ed25519"
LOGIN_TIMEOUT: Final = 30.0
log = logging.getLogger(__name__)


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's key, created on first use (ed25519, mode 0600)."""
    if not path.exists():
        key = asyncssh.generate_private_key(HOST_KEY_TYPE)
        write_text_atomic(path, key.export_private_key().decode(), mode=0o600)
        log.info("sftp: created the host key %s", path)
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as e:
        raise SftpLocalError(f"{path}: cannot read the SFTP host key: {e}") from None


class UsersBook:
    """The users file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.users: Users = {}

    def _stamp_now(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def load(self) -> None:
        """Read the file now; raises UsersFileError."""
        stamp = self._stamp_now()
        self.users = read_users(self.path)
        self._stamp = stamp

    def refresh(self) -> None:
        stamp = self._stamp_now()
        if stamp == self._stamp:
            return
        try:
            self.load()
        except UsersFileError as e:
            self._stamp = stamp  # say it once per change
            log.error("sftp: %s (the previous users stay)", e)
            return
        log.info("sftp: %s changed: %d users", self.path, len(self.users))

    def mapping_of(self, name: str) -> Mapping | None:
        user = self.users.get(name)
        return user.mapping if user is not None else None


class _Auth(asyncssh.SSHServer):
    """Per connection: public keys of the users file, nothing else."""

    def __init__(self, users: UsersBook) -> None:
        self.users = users
        self.peer = "?"
        self.username = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    def begin_auth(self, username: str) -> bool:
        self.username = username
        self.users.refresh()
        return True  # always ask for a key (an unknown name fails like a wrong key)

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self.users.users.get(username)
        return user is not None and bytes(key.public_data) in user.keys

    def auth_completed(self) -> None:
        mapping = self.users.mapping_of(self.username)
        log.info("sftp: %s logged in from %s (%s)", self.username, self.peer, mapping)


class SftpServer:
    def __init__(
        self,
        app: Application,
        *,
        host: str,
        port: int,
        host_key_path: Path,
        users_path: Path,
        spool_dir: Path,
        mtimes_path: Path | None,
    ) -> None:
        self.app = app
        self.host = host
        self._port = port
        self.host_key_path = host_key_path
        self.users = UsersBook(users_path)
        self.spool_dir = spool_dir
        self.mtimes_path = mtimes_path
        self._server: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SFTP server is not started")
        return int(self._server.get_port())

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self.users.load()
        key = load_host_key(self.host_key_path)
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in self.spool_dir.glob("up-*"):  # left by a node that was killed
            stale.unlink(missing_ok=True)
        context = SessionContext(
            self.app, MtimeBook(self.mtimes_path), self.spool_dir, self.users.mapping_of
        )
        self._server = await asyncssh.listen(
            self.host,
            self._port,
            server_factory=lambda: _Auth(self.users),
            server_host_keys=[key],
            sftp_factory=lambda chan: SftpHandler(chan, context),
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=LOGIN_TIMEOUT,
            reuse_address=True,
        )
        log.info(
            "SFTP listening on %s (%d users in %s)",
            self.address,
            len(self.users.users),
            self.users.path,
        )

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
