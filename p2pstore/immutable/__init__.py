"""Immutable files: convergent/random-key encryption, zfec erasure coding, Merkle
hash trees, the share layout and caps, all sans-I/O. The format is specified in
docs/file-format.md.

Modules, in dependency order: errors, params, crypto, hashtree, extension, layout,
caps, encoder, decoder, reader (a synchronous reference driver).
"""

from typing import TYPE_CHECKING

from p2pstore.base.lazy import lazy_names

if TYPE_CHECKING:
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
    from p2pstore.immutable.share_layout import (
        HEADER_SIZE,
        ShareHeader,
        ShareLayout,
        coalesce,
        pick,
    )

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


_MODULE_OF = {
    "BadShareError": "errors",
    "Cap": "caps",
    "CapError": "errors",
    "CiphertextEncoder": "encoder",
    "ConvergenceHasher": "crypto",
    "DEFAULT_SEGMENT_SIZE": "params",
    "Decoder": "decoder",
    "EXT_SIZE": "extension",
    "EncodeResult": "encoder",
    "EncodedSegment": "encoder",
    "Encoder": "encoder",
    "EncodingParams": "params",
    "ExtensionBlock": "extension",
    "FileVerifier": "decoder",
    "HEADER_SIZE": "share_layout",
    "ImmutableError": "errors",
    "InconsistentEncodingError": "errors",
    "LITERAL_MAX": "params",
    "LiteralCap": "caps",
    "LocalError": "errors",
    "MemoryShares": "reader",
    "NotEnoughSharesError": "errors",
    "ParameterError": "errors",
    "ReadCap": "caps",
    "RemoteError": "errors",
    "SegmentCoder": "encoder",
    "SegmentDecoder": "decoder",
    "SegmentGeometry": "params",
    "ShareHeader": "share_layout",
    "ShareLayout": "share_layout",
    "ShareSource": "reader",
    "ShareTrailer": "encoder",
    "UsageError": "errors",
    "VerifiedBlock": "decoder",
    "VerifiedCrypttextLeaf": "decoder",
    "VerifyCap": "caps",
    "check_shares": "reader",
    "coalesce": "share_layout",
    "convergent_key": "crypto",
    "encode_bytes": "encoder",
    "encode_chunks": "encoder",
    "new_convergence_secret": "crypto",
    "open_shares": "reader",
    "parse_cap": "caps",
    "pick": "share_layout",
    "random_key": "crypto",
    "read_bytes": "reader",
    "read_ciphertext": "reader",
    "read_plaintext": "reader",
    "regenerate_shares": "reader",
    "storage_index": "crypto",
}

__getattr__ = lazy_names(__name__, _MODULE_OF, globals())
