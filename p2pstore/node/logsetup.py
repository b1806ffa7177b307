"""Logging for a running node: a rotating file ``logs/node.log`` and, in the
foreground, stderr.

Invariants:
- Times are UTC ISO 8601; one line per record.
- A redacting filter replaces the text form of every secret the runner knows
  (node key seed, convergence secret, API token) with ``[REDACTED]`` before any
  handler sees the record. Code must not log secrets in the first place; the
  filter is a second line of defence.
- :func:`setup_logging` returns a function that removes exactly the handlers it
  added (the runner is also used in-process by tests).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .config import LoggingSection

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "[REDACTED]")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(
    log_path: Path, settings: LoggingSection, *, secrets: Iterable[str], to_stderr: bool
) -> Callable[[], None]:
    root = logging.getLogger()
    formatter = _UtcFormatter(FORMAT)
    redact = RedactSecrets(secrets)
    handlers: list[logging.Handler] = []
    file_handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=settings.max_bytes, backupCount=settings.backup_count, encoding="utf-8"
    )
    handlers.append(file_handler)
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(formatter)
        h.addFilter(redact)
        root.addHandler(h)
    old_level = root.level
    root.setLevel(settings.level)

    def teardown() -> None:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)

    return teardown
