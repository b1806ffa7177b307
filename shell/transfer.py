"""Running a put/get so that Ctrl-C cancels it cleanly and the shell lives on.

The transfer runs in a worker thread; the shell's thread only waits and redraws
the progress line (at most 10 times a second, from half a second in). Ctrl-C
there (KeyboardInterrupt in the main thread, where Python delivers SIGINT) sets a
cancel flag that the worker checks on every chunk it reads or writes, and on each
progress callback; the worker then raises :class:`Cancelled` out of the client
call, which closes the connection (so the node stores or serves nothing more), and
the caller's cleanup runs in the worker (partial local files removed).

If Ctrl-C comes after the last byte was sent (the worker only waits for the
node's answer), the transfer completes and the shell says so rather than
claiming nothing was kept.

Invariants: :meth:`TransferRunner.run` returns only after the worker finished, or
after ``abandon_after`` seconds past a cancel if the worker is stuck in a blocking
call (it then ends on its own at the socket timeout; it is a daemon thread and
keeps nothing: its cleanup still runs); a second Ctrl-C while cancelling is
ignored; the progress line is always ended before returning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import IO, Protocol, TypeVar

from .errors import Cancelled

T = TypeVar("T")


class CancelFlag:
    """Set by the shell's thread, checked by the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.done = 0  # bytes so far (written by the worker, read for the progress line)
        self._hooks: list[Callable[[], None]] = []

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (in the shell's thread) when the transfer is cancelled, e.g. to
        cut the connection a worker is blocked on."""
        self._hooks.append(hook)

    def cancel(self) -> None:
        self._event.set()
        for hook in self._hooks:
            hook()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")

    def progress(self, done: int) -> None:
        self.done = done
        self.check()


class CancellableReader:
    """A file-like ``read`` that raises :class:`Cancelled` once the flag is set
    (checked before and after each read, so a read that was blocked when Ctrl-C
    came is not sent on)."""

    def __init__(self, source: IO[bytes], flag: CancelFlag) -> None:
        self.source = source
        self.flag = flag

    def read(self, n: int = -1) -> bytes:
        self.flag.check()
        data = self.source.read(n)
        self.flag.check()
        return data


class CancellableWriter:
    def __init__(self, sink: IO[bytes], flag: CancelFlag) -> None:
        self.sink = sink
        self.flag = flag

    def write(self, data: bytes) -> int:
        self.flag.check()
        return self.sink.write(data)


class ProgressSink(Protocol):
    def progress(self, text: str) -> None:
        """Redraw the one progress line in place."""

    def progress_done(self) -> None:
        """End the progress line (if one was drawn)."""

    def line(self, text: str) -> None: ...


Render = Callable[[int, float], str]  # (done, elapsed) -> line


class TransferRunner:
    """Runs ``work(flag)`` in a worker thread, drawing ``render(done, elapsed)``."""

    def __init__(
        self,
        out: ProgressSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        delay: float = 0.5,
        interval: float = 0.1,
        abandon_after: float = 5.0,
    ) -> None:
        self.out = out
        self.clock = clock
        self.delay = delay
        self.interval = interval
        self.abandon_after = abandon_after

    def run(self, work: Callable[[CancelFlag], T], render: Render) -> T:
        flag = CancelFlag()
        box: dict[str, object] = {}

        def target() -> None:
            try:
                box["result"] = work(flag)
            except BaseException as e:  # handed to the shell's thread below
                box["error"] = e

        worker = threading.Thread(target=target, name="p2pstore-shell-transfer", daemon=True)
        start = self.clock()
        worker.start()
        drawn = False
        try:
            while worker.is_alive():
                worker.join(self.interval)
                elapsed = self.clock() - start
                if worker.is_alive() and elapsed >= self.delay:
                    self.out.progress(render(flag.done, elapsed))
                    drawn = True
        except KeyboardInterrupt:
            flag.cancel()
            self._wait_cancelled(worker)
            if drawn:
                self.out.progress_done()
            if worker.is_alive() or "result" not in box:
                raise Cancelled("cancelled: nothing was kept") from None
            # Ctrl-C came after the last byte went: the transfer completed; say so.
            self.out.line("(Ctrl-C came too late: the transfer had already completed)")
            return box["result"]  # type: ignore[return-value]
        if drawn:
            self.out.progress(render(flag.done, self.clock() - start))
            self.out.progress_done()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["result"]  # type: ignore[return-value]

    def _wait_cancelled(self, worker: threading.Thread) -> None:
        deadline = self.clock() + self.abandon_after
        while worker.is_alive() and self.clock() < deadline:
            try:
                worker.join(self.interval)
            except KeyboardInterrupt:
                continue  # already cancelling
        if worker.is_alive():
            self.out.line("(the transfer is stuck in a blocking call; it ends in the background)")
