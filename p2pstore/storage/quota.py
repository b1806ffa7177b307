"""The quota rule of a storage server (docs/storage.md, "Quota"), and the default
free-space probe. :func:`available` is pure: the server passes its counters in.

``available = min(max_bytes - used - reserved, free - unwritten - reserved_space)``,
floored at 0, where ``used`` counts complete shares and slot records, ``reserved``
the bytes set aside for uploads in progress and ``unwritten`` the part of those
reservations not yet on disk (so not yet missing from ``free``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .config import StorageConfig

FreeSpace = Callable[[Path], int]


def disk_free(path: Path) -> int:
    """Bytes free on the file system holding ``path`` (the default ``free_space``)."""
    return shutil.disk_usage(path).free


def available(
    cfg: StorageConfig, *, free: int, unwritten: int, used: int, reserved: int
) -> tuple[int, str]:
    """Bytes a new allocation or growth may take, and which limit bit (for messages)."""
    by_disk = free - unwritten - cfg.reserved_space
    why = f"{max(0, by_disk)} bytes usable on disk (keeping {cfg.reserved_space} free)"
    if cfg.max_bytes is not None:
        by_quota = cfg.max_bytes - used - reserved
        if by_quota < by_disk:
            why = f"quota {cfg.max_bytes} bytes, {used} used, {reserved} reserved"
            return max(0, by_quota), why
    return max(0, by_disk), why
