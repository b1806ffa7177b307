"""The modification times SFTP clients set (docs/sftp.md, "Modification times").

A drive entry's ``mtime`` is the time it was linked; a drive change has no way to
carry another. Clients that copy trees (rclone, ``sftp put -p``, sshfs) set a
file's time after uploading it and compare it on the next run, so the node keeps
the time a client set, per drive path, together with a digest of the entry's cap:
a stat answers that time only while the path still names the same file (or, for
a directory, is still a directory). Another node, or another front end, sees the
drive's own time.

Invariants: the book holds at most :data:`MAX_ENTRIES` paths (the oldest set
time goes first); it is saved atomically after each change (mode 0600, as it
holds drive paths) and a missing or unreadable file is an empty book. No cap is
stored: only the first 16 bytes of its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Final

from p2pstore.base.fsutil import read_bounded, write_text_atomic

MAX_ENTRIES: Final = 100_000
MAX_FILE_BYTES: Final = 64 << 20
DIR_TAG: Final = "dir"
log = logging.getLogger(__name__)


def tag_of(cap: str | None) -> str:
    """What identifies the entry a time belongs to: a cap digest, or "dir"."""
    if cap is None:
        return DIR_TAG
    return hashlib.sha256(cap.encode()).hexdigest()[:32]


class MtimeBook:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._times: dict[str, tuple[str, float]] = {}  # insertion order = age
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(read_bounded(path, MAX_FILE_BYTES))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("sftp: ignoring unreadable %s: %s", path, e)
            return
        if not isinstance(doc, dict):
            return
        for key, value in doc.get("times", {}).items():
            if (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], str)
                and isinstance(value[1], int | float)
            ):
                self._times[key] = (value[0], float(value[1]))

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"v": 1, "times": {k: [t, m] for k, (t, m) in self._times.items()}}
        try:
            write_text_atomic(self.path, json.dumps(doc), mode=0o600, durable=False)
        except OSError as e:
            log.warning("sftp: could not save %s: %s", self.path, e.strerror)

    def get(self, path: str, tag: str) -> float | None:
        found = self._times.get(path)
        return found[1] if found is not None and found[0] == tag else None

    def set(self, path: str, tag: str, mtime: float) -> None:
        self._times.pop(path, None)
        self._times[path] = (tag, mtime)
        while len(self._times) > MAX_ENTRIES:
            del self._times[next(iter(self._times))]
        self._save()

    def forget(self, path: str) -> None:
        """``path`` and everything below it."""
        gone = [k for k in self._times if k == path or k.startswith(path.rstrip("/") + "/")]
        for k in gone:
            del self._times[k]
        if gone:
            self._save()

    def move(self, src: str, dst: str) -> None:
        """A rename: the times of ``src`` and below follow it to ``dst``."""
        self.forget(dst)
        prefix = src.rstrip("/") + "/"
        moved = {
            (dst + k[len(src) :]): v
            for k, v in self._times.items()
            if k == src or k.startswith(prefix)
        }
        for k in [k for k in self._times if k == src or k.startswith(prefix)]:
            del self._times[k]
        self._times.update(moved)
        if moved:
            self._save()
