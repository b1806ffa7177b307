"""Invitations: joining a friend's grid with one code (docs/bootstrap.md,
"Invitations").

``p2pstore invite [--write] [--expires 7d] NAME`` on a node (the vdrive node, for
``--write``) records an invitation in ``private/invitations.json`` and prints a code:

    p2ps-invite:<inviter node ID>@<host>:<port>/<secret, 16 bytes base32>

``p2pstore create-node DIR --join CODE`` (or ``p2pstore join CODE`` for an existing
node) dials the inviter, which must prove the node ID in the code (the QUIC
handshake), and calls ``invite.redeem`` with the secret; the caller's own node ID
is authenticated the same way. The inviter answers with its bootstrap list (its
seed line, the ``p2ps-vdrive`` line and the signed ``p2ps-params`` line) and, for a
``--write`` invitation, adds the caller's node ID to the shared drive's writers.

Invariants:
- A code works once, before it expires; a wrong, used, expired or revoked code
  gets a clear error and grants nothing. Only a hash of the secret is stored.
- The writers an invitation added are listed (``p2pstore writers``) and removed
  (``p2pstore revoke NAME``) by name; the vdrive node consults the file at every
  change, so a revocation takes effect at the next write.
- Read-modify-write of the file happens under an exclusive ``flock`` (the CLI and
  the running node are different processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from p2pstore.base.fsutil import read_bounded, write_text_atomic
from quic_transport import RpcError
from quic_transport.identity import IdentityError, NodeId, b32decode, b32encode

from .address import HostPort, format_host_port, parse_host_port
from .errors import AddressError, NodeLocalError

PREFIX = "p2ps-invite:"
METHOD = "invite.redeem"
SECRET_BYTES = 16
MAX_NAME = 64
MAX_FILE = 4 << 20
FILE_NAME = "invitations.json"

log = logging.getLogger(__name__)


class InviteError(NodeLocalError):
    """A bad code, or an invitation that cannot be used (``code`` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class InviteCode:
    inviter: NodeId
    address: HostPort
    secret: bytes

    def to_text(self) -> str:
        addr = format_host_port(self.address.host, self.address.port)
        return f"{PREFIX}{self.inviter.b32}@{addr}/{b32encode(self.secret)}"

    @classmethod
    def parse(cls, text: str) -> InviteCode:
        raw = "".join(text.split())  # chat programs wrap long words
        if not raw.lower().startswith(PREFIX):
            raise InviteError("bad-invite", f"an invitation code starts with {PREFIX!r}")
        body = raw[len(PREFIX) :]
        node, at, rest = body.partition("@")
        addr, slash, secret = rest.rpartition("/")
        if not (at and slash and node and addr and secret):
            raise InviteError(
                "bad-invite", f"expected {PREFIX}<node-id>@<host>:<port>/<secret>; is it cut off?"
            )
        try:
            return cls(
                NodeId.from_b32(node.lower()),
                parse_host_port(addr, allow_port_zero=False),
                b32decode(secret.lower(), expected_len=SECRET_BYTES, what="invitation secret"),
            )
        except (IdentityError, AddressError) as e:
            raise InviteError("bad-invite", f"this invitation code looks damaged: {e}") from None


@dataclass(frozen=True, slots=True)
class Invitation:
    name: str
    secret_hash: str  # b32 of SHA-256 of the secret
    write: bool
    created: float
    expires: float
    used_by: str | None = None  # node ID (b32) that redeemed it
    used_at: float | None = None
    revoked: bool = False

    @property
    def grants_write(self) -> bool:
        return self.write and self.used_by is not None and not self.revoked


def _hash(secret: bytes) -> str:
    return b32encode(hashlib.sha256(b"p2ps-invite-v1\0" + secret).digest())


def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise InviteError("bad-name", f"a name is 1 to {MAX_NAME} printable characters")
    return name


class InviteBook:
    """``private/invitations.json`` of one node."""

    def __init__(self, private_dir: Path) -> None:
        self.path = private_dir / FILE_NAME
        self._lock_path = private_dir / (FILE_NAME + ".lock")
        self._cache: tuple[float, list[Invitation]] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[Invitation]]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            items = self._read()
            yield items
            text = json.dumps([asdict(i) for i in items], indent=1) + "\n"
            write_text_atomic(self.path, text, mode=0o600)
        finally:
            os.close(fd)

    def _read(self) -> list[Invitation]:
        try:
            doc = json.loads(read_bounded(self.path, MAX_FILE))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise InviteError("bad-file", f"{self.path}: unreadable ({e})") from None
        try:
            return [Invitation(**item) for item in doc]
        except TypeError as e:
            raise InviteError("bad-file", f"{self.path}: not an invitation list ({e})") from None

    def all(self) -> list[Invitation]:
        return self._read()

    def create(self, name: str, *, write: bool, ttl: float, now: float) -> bytes:
        name = check_name(name)
        secret = secrets.token_bytes(SECRET_BYTES)
        with self._locked() as items:
            if any(i.name == name and not i.revoked for i in items):
                raise InviteError("name-taken", f"an invitation named {name!r} exists already")
            items.append(Invitation(name, _hash(secret), write, now, now + ttl))
        return secret

    def redeem(self, secret: bytes, caller: NodeId, now: float) -> Invitation:
        """Mark the invitation used by ``caller``; raises InviteError if it cannot be."""
        digest = _hash(secret)
        with self._locked() as items:
            at = next((n for n, i in enumerate(items) if i.secret_hash == digest), None)
            if at is None:
                raise InviteError("invite-unknown", "no such invitation (check the code)")
            inv = items[at]
            if inv.revoked:
                raise InviteError("invite-revoked", f"invitation {inv.name!r} was revoked")
            if inv.used_by is not None:
                raise InviteError(
                    "invite-used", f"invitation {inv.name!r} was already used; ask for a new one"
                )
            if now > inv.expires:
                raise InviteError(
                    "invite-expired", f"invitation {inv.name!r} expired; ask for a new one"
                )
            items[at] = replace(inv, used_by=caller.b32, used_at=now)
            return items[at]

    def revoke(self, name: str) -> Invitation:
        with self._locked() as items:
            at = next((n for n, i in enumerate(items) if i.name == name and not i.revoked), None)
            if at is None:
                raise InviteError("not-found", f"no invitation or writer named {name!r}")
            items[at] = replace(items[at], revoked=True)
            return items[at]

    def writers(self) -> frozenset[NodeId]:
        """Node IDs write invitations added (cached until the file changes)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return frozenset()
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, self._read())
        return frozenset(
            NodeId.from_b32(i.used_by) for i in self._cache[1] if i.grants_write and i.used_by
        )


def describe(inv: Invitation, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    if inv.revoked:
        state = "revoked"
    elif inv.used_by:
        state = "used"
    elif now > inv.expires:
        state = "expired"
    else:
        state = "open"
    return {
        "name": inv.name,
        "write": inv.write,
        "state": state,
        "node_id": inv.used_by,
        "created": inv.created,
        "expires": inv.expires,
    }


def register_invites(registry: Any, private_dir: Path, bootstrap_text: Callable[[], str]) -> None:
    """Serve ``invite.redeem`` on ``registry`` (an Endpoint): body ``{"secret":
    bytes}``; reply ``{"name", "write", "bootstrap"}`` or an RpcError with the
    refusal's code (``invite-unknown``, ``invite-used``, ``invite-expired``,
    ``invite-revoked``, ``bad-request``)."""
    book = InviteBook(private_dir)

    async def handler(ctx: Any, body: Any) -> dict[str, Any]:
        if (
            not isinstance(body, dict)
            or set(body) != {"secret"}
            or not isinstance(body["secret"], bytes)
        ):
            raise RpcError("bad-request", "expected {secret: bytes}")
        caller: NodeId = ctx.peer_id
        try:
            inv = await asyncio.to_thread(book.redeem, body["secret"], caller, time.time())
        except InviteError as e:
            log.info("invitation from %s refused: %s", caller.short(), e.code)
            raise RpcError(e.code, e.message) from None
        log.info("invitation %r used by %s (write: %s)", inv.name, caller.short(), inv.write)
        return {"name": inv.name, "write": inv.write, "bootstrap": bootstrap_text()}

    registry.register(METHOD, handler)
