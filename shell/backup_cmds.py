"""The shell's ``backup`` and ``restore`` (docs/backup.md): the same runs as the
CLI's (:mod:`p2pstore.backup`), with the shell's paths (relative to ``cd`` and
``lcd``), its progress line and its output. Ctrl-C stops a backup; what was
uploaded is in the backup database, so running it again sends only the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from p2pstore.app.vpath import VPath
from p2pstore.backup import JOBS, jobs_from, ui
from p2pstore.backup.restore import Restore
from p2pstore.backup.run import latest_of, run_backup
from p2pstore.backup.scan import ExcludeFileError, Excluder, read_exclude_file
from p2pstore.base.reports import safe

from .errors import ShellError, UsageError
from .parse import Invocation
from .session import Api, Connection, ListingCache


class _Out(Protocol):
    def line(self, text: str) -> None: ...
    def lines(self, lines: list[str], *, page: bool = False) -> None: ...
    def progress(self, text: str) -> None: ...
    def progress_done(self) -> None: ...


class Shell(Protocol):
    """What these commands use of :class:`shell.commands.Shell`."""

    @property
    def conn(self) -> Connection: ...
    @property
    def out(self) -> _Out: ...
    @property
    def cache(self) -> ListingCache: ...

    def api(self) -> Api: ...
    def local(self, word: str) -> Path: ...
    def remote(self, word: str) -> VPath: ...


def _excluder(shell: Shell, inv: Invocation) -> Excluder:
    patterns = list(inv.lists.get("exclude", ()))
    for name in inv.lists.get("exclude_from", ()):
        try:
            patterns += read_exclude_file(str(shell.local(name)))
        except ExcludeFileError as e:
            raise UsageError(str(e), "backup") from None
    return Excluder(patterns)


def _throttled(show: Callable[[str], None]) -> Callable[[str], None]:
    last = [0.0]

    def draw(text: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.1:
            last[0] = now
            show(text)

    return draw


def _jobs(inv: Invocation) -> int:
    """``-j N`` (the last one given), or the default."""
    given = inv.lists.get("jobs", ())
    if not given:
        return JOBS
    try:
        return jobs_from(given[-1])
    except ValueError as e:
        raise UsageError(f"{inv.command}: -j {e}", inv.command) from None


def backup(shell: Shell, inv: Invocation) -> None:
    src = shell.local(inv.args[0])
    if not src.is_dir():
        raise UsageError(f"backup: {inv.args[0]} is not a local folder", "backup")
    dest = str(shell.remote(inv.args[1]))
    node_dir = shell.conn.node_dir
    if node_dir is None:
        raise ShellError("backup needs the node's directory (for its backup database)")
    dry = inv.flag("dry_run")
    if inv.flag("check_all") and inv.flag("no_check"):
        raise UsageError("backup: --check-all and --no-check do not go together", "backup")
    check = "all" if inv.flag("check_all") else "none" if inv.flag("no_check") else "auto"
    draw = _throttled(shell.out.progress)
    try:
        report = run_backup(
            shell.api(),
            shell.api,
            Path(node_dir),
            src,
            dest,
            excluder=_excluder(shell, inv),
            dry_run=dry,
            verbose=inv.flag("verbose"),
            jobs=_jobs(inv),
            check=check,
            note=shell.out.line,
            on_change=lambda r: draw(ui.progress_line(r)),
        )
    finally:
        shell.out.progress_done()
    latest = latest_of(report, dest)
    shell.out.lines([safe(t) for t in ui.summary(report, dry_run=dry, latest=latest)])
    shell.cache.clear()


def restore(shell: Shell, inv: Invocation) -> None:
    source = str(shell.remote(inv.args[0]))
    target = shell.local(inv.args[1])
    draw = _throttled(shell.out.progress)
    run = Restore(
        shell.api(),
        force=inv.flag("force"),
        note=shell.out.line,
        on_bytes=lambda n: draw(f"restored {run.report.files:,} files, {n:,} bytes"),
        jobs=_jobs(inv),
    )
    try:
        report = run.run(source, target)
    finally:
        shell.out.progress_done()
    shell.out.lines([safe(t) for t in ui.restore_summary(report, str(target))])
