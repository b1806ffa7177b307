"""Errors of the local HTTP API and its backends, and their HTTP mapping.

Every failure a backend or handler reports is a :class:`BackendError` carrying a
stable machine-readable ``code`` (kebab-case), a human ``message`` and the HTTP
status it maps to. The API answers every error with the same JSON shape::

    {"error": {"code": "bad-cap", "message": "bad cap: key: ..."}}

Invariants:
- :class:`RequestError` (4xx) means the caller sent something wrong;
  :class:`GridError` (5xx) means the node or the grid could not do it. Backends
  raise the subclasses below; anything else escaping a handler is logged and
  answered as ``500 internal-error`` without details.
- Messages never contain caps, keys or the API token (callers must not put them
  there: a cap in a message would end up in logs and terminals).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class BackendError(Exception):
    """Base of every API error: ``code``, ``message``, ``http_status``, ``details``."""

    default_code: ClassVar[str] = "error"
    default_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.http_status = http_status or self.default_status
        self.details: dict[str, Any] = dict(details or {})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.http_status}, {self.message!r})"


class RequestError(BackendError):
    """The request is at fault (4xx)."""

    default_code = "bad-request"
    default_status = 400


class BadRequest(RequestError):
    default_code = "bad-request"
    default_status = 400


class Unauthorized(RequestError):
    """No token was sent with a call that needs one (401)."""

    default_code = "token-required"
    default_status = 401


class Forbidden(RequestError):
    """A token was sent but is wrong, or the Host header is not a local name (403)."""

    default_code = "token-invalid"
    default_status = 403


class NotFound(RequestError):
    default_code = "not-found"
    default_status = 404


class MethodNotAllowed(RequestError):
    default_code = "method-not-allowed"
    default_status = 405


class Conflict(RequestError):
    """The target exists / is of the wrong kind / the drive's sequence moved on (409)."""

    default_code = "conflict"
    default_status = 409


class TooLarge(RequestError):
    default_code = "too-large"
    default_status = 413


class RangeNotSatisfiable(RequestError):
    """Carries the representation's ``size`` for ``Content-Range: bytes */size``."""

    default_code = "range-not-satisfiable"
    default_status = 416

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, details={"size": size})
        self.size = size


class GridError(BackendError):
    """The node or the grid could not do it (5xx)."""

    default_code = "grid-error"
    default_status = 502


class Unavailable(GridError):
    """A service the call needs is missing or not ready (503)."""

    default_code = "unavailable"
    default_status = 503


class VdriveUnavailable(Unavailable):
    default_code = "vdrive-unavailable"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "the virtual drive is not available on this node yet "
            "(files by cap work: put/get/info/check)"
        )


class Unrecoverable(GridError):
    """Fewer than k good shares could be found (503: peers may come back)."""

    default_code = "unrecoverable"
    default_status = 503


class InsufficientStorage(GridError):
    default_code = "insufficient-storage"
    default_status = 507


class InternalError(GridError):
    default_code = "internal-error"
    default_status = 500
