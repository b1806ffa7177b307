"""Start-up scans of a storage directory: remove crashed uploads, count stored bytes.

Both walk only canonical names and never follow symlinks; anything unexpected
under ``shares/`` is left alone (and not counted), anything in ``incoming/`` is a
leftover of a crash and is removed.
"""

from __future__ import annotations

import logging
import os
import shutil

from .disk_layout import SLOT_NAME, Layout, parse_shnum_name, parse_si_name, si_b32

log = logging.getLogger(__name__)


def clean_incoming(layout: Layout) -> int:
    """Delete everything in ``incoming/``; returns how many entries were removed."""
    removed = 0
    with os.scandir(layout.incoming) as it:
        for entry in it:
            path = layout.incoming / entry.name
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d unfinished upload(s) left by a previous run", removed)
    return removed


def scan_usage(layout: Layout) -> tuple[int, int]:
    """(bytes, count): bytes of complete shares and slot records under ``shares/``,
    and how many shares (slots count in the bytes only, like in ``used``)."""
    total = 0
    count = 0
    with os.scandir(layout.shares) as prefixes:
        for p in prefixes:
            if len(p.name) != 2 or not p.is_dir(follow_symlinks=False):
                continue
            with os.scandir(layout.shares / p.name) as sis:
                for d in sis:
                    if (
                        parse_si_name(d.name) is None
                        or d.name[:2] != p.name
                        or not d.is_dir(follow_symlinks=False)
                    ):
                        continue  # not a place the server would ever serve from
                    with os.scandir(layout.shares / p.name / d.name) as files:
                        for f in files:
                            share = parse_shnum_name(f.name) is not None
                            if not share and f.name != SLOT_NAME:
                                continue
                            if f.is_file(follow_symlinks=False):
                                total += f.stat(follow_symlinks=False).st_size
                                count += share
    return total, count


def list_prefixes(layout: Layout) -> list[str]:
    """The two-character prefix directories under ``shares/``, sorted."""
    try:
        with os.scandir(layout.shares) as it:
            return sorted(
                e.name for e in it if len(e.name) == 2 and e.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []


def storage_indexes_in(layout: Layout, prefix: str) -> list[bytes]:
    """Storage indexes stored under one prefix directory, in name order."""
    if len(prefix) != 2 or not prefix.isalnum():
        return []
    out = []
    try:
        with os.scandir(layout.shares / prefix) as it:
            for e in it:
                si = parse_si_name(e.name)
                if si is not None and e.name[:2] == prefix and e.is_dir(follow_symlinks=False):
                    out.append(si)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out.sort(key=si_b32)
    return out
