"""Storage server: shares on disk keyed by storage index and share number, quota,
leases with a bounded background crawler, and a thin RPC adapter.

Public surface (see docs/storage.md):
- :class:`StorageServer` (business logic, sync, thread-safe) built by ``StorageServer.open``
- :class:`StorageConfig`
- :class:`StorageAPI` (async protocol) with :class:`LocalStorageClient` and
  :class:`RpcStorageClient`
- :class:`LeaseCrawler`; :class:`StorageService` (server + crawler + RPC, one close)
- :func:`register_storage_rpc` / :class:`StorageRpcAdapter`
- :class:`StorageError` and its subclasses (stable ``code`` strings)
- slot records: :mod:`.slots` (``SlotRecord``, ``decode_record``, ``slot_index``,
  ``accepts``, ``MAX_RECORD``)
"""

from typing import TYPE_CHECKING

from p2pstore.base.lazy import lazy_names

if TYPE_CHECKING:
    from .api import LocalStorageClient, StorageAPI
    from .config import StorageConfig
    from .crawler import LeaseCrawler, TickReport
    from .errors import (
        AlreadyUploading,
        BadRecord,
        BadRequest,
        BadResponse,
        DiskFull,
        IncompleteShare,
        NoSuchLease,
        NoSuchShare,
        NoSuchUpload,
        OutOfRange,
        QuotaExceeded,
        ShareExists,
        StorageError,
        StorageIOError,
        TooFragmented,
        TooLarge,
        TooManyLeases,
        TooManyUploads,
        Unavailable,
        UnknownStorageError,
        error_from_code,
    )
    from .results import Allocation, ClosedShare, StorageStats
    from .rpc import StorageRpcAdapter, StorageRpcError, register_storage_rpc
    from .rpc_client import RpcStorageClient, bind_endpoint
    from .server import StorageServer
    from .service import StorageService
    from .whole import put_in_steps

__all__ = [
    "Allocation",
    "AlreadyUploading",
    "BadRecord",
    "BadRequest",
    "BadResponse",
    "ClosedShare",
    "DiskFull",
    "IncompleteShare",
    "LeaseCrawler",
    "LocalStorageClient",
    "NoSuchLease",
    "NoSuchShare",
    "NoSuchUpload",
    "OutOfRange",
    "QuotaExceeded",
    "RpcStorageClient",
    "ShareExists",
    "StorageAPI",
    "StorageConfig",
    "StorageError",
    "StorageIOError",
    "StorageRpcAdapter",
    "StorageRpcError",
    "StorageServer",
    "StorageService",
    "StorageStats",
    "TickReport",
    "TooFragmented",
    "TooLarge",
    "TooManyLeases",
    "TooManyUploads",
    "Unavailable",
    "UnknownStorageError",
    "bind_endpoint",
    "error_from_code",
    "put_in_steps",
    "register_storage_rpc",
]


_MODULE_OF = {
    "Allocation": "results",
    "AlreadyUploading": "errors",
    "BadRecord": "errors",
    "BadRequest": "errors",
    "BadResponse": "errors",
    "ClosedShare": "results",
    "DiskFull": "errors",
    "IncompleteShare": "errors",
    "LeaseCrawler": "crawler",
    "LocalStorageClient": "api",
    "NoSuchLease": "errors",
    "NoSuchShare": "errors",
    "NoSuchUpload": "errors",
    "OutOfRange": "errors",
    "QuotaExceeded": "errors",
    "RpcStorageClient": "rpc_client",
    "ShareExists": "errors",
    "StorageAPI": "api",
    "StorageConfig": "config",
    "StorageError": "errors",
    "StorageIOError": "errors",
    "StorageRpcAdapter": "rpc",
    "StorageRpcError": "rpc",
    "StorageServer": "server",
    "StorageService": "service",
    "StorageStats": "results",
    "TickReport": "crawler",
    "TooFragmented": "errors",
    "TooLarge": "errors",
    "TooManyLeases": "errors",
    "TooManyUploads": "errors",
    "Unavailable": "errors",
    "UnknownStorageError": "errors",
    "bind_endpoint": "rpc_client",
    "error_from_code": "errors",
    "put_in_steps": "whole",
    "register_storage_rpc": "rpc",
}

__getattr__ = lazy_names(__name__, _MODULE_OF, globals())
