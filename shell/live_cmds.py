"""The shell and live directories (docs/mutable.md, "Live directories"): ``mkdir
--live`` makes one and prints its caps; ``drive`` lists and switches drives, the live
directories entered this session included; ``info`` of a live directory's root shows
its read cap, to share.

A live directory is entered with ``cd CAP`` (or ``cd CAP/sub``): it is then a drive
of its own with a current directory, and every command takes paths relative to it
(:mod:`shell.paths` resolves ``CAP/...`` words; the node gets ``CAP/path``).

Invariant: the shell prints a live directory's write cap only when ``mkdir --live``
made it; the prompt, ``pwd``, ``drive``, messages and error lines show its label
(``live:abcdefgh``, ``live-ro:abcdefgh`` for a read cap), :func:`~shell.paths.drive_label`.
"""

from __future__ import annotations

import io
from typing import Protocol

from p2pstore.app.vpath import VPath, drive_label
from p2pstore.mutable import ReadCap, WriteCap, parse_mutable_cap

from .errors import UsageError
from .parse import Invocation
from .paths import show_remote
from .session import Api, ShellState

KEYS_NOTE = (
    "These caps are the keys to the directory: whoever holds the write cap can change "
    "it (keep it secret); the read cap shows every change. Enter it with: cd WRITECAP"
)


class _Out(Protocol):
    def line(self, text: str) -> None: ...
    def lines(self, lines: list[str], *, page: bool = False) -> None: ...


class Shell(Protocol):
    """What these commands use of :class:`shell.commands.Shell`."""

    @property
    def out(self) -> _Out: ...
    @property
    def state(self) -> ShellState: ...

    def api(self) -> Api: ...


def mkdir_live(shell: Shell, inv: Invocation) -> bool:
    """``mkdir --live``: a new, empty live directory, its caps printed; True if the
    line was that (else ``mkdir PATH...`` runs as before)."""
    if not inv.flag("live"):
        if not inv.args:
            raise UsageError("mkdir: missing PATH (or --live for a new live directory)", "mkdir")
        return False
    if inv.args or inv.flag("parents"):
        raise UsageError(
            "mkdir --live makes a live directory of its own (enter it with cd CAP); "
            "it takes no PATH",
            "mkdir",
        )
    from p2pstore.vdrive.dirnode import (
        Directory,  # here: the vdrive package imports the whole grid (CLI start-up)
    )

    empty = Directory().encode()
    doc = shell.api().put_mutable(io.BytesIO(empty), size=len(empty), directory=True)
    shell.out.lines(
        [
            "new live directory",
            f"write cap:  {doc.get('write_cap')}",
            f"read cap:   {doc.get('read_cap')}",
            f"verify cap: {doc.get('verify_cap')}",
            KEYS_NOTE,
        ]
    )
    return True


def drive(shell: Shell, inv: Invocation) -> None:
    """``drive``: every drive and its directory; ``drive NAME``: switch to it (``shared``,
    ``private``, or the label of a live directory entered before)."""
    state = shell.state
    if not inv.args:
        for d, cwd in state.cwds.items():
            mark = "*" if d == state.drive else " "
            shell.out.line(f"{mark} {drive_label(d):<16} {show_remote(cwd)}")
        return
    name = inv.args[0].rstrip("/").removesuffix(":")
    for d in state.cwds:
        if drive_label(d) == name:
            state.switch(d)
            return
    raise UsageError(
        f"drive: unknown drive {name!r} (shared, private, or a live directory entered with cd CAP)",
        "drive",
    )


def root_lines(path: VPath) -> list[str]:
    """More facts for ``info`` of a directory: at a live directory's root, its kind
    and read cap (the one to share; the write cap is never shown)."""
    if not path.is_live or not path.is_root:
        return []
    cap = parse_mutable_cap(path.drive)
    if not isinstance(cap, WriteCap | ReadCap):
        return []  # a verify cap: the node refuses to list it
    access = "read and change (write cap)" if isinstance(cap, WriteCap) else "read only"
    return [
        f"live directory: {access}",
        f"read cap:      {cap.read_cap().to_string()}",
    ]
