"""Mutable files: caps, the signed root naming each version, and the choice of the
latest version (docs/mutable.md).

A mutable file has an Ed25519 key pair. Each version is an immutable file; the
root (a storage slot record signed by the file's key, kept by the storage peers
nearest the slot's storage index) names the current one, sealed under a read key
derived from the signing seed. Sans-I/O: the grid layer
(:mod:`p2pstore.grid.mutable`) moves the records.
"""

from typing import TYPE_CHECKING

from p2pstore.base.lazy import lazy_names

if TYPE_CHECKING:
    from .caps import (
        MutableCap,
        ReadCap,
        VerifyCap,
        WriteCap,
        is_mutable_cap,
        parse_mutable_cap,
        read_key_of,
    )
    from .errors import MutableCapError, MutableError, MutableLocalError, MutableRemoteError
    from .root import Root, Version, VersionCap, check_root, choose, make_root, open_root

__all__ = [
    "MutableCap",
    "MutableCapError",
    "MutableError",
    "MutableLocalError",
    "MutableRemoteError",
    "ReadCap",
    "Root",
    "VerifyCap",
    "Version",
    "VersionCap",
    "WriteCap",
    "check_root",
    "choose",
    "is_mutable_cap",
    "make_root",
    "open_root",
    "parse_mutable_cap",
    "read_key_of",
]


_MODULE_OF = {
    "MutableCap": "caps",
    "MutableCapError": "errors",
    "MutableError": "errors",
    "MutableLocalError": "errors",
    "MutableRemoteError": "errors",
    "ReadCap": "caps",
    "Root": "root",
    "VerifyCap": "caps",
    "Version": "root",
    "VersionCap": "root",
    "WriteCap": "caps",
    "check_root": "root",
    "choose": "root",
    "is_mutable_cap": "caps",
    "make_root": "root",
    "open_root": "root",
    "parse_mutable_cap": "caps",
    "read_key_of": "caps",
}

__getattr__ = lazy_names(__name__, _MODULE_OF, globals())
