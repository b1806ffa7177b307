"""The virtual drive (docs/vdrive.md): paths -> caps, shared and private, over the grid.

Modules, in dependency order (docs/vdrive.md is the specification):

- ``errors``: ``VdriveError`` -> ``VdriveLocalError`` / ``VdriveRemoteError`` (codes);
- ``dirnode``: directory objects (CBOR, validated) and directory caps (sans-I/O);
- ``objects``: the ``ObjectStore`` Protocol, memory/grid stores, the cap-keyed cache;
- ``ops``: mkdir/link/unlink/rename and their copy-on-write application;
- ``record``: the sealed root pointer, record names, the rollback guard (seen file);
- ``writer``: ``DriveWriter``, the single writer of a drive (lock, policy, publish);
- ``rpc``: the ``vdrive.apply`` adapter and ``RemoteWriter``;
- ``drive``: ``DriveReader`` (DHT record -> verified pointer), ``Drive``, ``Vdrive``;
- ``backend``: the ``vdrive_*`` methods of the HTTP API's backend;
- ``node``: building a node's ``Vdrive`` from its keys, bootstrap list and config;
- ``testing``: in-process record DHT and a one-process vdrive.
"""

from .dirnode import DirCap, Directory, Entry, decode_directory, parse_dircap
from .drive import Drive, DriveReader, LocalWriter, Vdrive
from .errors import VdriveError, VdriveLocalError, VdriveRemoteError
from .objects import CachingStore, GridObjectStore, MemoryObjectStore, ObjectStore
from .ops import Link, Mkdir, Rename, Unlink, apply_op
from .root_record import PRIVATE_NAME, SHARED_NAME, RootPointer, SeenStore
from .rpc import METHOD, OUTCOME_METHOD, RemoteWriter, register_vdrive_rpc
from .writer import ChangeResult, DriveWriter, Outcome, WritePolicy

__all__ = [
    "METHOD",
    "OUTCOME_METHOD",
    "PRIVATE_NAME",
    "SHARED_NAME",
    "CachingStore",
    "ChangeResult",
    "DirCap",
    "Directory",
    "Drive",
    "DriveReader",
    "DriveWriter",
    "Entry",
    "GridObjectStore",
    "Link",
    "LocalWriter",
    "MemoryObjectStore",
    "Mkdir",
    "ObjectStore",
    "Outcome",
    "RemoteWriter",
    "Rename",
    "RootPointer",
    "SeenStore",
    "Unlink",
    "Vdrive",
    "VdriveError",
    "VdriveLocalError",
    "VdriveRemoteError",
    "WritePolicy",
    "apply_op",
    "decode_directory",
    "parse_dircap",
    "register_vdrive_rpc",
]
