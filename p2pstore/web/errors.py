"""The HTTP adapter's side of errors: the statuses application errors map to, and
the errors only HTTP has (a missing token, a method not allowed, an unsatisfiable
range, a stalled request body).

:func:`http_status` is the one place that knows which status an
:class:`~p2pstore.app.errors.AppError` gets: the nearest class in the error's MRO
that the table names (docs/http-api.md "Errors").
"""

from __future__ import annotations

from typing import Final

from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    GridError,
    InsufficientStorage,
    InternalError,
    NotFound,
    RequestError,
    TooLarge,
    Unavailable,
    Unrecoverable,
)


class Unauthorized(RequestError):
    """No token was sent with a call that needs one (401)."""

    default_code = "token-required"


class MethodNotAllowed(RequestError):
    default_code = "method-not-allowed"


class RangeNotSatisfiable(RequestError):
    """Carries the representation's ``size`` for ``Content-Range: bytes */size``."""

    default_code = "range-not-satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, details={"size": size})
        self.size = size


class RequestTimeout(BadRequest):
    """The request body stalled (no data within the idle timeout)."""


class ClientGone(BadRequest):
    """The client went away before the answer (nobody reads this error; the request's
    work is abandoned and its transfer ends as failed)."""

    default_code = "client-gone"

    def __init__(self) -> None:
        super().__init__("the client went away; the request was abandoned")


class HttpStatusError(AppError):
    """An error aiohttp raised with its own status (kept as is)."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message, code=code)
        self.status = status


_STATUS: Final[dict[type[AppError], int]] = {
    AppError: 500,
    RequestError: 400,
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    Conflict: 409,
    TooLarge: 413,
    RangeNotSatisfiable: 416,
    GridError: 502,
    Unavailable: 503,
    Unrecoverable: 503,
    InsufficientStorage: 507,
    InternalError: 500,
}


def http_status(e: AppError) -> int:
    """The HTTP status the API answers ``e`` with."""
    if isinstance(e, HttpStatusError):
        return e.status
    for cls in type(e).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500
