"""Bootstrap-list operations on a node directory, for the CLI: show this node's own
line, merge pasted lines into its list, and read a ``--bootstrap`` argument.

Invariant: the node's list file is only ever replaced atomically, with its comments
and order kept (:func:`~p2pstore.node.bootstrap.merge_text`), and only after every
given line validated.
"""

from __future__ import annotations

from pathlib import Path

from p2pstore.base.fsutil import write_text_atomic
from quic_transport.identity import IdentityError

from .advertise import own_bootstrap_text, own_seed
from .bootstrap import (
    HEADER,
    SEED_KEYWORD,
    BootstrapList,
    MergeResult,
    load_bootstrap_file,
    merge_text,
    parse_bootstrap,
    read_bootstrap_text,
)
from .config import load_config
from .errors import BootstrapError, BootstrapErrors, DaemonError, NodeDirError
from .nodedir import NodeDir
from .pidfile import probe
from .status_file import read_status_file


def read_bootstrap_arg(value: str, *, what: str = "--bootstrap") -> BootstrapList:
    """``--bootstrap`` takes a file path or the literal list text (pasted lines)."""
    path = Path(value)
    looks_like_text = "\n" in value or value.lstrip().lower().startswith(("p2ps-", "#"))
    if not looks_like_text:
        try:
            is_file = path.is_file()
        except OSError:
            is_file = False
        if is_file:
            return load_bootstrap_file(path)
        raise BootstrapErrors(
            [
                BootstrapError(
                    what,
                    0,
                    f"{value!r} is neither an existing file nor bootstrap text "
                    f"(lines like '{SEED_KEYWORD} <node-id> <host>:<port>')",
                )
            ]
        )
    return parse_bootstrap(value, source=f"{what} text")


def own_line(root: Path) -> str:
    """The text others need to join through this node (its seed line, + vdrive line)."""
    nd = NodeDir(root.absolute())
    nd.require_node()
    config = load_config(nd.config_path)
    try:
        key = nd.load_key()
    except IdentityError as e:
        raise NodeDirError(nd.key_path, str(e)) from None
    port = config.node.listen.port
    if probe(nd.pid_path).running:
        doc = read_status_file(nd)
        if doc is not None and isinstance(doc.get("listen_port"), int):
            port = doc["listen_port"]
    if port == 0:
        raise DaemonError(
            f"{config.path}: [node] listen has port 0 (chosen at each start) and the node "
            "is not running; start it first, or set a fixed port"
        )
    try:
        own_list = load_bootstrap_file(config.bootstrap_path)
    except BootstrapErrors:
        own_list = BootstrapList()
    return own_bootstrap_text(own_seed(config, key, port), own_list, config, key)


def add_lines(root: Path, text: str, *, source: str, replace_vdrive: bool = False) -> MergeResult:
    """Validate ``text`` and merge it into the node's bootstrap list file."""
    nd = NodeDir(root.absolute())
    nd.require_node()
    config = load_config(nd.config_path)
    incoming = parse_bootstrap(text, source=source)
    path = config.bootstrap_path
    original = read_bootstrap_text(path) if path.exists() else HEADER
    new_text, result = merge_text(
        original, incoming, source=str(path), replace_vdrive=replace_vdrive
    )
    if result.changed:
        write_text_atomic(path, new_text, mode=0o600)  # may hold the drive's read secret
    return result
