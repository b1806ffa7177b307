"""A whole share in the three calls a server without ``storage.put`` takes.

``storage.put`` (docs/storage.md; the server side is :mod:`.put`) allocates,
writes and closes a small share in one call. A peer running an older version
answers it ``no-such-method``, and a :class:`~p2pstore.storage.api.StorageAPI` need
not offer it at all: :func:`put_in_steps` does the same with allocate, write and
close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import StorageAPI
    from .results import ClosedShare


#: how long the abort after a failed step may take (a silent peer: its uploads are
#: aborted anyway when its connection closes)
ABORT_TIMEOUT = 5.0


async def put_in_steps(
    api: StorageAPI, storage_index: bytes, shnum: int, data: bytes, lease: int | None = None
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
