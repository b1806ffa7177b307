"""Client-side drive helpers on top of :mod:`p2pstore.api_client`, shared by the CLI
and the shell: changes that survive a lost answer, and walking a tree.

A lost answer (the node's connection closed or timed out after the request went
out, e.g. the node was killed, or the vdrive node stopped answering the node) leaves
the client not knowing whether its change was made. :func:`settled` gives the change
a random ``op_id``; when the answer is lost it waits for the node to answer again (a
daemon's supervisor restarts it) and asks ``POST /api/v1/vdrive/outcome``. The
answer is definite: a change not made by then is marked given up and never will be
(docs/http-api.md, "Outcomes"). So the CLI and the shell report success only for a
change that was made and failure only for one that was not; when the node stays
away they say the outcome is unknown (exit 3) and how to look.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, Final, Protocol, TypeVar

from .api_client import (
    EXIT_UNREACHABLE,
    ApiCallError,
    ClientError,
    NodeUnreachable,
    TransferError,
)
from .base.reports import deep_summary

T = TypeVar("T")

#: how long to wait for the node to answer again after a lost answer
SETTLE_WAIT: Final = 60.0
SETTLE_POLL: Final = 0.5


class OutcomeUnknown(ClientError):
    """The answer was lost and the node did not come back to say (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class Outcomes(Protocol):
    def outcome(self, drive: str, op_id: str) -> dict[str, Any]: ...


class Lister(Protocol):
    def ls(self, path: str) -> dict[str, Any]: ...


def new_op_id() -> str:
    return secrets.token_hex(16)


def is_lost(e: BaseException) -> bool:
    """True if ``e`` means the request may have been made but its answer is lost."""
    if isinstance(e, TransferError):
        return True
    return (
        isinstance(e, ApiCallError)
        and e.code == "vdrive-unavailable"
        and e.details.get("outcome") == "unknown"
    )


def settled(
    connect: Callable[[], Outcomes],
    drive: str,
    what: str,
    call: Callable[[str], dict[str, Any]],
    *,
    say: Callable[[str], None] | None = None,
    wait: float = SETTLE_WAIT,
) -> dict[str, Any]:
    """``call(op_id)`` once; if its answer is lost, :func:`settle` it. Returns the
    call's reply, or ``{"sequence": n, "recovered": True}`` for a change that was
    made although its answer was lost. ``connect`` makes a fresh client (a
    restarted node may listen on a new port)."""
    op_id = new_op_id()
    try:
        return call(op_id)
    except ClientError as e:
        if not is_lost(e):
            raise
        return settle(connect, drive, op_id, what, e, say=say, wait=wait)


def settle(
    connect: Callable[[], Outcomes],
    drive: str,
    op_id: str,
    what: str,
    lost: ClientError,
    *,
    say: Callable[[str], None] | None = None,
    wait: float = SETTLE_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The change ``op_id``'s answer was lost (``lost``): wait up to ``wait`` seconds
    for the node to answer again and ask it; ``{"sequence", "recovered": True}`` if
    the change was made, :class:`ClientError` if it was not (definite: it never will
    be), :class:`OutcomeUnknown` if the node did not answer."""
    if say is not None:
        say(
            f"the node's answer was lost ({lost}); asking it whether {what} was done "
            f"(waiting up to {wait:.0f} s for it to answer)"
        )
    deadline = clock() + wait
    while True:
        try:
            doc = connect().outcome(drive, op_id)
            break
        except ClientError as e:
            # The node is not running or restarting, or its vdrive node does not
            # answer it yet: wait. Any other error is final: say so.
            waiting = isinstance(e, NodeUnreachable | TransferError) or (
                isinstance(e, ApiCallError) and e.code == "vdrive-unavailable"
            )
            if not waiting:
                raise OutcomeUnknown(
                    f"{what}: the outcome is unknown ({e}); `p2pstore ls` shows whether "
                    "the change was made once the vdrive node answers"
                ) from None
            if clock() >= deadline:
                raise OutcomeUnknown(
                    f"{what}: the outcome is unknown: the node's answer was lost ({lost}) "
                    f"and it did not answer again within {wait:.0f} s ({e}); once it runs, "
                    f"`p2pstore ls` shows whether the change was made"
                ) from None
            sleep(SETTLE_POLL)
    if doc.get("applied") is True:
        return {"sequence": doc.get("sequence"), "recovered": True}
    raise ClientError(
        f"{what} was not done: the node's answer was lost ({lost}) and it says the "
        "change was not made; nothing was changed, so running the command again is safe"
    )


def walk_files(
    client: Lister, root: str, problems: list[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Every file below the vdrive directory ``root``: ``(path, entry)`` in path
    order (``check --deep``). A directory that cannot be listed is noted in
    ``problems`` and skipped."""
    out: list[tuple[str, dict[str, Any]]] = []
    todo = [root.rstrip("/") or root]
    while todo:
        path = todo.pop()
        try:
            entries = client.ls(path)["entries"]
        except ClientError as e:
            if problems is None:
                raise
            problems.append(f"{path}: {e}")
            continue
        base = path if path.endswith("/") else path + "/"
        for entry in sorted(entries, key=lambda x: str(x.get("name")), reverse=True):
            child = base + str(entry.get("name"))
            if entry.get("kind") == "dir":
                todo.append(child)
            else:
                out.append((child, entry))
    return sorted(out)


class Checker(Protocol):
    def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> dict[str, Any]: ...


class DeepChecks:
    """``check --deep``'s checks, each distinct cap once: a backup's snapshots share
    most of their files (and copies share a cap), so a drive of 30 daily snapshots
    is 30 paths to each file but one check. A failed check is not remembered."""

    def __init__(self, client: Checker, *, verify: bool, repair: bool) -> None:
        self._client, self._verify, self._repair = client, verify, repair
        self._done: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()

    def __call__(self, cap: str) -> dict[str, Any]:
        self._seen.add(cap)
        doc = self._done.get(cap)
        if doc is None:
            doc = self._client.check(cap, verify=self._verify, repair=self._repair)
            self._done[cap] = doc
        return doc

    @property
    def distinct(self) -> int:
        """How many different files were met (checked, or failed to be)."""
        return len(self._seen)

    def summary(self, files: int, root: str, tally: Mapping[str, int]) -> str:
        """The last line: :func:`~p2pstore.base.reports.deep_summary`."""
        return deep_summary(files, root, tally, self.distinct)


#: the node's refusals of a local path that the file's bytes over HTTP may still
#: get through (the node may not read it, or sees another filesystem)
LOCAL_FALLBACK: Final = frozenset(
    {"local-path-refused", "bad-local-path", "local-file-not-found", "local-path-mismatch"}
)


class Featured(Protocol):
    def features(self) -> set[str]: ...


def local_first(
    client: Featured, name: str, src: IO[bytes], call: Callable[[IO[bytes] | str], T]
) -> T:
    """``call(path)`` with the file's real path for the node to read in place when it
    can (a regular file, a node that offers ``local_path``: no HTTP body, no spool
    on the node); else, or when the node refuses the path, ``call(src)``: the bytes
    over HTTP (docs/http-api.md, "Local files")."""
    path = None
    if name != "-":
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.stat(name).st_mode):
                path = os.path.realpath(name)
    if path is not None:
        try:
            offered = "local_path" in client.features()
        except ClientError:
            offered = False
        if offered:
            try:
                return call(path)
            except ApiCallError as e:
                if e.code not in LOCAL_FALLBACK:
                    raise
    return call(src)
