"""Uploads and downloads through the API and the web UI, for ``GET /api/v1/status``
(``transfers``: in progress; ``recent_transfers``: the last few finished) and the
web UI's front page.

Records hold sizes, byte counts and at most a file *name* (the vdrive entry name
or the ``?filename=`` the client chose) — never caps or paths. Active records are
dropped when the request ends, however it ends; finished ones are kept in a
bounded ring (:data:`RECENT_MAX`) with their outcome:

- ``done``: the block ended normally and every byte (of a known size) moved;
- ``incomplete``: it ended normally with fewer bytes than the known size (a
  download whose client went away);
- ``failed``: it raised (the error's text is not kept: it may name a path).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

TransferKind = Literal["upload", "download", "check"]
RECENT_MAX: Final = 20
MAX_NAME_CHARS: Final = 255


@dataclass
class Transfer:
    id: int
    kind: TransferKind
    size: int | None
    started: float
    done: int = 0
    name: str | None = None
    ended: float | None = None
    outcome: str = "running"
    #: uploads: plaintext bytes encoded and sent to storage peers (a convergent upload
    #: receives the whole body first, then stores: ``done`` then ``stored``)
    stored: int = 0
    #: a client-chosen token (``?transfer=``) by which it follows its own transfer
    tag: str | None = None
    #: why a download broke off after its headers were sent (an application error's
    #: message: no caps or keys); shown only to the client that tagged it
    reason: str | None = None
    #: shown in the status lists; an unlisted one (a check) only to its tag's client
    listed: bool = True

    def to_json(self, now: float) -> dict[str, Any]:
        end = self.ended if self.ended is not None else now
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "size": self.size,
            "done": self.done,
            "stored": self.stored,
            "seconds": round(end - self.started, 3),
            "status": self.outcome,
        }


class Transfers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._ids = itertools.count(1)
        self._active: dict[int, Transfer] = {}
        self._recent: collections.deque[Transfer] = collections.deque(maxlen=RECENT_MAX)
        self._unlisted: collections.deque[Transfer] = collections.deque(maxlen=RECENT_MAX)

    @contextlib.contextmanager
    def track(
        self,
        kind: TransferKind,
        size: int | None,
        *,
        name: str | None = None,
        tag: str | None = None,
        listed: bool = True,
    ) -> Iterator[Transfer]:
        """Track one transfer while the block runs; an unlisted one is left out of
        :meth:`snapshot` and :meth:`recent` (a check, followed only by its tag)."""
        if name is not None:
            name = name[:MAX_NAME_CHARS]
        t = Transfer(next(self._ids), kind, size, self.clock(), name=name, tag=tag, listed=listed)
        self._active[t.id] = t
        try:
            yield t
        except BaseException:
            t.outcome = "failed"
            raise
        else:
            complete = t.size is None or t.done >= t.size
            t.outcome = "done" if complete else "incomplete"
        finally:
            del self._active[t.id]
            t.ended = self.clock()
            (self._recent if listed else self._unlisted).append(t)

    def snapshot(self) -> list[dict[str, Any]]:
        """Transfers in progress, oldest first."""
        now = self.clock()
        return [t.to_json(now) for t in self._active.values() if t.listed]

    def by_tag(self, tag: str) -> dict[str, Any] | None:
        """The transfer (running, else recently finished) a client tagged ``tag``,
        with the reason it broke off, if it did."""
        now = self.clock()
        for t in [*self._active.values(), *reversed(self._recent), *reversed(self._unlisted)]:
            if t.tag == tag:
                return {**t.to_json(now), "reason": t.reason}
        return None

    def recent(self) -> list[dict[str, Any]]:
        """The last :data:`RECENT_MAX` finished transfers, newest first."""
        now = self.clock()
        return [t.to_json(now) for t in reversed(self._recent)]
