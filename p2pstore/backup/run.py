"""One whole ``backup`` as the CLI and the shell run it: open the node's backup
database, walk and upload, link the snapshot (each drive change settled when its
answer is lost), and close, whatever happened. A stop after the uploads (``Latest``
is not a snapshot) is reported with the summary of what was done; the node going
away (:class:`~.send.NodeGone`) and anything else propagate."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from p2pstore.api_drive import Outcomes, settled
from p2pstore.app.vpath import parse_vpath

from . import JOBS
from .db import DB_NAME, BackupDb
from .scan import Excluder
from .send import BackupStopped, NodeGone
from .snapshot import LATEST, Backup, BackupClient, ChangeClient, Report, publish


class Client(BackupClient, ChangeClient, Protocol):
    """What a run needs of :class:`~p2pstore.api_client.NodeClient`."""


def run_backup(
    client: Client,
    connect: Callable[[], Outcomes],
    node_dir: Path,
    source: Path,
    dest: str,
    *,
    excluder: Excluder,
    dry_run: bool,
    verbose: bool,
    note: Callable[[str], None],
    on_change: Callable[[Report], None],
    jobs: int = JOBS,
    check: str = "auto",
) -> Report:
    """Back ``source`` up into ``dest``; ``connect`` makes a fresh client to ask a
    lost change's outcome (a restarted node may listen elsewhere). A dry run opens
    the database read-only, and only if it exists."""
    db_path = node_dir / DB_NAME
    db = BackupDb.open(db_path if db_path.exists() or not dry_run else None, read_only=dry_run)
    run = Backup(
        client,
        db,
        source.absolute(),
        excluder=excluder,
        dry_run=dry_run,
        verbose=verbose,
        note=note,
        on_change=on_change,
        jobs=jobs,
        check=check,
    )
    drive = parse_vpath(dest).drive
    started = time.monotonic()
    try:
        cap = run.tree()
        if cap is not None:

            def change(what: str, call: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
                return settled(connect, drive, what, call, say=note)

            run.report.snapshot = publish(client, change, client, dest, cap, run.started)
    except BackupStopped as e:
        if isinstance(e, NodeGone):
            raise
        run.report.failed.append(str(e))  # said with the summary of what was done
    finally:
        run.report.seconds = time.monotonic() - started
        db.close()
    return run.report


def latest_of(report: Report, dest: str) -> str | None:
    """The ``Latest`` path a finished run points at (None if it linked nothing)."""
    return None if report.snapshot is None else dest.rstrip("/") + "/" + LATEST
