"""A whole share in one call (``storage.put``), and in the three calls a server
without it takes.

:func:`put_whole` is the server side of ``storage.put`` (docs/storage.md):
allocate, write and close of a small share as one call. A peer running an older
version answers it ``no-such-method``, and a
:class:`~p2pstore.storage.api.StorageAPI` need not offer it at all:
:func:`put_in_steps` does the same with allocate, write and close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

from .errors import BadRequest, StorageError, TooLarge

if TYPE_CHECKING:
    from quic_transport.identity import NodeId

    from .results import ClosedShare
    from .server import StorageServer


class Steps(Protocol):
    """The calls of a :class:`~p2pstore.storage.api.StorageAPI` that
    :func:`put_in_steps` makes."""

    async def allocate(
        self, storage_index: bytes, shnum: int, size: int | None = None, lease: int | None = None
    ) -> object: ...

    async def write(self, storage_index: bytes, shnum: int, offset: int, data: bytes) -> None: ...

    async def close_share(self, storage_index: bytes, shnum: int) -> ClosedShare: ...

    async def abort(self, storage_index: bytes, shnum: int) -> None: ...


#: how long the abort after a failed step may take (a silent peer: its uploads are
#: aborted anyway when its connection closes)
ABORT_TIMEOUT = 5.0


async def put_in_steps(
    api: Steps, storage_index: bytes, shnum: int, data: bytes, lease: int | None = None
) -> ClosedShare:
    """What ``storage.put`` does (a whole share), in the three calls a server or client
    without it takes: allocate, write, close. When a step fails the upload is aborted
    (a cancelled caller aborts it itself), so nothing is left in progress."""
    await api.allocate(storage_index, shnum, len(data), lease)
    try:
        await api.write(storage_index, shnum, 0, data)
        return await api.close_share(storage_index, shnum)
    except Exception:
        # a failure here means it is gone already, or the peer with it (its uploads
        # are aborted when its connection closes)
        with contextlib.suppress(Exception):  # bounded: the first error is the one to tell
            await asyncio.wait_for(api.abort(storage_index, shnum), ABORT_TIMEOUT)
        raise


def put_whole(
    server: StorageServer,
    storage_index: bytes,
    shnum: int,
    owner: NodeId,
    data: bytes,
    lease: float | None = None,
) -> ClosedShare:
    """``storage.put`` on ``server``: its allocate, write and close of a whole share in
    one call (at most ``max_write`` bytes): one round trip for a small file's share
    instead of four. The same checks, the same errors; nothing is left in progress
    when it fails. Runs in a worker thread, as the three calls do."""
    if not isinstance(data, bytes) or not data:
        raise BadRequest("data must be non-empty bytes")
    if len(data) > server.config.max_write:
        raise TooLarge(f"share of {len(data)} bytes exceeds one write ({server.config.max_write})")
    server.allocate(storage_index, shnum, owner, len(data), lease)
    try:
        server.write(storage_index, shnum, owner, 0, data)
        return server.close_share(storage_index, shnum, owner)
    except BaseException:
        with contextlib.suppress(StorageError):  # close_share discarded it already
            server.abort(storage_index, shnum, owner)
        raise
