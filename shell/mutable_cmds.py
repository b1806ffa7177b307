"""The shell and mutable files (docs/mutable.md): ``put --mutable LOCAL`` (a new
mutable file), ``put LOCAL WRITECAP [--expect-sequence N]`` (its next version), and
the checks that let ``get``, ``cat``, ``info`` and ``check`` take a mutable cap.

A mutable file lives outside the drives: the shell prints its caps and links
nothing. The upload runs like any ``put`` (a worker thread, the progress line,
Ctrl-C cuts the connection so the node publishes nothing more).

Invariants:
- a cap is checked here before the node is contacted: only a write cap publishes;
  a verify cap reads nothing (``info`` and ``check`` take it);
- a conflict (someone else published first, or the latest is not the version
  expected) is one line naming the latest version and what to do next;
- a Ctrl-C is reported truthfully: if the node had already published the version
  (the latest version moved past the one seen before the upload), the shell says so.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Any, Protocol, cast

from p2pstore.api_client import ApiCallError, ClientError
from p2pstore.base.progress import human_bytes
from p2pstore.mutable import (
    MutableCap,
    MutableCapError,
    VerifyCap,
    WriteCap,
    is_mutable_cap,
    parse_mutable_cap,
)

from . import render
from .errors import Cancelled, RemoteError, UsageError
from .parse import Invocation
from .paths import is_cap, put_source_size
from .session import Api
from .transfer import CancelFlag, CancellableReader, TransferRunner

KEYS_NOTE = (
    "These caps are the keys to the file: whoever holds the write cap can change it "
    "(keep it secret); the read cap reads every version. The file is not in a drive."
)


class _Out(Protocol):
    @property
    def width(self) -> int: ...

    def line(self, text: str) -> None: ...
    def lines(self, lines: list[str], *, page: bool = False) -> None: ...


class Shell(Protocol):
    """What these commands use of :class:`shell.commands.Shell`."""

    @property
    def out(self) -> _Out: ...
    @property
    def transfers(self) -> TransferRunner: ...

    def api(self) -> Api: ...
    def local(self, word: str) -> Path: ...


def is_mutable_put(inv: Invocation) -> bool:
    """Whether a ``put`` line is about a mutable file (``--mutable``, a cap as the
    second word, or ``--expect-sequence``)."""
    return (
        inv.flag("mutable")
        or "expect_sequence" in inv.lists
        or (len(inv.args) > 1 and is_cap(inv.args[1]))
    )


def checked_cap(word: str, *, readable: bool) -> MutableCap:
    """``word`` parsed as a mutable cap; ``readable``: one that can read (write or read
    cap). :class:`UsageError` otherwise."""
    try:
        cap = parse_mutable_cap(word)
    except MutableCapError as e:
        raise UsageError(str(e)) from None
    if readable and isinstance(cap, VerifyCap):
        raise UsageError(
            "a verify cap can check a mutable file but not read it; use its read cap "
            "(p2ps:mut-ro:...) or write cap"
        )
    return cap


def file_cap(shell: Shell, word: str, *, readable: bool) -> tuple[str, None, int | None] | None:
    """``Shell._file_cap`` for a mutable cap: (cap, no path, size); None if ``word`` is
    not a mutable cap. To read, the latest version's size is asked first (for the
    progress line and cat's limit)."""
    if not is_mutable_cap(word):
        return None
    checked_cap(word, readable=readable)
    if not readable:
        return word, None, None
    size = shell.api().info(word).get("size")
    return word, None, size if isinstance(size, int) else None


def _expected(inv: Invocation) -> int | None:
    given = inv.lists.get("expect_sequence", ())
    if not given:
        return None
    text = given[-1]
    if not text.isdigit() or len(text) > 19:
        raise UsageError("put: --expect-sequence takes a version number (0, 1, 2, ...)", "put")
    return int(text)


def _write_cap(inv: Invocation) -> str | None:
    """The write cap to publish to, or None for ``--mutable`` (a new file)."""
    if inv.flag("no_replace") or "mode" in inv.values:
        raise UsageError(
            "put: -n and --mode are for drive paths (a mutable file's versions always "
            "have a random key)",
            "put",
        )
    if inv.flag("mutable"):
        if len(inv.args) > 1:
            raise UsageError("put --mutable makes a new file: give LOCAL only", "put")
        if "expect_sequence" in inv.lists:
            raise UsageError("put: --expect-sequence goes with WRITECAP, not --mutable", "put")
        return None
    if len(inv.args) < 2 or not is_cap(inv.args[1]):
        raise UsageError("put: --expect-sequence goes with WRITECAP: put LOCAL WRITECAP", "put")
    word = inv.args[1]
    if not is_mutable_cap(word):
        raise UsageError(
            "put: that cap names an immutable file, which never changes; give a mutable "
            "write cap (p2ps:mut:...), or make one with put --mutable LOCAL",
            "put",
        )
    cap = checked_cap(word, readable=False)
    if not isinstance(cap, WriteCap):
        what = "check" if isinstance(cap, VerifyCap) else "read"
        raise UsageError(
            f"put: only a write cap (p2ps:mut:...) can publish a new version; this cap can "
            f"{what} the file",
            "put",
        )
    return word


def _sequence(api: Api, cap: str) -> int | None:
    seq = api.info(cap).get("sequence")
    return seq if isinstance(seq, int) else None


def _conflict(e: ApiCallError) -> RemoteError:
    seq = e.details.get("sequence")
    latest = f"version {seq}" if isinstance(seq, int) else "another version"
    retry = f" --expect-sequence {seq}" if isinstance(seq, int) else ""
    return RemoteError(
        f"conflict: the latest is {latest}, published by someone else meanwhile; look at it "
        f"(info WRITECAP, get WRITECAP FILE), then run put LOCAL WRITECAP{retry} again "
        "(mutable-conflict)"
    )


def put(shell: Shell, inv: Invocation) -> None:
    """``put --mutable LOCAL`` or ``put LOCAL WRITECAP [--expect-sequence N]``."""
    write_cap = _write_cap(inv)
    expected = _expected(inv)
    src = shell.local(inv.args[0])
    size = put_source_size(src, inv.args[0])
    api = shell.api()
    # the version seen before, so a Ctrl-C that came too late is told as it is
    before = _sequence(api, write_cap) if write_cap is not None else None
    stored = [0]

    def work(flag: CancelFlag) -> dict[str, Any]:
        flag.on_cancel(api.abort)  # Ctrl-C cuts the connection: the node stops
        with open(src, "rb") as f:
            return api.put_mutable(
                cast(IO[bytes], CancellableReader(f, flag)),
                write_cap=write_cap,
                size=size,
                expected_sequence=expected,
                progress=flag.progress,
                stored=lambda n: stored.__setitem__(0, n),
            )

    width = shell.out.width

    def bar(done: int, elapsed: float) -> str:
        if stored[0] > 0:
            return render.progress_line("put (storing)", stored[0], size, elapsed, width)
        return render.progress_line("put", done, size, elapsed, width)

    try:
        doc = shell.transfers.run(work, bar)
    except ApiCallError as e:
        if e.code == "mutable-conflict":
            raise _conflict(e) from None
        raise
    except Cancelled:
        if write_cap is not None:
            _say_what_a_cancel_kept(shell, write_cap, before)
        raise
    _report(shell, doc, new=write_cap is None)


def _say_what_a_cancel_kept(shell: Shell, write_cap: str, before: int | None) -> None:
    after = None
    with contextlib.suppress(ClientError, OSError):
        after = _sequence(shell.api(), write_cap)
    if after is not None and before is not None and after > before:
        raise Cancelled(
            f"cancelled too late: the latest version is now {after} (it was {before}); "
            "the upload had been published"
        )


def _report(shell: Shell, doc: dict[str, Any], *, new: bool) -> None:
    size = human_bytes(int(doc.get("size", 0)))
    if not new:
        shell.out.line(f"published version {doc.get('sequence')} ({size})")
        return
    shell.out.lines(
        [
            f"new mutable file: version {doc.get('sequence')} ({size})",
            f"write cap:  {doc.get('write_cap')}",
            f"read cap:   {doc.get('read_cap')}",
            f"verify cap: {doc.get('verify_cap')}",
            KEYS_NOTE,
        ]
    )
