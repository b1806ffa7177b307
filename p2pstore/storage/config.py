"""Storage server configuration: quotas, size limits, lease and upload timeouts.

Invariants: every limit is validated once, here, at construction, so the server
can rely on positive sizes and durations. All sizes are bytes, all durations
seconds of the injected wall clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DAY = 86400.0

# Share numbers are one byte: zfec supports at most 256 shares per file.
MAX_SHNUM = 255
#: ``storage.hashv``: most ranges in one call, longest prefix, calls hashing at once
#: per server (docs/storage.md)
MAX_HASH_RANGES = 1024
MAX_HASH_PREFIX = 128
HASH_CONCURRENCY = 2


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Limits and policies of one storage server.

    - ``max_bytes``: quota on bytes of complete shares plus bytes reserved by uploads
      in progress; ``None`` means no byte quota.
    - ``reserved_space``: free space the server always leaves on the file system
      (checked through the server's injectable ``free_space`` function).
    - ``max_share_size``: hard ceiling for one share, declared or streamed.
    - ``max_write`` / ``max_read``: largest data in one write / read call
      (``max_read`` also bounds the total of one ``readv``).
    - ``max_readv_ranges``: most ranges in one ``readv`` call.
    - ``max_hash``: most bytes one ``hashv`` call hashes.
    - ``lease_duration``: how long a lease lasts after it is added or renewed.
    - ``max_leases_per_index``: distinct lease owners one storage index may carry.
    - ``upload_idle_timeout``: an upload with no write for this long is aborted.
    - ``max_uploads`` / ``max_uploads_per_owner``: uploads in progress at once.
    - ``max_ranges_per_upload``: disjoint written ranges one upload may have.
    """

    max_bytes: int | None = None
    reserved_space: int = 0
    max_share_size: int = 64 * GiB
    max_write: int = 1 * MiB
    max_read: int = 1 * MiB
    max_readv_ranges: int = 64
    max_hash: int = 16 * MiB
    lease_duration: float = 31 * DAY
    max_leases_per_index: int = 64
    upload_idle_timeout: float = 600.0
    max_uploads: int = 1024
    max_uploads_per_owner: int = 256
    max_ranges_per_upload: int = 1024

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 or None")
        if self.reserved_space < 0:
            raise ValueError("reserved_space must be >= 0")
        for name in (
            "max_share_size",
            "max_write",
            "max_read",
            "max_readv_ranges",
            "max_hash",
            "max_leases_per_index",
            "max_uploads",
            "max_uploads_per_owner",
            "max_ranges_per_upload",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer")
        if not self.lease_duration > 0:
            raise ValueError("lease_duration must be > 0")
        if not self.upload_idle_timeout > 0:
            raise ValueError("upload_idle_timeout must be > 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> StorageConfig:
        """Build from a config-file table: sizes may be ints or strings like ``"10GB"``
        (decimal) / ``"10GiB"`` (binary); durations are seconds or ``"31d"``/``"12h"``.
        Unknown keys are an error (a typo must not silently disable a quota)."""
        known = {f.name for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown storage setting {key!r}")
            if key in ("lease_duration", "upload_idle_timeout"):
                out[key] = parse_duration(value)
            elif key == "max_bytes" and value is None:
                out[key] = None
            else:
                out[key] = parse_size(value)
        return cls(**out)


_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([kmgtp]?)(i?)b?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}


def parse_size(value: object) -> int:
    """``1234``, ``"500k"``, ``"10GB"`` (powers of 1000), ``"10GiB"`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"size must be an integer or a string like '10GB', got {value!r}")
    m = _SIZE_RE.match(value)
    if m is None or (m.group(3) and not m.group(2)):
        raise ValueError(f"cannot parse size {value!r} (try '500MB' or '10GiB')")
    base = 1024 if m.group(3) else 1000
    multiplier: int = base ** _UNITS[m.group(2).lower()]
    return int(m.group(1)) * multiplier


def parse_duration(value: object) -> float:
    """Seconds as a number, or a string ``"90s"``, ``"10m"``, ``"12h"``, ``"31d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"duration must be a number or a string like '31d', got {value!r}")
    m = _DURATION_RE.match(value)
    if m is None:
        raise ValueError(f"cannot parse duration {value!r} (try '31d' or '12h')")
    return float(m.group(1)) * _SECONDS[m.group(2)]
