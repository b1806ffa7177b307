"""Errors of the application layer: what every front end may see an operation fail with.

Every failure an operation reports is an :class:`AppError` carrying a stable
machine-readable ``code`` (kebab-case) and a human ``message``; its class says
whose fault it is. The HTTP adapter maps classes to statuses
(:mod:`p2pstore.web.errors`) and answers every error with the same JSON shape::

    {"error": {"code": "bad-cap", "message": "bad cap: key: ..."}}

Invariants:
- :class:`RequestError` means the caller sent something wrong;
  :class:`GridError` means the node or the grid could not do it. Operations
  raise the subclasses below; anything else escaping a front end's handler is
  logged and reported as ``internal-error`` without details.
- Messages never contain caps, keys or the API token (callers must not put them
  there: a cap in a message would end up in logs and terminals).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class AppError(Exception):
    """Base of every application error: ``code``, ``message``, ``details``."""

    default_code: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"


class RequestError(AppError):
    """The request is at fault (4xx)."""

    default_code = "bad-request"


class BadRequest(RequestError):
    default_code = "bad-request"


class Forbidden(RequestError):
    """The caller may not do this (a wrong token, a non-local Host, a refused writer)."""

    default_code = "token-invalid"


class NotFound(RequestError):
    default_code = "not-found"


class Conflict(RequestError):
    """The target exists / is of the wrong kind / the drive's sequence moved on."""

    default_code = "conflict"


class TooLarge(RequestError):
    default_code = "too-large"


class GridError(AppError):
    """The node or the grid could not do it (5xx)."""

    default_code = "grid-error"


class Unavailable(GridError):
    """A service the call needs is missing or not ready."""

    default_code = "unavailable"


class VdriveUnavailable(Unavailable):
    default_code = "vdrive-unavailable"

    def __init__(
        self, message: str | None = None, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(
            message
            or "the virtual drive is not available on this node yet "
            "(files by cap work: put/get/info/check)",
            details=details,
        )


class Unrecoverable(GridError):
    """Fewer than k good shares could be found (peers may come back)."""

    default_code = "unrecoverable"


class InsufficientStorage(GridError):
    default_code = "insufficient-storage"


class InternalError(GridError):
    default_code = "internal-error"
