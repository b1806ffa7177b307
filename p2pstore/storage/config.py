"""Storage server configuration: quotas, size limits, lease and upload timeouts.

Invariants: every limit is validated once, here, at construction, so the server
can rely on positive sizes and durations. All sizes are bytes, all durations
seconds of the injected wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DAY = 86400.0

# Share numbers are one byte: zfec supports at most 256 shares per file.
MAX_SHNUM = 255


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
