"""A one-line transfer progress bar for the CLI: bytes, rate, ETA, on stderr.

Shown only when the stream is a terminal and the transfer has run longer than
``delay`` (1 s), redrawn at most ten times a second, and finished with a newline
so later output starts on a clean line. :func:`format_progress` is the pure part.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float) -> str:
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_progress(done: int, total: int | None, elapsed: float) -> str:
    """E.g. ``12.0 MiB / 40.0 MiB  30%  4.0 MiB/s  ETA 7s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [human_bytes(done) if total is None else f"{human_bytes(done)} / {human_bytes(total)}"]
    if total:
        parts.append(f"{min(100, done * 100 // total):3d}%")
    parts.append(f"{human_bytes(rate)}/s")
    if total is not None and rate > 0 and done < total:
        parts.append(f"ETA {_duration((total - done) / rate)}")
    elif total is not None and done >= total:
        parts.append(f"in {_duration(elapsed)}")
    return "  ".join(parts)


class Progress:
    """Call :meth:`update` with the bytes done so far, :meth:`finish` at the end."""

    def __init__(
        self,
        total: int | None,
        stream: TextIO,
        *,
        enabled: bool | None = None,
        delay: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        label: str = "",
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.delay = delay
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._drawn_at: float | None = None
        self._width = 0

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = self.clock()
        if now - self.start < self.delay:
            return
        if self._drawn_at is not None and now - self._drawn_at < 0.1:
            return
        self._draw(now)

    def _draw(self, now: float) -> None:
        line = self.label + format_progress(self.done, self.total, now - self.start)
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
        self._drawn_at = now

    def finish(self) -> None:
        if self.enabled and self._drawn_at is not None:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()


class UploadProgress:
    """Both passes of an upload, each on its own line: ``sending`` (the body to the
    node) and, for a convergent upload, ``storing`` (the node encodes and places only
    once it has the whole body, since the key is a hash of all of it). Never 100%
    before the work is done. ``sent`` and ``stored`` may be called from two threads."""

    def __init__(
        self,
        total: int | None,
        stream: TextIO,
        *,
        two_passes: bool,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.two_passes = two_passes
        self._lock = threading.Lock()
        self._stream, self._enabled, self._clock = stream, enabled, clock
        self.current = self._make("sending  " if two_passes else "")
        self._storing = False

    def _make(self, label: str) -> Progress:
        return Progress(
            self.total, self._stream, enabled=self._enabled, clock=self._clock, label=label
        )

    def sent(self, done: int) -> None:
        with self._lock:
            if not self._storing:
                self.current.update(done)

    def stored(self, done: int) -> None:
        with self._lock:
            if not self.two_passes or done <= 0:
                return
            if not self._storing:
                self.current.update(self.total or self.current.done)
                self.current.finish()
                self.current = self._make("storing  ")
                self._storing = True
            self.current.update(done)

    def finish(self) -> None:
        with self._lock:
            self.current.finish()
