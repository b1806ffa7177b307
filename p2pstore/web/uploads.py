"""Upload bodies and the life of an upload on the HTTP side: reading the body under
the idle timeout and the size limit, following an upload a client tagged
(``?transfer=TAG``, ``GET /api/v1/transfer/TAG``), and cancelling it when its client
goes (docs/http-api.md, "Following an upload or a download" and "Cancel").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeVar

import aiohttp
from aiohttp import web

from p2pstore.app.errors import BadRequest, NotFound, TooLarge

from .context import LIMITS, TRANSFERS, token_required
from .errors import ClientGone, RequestTimeout
from .transfers import Transfer

T = TypeVar("T")


async def body_chunks(request: web.Request, transfer: Transfer) -> AsyncIterator[bytes]:
    limits = request.app[LIMITS]
    expected = request.content_length
    received = 0
    while True:
        try:
            async with asyncio.timeout(limits.idle_timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            raise RequestTimeout(
                f"the upload stalled (no data for {limits.idle_timeout:g} s)",
                code="upload-timeout",
            ) from None
        except (aiohttp.ClientError, ConnectionError, aiohttp.http_exceptions.HttpProcessingError):
            raise BadRequest("the upload was interrupted", code="upload-aborted") from None
        if not chunk:
            break
        received += len(chunk)
        transfer.done = received
        if limits.max_upload_bytes is not None and received > limits.max_upload_bytes:
            raise TooLarge(f"uploads are limited to {limits.max_upload_bytes} bytes")
        yield bytes(chunk)
    if expected is not None and received != expected:
        raise BadRequest(
            f"the upload ended after {received} of {expected} bytes", code="upload-aborted"
        )


#: how often an upload that is past its body looks whether its client is still there
CLIENT_WATCH_SECONDS: Final = 0.2


async def while_connected(request: web.Request, aw: Awaitable[T]) -> T:
    """Await ``aw`` (an upload) but cancel it as soon as the client has gone: a put the
    client gave up on (the shell's Ctrl-C, a killed CLI) stores and links nothing
    (docs/http-api.md, "Cancel"). aiohttp does not cancel handlers on disconnect."""
    task = asyncio.ensure_future(aw)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=CLIENT_WATCH_SECONDS)
            if done:
                return task.result()
            if request.transport is None:
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


_TAG = re.compile(r"[0-9a-f]{8,32}")


def tag_of(request: web.Request) -> str | None:
    """``?transfer=TAG`` (8-32 lowercase hex): how a client follows its own upload or
    download."""
    tag = request.query.get("transfer")
    return None if tag is None else _checked(tag)


def _checked(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise BadRequest("transfer must be 8-32 lowercase hex digits", code="bad-transfer")
    return tag


def stored_into(transfer: Transfer) -> Callable[[int], None]:
    def progress(stored: int) -> None:
        transfer.stored = stored

    return progress


@token_required
async def transfer_status(request: web.Request) -> web.Response:
    """``GET /api/v1/transfer/{tag}``: one tagged upload's bytes received and stored."""
    doc = request.app[TRANSFERS].by_tag(_checked(request.match_info["tag"]))
    if doc is None:
        raise NotFound("no such transfer")
    return web.json_response(doc)
