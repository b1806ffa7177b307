"""``storage.put`` on a server: allocate, write and close of a whole small share as
one call (docs/storage.md). A caller whose peer lacks it uses
:func:`~p2pstore.storage.whole.put_in_steps`."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .errors import BadRequest, StorageError, TooLarge

if TYPE_CHECKING:
    from quic_transport.identity import NodeId

    from .results import ClosedShare
    from .server import StorageServer


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
