"""Mutable files: caps, the signed root naming each version, and the choice of the
latest version (docs/mutable.md).

A mutable file has an Ed25519 key pair. Each version is an immutable file; the
root (a storage slot record signed by the file's key, kept by the storage peers
nearest the slot's storage index) names the current one, sealed under a read key
derived from the signing seed. Sans-I/O: the grid layer
(:mod:`p2pstore.grid.mutable`) moves the records.
"""

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
