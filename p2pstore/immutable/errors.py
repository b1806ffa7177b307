"""Exceptions of the immutable-file format (one base, Local/Remote split).

Invariants:
- :class:`LocalError` means the caller is at fault (bad parameters, a malformed or
  mistyped cap, API misuse). :class:`RemoteError` means bytes that came from storage
  are wrong (a corrupt share, an inconsistent encoding, too few good shares); the
  offending share number is carried as a field so a downloader can drop exactly that
  share and carry on with others.
- Messages never contain key material.
"""

from __future__ import annotations


class ImmutableError(Exception):
    """Base of every error raised by :mod:`p2pstore.immutable`."""


class LocalError(ImmutableError):
    """The caller supplied something invalid."""


class ParameterError(LocalError, ValueError):
    """Encoding parameters (k, N, segment size) or a size/offset are out of range."""


class CapError(LocalError, ValueError):
    """A cap string is malformed; ``field`` names the part that is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"bad cap: {field}: {reason}")
        self.field = field
        self.reason = reason


class UsageError(LocalError):
    """An API was called out of order (e.g. a block verified before its share root)."""


class RemoteError(ImmutableError):
    """Data read from storage failed validation."""


class BadShareError(RemoteError):
    """Share ``share_number`` is corrupt; ``segment`` is set when a block was at fault."""

    def __init__(self, share_number: int, reason: str, *, segment: int | None = None) -> None:
        where = f"share {share_number}" + ("" if segment is None else f", segment {segment}")
        super().__init__(f"{where}: {reason}")
        self.share_number = share_number
        self.segment = segment
        self.reason = reason


class InconsistentEncodingError(RemoteError):
    """Blocks that each verified decode to ciphertext that does not match the
    ciphertext hash tree: the uploader produced an inconsistent erasure coding."""

    def __init__(self, segment: int, shares: tuple[int, ...]) -> None:
        super().__init__(
            f"segment {segment}: blocks from shares {list(shares)} verify individually but "
            "decode to ciphertext that does not match the ciphertext hash tree"
        )
        self.segment = segment
        self.shares = shares


class NotEnoughSharesError(RemoteError):
    """Fewer than k good shares are available for a segment."""

    def __init__(
        self, *, need: int, have: int, segment: int | None = None, bad: tuple[int, ...] = ()
    ) -> None:
        where = "" if segment is None else f"segment {segment}: "
        extra = f" (shares found bad: {list(bad)})" if bad else ""
        super().__init__(f"{where}need {need} good shares, have {have}{extra}")
        self.need = need
        self.have = have
        self.segment = segment
        self.bad = bad
