"""Errors of the vdrive package (one base, Local/Remote split; docs/architecture.md, "Conventions").

Every error carries a stable kebab-case ``code`` (the same codes the HTTP API uses,
docs/http-api.md) and a message that never contains a cap or a secret.

- :class:`VdriveLocalError`: the request is wrong for the current namespace
  (``not-found``, ``exists``, ``is-a-directory``, ``not-a-directory``,
  ``directory-not-empty``, ``bad-path``, ``cross-drive``, ``sequence-mismatch``,
  ``refused``, ``bad-request``) or the vdrive node cannot be reached
  (``vdrive-unavailable``).
- :class:`VdriveRemoteError`: something another party produced is bad or missing:
  a record that fails to open (``bad-record``), a rolled-back record
  (``rollback``), a malformed directory object (``bad-directory``), the grid
  failing to store or return an object (``grid-error``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class VdriveError(Exception):
    def __init__(self, code: str, message: str, *, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class VdriveLocalError(VdriveError):
    """The caller asked for something the namespace (or its state) does not allow."""


class VdriveRemoteError(VdriveError):
    """Data or an answer from elsewhere (DHT, grid, vdrive node) is bad or missing."""


def conflict(current: int, expected: int, drive: str = "shared") -> VdriveLocalError:
    return VdriveLocalError(
        "sequence-mismatch",
        f"the {drive} drive changed (sequence {current}, expected {expected})",
        details={"sequence": current},
    )
