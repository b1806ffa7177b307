"""Malformed HTTP input is logged once per source, at WARNING, without a traceback.

aiohttp logs every request it cannot parse as "Error handling request" with a full
traceback, at ERROR (DEBUG for some), on its ``aiohttp.server`` logger: a scanner or a
browser speaking TLS to the port fills the node's log (megabytes from a few
thousand connections) and reads like a node fault. :class:`BadInputLogFilter`
turns such a record into one line (``malformed HTTP request from HOST: reason``)
and lets at most one through per source and :data:`WINDOW` seconds; the count of
the ones it held back goes with the next line (docs/http-api.md, "Security").
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiohttp import http_exceptions

WINDOW: Final = 60.0  # seconds between two lines about one source
MAX_SOURCES: Final = 1024  # sources remembered (oldest forgotten first)
LOGGER: Final = "aiohttp.server"


class BadInputLogFilter(logging.Filter):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, http_exceptions.HttpProcessingError):
            return True  # not bad input: leave the record alone
        source = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        now = self.clock()
        last, held = self._last.get(source, (-WINDOW, 0))
        if now - last < WINDOW:
            self._last[source] = (last, held + 1)
            return False
        self._last[source] = (now, 0)
        self._last.move_to_end(source)
        while len(self._last) > MAX_SOURCES:
            self._last.popitem(last=False)
        reason = " ".join(str(exc.message).split())[:200]
        more = f" ({held} more since the last line)" if held else ""
        record.msg, record.args = "malformed HTTP request from %s: %s%s", (source, reason, more)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Add the filter to aiohttp's server logger (once per process)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(f, BadInputLogFilter) for f in logger.filters):
        logger.addFilter(BadInputLogFilter())
