"""Immutable files: convergent/random-key encryption, zfec erasure coding, Merkle
hash trees, the share layout and caps, all sans-I/O. The format is specified in
docs/file-format.md.

Modules, in dependency order: errors, params, crypto, hashtree, extension, layout,
caps, encoder, decoder, reader (a synchronous reference driver).
"""

from p2pstore.immutable.caps import Cap, LiteralCap, ReadCap, VerifyCap, parse_cap
from p2pstore.immutable.crypto import (
    ConvergenceHasher,
    convergent_key,
    new_convergence_secret,
    random_key,
    storage_index,
)
from p2pstore.immutable.decoder import (
    Decoder,
    FileVerifier,
    SegmentDecoder,
    VerifiedBlock,
    VerifiedCrypttextLeaf,
)
from p2pstore.immutable.encoder import (
    CiphertextEncoder,
    EncodedSegment,
    Encoder,
    EncodeResult,
    SegmentCoder,
    ShareTrailer,
    encode_bytes,
    encode_chunks,
)
from p2pstore.immutable.errors import (
    BadShareError,
    CapError,
    ImmutableError,
    InconsistentEncodingError,
    LocalError,
    NotEnoughSharesError,
    ParameterError,
    RemoteError,
    UsageError,
)
from p2pstore.immutable.extension import EXT_SIZE, ExtensionBlock
from p2pstore.immutable.params import (
    DEFAULT_SEGMENT_SIZE,
    LITERAL_MAX,
    EncodingParams,
    SegmentGeometry,
)
from p2pstore.immutable.reader import (
    MemoryShares,
    ShareSource,
    check_shares,
    open_shares,
    read_bytes,
    read_ciphertext,
    read_plaintext,
    regenerate_shares,
)
from p2pstore.immutable.share_layout import HEADER_SIZE, ShareHeader, ShareLayout, coalesce, pick

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "EXT_SIZE",
    "HEADER_SIZE",
    "LITERAL_MAX",
    "BadShareError",
    "Cap",
    "CapError",
    "CiphertextEncoder",
    "ConvergenceHasher",
    "Decoder",
    "EncodeResult",
    "EncodedSegment",
    "Encoder",
    "EncodingParams",
    "ExtensionBlock",
    "FileVerifier",
    "ImmutableError",
    "InconsistentEncodingError",
    "LiteralCap",
    "LocalError",
    "MemoryShares",
    "NotEnoughSharesError",
    "ParameterError",
    "ReadCap",
    "RemoteError",
    "SegmentCoder",
    "SegmentDecoder",
    "SegmentGeometry",
    "ShareHeader",
    "ShareLayout",
    "ShareSource",
    "ShareTrailer",
    "UsageError",
    "VerifiedBlock",
    "VerifiedCrypttextLeaf",
    "VerifyCap",
    "check_shares",
    "coalesce",
    "convergent_key",
    "encode_bytes",
    "encode_chunks",
    "new_convergence_secret",
    "open_shares",
    "parse_cap",
    "pick",
    "random_key",
    "read_bytes",
    "read_ciphertext",
    "read_plaintext",
    "regenerate_shares",
    "storage_index",
]
