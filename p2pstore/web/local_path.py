"""Uploads of a file the node reads in place: ``?local_path=/abs/path`` on ``POST
/api/v1/file`` and ``PUT /api/v1/vdrive/file`` with an empty body (docs/http-api.md,
"Local files"). The CLI on the node's machine uses it for regular files: no HTTP
body, no spool, the file read straight from the disk (twice for a convergent
key).

Who may: every API write needs the token, which only the node's user can read
(``private/api.token``), so the caller can already read what the node can; the
node opens the file with its own rights and says so when it may not. The path
must be absolute; the last component must not be a symbolic link (``O_NOFOLLOW``:
the CLI resolves links first); the file must be regular (opened without blocking,
so a FIFO is refused, not waited on); with ``local_id=dev:ino:size:mtime_ns`` it
must be the file the client saw. The node reads the open
file (``pread``), so renaming it meanwhile changes nothing; a file whose size or
mtime changed by the end of the upload is refused (``409 file-changed``) and
nothing is linked.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat

from aiohttp import web

from p2pstore.app.contract import UploadMode, UploadResult
from p2pstore.app.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge

from .context import BACKEND, LIMITS
from .transfers import Transfer
from .uploads import stored_into, while_connected

QUERY = "local_path"


def _open(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading (never blocking: a FIFO gives 400, not a hung node)."""
    if not path.startswith("/") or "\0" in path:
        raise BadRequest("local_path must be an absolute path", code="bad-local-path")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"no such local file: {path}", code="local-file-not-found") from None
    except PermissionError:
        raise Forbidden(
            f"the node may not read {path} (it reads local files with its own user's "
            "rights); send the file's bytes instead",
            code="local-path-refused",
        ) from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadRequest(
                f"{path} is a symbolic link; give the file it points to", code="bad-local-path"
            ) from None
        raise BadRequest(f"cannot open {path}: {e.strerror}", code="bad-local-path") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadRequest(
            f"{path} is not a regular file (a directory, device or pipe)", code="bad-local-path"
        )
    return fd, st


def _same_file(st: os.stat_result, local_id: str | None, path: str) -> None:
    """``local_id`` (``dev:ino:size:mtime_ns``, what the client saw) must be this file:
    a node in another filesystem namespace (a container, a private /tmp) may see
    another file at the same path."""
    if local_id is None:
        return
    if local_id != f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}":
        raise BadRequest(
            f"the node sees another file at {path} than the client (or it changed); "
            "send the file's bytes instead",
            code="local-path-mismatch",
        )


async def upload_local(
    request: web.Request, path: str, mode: UploadMode, transfer: Transfer
) -> UploadResult:
    """Upload the local file ``path`` for ``request`` (whose body must be empty)."""
    if request.content_length or (request.body_exists and request.content_length is None):
        raise BadRequest("a local_path upload has an empty body", code="bad-local-path")
    limits = request.app[LIMITS]
    fd, before = await asyncio.to_thread(_open, path)
    try:
        _same_file(before, request.query.get("local_id"), path)
        if limits.max_upload_bytes is not None and before.st_size > limits.max_upload_bytes:
            raise TooLarge(f"uploads are limited to {limits.max_upload_bytes} bytes")
        transfer.size = before.st_size
        result = await while_connected(
            request,
            request.app[BACKEND].upload_file(
                fd, before.st_size, mode=mode, progress=stored_into(transfer)
            ),
        )
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise Conflict(
            f"{path} changed while it was uploaded; nothing was linked (upload it again "
            "when it is not being written)",
            code="file-changed",
        )
    transfer.done = before.st_size
    return result
