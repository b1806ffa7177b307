"""``p2pstore backup LOCAL_DIR DRIVE_PATH`` and ``p2pstore restore DRIVE_PATH
LOCAL_DIR`` (docs/backup.md): the command-line faces of :mod:`p2pstore.backup`.

Exit codes: 0 done; 1 done, but some files failed (listed), or the restore failed;
2 bad arguments; 3 the node is not reachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backup import JOBS, jobs_from

if TYPE_CHECKING:  # the rest loads when a backup or restore runs, not for every command
    from .backup.scan import Excluder
    from .backup.snapshot import Report


class _Line:
    """A progress line redrawn in place on a terminal, at most ten times a second."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.on or (not force and now - self.last < 0.1):
            return
        self.last = now
        sys.stderr.write("\r\x1b[K" + text)
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False

    def say(self, text: str) -> None:
        self.clear()
        print(text, file=sys.stderr)


def _dest(text: str) -> str:
    from .app.errors import BadRequest
    from .app.vpath import parse_vpath

    try:
        return str(parse_vpath(text))
    except BadRequest as e:
        print(f"p2pstore: bad drive path {text!r}: {e.message}", file=sys.stderr)
        raise SystemExit(2) from None


def _excluder(args: argparse.Namespace) -> Excluder:
    from .backup.scan import ExcludeFileError, Excluder, read_exclude_file

    patterns = list(args.exclude or [])
    for f in args.exclude_from or []:
        try:
            patterns += read_exclude_file(f)
        except ExcludeFileError as e:
            print(f"p2pstore: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return Excluder(patterns)


def cmd_backup(args: argparse.Namespace) -> int:
    from .api_client import NodeClient, resolve_node_dir
    from .backup import ui
    from .backup.run import run_backup

    source = Path(args.local)
    if not source.is_dir():
        print(f"p2pstore: {source} is not a folder", file=sys.stderr)
        return 2
    dest, excluder = _dest(args.path), _excluder(args)
    node_dir = resolve_node_dir(args.node)
    line = _Line()
    try:
        report = run_backup(
            NodeClient.for_node(node_dir),
            lambda: NodeClient.for_node(node_dir),
            node_dir,
            source,
            dest,
            excluder=excluder,
            dry_run=args.dry_run,
            verbose=args.verbose,
            note=line.say,
            on_change=lambda r: line.show(ui.progress_line(r)),
            jobs=args.jobs,
            check=args.check,
        )
    finally:
        line.clear()
    return _report(args, report, dest)


def _report(args: argparse.Namespace, r: Report, dest: str) -> int:
    from .backup import ui
    from .backup.run import latest_of

    latest = latest_of(r, dest)
    if args.json:
        print(json.dumps({**r.as_json(), "latest": latest, "dry_run": args.dry_run}, indent=1))
    else:
        for text in ui.summary(r, dry_run=args.dry_run, latest=latest):
            print(text)
    return 1 if r.failed else 0


def cmd_restore(args: argparse.Namespace) -> int:
    from .api_client import NodeClient, resolve_node_dir
    from .backup import ui
    from .backup.restore import Restore

    source, target = _dest(args.path), Path(args.local)
    client = NodeClient.for_node(resolve_node_dir(args.node))
    line = _Line()
    run = Restore(
        client,
        force=args.force,
        note=line.say,
        on_bytes=lambda n: line.show(f"restored {run.report.files:,} files, {n:,} bytes"),
        jobs=args.jobs,
    )
    try:
        report = run.run(source, target)
    finally:
        line.clear()
    for text in ui.restore_summary(report, str(target)):
        print(text)
    return 1 if report.failed else 0


def _jobs(text: str) -> int:
    try:
        return jobs_from(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _jobs_opt(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        default=JOBS,
        metavar="N",
        help=f"{verb} up to N files at once (default {JOBS})",
    )


def _node_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node",
        metavar="DIR",
        help="node directory (default: $P2PSTORE_NODE, else ~/.local/share/p2pstore/node)",
    )


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="snapshot a local folder into DRIVE_PATH/Archives/<time> and DRIVE_PATH/Latest",
    )
    p.add_argument("local", metavar="LOCAL_DIR")
    p.add_argument("path", metavar="DRIVE_PATH", help="e.g. private:/backups/laptop")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="leave out names or paths matching this glob (repeatable)",
    )
    p.add_argument(
        "--exclude-from",
        action="append",
        metavar="FILE",
        help="read exclude patterns from FILE, one per line",
    )
    p.add_argument(
        "-n", "--dry-run", action="store_true", help="say what would be uploaded; change nothing"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="name every file")
    _jobs_opt(p, "upload")
    checks = p.add_mutually_exclusive_group()
    checks.add_argument(
        "--check-all",
        dest="check",
        action="store_const",
        const="all",
        default="auto",
        help="check every unchanged file in the grid now (by default each is checked "
        "30-60 days after its last check); upload again those the grid lost",
    )
    checks.add_argument(
        "--no-check",
        dest="check",
        action="store_const",
        const="none",
        help="check no unchanged file in the grid this run",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _node_opt(p)
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="bring a snapshot (or any drive folder) back to LOCAL_DIR")
    p.add_argument("path", metavar="DRIVE_PATH", help="e.g. private:/backups/laptop/Latest")
    p.add_argument("local", metavar="LOCAL_DIR")
    p.add_argument(
        "--force",
        action="store_true",
        help="restore into a non-empty folder, replacing files of the same name",
    )
    _jobs_opt(p, "download")
    _node_opt(p)
    p.set_defaults(func=cmd_restore)
