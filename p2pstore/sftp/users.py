"""The SFTP users file (docs/sftp.md, "The users file"), parsed without I/O.

One line per key, like OpenSSH's ``authorized_keys`` with two fields in front::

    # user   mapping             key type    key                    comment
    alice    private:/           ssh-ed25519 AAAAC3NzaC1lZDI1NTE5... alice@laptop
    family   ro:shared:/photos   ssh-ed25519 AAAAC3NzaC1lZDI1NTE5...
    guest    p2ps:dir:chk:...    ssh-ed25519 AAAAC3NzaC1lZDI1NTE5...

Invariants (checked by :func:`parse_users`, so a :class:`Users` is always valid):
- a user name is 1-32 characters of ``A-Z a-z 0-9 _ . -``, not starting with ``-``;
- a mapping is a drive path (``private:/``, ``shared:/a/b``), the same with ``ro:``
  in front (read-only), or a directory cap ``p2ps:dir:...`` (always read-only);
- a user may have several lines (several keys), all with the same mapping;
- a key is an OpenSSH public key asyncssh can read; only its public blob is kept.
The directory cap is a secret: :class:`Mapping`'s repr leaves it out, and so do
error messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncssh

from p2pstore.app.errors import AppError
from p2pstore.app.vpath import VPath, parse_vpath

from .errors import UsersFileError

USERS_FILE: Final = "sftp_users"
MAX_USERS_BYTES: Final = 1 << 20
DIRCAP_PREFIX: Final = "p2ps:dir:"
READ_ONLY_PREFIX: Final = "ro:"
_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where a user's ``/`` is: a drive path, or a directory cap (read-only)."""

    root: VPath | None
    dircap: str | None = field(default=None)
    read_only: bool = False

    def __post_init__(self) -> None:
        if (self.root is None) == (self.dircap is None):
            raise ValueError("a mapping is a drive path or a directory cap")
        if self.dircap is not None and not self.read_only:
            raise ValueError("a directory cap mapping is read-only")

    def __repr__(self) -> str:  # keep the cap out of logs
        where = "dircap" if self.root is None else str(self.root)
        return f"Mapping({where}{', read-only' if self.read_only else ''})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class User:
    name: str
    mapping: Mapping
    keys: frozenset[bytes]  # public key blobs (SSHKey.public_data)


Users = dict[str, User]


def parse_mapping(text: str) -> Mapping:
    """``private:/x``, ``ro:shared:/``, ``p2ps:dir:...``; ValueError saying what is wrong."""
    if text.startswith(DIRCAP_PREFIX):
        return Mapping(None, text, True)
    read_only = text.startswith(READ_ONLY_PREFIX)
    if read_only:
        text = text[len(READ_ONLY_PREFIX) :]
    head = text.partition(":")[0]
    if head not in ("private", "shared"):
        raise ValueError(
            "the mapping must be private:/PATH, shared:/PATH, ro:private:/PATH, "
            "ro:shared:/PATH or a directory cap p2ps:dir:..."
        )
    try:
        return Mapping(parse_vpath(text), None, read_only)
    except AppError as e:
        raise ValueError(e.message) from None


def parse_key(key_type: str, blob: str) -> bytes:
    """The public blob of an OpenSSH public key; ValueError if unreadable."""
    try:
        key = asyncssh.import_public_key(f"{key_type} {blob}")
    except (asyncssh.KeyImportError, ValueError) as e:
        raise ValueError(f"not a public key asyncssh can read: {e}") from None
    return bytes(key.public_data)


def parse_users(text: str, path: Path) -> Users:
    """Every user of ``text`` (the users file at ``path``, named in errors)."""
    users: Users = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 4)
        if len(fields) < 4:
            raise UsersFileError(path, number, "expected: user mapping key-type key [comment]")
        name, where, key_type, blob = fields[:4]
        if not _NAME.fullmatch(name):
            raise UsersFileError(
                path, number, f"{name[:40]!r} is not a user name (A-Z a-z 0-9 _ . -, 1-32)"
            )
        try:
            mapping = parse_mapping(where)
            key = parse_key(key_type, blob)
        except ValueError as e:
            raise UsersFileError(path, number, str(e)) from None
        old = users.get(name)
        if old is not None and old.mapping != mapping:
            raise UsersFileError(
                path, number, f"user {name} is mapped differently on an earlier line"
            )
        keys = (old.keys if old else frozenset()) | {key}
        users[name] = User(name, mapping, keys)
    return users


def read_users(path: Path) -> Users:
    """Read and parse the users file; a missing file means no users."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise UsersFileError(path, 0, f"cannot read: {e.strerror}") from None
    if len(raw) > MAX_USERS_BYTES:
        raise UsersFileError(path, 0, f"larger than {MAX_USERS_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsersFileError(path, 0, f"not UTF-8 text (byte {e.start})") from None
    return parse_users(text, path)
