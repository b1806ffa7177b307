"""The grid: upload files to the peers nearest their storage index, download them
back verified, and check, verify and repair them (docs/grid.md).

Modules: ``errors`` (exceptions), ``peers`` (the injected lookup and storage
factory), ``placement`` (sans-I/O share placement and happiness), ``sender``
(streams shares to peers with fallback), ``upload``, ``download``, ``health``,
``regenerate`` (finding and regenerating shares), ``tasks`` (timeouts,
cancellation), ``lease_renewal`` (keeping this node's uploads alive),
``storage_peers`` (which peers serve storage), ``uptime`` (observed peer uptime).
The application layer (:mod:`p2pstore.app.grid`) composes them for the front ends.

Every entry point takes two injected dependencies, so the same code runs on the
in-process test grid and on real QUIC: ``find_peers(storage_index, count)`` (a DHT
lookup, or :func:`static_peers`) and ``storage_for(peer) -> StorageAPI``.
"""

from .download import DownloadConfig, Downloader
from .errors import (
    DownloadError,
    FileShrank,
    GridError,
    GridLocalError,
    GridRemoteError,
    RepairError,
    UploadError,
)
from .health import CheckResult, Health, HealthConfig, RepairResult, VerifyResult
from .peers import (
    BulkShareWriter,
    FindPeers,
    Peer,
    Progress,
    StorageFor,
    WholeShareWriter,
    lookup_peers,
    static_peers,
)
from .placement import SharePlacer, happiness, rank_peers
from .quality import PeerQuality, QualitySource, quality_tier
from .sender import SendConfig
from .upload import (
    UploadConfig,
    Uploader,
    UploadResult,
    aiter_bytes,
    bytes_source,
    fd_source,
    file_source,
)

__all__ = [
    "BulkShareWriter",
    "CheckResult",
    "DownloadConfig",
    "DownloadError",
    "Downloader",
    "FileShrank",
    "FindPeers",
    "GridError",
    "GridLocalError",
    "GridRemoteError",
    "Health",
    "HealthConfig",
    "Peer",
    "PeerQuality",
    "Progress",
    "QualitySource",
    "RepairError",
    "RepairResult",
    "SendConfig",
    "SharePlacer",
    "StorageFor",
    "UploadConfig",
    "UploadError",
    "UploadResult",
    "Uploader",
    "VerifyResult",
    "WholeShareWriter",
    "aiter_bytes",
    "bytes_source",
    "fd_source",
    "file_source",
    "happiness",
    "lookup_peers",
    "quality_tier",
    "rank_peers",
    "static_peers",
]
