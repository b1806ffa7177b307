"""Virtual-drive paths as the API and CLI spell them, sans-I/O.

Text form: ``shared:/a/b``, ``private:/a/b``; a path without a drive prefix
(``/a/b`` or ``a/b``) is on the shared drive. ``/`` (or ``shared:``,
``private:/``) is the drive's root. A live directory is a drive of its own,
named by its cap: ``p2ps:dir:mut:.../a/b`` (write cap) or ``p2ps:dir:mut-ro:.../a/b``
(read cap); the cap alone is its root (docs/mutable.md, "Live directories").

Invariants (checked by :func:`parse_vpath`, so a :class:`VPath` is always valid):
- components are non-empty, not ``.`` or ``..``, contain no ``/``, NUL or other
  control characters, and are at most :data:`MAX_NAME_BYTES` bytes of UTF-8;
- repeated and trailing slashes are collapsed;
- at most :data:`MAX_DEPTH` components and :data:`MAX_PATH_CHARS` characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from p2pstore.mutable import MutableCapError, ReadCap, WriteCap, parse_mutable_cap
from quic_transport.identity import b32encode

from .errors import BadRequest

#: ``"shared"``, ``"private"``, or the cap text of a live directory
Drive = str
DRIVES: Final[tuple[Drive, ...]] = ("shared", "private")
LIVE_PREFIX: Final = "p2ps:dir:mut"
MAX_NAME_BYTES: Final = 255
MAX_DEPTH: Final = 64
MAX_PATH_CHARS: Final = 4096


class BadPath(BadRequest):
    default_code = "bad-path"


@dataclass(frozen=True, slots=True)
class VPath:
    drive: Drive
    parts: tuple[str, ...]

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    @property
    def parent(self) -> VPath:
        if not self.parts:
            raise BadPath("the root of a drive has no parent")
        return VPath(self.drive, self.parts[:-1])

    def child(self, name: str) -> VPath:
        check_name(name)
        return VPath(self.drive, (*self.parts, name))

    def is_within(self, other: VPath) -> bool:
        """True if this path is ``other`` or below it."""
        return self.drive == other.drive and self.parts[: len(other.parts)] == other.parts

    @property
    def is_live(self) -> bool:
        """True if the drive is a live directory (named by its cap)."""
        return self.drive.startswith(LIVE_PREFIX)

    @property
    def shown(self) -> str:
        """The path for messages, logs and screens: a live directory's cap is replaced
        by its :func:`drive_label`."""
        if not self.is_live:
            return str(self)
        return f"{drive_label(self.drive)}:/" + "/".join(self.parts)

    def __str__(self) -> str:
        if self.is_live:
            return f"{self.drive}/" + "/".join(self.parts)
        return f"{self.drive}:/" + "/".join(self.parts)


def drive_label(drive: Drive) -> str:
    """``shared``, ``private``, or ``live:abcdefgh`` (write cap) / ``live-ro:abcdefgh``
    (read cap) for a live directory: 8 characters of its public key, never its cap."""
    if not drive.startswith(LIVE_PREFIX):
        return drive
    cap = parse_mutable_cap(drive)  # a VPath's live drive is a valid cap
    kinds = {WriteCap: "live", ReadCap: "live-ro"}
    kind = kinds.get(type(cap), "live-verify")  # a verify cap: the node refuses it
    return f"{kind}:{b32encode(cap.public_key)[:8]}"


def check_name(name: str) -> None:
    if not name:
        raise BadPath("empty path component")
    if name in (".", ".."):
        raise BadPath(f"path component {name!r} is not allowed (paths are absolute)")
    if "/" in name:
        raise BadPath(f"a name cannot contain '/': {name!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadPath(f"a name cannot contain control characters: {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadPath(f"a name is longer than {MAX_NAME_BYTES} bytes: {name[:40]!r}...")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPath(f"a name is not valid Unicode text: {name!r}") from None


def parse_vpath(text: str) -> VPath:
    """Parse ``[shared:|private:]/a/b``; raises :class:`BadPath` saying what is wrong."""
    if not isinstance(text, str):
        raise BadPath(f"a path must be a string, got {type(text).__name__}")
    if len(text) > MAX_PATH_CHARS:
        raise BadPath(f"path is longer than {MAX_PATH_CHARS} characters")
    drive: Drive = "shared"
    rest = text
    head, sep, tail = text.partition(":")
    if text.startswith(LIVE_PREFIX):
        drive, _, rest = text.partition("/")
        try:
            cap = parse_mutable_cap(drive)
        except MutableCapError as e:
            raise BadPath(f"a live directory path starts with its cap: {e}") from None
        if not cap.directory:
            raise BadPath("the cap of a mutable file is not a live directory")
        drive = cap.to_string()
    elif sep and "/" not in head:
        if head not in DRIVES:
            raise BadPath(f"unknown drive {head!r} (use shared:/path or private:/path)")
        drive = "shared" if head == "shared" else "private"
        rest = tail
    parts = tuple(p for p in rest.split("/") if p)
    if len(parts) > MAX_DEPTH:
        raise BadPath(f"path is deeper than {MAX_DEPTH} levels")
    for p in parts:
        check_name(p)
    return VPath(drive, parts)
