"""What the CLI and the shell both say about a backup or a restore: the progress
line and the summary. Pure text."""

from __future__ import annotations

from p2pstore.base.progress import human_bytes

from .restore import RestoreReport
from .snapshot import Report


def progress_line(r: Report) -> str:
    """``files 120/2,000 (30 uploaded, 88 unchanged, 2 failed)  35.1 MiB / 120.0 MiB``."""
    done_bytes = r.uploaded_bytes + r.unchanged_bytes
    return (
        f"files {r.files_done:,}/{r.files_total:,} ({r.uploaded:,} uploaded, "
        f"{r.unchanged:,} unchanged, {len(r.skipped):,} skipped, {len(r.failed):,} failed)  "
        f"{human_bytes(done_bytes)} / {human_bytes(r.bytes_total)}"
    )


def summary(r: Report, *, dry_run: bool, latest: str | None) -> list[str]:
    lines = []
    if dry_run:
        lines.append("dry run: nothing was uploaded or linked")
    elif r.snapshot is not None:
        also = f" (and {latest})" if latest else ""
        lines.append(f"snapshot: {r.snapshot}{also}")
    verb = "to upload" if dry_run else "uploaded"
    lines.append(
        f"{r.files_total:,} files, {human_bytes(r.bytes_total)}: {r.uploaded:,} {verb} "
        f"({human_bytes(r.uploaded_bytes)}), {r.unchanged:,} unchanged, "
        f"{len(r.skipped):,} skipped, {len(r.failed):,} failed; read "
        f"{human_bytes(r.bytes_read)}; folders: {r.dirs_made:,} stored, "
        f"{r.dirs_reused:,} unchanged; {r.seconds:.1f} s"
    )
    if r.checked or r.reuploaded or r.unchecked:
        lines.append(
            f"checked in the grid: {r.checked + r.reuploaded:,} unchanged files, "
            f"{r.reuploaded:,} of them uploaded again (the grid had lost too many "
            f"of their shares); {r.unchecked:,} could not be checked"
        )
    if r.skipped:
        lines.append("skipped:")
        lines.extend(f"  {s}" for s in r.skipped)
    if r.failed:
        lines.append("failed:")
        lines.extend(f"  {s}" for s in r.failed)
    return lines


def restore_summary(r: RestoreReport, target: str) -> list[str]:
    lines = [f"restored {r.files:,} files ({human_bytes(r.bytes)}), {r.dirs:,} folders to {target}"]
    if r.failed:
        lines.append(f"{len(r.failed):,} failed:")
        lines.extend(f"  {s}" for s in r.failed)
    return lines
