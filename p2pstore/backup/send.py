"""Sending one file of a backup, on a worker thread: open it without following a
link or blocking, stream exactly its length, and say what came of it; or check
that an unchanged file is still whole in the grid and send it again if not
(:func:`recheck_file`). Nothing here touches the database or the report (the run
does that on its own thread, :meth:`p2pstore.backup.snapshot.Backup._settle`)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, Any, Protocol, cast

from p2pstore.api_client import (
    EXIT_UNREACHABLE,
    ApiCallError,
    ClientError,
    NodeUnreachable,
    TransferError,
)

from .db import FileStamp
from .scan import Found


class Putter(Protocol):
    def put(
        self,
        source: IO[bytes],
        *,
        size: int | None = None,
        mode: str = "convergent",
        progress: Callable[[int], None] | None = None,
        stored: Callable[[int], None] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]: ...


class Checker(Protocol):
    def check(self, cap: str, *, verify: bool = False, repair: bool = False) -> dict[str, Any]: ...


class BackupStopped(ClientError):
    """The run cannot go on (the grid refuses uploads, the drive refused the snapshot)."""


class NodeGone(BackupStopped):
    """The node went away during the run (exit 3, as for any unreachable node)."""

    exit_code = EXIT_UNREACHABLE


def node_gone(what: str, e: ClientError) -> NodeGone:
    return NodeGone(
        f"{what}: {e}; the backup stopped. Run it again: what was uploaded is "
        "remembered and is not sent again"
    )


class FileChanged(Exception):
    """The file's length changed while it was being sent."""


class _Exact(io.RawIOBase):
    """Reads exactly ``size`` bytes of ``src``: a file that grew or shrank while it
    was sent raises :class:`FileChanged` (the upload is cut, the node stores
    nothing) instead of sending a body of the wrong length."""

    def __init__(self, src: IO[bytes], size: int) -> None:
        self.src, self.left = src, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        if not want:
            return b""
        try:
            data = self.src.read(want)
            self.left -= len(data)
            # Shrank, or grew (checked before the last bytes go, so the node never
            # receives a whole body of a file that was still being written).
            grew = not self.left and self.src.read(1)
        except OSError as e:
            raise ReadFailed(e.strerror or str(e)) from None
        if not data or grew:
            raise FileChanged()
        return data


class ReadFailed(Exception):
    """Reading the local file failed (an I/O error): the file's failure, not the
    node's; the upload is cut at once."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What sending one file came to: a cap and the stamp it was read at, or why not
    (``failed``, ``skipped``), or why the whole run must stop (``stop``). For an
    unchanged file checked again (:func:`recheck_file`): ``checked`` (the grid holds
    it well kept, ``cap`` is its recorded one), or ``reuploaded`` (what the check
    found) with the upload's outcome and the ``recorded`` cap, or ``unchecked`` (why
    no check could be made)."""

    cap: str | None = None
    stamp: FileStamp | None = None
    bytes_read: int = 0
    failed: str | None = None
    skipped: str | None = None
    stop: ClientError | None = None
    checked: bool = False
    reuploaded: str | None = None
    unchecked: str | None = None
    recorded: str | None = None  # the cap a file uploaded again had


def _open(f: Found) -> int | Sent:
    # O_NONBLOCK: a FIFO swapped in since the listing must not hang the run
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        try:
            return os.open(f.path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:  # O_NOATIME needs ownership: open again without it
            return os.open(f.path, flags)
    except FileNotFoundError:
        return Sent(skipped=f"{f.path}: vanished during the backup")
    except OSError as e:
        return Sent(failed=f"{f.path}: cannot read it: {e.strerror}")


def send_file(client: Putter, f: Found) -> Sent:
    """Upload ``f`` (thread-safe: a fresh connection per call)."""
    fd = _open(f)
    if isinstance(fd, Sent):
        return fd
    sent = [0]
    with os.fdopen(fd, "rb") as src:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return Sent(skipped=f"{f.path}: no longer a regular file")
        body = cast(IO[bytes], _Exact(src, before.st_size))
        try:
            doc = client.put(
                body, size=before.st_size, name=f.name, progress=lambda n: sent.__setitem__(0, n)
            )
        except FileChanged:
            doc = {}
        except ReadFailed as e:
            return Sent(bytes_read=sent[0], failed=f"{f.path}: cannot read it: {e}")
        except (NodeUnreachable, TransferError) as e:
            return Sent(bytes_read=sent[0], stop=node_gone(f"upload {f.rel}", e))
        except ApiCallError as e:
            if e.status >= 500:  # the node or the grid cannot take uploads now
                return Sent(
                    bytes_read=sent[0],
                    stop=BackupStopped(
                        f"upload {f.rel}: {e}; the backup stopped (what was uploaded is "
                        "remembered: run it again when the grid has room)"
                    ),
                )
            return Sent(bytes_read=sent[0], failed=f"{f.path}: the node refused it: {e}")
        after = os.fstat(fd)
    changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    if changed or doc.get("size") != before.st_size:
        return Sent(
            bytes_read=sent[0],
            failed=f"{f.path}: changed while it was read; not backed up (run the backup "
            "again when it is not being written)",
        )
    return Sent(str(doc["cap"]), FileStamp.of(before), sent[0])


class Rechecker(Putter, Checker, Protocol):
    pass


def thin_below(k: int, n: int) -> int:
    """Fewer good shares than this, and a checked file is uploaded again: k plus half
    the redundancy (7 of 10 at 3-of-10). Above it, a share or two missing (a home
    machine off for the evening, say) is left to the grid's maintenance, which
    waits out machines that come back (docs/maintenance.md)."""
    return k + -(-(n - k) // 2)


def recheck_file(client: Rechecker, f: Found, cap: str) -> Sent:
    """Is the unchanged file ``f``, recorded as ``cap``, still well kept in the grid?
    If it has lost too many shares (:func:`thin_below`), or cannot be recovered at
    all, upload it again from the local copy (convergent: the same cap unless the
    node's encoding settings changed; only the shares missing are placed), which
    works where too few are left for the grid to repair it, and costs less network
    than a repair (which first downloads k shares). Thread-safe, like
    :func:`send_file`."""
    try:
        doc = client.check(cap)
    except (NodeUnreachable, TransferError) as e:
        return Sent(stop=node_gone(f"check {f.rel}", e))
    except ApiCallError as e:
        return Sent(cap=cap, unchecked=f"{f.path}: could not be checked: {e}")
    healthy, recoverable = doc.get("healthy"), doc.get("recoverable")
    given = [doc.get(key) for key in ("shares_needed", "shares_total", "shares_good")]
    counts = [x for x in given if isinstance(x, int) and not isinstance(x, bool)]
    if not isinstance(healthy, bool) or not isinstance(recoverable, bool) or len(counts) < 3:
        return Sent(cap=cap, unchecked=f"{f.path}: the node's check said nothing usable")
    k, n, good = counts
    if healthy or (recoverable and good >= thin_below(k, n)):
        return Sent(cap=cap, checked=True)
    found = f"{good} of {n} shares found" + ("" if recoverable else ", not recoverable")
    sent = send_file(client, f)
    if isinstance(sent.stop, BackupStopped) and not isinstance(sent.stop, NodeGone):
        # the grid takes no uploads now: this file is linked as it was, the run goes on
        sent = replace(sent, stop=None, failed=f"{f.path}: {sent.stop}")
    # an upload that failed leaves the file linked as it was, with the cap recorded
    return replace(sent, cap=sent.cap or cap, reuploaded=found, recorded=cap)
