"""The node's local web UI (docs/web-ui.md): HTML pages over the same backend as the JSON
API, served by the API's aiohttp application outside ``/api/``.

``create_app(backend, token, ui=add_ui_routes)`` (what :class:`ApiServer` does
by default) registers the pages (:mod:`.routes`), the drive forms (:mod:`.ops`),
the pages of mutable files (:mod:`.mutable`) and the static files
(:mod:`.static`), and keeps the UI's session store in ``app[UI_STATE]``.
docs/web-ui.md describes the pages, the login/session/CSRF scheme and the JSON
variants.

Invariants: every UI response carries a ``default-src 'self'`` CSP (downloads
keep their stricter ``sandbox`` one), ``X-Frame-Options: DENY`` and the API's
``no-store``/``no-referrer``/``nosniff`` headers; pages load nothing from other
origins.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from ..context import API_PREFIX
from .auth import UI_STATE, UiState, html
from .html import PAGE_CSP
from .live import add_live_routes
from .mutable import add_mutable_routes
from .ops import add_op_routes
from .routes import add_page_routes
from .session import SessionStore

__all__ = ["UI_STATE", "UiState", "add_ui_routes", "make_ui"]


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


@web.middleware
async def _ui_not_found(
    request: web.Request, handler: Callable[[web.Request], object]
) -> web.StreamResponse:
    try:
        resp = await handler(request)  # type: ignore[misc]
        assert isinstance(resp, web.StreamResponse)
        return resp
    except web.HTTPNotFound:
        if _is_api(request.path):
            raise
        body = '<p>There is no page here.</p><p><a href="/">Front page</a></p>'
        return html(request, "Not found", body, auth=None, status=404)


async def _ui_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not _is_api(request.path):
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")


def make_ui(
    *, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
) -> Callable[[web.Application], None]:
    """A ``ui=`` hook with injected clocks (``clock`` for session expiry)."""

    def add(app: web.Application) -> None:
        app[UI_STATE] = UiState(SessionStore(clock), wall=wall, started=wall())
        app.middlewares.append(_ui_not_found)
        app.on_response_prepare.append(_ui_headers)
        add_page_routes(app)
        add_op_routes(app)
        add_mutable_routes(app)
        add_live_routes(app)

    return add


add_ui_routes = make_ui()
"""The default ``ui=`` hook for :func:`p2pstore.web.http_app.create_app`."""
