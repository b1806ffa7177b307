"""Sources an uploader reads: re-openable (convergent mode and helpers read twice)
or one-pass, over memory, a path or an open file descriptor."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator

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


class FileChunks:
    """One pass over a local file (``path``, opened for the pass; or the open ``fd``,
    of exactly ``size`` bytes), ``chunk_size`` at a time: read asynchronously (each
    read in a worker thread) or, through :meth:`blocking`, in the caller's own thread.
    An uploader uses the second in its encoder's thread, so a read never waits for a
    turn of a busy event loop (docs/grid.md, "Upload", step 5)."""

    def __init__(
        self, *, path: str | None = None, fd: int = -1, size: int | None = None, chunk_size: int
    ) -> None:
        self._path, self._fd, self._size, self._chunk = path, fd, size, chunk_size

    def blocking(self, chunk_size: int | None = None) -> Generator[bytes, None, None]:
        """The chunks (of ``chunk_size`` if given), each read when asked for (``pread``,
        in the caller's thread). A file given with its size that ends early raises
        :class:`FileShrank`."""
        chunk = chunk_size or self._chunk
        if self._path is None:
            yield from self._pass(self._fd, chunk)
            return
        with open(self._path, "rb") as f:
            yield from self._pass(f.fileno(), chunk)

    def _pass(self, fd: int, chunk: int) -> Generator[bytes, None, None]:
        offset, end = 0, self._size
        while end is None or offset < end:
            data = os.pread(fd, chunk if end is None else min(chunk, end - offset), offset)
            if not data:
                if end is not None:
                    raise FileShrank(
                        f"the file shrank while it was read (at {offset} of {end} bytes)"
                    )
                return
            offset += len(data)
            yield data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        it = self.blocking()
        try:
            while (data := await asyncio.to_thread(next, it, None)) is not None:
                yield data
        finally:
            # a cancelled read may still run in its thread (ValueError): the generator
            # is then closed when it is collected
            with contextlib.suppress(ValueError, OSError):
                it.close()


def file_source(path: str, chunk_size: int = 1 << 20) -> Callable[[], FileChunks]:
    """A re-openable source over the file at ``path``, opened anew for each pass."""
    return lambda: FileChunks(path=path, chunk_size=chunk_size)


def fd_source(fd: int, size: int, chunk_size: int = 1 << 20) -> Callable[[], FileChunks]:
    """A re-openable source over exactly ``size`` bytes of the open file ``fd`` from
    offset 0 (``pread``: each pass reads the same file, whatever renames happen
    meanwhile). A file that ends early raises :class:`FileShrank`."""
    return lambda: FileChunks(fd=fd, size=size, chunk_size=chunk_size)
