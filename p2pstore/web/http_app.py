"""The aiohttp :class:`~aiohttp.web.Application` of a node's local HTTP API.

:func:`create_app` wires a backend and the API token into an application:
JSON routes under ``/api/v1/`` (``api.py``), ``/`` left to the web UI (it adds
its own routes with ``app.router`` and reads the keys of :mod:`.context`
from the app).

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

import logging
from collections.abc import Callable, Collection
from typing import Any

from aiohttp import web

from p2pstore.app.contract import Application
from p2pstore.app.errors import (
    AppError,
    Forbidden,
    InternalError,
    NotFound,
    TooLarge,
)

from . import api
from .context import (
    _NEEDS_TOKEN,
    ALLOWED_HOSTS,
    API_PREFIX,
    BACKEND,
    BOOTSTRAP,
    LIMITS,
    LOOPBACK_HOSTS,
    SAFE_METHODS,
    TOKEN,
    TRANSFERS,
    ApiLimits,
    BootstrapInfo,
    Handler,
    check_token,
    error_response,
)
from .drive_api import add_drive_change_routes
from .errors import (
    HttpStatusError,
    MethodNotAllowed,
)
from .pins_api import add_pin_routes
from .transfers import Transfers

log = logging.getLogger(__name__)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _safe_path(path: str) -> str:
    """A request path fit for an error message: caps masked, length bounded."""
    parts = ["<cap>" if "p2ps:" in p else p for p in path.split("/")]
    text = "/".join(parts)
    return text if len(text) <= 100 else text[:100] + "..."


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
    except AppError as e:
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
                TooLarge(
                    f"request body too large (at most {request.app[LIMITS].max_json_bytes} bytes)"
                )
            )
        return error_response(HttpStatusError(e.reason, code="http-error", status=e.status))
    except Exception:
        log.exception("internal error handling %s %s", request.method, request.match_info.route)
        return error_response(InternalError("internal error (see the node's log)"))


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def create_app(
    backend: Application,
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
    add_drive_change_routes(app)
    add_pin_routes(app)
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
