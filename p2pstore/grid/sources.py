"""Sources an uploader reads: re-openable (convergent mode and helpers read twice)
or one-pass, over memory, a path or an open file descriptor."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable

from .errors import FileShrank

#: A source that can be read again from the start (convergent mode reads twice).
Reopenable = Callable[[], AsyncIterable[bytes]]


async def aiter_bytes(data: bytes, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """An async iterable over an in-memory buffer (tests, small files)."""
    view = memoryview(data)
    for i in range(0, len(view), chunk_size):
        yield bytes(view[i : i + chunk_size])
        await asyncio.sleep(0)


def bytes_source(data: bytes, chunk_size: int = 1 << 20) -> Reopenable:
    """A re-openable source over an in-memory buffer."""
    return lambda: aiter_bytes(data, chunk_size)


def file_source(path: str, chunk_size: int = 1 << 20) -> Reopenable:
    """A re-openable source reading a file in a worker thread, ``chunk_size`` at a time."""

    async def chunks() -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while True:
                data = await asyncio.to_thread(f.read, chunk_size)
                if not data:
                    return
                yield data
        finally:
            with contextlib.suppress(OSError):
                f.close()

    return chunks


def fd_source(fd: int, size: int, chunk_size: int = 1 << 20) -> Reopenable:
    """A re-openable source over exactly ``size`` bytes of the open file ``fd`` from
    offset 0 (``pread``: each pass reads the same file, whatever renames happen
    meanwhile). A file that ends early raises :class:`FileShrank`."""

    async def chunks() -> AsyncIterator[bytes]:
        offset = 0
        while offset < size:
            data = await asyncio.to_thread(os.pread, fd, min(chunk_size, size - offset), offset)
            if not data:
                raise FileShrank(f"the file shrank while it was read (at {offset} of {size} bytes)")
            offset += len(data)
            yield data

    return chunks
