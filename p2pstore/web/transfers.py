"""Uploads and downloads in progress through the API, for ``GET /api/v1/status``
(``transfers``) and the web UI. Records hold sizes and byte counts only — never
caps or paths — and are dropped when the request ends, however it ends."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

TransferKind = Literal["upload", "download"]


@dataclass
class Transfer:
    id: int
    kind: TransferKind
    size: int | None
    started: float
    done: int = 0


class Transfers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._ids = itertools.count(1)
        self._active: dict[int, Transfer] = {}

    @contextlib.contextmanager
    def track(self, kind: TransferKind, size: int | None) -> Iterator[Transfer]:
        t = Transfer(next(self._ids), kind, size, self.clock())
        self._active[t.id] = t
        try:
            yield t
        finally:
            del self._active[t.id]

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            {
                "id": t.id,
                "kind": t.kind,
                "size": t.size,
                "done": t.done,
                "seconds": round(now - t.started, 3),
            }
            for t in self._active.values()
        ]
