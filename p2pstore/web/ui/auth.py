"""Who is asking: the web UI's request authentication and response helpers.

A UI request is authenticated by either
- the API's ``Authorization: Bearer <token>`` (scripts; no CSRF check needed, a
  cross-site page cannot set that header), or
- the session cookie ``p2ps_session_<port>`` (browsers). Cookies are not
  isolated by port, so the name carries the port: two nodes on one machine keep
  separate sessions in one browser.

Mutating requests with a session must also pass :func:`check_form`: the
same-origin check (``Sec-Fetch-Site``/``Origin``) and the session's CSRF token.
Pages are HTML unless the client asks for JSON (``?format=json``, or an
``Accept`` naming ``application/json`` and not ``text/html``).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Forbidden,
)

from ..context import BACKEND, TOKEN, check_token, error_response
from ..errors import (
    Unauthorized,
    http_status,
)
from .html import PAGE_CSP, esc, login_url, page
from .pages import error_page
from .session import Session, SessionStore, same_origin

COOKIE_PREFIX: Final = "p2ps_session_"


@dataclass
class UiState:
    """Per-application UI state: sessions and what the header shows."""

    sessions: SessionStore
    wall: Callable[[], float] = time.time
    started: float = field(default_factory=time.time)
    nickname: str | None = None
    nickname_known: bool = False

    def login_ticket_url(self, base_url: str) -> str:
        """A one-time login link on ``base_url`` (``http://127.0.0.1:PORT/``)."""
        return base_url.rstrip("/") + "/login/" + self.sessions.new_ticket()


UI_STATE: Final = web.AppKey("p2pstore_ui_state", UiState)


@dataclass(frozen=True)
class Auth:
    """An authenticated UI request: a browser session, or a bearer-token script."""

    session: Session | None
    sid: str | None = field(default=None, repr=False)

    @property
    def bearer(self) -> bool:
        return self.session is None

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session is not None else ""


def cookie_name(request: web.Request) -> str:
    host = request.host or ""
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else "80"
    return COOKIE_PREFIX + (port if port.isdigit() and len(port) <= 5 else "80")


def set_session_cookie(resp: web.StreamResponse, request: web.Request, sid: str) -> None:
    resp.set_cookie(cookie_name(request), sid, httponly=True, samesite="Strict", path="/")


def authenticate(request: web.Request) -> Auth | None:
    """The request's credentials; raises 401/403 for a wrong bearer token, None when
    there are none."""
    if "Authorization" in request.headers:
        check_token(request)
        return Auth(None)
    sid = request.cookies.get(cookie_name(request))
    session = request.app[UI_STATE].sessions.get(sid)
    return Auth(session, sid) if session is not None else None


def wants_json(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        return fmt == "json"
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


async def read_form(request: web.Request) -> dict[str, str]:
    """A posted form's text fields (bounded by the app's ``client_max_size``); a
    malformed body is a 400, not a 500."""
    try:
        form = await request.post()
    except (ValueError, aiohttp.http_exceptions.HttpProcessingError):
        raise BadRequest("the form data is malformed") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def check_form(request: web.Request, auth: Auth, csrf: str | None) -> None:
    """Refuse a session-authenticated mutation from another site or without the
    session's CSRF token (403)."""
    if auth.session is None:
        return
    if not same_origin(
        host=request.host or "",
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        referer=request.headers.get("Referer"),
    ):
        raise Forbidden("cross-site form submissions are refused", code="cross-site")
    token = csrf if csrf is not None else request.headers.get("X-CSRF-Token")
    if not auth.session.check_csrf(token):
        raise Forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again",
            code="csrf-token-invalid",
        )


def html(
    request: web.Request,
    title: str,
    body: str,
    *,
    auth: Auth | None,
    status: int = 200,
    current: str = "",
    refresh: str | None = None,
) -> web.Response:
    state = request.app[UI_STATE]
    flash = auth.session.take_flash() if auth is not None and auth.session is not None else []
    text = page(
        title,
        body,
        csrf=auth.csrf if auth is not None else None,
        nickname=state.nickname,
        flash=flash,
        current=current,
        refresh=refresh,
    )
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_page_headers()
    )


def _page_headers() -> dict[str, str]:
    return {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"}


def json_reply(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(doc), status=status, content_type="application/json", charset="utf-8"
    )


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **_page_headers()})


UiHandler = Callable[[web.Request, Auth], Awaitable[web.StreamResponse]]


def ui_route(handler: UiHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a UI handler: authenticate (else 401 JSON / redirect to the login page),
    and turn :class:`AppError` into an HTML error page or the API's JSON error."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        auth: Auth | None = None
        try:
            auth = authenticate(request)
            if auth is None:
                if wants_json(request) or request.method != "GET":
                    raise Unauthorized(
                        "log in first (p2pstore web-url), or send the API token as "
                        "'Authorization: Bearer <token>'",
                        code="login-required",
                    )
                if request.headers.get("Sec-Fetch-Site") == "cross-site":
                    # Followed from another site: the browser withheld our SameSite=Strict
                    # cookie. Load the page again from here (same-origin), cookie and all.
                    body = f'<p><a href="{esc(request.path_qs)}">Continue</a></p>'
                    return html(request, "Opening", body, auth=None, refresh=request.path_qs)
                return see_other(login_url(request.path_qs))
            state = request.app[UI_STATE]
            if not state.nickname_known:  # for the page header, asked once
                state.nickname_known = True
                nick = (await request.app[BACKEND].status()).get("nickname")
                state.nickname = nick if isinstance(nick, str) else None
            return await handler(request, auth)
        except AppError as e:
            if wants_json(request) or request.method == "HEAD":
                return error_response(e)
            uploaded = e.details.get("uploaded_cap")
            return html(
                request,
                _error_title(http_status(e)),
                error_page(
                    e.message, e.code, uploaded_cap=uploaded if isinstance(uploaded, str) else None
                ),
                auth=auth,
                status=http_status(e),
            )

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _error_title(status: int) -> str:
    return {
        400: "That did not work",
        401: "Please log in",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
    }.get(status, "Error")


def token_matches(request: web.Request, given: str) -> bool:
    """Whether ``given`` is the node's API token (constant-time)."""
    return bool(given) and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), request.app[TOKEN].encode()
    )
