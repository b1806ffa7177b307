"""Malformed HTTP input: one WARNING line per source, no traceback, rate-limited
(p2pstore/web/bad_input_log.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import http_exceptions

from p2pstore.testing.memory_app import MemoryApplication
from p2pstore.web.bad_input_log import LOGGER, WINDOW, BadInputLogFilter
from p2pstore.web.server import ApiServer


def _record(source: str) -> logging.LogRecord:
    exc = http_exceptions.BadHttpMessage("Invalid header value char")
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        (source,),
        (type(exc), exc, None),
    )


def test_one_line_per_source_and_window_with_the_count_held_back() -> None:
    now = [0.0]
    f = BadInputLogFilter(clock=lambda: now[0])
    first = _record("203.0.113.9")
    assert f.filter(first)
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert first.getMessage() == (
        "malformed HTTP request from 203.0.113.9: Invalid header value char"
    )
    assert not f.filter(_record("203.0.113.9"))  # held back
    assert not f.filter(_record("203.0.113.9"))
    assert f.filter(_record("198.51.100.1"))  # another source has its own window
    now[0] += WINDOW
    later = _record("203.0.113.9")
    assert f.filter(later) and later.getMessage().endswith("(2 more since the last line)")
    other = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom", (), None)
    assert f.filter(other) and other.levelno == logging.ERROR  # not bad input: untouched


async def test_a_stream_of_bad_requests_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    # the filter is per process: start from a fresh one, so malformed requests that
    # other tests in this worker sent from 127.0.0.1 within the window do not count
    logger = logging.getLogger(LOGGER)
    for old in [f for f in logger.filters if isinstance(f, BadInputLogFilter)]:
        logger.removeFilter(old)
    server = ApiServer(MemoryApplication(), "tok")
    await server.start()
    try:
        host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
        with caplog.at_level(logging.INFO, logger="aiohttp.server"):
            for _ in range(5):
                r, w = await asyncio.open_connection(host, int(port))
                w.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: \x00\r\n\r\n")
                await w.drain()
                assert (await r.read(100)).startswith(b"HTTP/1.0 400")
                w.close()
    finally:
        await server.close()
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].exc_info is None and "malformed HTTP request from 127.0.0.1" in (
        lines[0].getMessage()
    )
