"""The extension block: the fixed-size record of a file's parameters and roots.

Invariants (docs/file-format.md, "Extension block"):
- Exactly :data:`EXT_SIZE` (110) bytes, big-endian::

      magic "p2ps-ext" | version u16 = 1 | k u16 | N u16 | segment_size u32 |
      size u64 | storage_index 20 | share_tree_root 32 | crypttext_root 32

- Parsing is strict: magic, version, k/N/segment-size rules of
  :class:`EncodingParams`, ``LITERAL_MAX < size <= MAX_FILE_SIZE``.
- Its hash ``SHA-256-tagged("p2ps:v1:extension-block", bytes)`` goes into the cap;
  a copy sits at the end of every share.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from p2pstore.immutable.crypto import HASH_BYTES, TAG_EXT, tagged_hash
from p2pstore.immutable.errors import ParameterError
from p2pstore.immutable.params import EncodingParams, SegmentGeometry
from quic_transport.identity import ID_BYTES

EXT_MAGIC: Final = b"p2ps-ext"
EXT_VERSION: Final = 1
_FMT: Final = struct.Struct(">8sHHHIQ20s32s32s")
EXT_SIZE: Final = _FMT.size
assert EXT_SIZE == 110


@dataclass(frozen=True, slots=True)
class ExtensionBlock:
    params: EncodingParams
    size: int
    storage_index: bytes
    share_tree_root: bytes
    crypttext_root: bytes

    def __post_init__(self) -> None:
        SegmentGeometry(self.params, self.size)  # validates size
        if len(self.storage_index) != ID_BYTES:
            raise ParameterError(f"storage index must be {ID_BYTES} bytes")
        for name in ("share_tree_root", "crypttext_root"):
            if len(getattr(self, name)) != HASH_BYTES:
                raise ParameterError(f"{name} must be {HASH_BYTES} bytes")

    @property
    def geometry(self) -> SegmentGeometry:
        return SegmentGeometry(self.params, self.size)

    def to_bytes(self) -> bytes:
        p = self.params
        return _FMT.pack(
            EXT_MAGIC,
            EXT_VERSION,
            p.k,
            p.n,
            p.segment_size,
            self.size,
            self.storage_index,
            self.share_tree_root,
            self.crypttext_root,
        )

    def hash(self) -> bytes:
        return extension_hash(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> ExtensionBlock:
        """Strict parse; raises ParameterError naming the first bad field."""
        if len(data) != EXT_SIZE:
            raise ParameterError(f"extension block is {len(data)} bytes, expected {EXT_SIZE}")
        magic, version, k, n, seg, size, si, share_root, ct_root = _FMT.unpack(data)
        if magic != EXT_MAGIC:
            raise ParameterError("extension block: bad magic")
        if version != EXT_VERSION:
            raise ParameterError(f"extension block: unknown version {version}")
        ext = cls(EncodingParams(k, n, seg), size, si, share_root, ct_root)
        if ext.to_bytes() != data:  # pragma: no cover - struct round trip is exact
            raise ParameterError("extension block: non-canonical encoding")
        return ext


def extension_hash(data: bytes) -> bytes:
    return tagged_hash(TAG_EXT, data)
