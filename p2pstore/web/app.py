"""The aiohttp :class:`~aiohttp.web.Application` of a node's local HTTP API.

:func:`create_app` wires a backend and the API token into an application:
JSON routes under ``/api/v1/`` (``api.py``), ``/`` left to the web UI (issue 9:
it adds its own routes with ``app.router`` and reads :data:`BACKEND` /
:data:`TOKEN` / :data:`LIMITS` from the app).

Invariants (docs/http-api.md, "Security"):
- every request whose Host header does not name a loopback host (``127.0.0.1``,
  ``localhost``, ``[::1]``) is refused with 403 ``bad-host`` (DNS-rebinding
  defence: a web page cannot talk to the API through a hostname it controls);
- every request under ``/api/`` with a method other than GET/HEAD, and every GET
  route marked as needing it, must carry ``Authorization: Bearer <token>``
  (compared in constant time); the web UI's own forms outside ``/api/`` are
  guarded by its session cookie and CSRF token instead (``p2pstore/web/ui/``);
- every error under ``/api/`` is JSON ``{"error": {"code", "message"}}``; an
  unexpected exception is logged and answered ``500 internal-error`` without
  details;
- every response carries ``Cache-Control: no-store``,
  ``Referrer-Policy: no-referrer`` and ``X-Content-Type-Options: nosniff`` (URLs
  and bodies may hold caps); JSON bodies are bounded by ``LIMITS.max_json_bytes``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from .backend import ApiBackend
from .errors import (
    BackendError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RangeNotSatisfiable,
    Unauthorized,
)
from .transfers import Transfers

log = logging.getLogger(__name__)

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


BACKEND: Final = web.AppKey("p2pstore_backend", ApiBackend)
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


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _safe_path(path: str) -> str:
    """A request path fit for an error message: caps masked, length bounded."""
    parts = ["<cap>" if "p2ps:" in p else p for p in path.split("/")]
    text = "/".join(parts)
    return text if len(text) <= 100 else text[:100] + "..."


def error_response(e: BackendError) -> web.Response:
    resp = web.json_response(e.to_json(), status=e.http_status)
    if isinstance(e, RangeNotSatisfiable):
        resp.headers["Content-Range"] = f"bytes */{e.size}"
    if e.http_status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="p2pstore"'
    return resp


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    is_api = request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")
    try:
        host = _host_name((request.host or "").lower())
        if host not in request.app[ALLOWED_HOSTS]:
            raise Forbidden(
                f"Host {request.host!r} is not a loopback name; use http://127.0.0.1:<port>/",
                code="bad-host",
            )
        # Outside /api/ the web UI authenticates its own requests (session cookie +
        # CSRF token, p2pstore/web/ui/); API mutations always need the bearer token.
        if (is_api and request.method not in SAFE_METHODS) or getattr(
            getattr(request.match_info, "handler", None), _NEEDS_TOKEN, False
        ):
            check_token(request)
        return await handler(request)
    except BackendError as e:
        return error_response(e)
    except web.HTTPException as e:
        if not is_api or e.status < 400:
            raise
        if e.status == 404:
            return error_response(
                NotFound(f"no such API route: {request.method} {_safe_path(request.path)}")
            )
        if e.status == 405:
            return error_response(
                MethodNotAllowed(f"{request.method} is not allowed on {_safe_path(request.path)}")
            )
        if e.status == 413:
            return error_response(
                BackendError(
                    f"request body too large (at most {request.app[LIMITS].max_json_bytes} bytes)",
                    code="too-large",
                    http_status=413,
                )
            )
        return error_response(BackendError(e.reason, code="http-error", http_status=e.status))
    except Exception:
        log.exception("internal error handling %s %s", request.method, request.match_info.route)
        return error_response(InternalError("internal error (see the node's log)"))


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def create_app(
    backend: ApiBackend,
    token: str,
    *,
    limits: ApiLimits | None = None,
    allowed_hosts: Collection[str] = LOOPBACK_HOSTS,
    ui: Callable[[web.Application], None] | None = None,
    bootstrap: BootstrapInfo | None = None,
) -> web.Application:
    """The application: API routes under ``/api/v1/``; ``/`` and everything outside
    ``/api/`` belong to the web UI, which ``ui(app)`` registers (without it, ``/``
    answers a one-line placeholder)."""
    from . import api  # handlers import this module's keys

    if not token:
        raise ValueError("the API token must not be empty")
    limits = limits or ApiLimits()
    app = web.Application(middlewares=[_guard], client_max_size=limits.max_json_bytes)
    app[BACKEND] = backend
    app[TOKEN] = token
    app[LIMITS] = limits
    app[TRANSFERS] = Transfers()
    app[ALLOWED_HOSTS] = frozenset(h.lower() for h in allowed_hosts)
    if bootstrap is not None:
        app[BOOTSTRAP] = bootstrap
    app.on_response_prepare.append(_security_headers)
    api.add_routes(app)
    if ui is not None:
        ui(app)
    else:
        app.router.add_get("/", _root)
    return app


async def _root(request: web.Request) -> web.Response:
    return web.Response(
        text="p2pstore node: the JSON API is under /api/v1/ (docs/http-api.md); "
        "the web UI is not built yet.\n"
    )


def runner_kwargs(limits: ApiLimits) -> dict[str, Any]:
    """Keyword arguments for :class:`aiohttp.web.AppRunner` enforcing ``limits``."""
    return {
        "access_log": None,  # URLs hold caps: no access log
        "handle_signals": False,
        "keepalive_timeout": limits.keepalive_timeout,
        "max_line_size": limits.max_line_size,
        "max_field_size": limits.max_field_size,
        "max_headers": limits.max_headers,
        "shutdown_timeout": limits.shutdown_timeout,
    }
