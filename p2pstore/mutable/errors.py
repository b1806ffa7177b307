"""Exceptions of the mutable-file format (one base, Local/Remote split).

Invariants:
- :class:`MutableLocalError` means the caller is at fault (a malformed or mistyped
  cap, a cap of the wrong kind for the operation). :class:`MutableRemoteError`
  means bytes that came from the grid are wrong (a root whose body does not open
  under the read key, a version cap that does not match its signed verify cap).
- Messages never contain key material.
"""

from __future__ import annotations


class MutableError(Exception):
    """Base of every error raised by :mod:`p2pstore.mutable`."""


class MutableLocalError(MutableError):
    """The caller supplied something invalid."""


class MutableCapError(MutableLocalError, ValueError):
    """A mutable cap string is malformed; ``field`` names the part that is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"bad cap: {field}: {reason}")
        self.field = field
        self.reason = reason


class MutableRemoteError(MutableError):
    """A root or body read from the grid failed validation."""
