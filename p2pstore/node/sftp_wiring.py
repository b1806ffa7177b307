"""Starting the node's SFTP server when ``[sftp] enabled`` (docs/sftp.md).

The port, like ``[node] web_port`` (docs/node.md, "Ports"), cannot race: a port
given in ``[sftp] listen`` is the user's (taken: a config error, exit 78); with no
port, one is picked once below the kernel's ephemeral range and kept in
``state/sftp.json``, and picked again only if it is taken at a later start (one
log line says so). Files in the node directory: the host key
``private/sftp_host_key`` (created on first start, 0600), the users file
(``[sftp] users_file``), the kept modification times ``state/sftp_mtimes.json``,
and the spool of uploads in progress ``state/sftp-spool/``.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from pathlib import Path
from typing import Final

from p2pstore.app.contract import Application
from p2pstore.base.fsutil import write_text_atomic
from p2pstore.sftp.errors import SftpLocalError
from p2pstore.sftp.server import SftpServer

from .config import NodeConfig
from .errors import ConfigError
from .nodedir import NodeDir
from .ports import is_free, pick_port

STATE_FILE: Final = "sftp.json"
HOST_KEY_FILE: Final = "sftp_host_key"
log = logging.getLogger(__name__)


def _recorded_port(path: Path) -> int:
    try:
        port = json.loads(path.read_text()).get("port")
    except (OSError, ValueError, AttributeError):
        return 0
    return port if isinstance(port, int) and 0 < port < 65536 else 0


def sftp_port(config: NodeConfig, state_dir: Path) -> int:
    """The port to listen on (see the module docstring)."""
    listen = config.sftp.listen
    if listen.port:
        return listen.port
    path = state_dir / STATE_FILE
    old = _recorded_port(path)
    if old and is_free(socket.SOCK_STREAM, listen.host, old):
        return old
    new = pick_port(socket.SOCK_STREAM, listen.host)
    write_text_atomic(path, json.dumps({"port": new}) + "\n")
    if old:
        log.warning("SFTP port %d (picked earlier) is taken: now %d", old, new)
    return new


async def start_sftp(config: NodeConfig, nd: NodeDir, app: Application) -> SftpServer:
    """A started server; :class:`ConfigError` naming the key or file on failure."""
    host = config.sftp.listen.host
    port = sftp_port(config, nd.state_dir)
    server = SftpServer(
        app,
        host=host,
        port=port,
        host_key_path=nd.private_dir / HOST_KEY_FILE,
        users_path=config.node_dir / config.sftp.users_file,
        spool_dir=nd.state_dir / "sftp-spool",
        mtimes_path=nd.state_dir / "sftp_mtimes.json",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # one line per login is ours
    try:
        await server.start()
    except SftpLocalError as e:
        await server.close()
        raise ConfigError(config.path, "[sftp] users_file", str(e)) from None
    except OSError as e:
        await server.close()
        if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        wrapped = f"[{host}]" if ":" in host else host
        raise ConfigError(
            config.path,
            "[sftp] listen",
            f"cannot listen on {wrapped}:{port}: {e.strerror or e}",
        ) from None
    return server
