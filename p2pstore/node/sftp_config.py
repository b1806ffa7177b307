"""The ``[sftp]`` section of the node config (docs/sftp.md, "Enabling it").

``enabled`` (default false); ``listen``: ``host`` or ``host:port``, default
``127.0.0.1`` with no port, meaning "pick a free port once and keep it"
(``node/sftp_wiring.py``); ``users_file``: the users file, relative to the node
directory. Reading the users file itself belongs to ``p2pstore.sftp.users``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .address import HostPort, canonical_host, parse_host_port
from .config_table import Section
from .errors import AddressError

SFTP_DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class SftpSection:
    enabled: bool = False
    listen: HostPort = field(default_factory=lambda: HostPort(SFTP_DEFAULT_HOST, 0))
    users_file: str = "sftp_users"


def _listen(value: Any) -> HostPort:
    if not isinstance(value, str):
        raise ValueError(f'expected a string like "127.0.0.1" or "127.0.0.1:2222", got {value!r}')
    text = value.strip()
    if text.startswith("[") or text.count(":") == 1:
        return parse_host_port(text)
    try:
        return HostPort(canonical_host(text.strip("[]")), 0)
    except (AddressError, ValueError) as e:
        raise ValueError(f"{value!r}: {e}") from None


def _users_file(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ValueError("expected a file name (relative to the node directory)")
    return value


def sftp_section(s: Section) -> SftpSection:
    d = SftpSection()
    out = SftpSection(
        enabled=s.get("enabled", bool, d.enabled),
        listen=s.convert("listen", d.listen, _listen),
        users_file=s.convert("users_file", d.users_file, _users_file),
    )
    s.finish()
    return out
