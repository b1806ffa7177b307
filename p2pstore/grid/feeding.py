"""The upload's encoder thread and what feeds it (docs/grid.md, "Upload", step 5).

An upload encodes in one worker thread, which keeps its jobs in order. ``encoded``
feeds it a source's chunks with :data:`ENCODE_AHEAD` more queued behind the one
awaited, so the thread encodes the next segment while the event loop sends this
one. A local file (:class:`~p2pstore.grid.sources.FileChunks`) is read in that
thread too, a segment at a time: a read handed to a thread of its own waits for a
turn of the busy event loop before the encoder can have it.

Invariants: feeds happen in source order; after ``encoded``'s generator is closed
no job reads or feeds except one already running, and the file is closed in the
thread after it; ``encoder_thread`` never waits for its thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from p2pstore.immutable import EncodedSegment, Encoder

from .sources import FileChunks

#: Pieces queued in the encoder's thread behind the one awaited (docs/grid.md,
#: "Upload", step 5: 0 was 12 % slower, 2 no faster than 1 and held 10 MiB more).
ENCODE_AHEAD = 1

#: What one job of the encoder gives back: the bytes it fed and the segments completed.
Fed = tuple[int, list[EncodedSegment]]


@contextlib.contextmanager
def encoder_thread() -> Iterator[ThreadPoolExecutor]:
    """The upload's one encoder thread. Left without waiting for it: after a cancel or
    a failure a job may still run there (a read of a slow disk, an encode), and the
    event loop must not wait for it; what is queued after it still runs."""
    ex = ThreadPoolExecutor(1, thread_name_prefix="p2ps-encode")
    try:
        yield ex
    finally:
        ex.shutdown(wait=False)


def encoded(
    chunks: AsyncIterable[bytes], enc: Encoder, seg_size: int, ex: ThreadPoolExecutor
) -> AsyncGenerator[Fed, None]:
    """``enc.feed`` over ``chunks``, as (bytes fed, segments completed), in order. Up to
    :data:`ENCODE_AHEAD` more pieces wait in the encoder's one thread (which keeps their
    order), so it encodes the next piece while the caller sends this one's blocks. A
    local file is read in that thread too, a segment at a time: a read then never waits
    for a turn of the event loop, which is busy sending. Close the generator
    (``contextlib.aclosing``) inside ``encoder_thread``'s block: closing queues the
    file's close on ``ex``."""
    if isinstance(chunks, FileChunks):
        return _encoded_file(chunks, enc, seg_size, ex)
    return _encoded_stream(chunks, enc, seg_size, ex)


async def _encoded_file(
    chunks: FileChunks, enc: Encoder, seg_size: int, ex: ThreadPoolExecutor
) -> AsyncGenerator[Fed, None]:
    local = chunks.blocking(seg_size)
    stop = threading.Event()
    # each job's thread future (cancelled at once in ``finally``) and the loop's future
    # over it, made at once: a job that ends while the caller is busy then settles
    # its loop future in the background, and awaiting it costs no extra turn
    pending: deque[tuple[concurrent.futures.Future[Fed], asyncio.Future[Fed]]] = deque()

    def read_and_feed() -> Fed:
        chunk = None if stop.is_set() else next(local, None)
        return (0, []) if chunk is None else (len(chunk), enc.feed(chunk))

    try:
        while True:
            while len(pending) <= ENCODE_AHEAD:
                job = ex.submit(read_and_feed)
                pending.append((job, asyncio.wrap_future(job)))
            n, segs = await pending.popleft()[1]
            if not n:
                return
            yield n, segs
    finally:
        stop.set()
        for job, fut in pending:
            job.cancel()
            fut.cancel()
        ex.submit(local.close)  # in the thread, after a read that may still run


async def _encoded_stream(
    chunks: AsyncIterable[bytes], enc: Encoder, seg_size: int, ex: ThreadPoolExecutor
) -> AsyncGenerator[Fed, None]:
    loop = asyncio.get_running_loop()
    pending: deque[asyncio.Future[Fed]] = deque()

    def feed(piece: memoryview) -> Fed:
        return len(piece), enc.feed(piece)

    try:
        async for chunk in chunks:
            view = memoryview(chunk)
            for i in range(0, len(view), seg_size):
                pending.append(loop.run_in_executor(ex, feed, view[i : i + seg_size]))
                if len(pending) > ENCODE_AHEAD:
                    yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for fut in pending:
            fut.cancel()
