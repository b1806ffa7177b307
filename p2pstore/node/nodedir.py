"""The node directory: its layout, its creation, and loading its secrets.

Layout (``docs/node.md``)::

    DIR/p2pstore.toml            config (commented TOML)
    DIR/bootstrap.txt            bootstrap list (seeds to join through)
    DIR/bootstrap-self.txt       this node's own line (written at start by introducers)
    DIR/private/                 mode 0700
        node.key                 Ed25519 node key, 0600
        convergence.secret       32 random bytes, base32, 0600
        api.token                local HTTP API token, 0600
    DIR/storage/                 shares held for the grid
    DIR/logs/node.log            rotated log; logs/daemon.out: a daemon's raw stdout/stderr
    DIR/run/node.pid, status.json   present while the node runs
    DIR/state/known_peers.json   peers met, to rejoin without seeds

Invariants:
- :func:`create_node_dir` never overwrites: it refuses an existing node or a
  non-empty directory, and builds the node in a temporary sibling directory that
  is renamed into place only when complete, so a failure leaves nothing behind.
- Secret files are created 0600 inside a 0700 directory and are never logged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from p2pstore.base.fsutil import write_text_atomic
from quic_transport.identity import IdentityError, NodeKey, b32decode, b32encode

from .address import HostPort
from .errors import NodeDirError, SecretFileError
from .files import CONFIG_FILE
from .ports import pick_port, record_auto
from .secret_files import create_secret_file, read_secret_file

if TYPE_CHECKING:
    from .bootstrap import BootstrapList

CONVERGENCE_PREFIX = "p2pstore-convergence-v1:"
CONVERGENCE_BYTES = 32
API_TOKEN_BYTES = 32


#: the node directory when no DIR and no ``--node`` is given
ENV_NODE: Final = "P2PSTORE_NODE"


def default_node_dir(
    env: Mapping[str, str] | None = None, platform: str | None = None, home: Path | None = None
) -> Path:
    """The platform's default node directory: XDG data dir on Linux and BSDs
    (``$XDG_DATA_HOME/p2pstore/node``, default ``~/.local/share/p2pstore/node``),
    ``~/Library/Application Support/p2pstore/node`` on macOS,
    ``%LOCALAPPDATA%\\p2pstore\\node`` on Windows."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home = Path.home() if home is None else home
    if platform == "darwin":
        return home / "Library" / "Application Support" / "p2pstore" / "node"
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / "p2pstore" / "node"
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "p2pstore" / "node"


def resolve_node_dir(arg: str | None, env: Mapping[str, str] | None = None) -> Path:
    """``--node DIR``, else ``$P2PSTORE_NODE``, else :func:`default_node_dir`."""
    env = os.environ if env is None else env
    if arg:
        return Path(arg).expanduser().absolute()
    if env.get(ENV_NODE):
        return Path(env[ENV_NODE]).expanduser().absolute()
    return default_node_dir(env)


@dataclass(frozen=True, slots=True)
class NodeDir:
    """Paths inside one node directory (no I/O on construction)."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    @property
    def key_path(self) -> Path:
        return self.private_dir / "node.key"

    @property
    def convergence_path(self) -> Path:
        return self.private_dir / "convergence.secret"

    @property
    def api_token_path(self) -> Path:
        return self.private_dir / "api.token"

    @property
    def default_bootstrap_path(self) -> Path:
        return self.root / "bootstrap.txt"

    @property
    def bootstrap_self_path(self) -> Path:
        return self.root / "bootstrap-self.txt"

    @property
    def storage_dir(self) -> Path:
        return self.root / "storage"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "node.log"

    @property
    def daemon_out_path(self) -> Path:
        return self.logs_dir / "daemon.out"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "node.pid"

    @property
    def status_path(self) -> Path:
        return self.run_dir / "status.json"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def known_peers_path(self) -> Path:
        return self.state_dir / "known_peers.json"

    def require_node(self) -> None:
        """Raise :class:`NodeDirError` unless this looks like a node directory."""
        if not self.root.is_dir():
            raise NodeDirError(self.root, "no such directory (create it with p2pstore create-node)")
        if not self.config_path.is_file():
            raise NodeDirError(self.root, f"not a p2pstore node directory (no {CONFIG_FILE})")

    def ensure_runtime_dirs(self) -> None:
        """Create the directories a running node writes to (they may have been removed)."""
        for d in (self.storage_dir, self.logs_dir, self.run_dir, self.state_dir):
            d.mkdir(exist_ok=True)

    def load_key(self) -> NodeKey:
        return NodeKey.load(self.key_path)

    def load_convergence_secret(self) -> bytes:
        return load_convergence_secret(self.convergence_path)

    def load_api_token(self) -> str:
        return load_api_token(self.api_token_path)


def load_convergence_secret(path: Path) -> bytes:
    text = read_secret_file(path, what="convergence secret").strip()
    if not text.startswith(CONVERGENCE_PREFIX):
        raise SecretFileError(path, f"not a convergence secret (missing {CONVERGENCE_PREFIX!r})")
    try:
        return b32decode(
            text[len(CONVERGENCE_PREFIX) :], expected_len=CONVERGENCE_BYTES, what="secret"
        )
    except IdentityError as e:
        raise SecretFileError(path, str(e)) from None


def load_api_token(path: Path) -> str:
    token = read_secret_file(path, what="API token").strip()
    try:
        b32decode(token, expected_len=API_TOKEN_BYTES, what="API token")
    except IdentityError as e:
        raise SecretFileError(path, str(e)) from None
    return token


@dataclass(frozen=True, slots=True)
class CreateOptions:
    """What ``create-node`` / ``create-introducer`` were asked for (None: defaults)."""

    introducer: bool = False
    nickname: str | None = None
    listen: HostPort | None = None
    listen_host: str = "0.0.0.0"  # with listen None: the host, the port picked here
    web_port: int | None = None
    storage_quota: int | None = None  # None: unlimited
    storage_enabled: bool | None = None  # None: True for nodes, False for introducers
    bootstrap: BootstrapList = field(default_factory=lambda: _empty_bootstrap())


def _empty_bootstrap() -> BootstrapList:
    from .bootstrap import BootstrapList

    return BootstrapList()


def _check_target(root: Path) -> bool:
    """True if ``root`` exists (and is an empty directory); raise if it is unusable."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise NodeDirError(root, "exists and is not a directory; refusing to overwrite")
    if (root / CONFIG_FILE).exists():
        raise NodeDirError(root, "is already a p2pstore node; refusing to overwrite it")
    if any(root.iterdir()):
        raise NodeDirError(root, "exists and is not empty; refusing to overwrite")
    return True


def create_node_dir(root: Path, options: CreateOptions) -> tuple[NodeDir, NodeKey]:
    """Create a complete node directory at ``root``; returns it and the new key."""
    # the config and bootstrap modules load here, not for every reader of a node dir
    from .bootstrap import HEADER, VdriveKey
    from .config import NodeSection, StorageSection
    from .config_template import render_config

    root = root.absolute()
    existed = _check_target(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    listen = options.listen or HostPort(options.listen_host, 0)
    if options.listen is None:  # below the ephemeral range; moved at start if taken
        listen = HostPort(listen.host, pick_port(socket.SOCK_DGRAM, listen.host))
    web_port = options.web_port
    if web_port is None:
        web_port = pick_port(socket.SOCK_STREAM, "127.0.0.1")
    nickname = options.nickname or root.name[:64] or "p2pstore-node"
    storage_enabled = (
        options.storage_enabled if options.storage_enabled is not None else not options.introducer
    )
    node = NodeSection(
        nickname=nickname, listen=listen, web_port=web_port, introducer=options.introducer
    )
    storage = StorageSection(enabled=storage_enabled, quota=options.storage_quota)
    config_text = render_config(node, storage)

    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.creating-", dir=root.parent))
    try:
        nd = NodeDir(tmp)
        nd.private_dir.mkdir(mode=0o700)
        os.chmod(nd.private_dir, 0o700)  # mkdir's mode is filtered by the umask
        key = NodeKey.generate()
        key.save(nd.key_path)
        create_secret_file(
            nd.convergence_path,
            CONVERGENCE_PREFIX + b32encode(secrets.token_bytes(CONVERGENCE_BYTES)) + "\n",
        )
        create_secret_file(
            nd.api_token_path, b32encode(secrets.token_bytes(API_TOKEN_BYTES)) + "\n"
        )
        nd.config_path.write_text(config_text, encoding="utf-8")
        bootstrap = options.bootstrap
        if options.introducer and bootstrap.vdrive is None:
            # An introducer serves the shared drive by default (docs/vdrive.md): its
            # own list names its key and the drive's read secret, so `bootstrap show`
            # prints everything a newcomer needs.
            from p2pstore.node.vdrive_wiring import SHARED_SECRET_FILE, load_or_create_secret

            secret = load_or_create_secret(nd.private_dir / SHARED_SECRET_FILE)
            bootstrap = replace(bootstrap, vdrive=VdriveKey(key.public_key, "vdrive", secret))
        has_entries = bool(bootstrap.seeds) or bootstrap.vdrive is not None
        bootstrap_text = bootstrap.to_text(header=True) if has_entries else HEADER
        # 0600: an introducer's list holds the shared drive's read secret
        write_text_atomic(nd.default_bootstrap_path, bootstrap_text, mode=0o600, durable=False)
        nd.ensure_runtime_dirs()
        record_auto(nd.state_dir, listen=options.listen is None, web=options.web_port is None)
        os.chmod(tmp, 0o755 & ~_umask())
        if existed:
            _check_target(root)  # still empty?
            root.rmdir()
        os.rename(tmp, root)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return NodeDir(root), key


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def protect_bootstrap_files(paths: list[Path]) -> list[Path]:
    """Make bootstrap lists (which may hold the shared drive's read secret) private
    to their owner: files readable by group or others get mode 0600. Returns the
    files changed (node directories made before this rule; the runner logs them)."""
    fixed = []
    for path in paths:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o077:
            try:
                os.chmod(path, mode & 0o600)
            except OSError:
                continue
            fixed.append(path)
    return fixed
