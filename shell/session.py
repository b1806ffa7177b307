"""The shell's state and its connection to the node, without any terminal code.

:class:`Connection` holds one :class:`~p2pstore.api_client.NodeClient`, made on first
use and dropped whenever the node cannot be reached, so the next command finds the
node again (a restarted node may have a new port: the client re-reads
``run/status.json``). :class:`ShellState` is where the user is: the current drive,
each drive's current directory (each drive remembers its own), the previous
directory for ``cd -``, and the local directory for ``lcd``/``put``/``get``.
:class:`ListingCache` keeps remote listings for completion a few seconds (clock
injected), bounded in entries, and is cleared by every write.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from p2pstore.api_client import ClientError, NodeUnreachable, TransferError
from p2pstore.app.vpath import DRIVES, Drive, VPath

from .paths import root_of


class Api(Protocol):
    """The part of :class:`p2pstore.api_client.NodeClient` the shell uses."""

    url: str

    def ls(self, path: str) -> dict[str, Any]: ...
    def stat(self, path: str) -> dict[str, Any]: ...
    def mkdir(
        self, path: str, *, parents: bool = ..., op_id: str | None = ...
    ) -> dict[str, Any]: ...
    def link(
        self, path: str, cap: str, *, replace: bool = ..., op_id: str | None = ...
    ) -> dict[str, Any]: ...
    def unlink(
        self, path: str, *, recursive: bool = ..., op_id: str | None = ...
    ) -> dict[str, Any]: ...
    def rename(
        self, src: str, dst: str, *, replace: bool = ..., op_id: str | None = ...
    ) -> dict[str, Any]: ...
    def put_path(
        self,
        source: IO[bytes] | str,
        path: str,
        *,
        size: int | None = ...,
        mode: str = ...,
        replace: bool = ...,
        progress: Callable[[int], None] | None = ...,
        stored: Callable[[int], None] | None = ...,
        op_id: str | None = ...,
    ) -> dict[str, Any]: ...
    def get_path(
        self, path: str, sink: IO[bytes], *, progress: Callable[[int], None] | None = ...
    ) -> int: ...
    def put_mutable(
        self,
        source: IO[bytes],
        *,
        write_cap: str | None = ...,
        size: int | None = ...,
        expected_sequence: int | None = ...,
        directory: bool = ...,
        progress: Callable[[int], None] | None = ...,
        stored: Callable[[int], None] | None = ...,
    ) -> dict[str, Any]: ...
    def get(
        self, cap: str, sink: IO[bytes], *, progress: Callable[[int], None] | None = ...
    ) -> int: ...
    def info(self, cap: str) -> dict[str, Any]: ...
    def check(self, cap: str, *, verify: bool = ..., repair: bool = ...) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def peers(self) -> list[dict[str, Any]]: ...
    def abort(self) -> None: ...
    def bootstrap(self) -> dict[str, Any]: ...
    def pin(self, cap: str, label: str = ...) -> dict[str, Any]: ...
    def unpin(self, cap: str) -> dict[str, Any]: ...
    def pins(self) -> list[dict[str, Any]]: ...
    def outcome(self, drive: str, op_id: str) -> dict[str, Any]: ...
    def make_dir(self, entries: list[dict[str, Any]]) -> dict[str, Any]: ...
    def features(self) -> set[str]: ...
    def put(
        self,
        source: IO[bytes],
        *,
        size: int | None = ...,
        mode: str = ...,
        progress: Callable[[int], None] | None = ...,
        stored: Callable[[int], None] | None = ...,
        name: str | None = ...,
    ) -> dict[str, Any]: ...


class Connection:
    """A lazily made client; :meth:`drop` it when the node went away."""

    def __init__(self, factory: Callable[[], Api], name: str, node_dir: Path | None = None) -> None:
        self._factory = factory
        self._client: Api | None = None
        self.name = name  # shown in the prompt: the node's nickname once known
        self.node_dir = node_dir  # where the backup database lives (backup)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def client(self) -> Api:
        if self._client is None:
            client = self._factory()
            try:
                nickname = client.status().get("nickname")
            except ClientError:
                nickname = None  # the call that follows reports the problem
            if isinstance(nickname, str) and nickname.strip():
                self.name = nickname.strip()[:40]
            self._client = client
        return self._client

    def drop(self) -> None:
        self._client = None

    def note_failure(self, e: BaseException) -> None:
        """Forget the client after a failure that means the node is gone or moved."""
        if isinstance(e, NodeUnreachable | TransferError):
            self.drop()


@dataclass
class ShellState:
    local_cwd: Path
    drive: Drive = "shared"
    cwds: dict[Drive, VPath] = field(default_factory=lambda: {d: root_of(d) for d in DRIVES})
    previous: VPath | None = None

    @property
    def cwd(self) -> VPath:
        return self.cwds[self.drive]

    def go(self, path: VPath) -> None:
        """Make ``path`` (a directory) current, switching drive if it names another."""
        self.previous = self.cwd
        self.drive = path.drive
        self.cwds[path.drive] = path

    def switch(self, drive: Drive) -> None:
        if drive != self.drive:
            self.previous = self.cwd
            self.drive = drive


Entries = list[Mapping[str, Any]]


class ListingCache:
    """Directory listings for completion: ``ttl`` seconds, at most ``max_dirs``.
    Thread-safe: completion runs in prompt_toolkit's completion thread."""

    def __init__(
        self, ttl: float = 5.0, max_dirs: int = 64, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_dirs = max_dirs
        self.clock = clock
        self._items: OrderedDict[VPath, tuple[float, Entries]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: VPath) -> Entries | None:
        with self._lock:
            hit = self._items.get(path)
            if hit is None:
                return None
            at, entries = hit
            if self.clock() - at > self.ttl:
                del self._items[path]
                return None
            return entries

    def put(self, path: VPath, entries: Entries) -> None:
        with self._lock:
            self._items[path] = (self.clock(), entries)
            self._items.move_to_end(path)
            while len(self._items) > self.max_dirs:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
