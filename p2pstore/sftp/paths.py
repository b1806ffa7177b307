"""Client paths to drive paths, sans-I/O (docs/sftp.md, "Paths").

A session sees its mapping's root as ``/``. A client path (bytes, absolute or
relative to ``/``) is decoded as UTF-8 and normalised: empty and ``.`` components
are dropped, ``..`` removes the component before it and, at ``/``, stays at ``/``.
So no path a client sends can name anything outside its root: the result is a
tuple of plain names that :func:`under` appends to the root, each name checked by
the drive's own rules (``app.vpath.check_name``).
"""

from __future__ import annotations

from p2pstore.app.vpath import MAX_DEPTH, MAX_PATH_CHARS, BadPath, VPath, check_name

from .errors import SftpRemoteError

Parts = tuple[str, ...]


def decode(raw: bytes) -> str:
    if len(raw) > MAX_PATH_CHARS:
        raise SftpRemoteError(f"a path is longer than {MAX_PATH_CHARS} bytes")
    if b"\x00" in raw:
        raise SftpRemoteError("a path contains a NUL byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SftpRemoteError("a path is not UTF-8 text") from None


def normalize(path: str) -> Parts:
    """The components of ``path`` below the session's ``/`` (see the module docstring)."""
    parts: list[str] = []
    for p in path.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return tuple(parts)


def client_path(raw: bytes) -> Parts:
    return normalize(decode(raw))


def show(parts: Parts) -> str:
    """The path as the client sees it (``realpath``'s answer)."""
    return "/" + "/".join(parts)


def under(root: VPath, parts: Parts) -> VPath:
    """``parts`` below ``root`` (BadPath if a name breaks the drive's rules)."""
    for p in parts:
        check_name(p)
    if len(root.parts) + len(parts) > MAX_DEPTH:
        raise BadPath(f"path is deeper than {MAX_DEPTH} levels")
    return VPath(root.drive, root.parts + parts)
