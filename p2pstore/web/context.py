"""What the HTTP API's handlers and the web UI share: the app keys (the
application behind the API, the token, the limits, the transfers), the token
check and the JSON error response (docs/http-api.md).

The handlers (:mod:`.api`, :mod:`.ui`) and the application factory
(:mod:`.http_app`) import this module; it imports none of them.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from p2pstore.app.contract import Application
from p2pstore.app.errors import AppError, Forbidden

from .errors import RangeNotSatisfiable, Unauthorized, http_status
from .transfers import Transfers

API_PREFIX: Final = "/api/v1"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Bounds on what one request may cost the node."""

    max_json_bytes: int = 64 * 1024
    max_upload_bytes: int | None = None  # None: the backend's own limits apply
    idle_timeout: float = 60.0  # longest pause in an upload body
    keepalive_timeout: float = 75.0
    max_line_size: int = 8190  # request line and each header line
    max_field_size: int = 8190
    max_headers: int = 64
    shutdown_timeout: float = 5.0


BACKEND: Final = web.AppKey("p2pstore_backend", Application)
TOKEN: Final = web.AppKey("p2pstore_token", str)
LIMITS: Final = web.AppKey("p2pstore_limits", ApiLimits)
ALLOWED_HOSTS: Final = web.AppKey("p2pstore_allowed_hosts", frozenset)
TRANSFERS: Final = web.AppKey("p2pstore_transfers", Transfers)
# Optional: what GET /api/v1/bootstrap answers (the runner provides it from the node dir).
BootstrapInfo = Callable[[], Mapping[str, Any]]
BOOTSTRAP: Final = web.AppKey[BootstrapInfo]("p2pstore_bootstrap")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NEEDS_TOKEN: Final = "_p2pstore_needs_token"


def token_required(handler: Handler) -> Handler:
    """Mark a GET handler as needing the API token (non-GET handlers always do)."""
    setattr(handler, _NEEDS_TOKEN, True)
    return handler


def check_token(request: web.Request) -> None:
    """Raise 401/403 unless the request carries the node's API token."""
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized(
            "this call needs the node's API token: send 'Authorization: Bearer <token>' "
            "(the token is in the node directory, private/api.token)"
        )
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    expected = request.app[TOKEN].encode()
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
        raise Forbidden("the API token is wrong (see private/api.token in the node directory)")


def error_response(e: AppError) -> web.Response:
    status = http_status(e)
    resp = web.json_response(e.to_json(), status=status)
    if isinstance(e, RangeNotSatisfiable):
        resp.headers["Content-Range"] = f"bytes */{e.size}"
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="p2pstore"'
    return resp
