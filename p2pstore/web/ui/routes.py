"""The web UI's read-only pages and its login/logout routes (forms that change the
drive are in :mod:`.ops`). Every page calls the same backend methods as the
JSON API and offers the API's JSON shape with ``?format=json``.

Routes (docs/web-ui.md has the full table):
``/`` front page · ``/login`` · ``/login/{ticket}`` · ``/logout`` ·
``/drive/{shared|private}/...`` directory page or file bytes ·
``/entry/{drive}/...`` entry details (caps on request, check, rename, delete) ·
``/static/...`` · ``POST /api/v1/ui/login-ticket`` (bearer token).

Invariants: no page URL carries a cap (links name vdrive paths; caps are shown
only in page bodies, which are ``no-store``); downloads go through
:func:`p2pstore.web.api.serve_cap` (Range, ETag, sandbox CSP).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from p2pstore.app.contract import Application, CheckReport, DirEntry
from p2pstore.app.errors import AppError, Conflict, NotFound
from p2pstore.app.mutable import entry_version
from p2pstore.app.vpath import DRIVES, VPath, parse_vpath
from p2pstore.immutable import LiteralCap

from ..api import (
    API_VERSION,
    DOWNLOAD_CSP,
    _check_json,
    _entry_json,
    _read_cap,
    serve_cap,
)
from ..context import API_PREFIX, BACKEND, TRANSFERS
from . import pages
from .auth import (
    UI_STATE,
    Auth,
    authenticate,
    check_form,
    cookie_name,
    html,
    json_reply,
    read_form,
    see_other,
    set_session_cookie,
    token_matches,
    ui_route,
    wants_json,
)
from .front import front_page
from .html import PAGE_CSP, dir_url, file_url, safe_next
from .session import same_origin
from .static import STATIC


# -- front page ----------------------------------------------------------------------
async def _status_doc(request: web.Request) -> dict[str, Any]:
    doc = dict(await request.app[BACKEND].status())
    doc["api_version"] = API_VERSION
    doc["transfers"] = request.app[TRANSFERS].snapshot()
    doc["recent_transfers"] = request.app[TRANSFERS].recent()
    nickname = doc.get("nickname")
    state = request.app[UI_STATE]
    state.nickname = nickname if isinstance(nickname, str) else None
    state.nickname_known = True
    return doc


@ui_route
async def front(request: web.Request, auth: Auth) -> web.StreamResponse:
    status = await _status_doc(request)
    peers = [
        {
            "node_id": p.node_id,
            "address": p.address,
            "connected": p.connected,
            "last_seen": p.last_seen,
            "details": dict(p.details),
        }
        for p in await request.app[BACKEND].peers()
    ]
    if wants_json(request):
        return json_reply({"status": status, "peers": peers})
    state = request.app[UI_STATE]
    body = front_page(status, peers, now=state.wall(), ui_started=state.started)
    return html(request, "Node status", body, auth=auth, current="status")


# -- login / logout --------------------------------------------------------------------
async def login_form(request: web.Request) -> web.StreamResponse:
    nxt = safe_next(request.query.get("next"))
    if authenticate(request) is not None:
        return see_other(nxt)
    return html(request, "Log in", pages.login_page(nxt), auth=None)


def _logged_in(request: web.Request, sid: str, location: str) -> web.Response:
    resp = see_other(location)
    set_session_cookie(resp, request, sid)
    return resp


async def login_ticket(request: web.Request) -> web.StreamResponse:
    """``GET /login/{ticket}``: spend a one-time ticket, set the session cookie."""
    made = request.app[UI_STATE].sessions.redeem_ticket(request.match_info["ticket"])
    if made is None:
        body = (
            '<p class="flash bad" role="alert">This login link has expired or was already '
            "used. Run <code>p2pstore web-url</code> for a new one.</p>" + pages.login_page("/")
        )
        return html(request, "Log in", body, auth=None, status=403)
    sid, _ = made
    # A page (not a redirect) that moves on by itself: if the link was clicked on
    # another site, a redirect would still count as cross-site and the SameSite=Strict
    # cookie would not be sent with it; a navigation started by our own page is.
    body = '<p>You are logged in. <a href="/">Continue to the node\'s status page</a>.</p>'
    resp = html(request, "Logged in", body, auth=None, refresh="/")
    set_session_cookie(resp, request, sid)
    return resp


async def login_post(request: web.Request) -> web.StreamResponse:
    """``POST /login``: the API token pasted into the form."""
    form = await read_form(request)
    nxt = safe_next(form.get("next") or "/")
    origin_ok = same_origin(
        host=request.host or "",
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
    )
    if not origin_ok or not token_matches(request, form.get("token") or ""):
        return html(request, "Log in", pages.login_page(nxt, failed=True), auth=None, status=403)
    sid, _ = request.app[UI_STATE].sessions.new_session()
    return _logged_in(request, sid, nxt)


@ui_route
async def logout(request: web.Request, auth: Auth) -> web.StreamResponse:
    form = await read_form(request)
    check_form(request, auth, form.get("csrf"))
    request.app[UI_STATE].sessions.end(auth.sid)
    resp = see_other("/login")
    resp.del_cookie(cookie_name(request), path="/")
    return resp


async def new_ticket(request: web.Request) -> web.StreamResponse:
    """``POST /api/v1/ui/login-ticket`` (bearer token, checked by the API guard)."""
    state = request.app[UI_STATE]
    base = f"http://{request.host}/"
    ticket_url = state.login_ticket_url(base)
    return json_reply(
        {"login_url": ticket_url, "expires_in": state.sessions.ticket_ttl}, status=201
    )


# -- drive pages ---------------------------------------------------------------------
def path_from_url(request: web.Request) -> VPath:
    drive = request.match_info["drive"]
    if drive not in DRIVES:
        raise NotFound(f"no drive named {drive[:20]!r} (shared or private)")
    return parse_vpath(f"{drive}:/{request.match_info['tail']}")


@ui_route
async def drive(request: web.Request, auth: Auth) -> web.StreamResponse:
    """A directory page, or a file's bytes (viewed inline, or ``?download=1``)."""
    path = path_from_url(request)
    backend = request.app[BACKEND]
    entry: DirEntry = await backend.vdrive_stat(path)
    slash = request.path.endswith("/")
    if entry.kind == "dir":
        if wants_json(request):
            listing = await backend.vdrive_list(path)
            return json_reply(
                {
                    "path": str(listing.path),
                    "sequence": listing.sequence,
                    "entries": [_entry_json(e) for e in listing.entries],
                }
            )
        if not slash:
            return see_other(dir_url(path))
        listing = await backend.vdrive_list(path)
        entries = [_entry_json(e) for e in listing.entries]
        body = pages.directory_page({"entries": entries}, path, csrf=auth.csrf)
        # the breadcrumb shows the path: the heading names the directory (or the drive)
        drive = "Shared drive" if path.drive == "shared" else "Private drive"
        return html(request, path.name or drive, body, auth=auth, current=path.drive)
    if wants_json(request):
        return json_reply({"path": str(path), "entry": _entry_json(entry)})
    if slash:
        return see_other(file_url(path))
    if entry.cap is None:
        raise Conflict(f"{path} has no cap to read", code="not-a-file")
    download = request.query.get("download") not in (None, "", "0")
    view = None if download else pages.inline_type(entry.name)
    return await serve_cap(
        request,
        await entry_version(request.app[BACKEND], entry.cap),
        filename=entry.name,
        content_type=view or pages.guess_type(entry.name),
        inline=view is not None,
        csp=pages.view_csp(view) if view else DOWNLOAD_CSP,
    )


@ui_route
async def entry_details(request: web.Request, auth: Auth) -> web.StreamResponse:
    path = path_from_url(request)
    backend = request.app[BACKEND]
    entry = await backend.vdrive_stat(path)
    doc = _entry_json(entry)
    check = None
    if request.query.get("check") and entry.kind == "file" and entry.cap:
        cap = _read_cap(entry.cap)
        verify = request.query.get("verify") not in (None, "", "0")
        if isinstance(cap, LiteralCap):  # the cap is the file: always healthy
            report = CheckReport(True, True, 1, 1, 1, verify, details={"literal": True})
        else:
            report = await backend.check(cap, verify=verify, repair=False)
        check = _check_json(report)
    if wants_json(request):
        out: dict[str, Any] = {"path": str(path), "entry": doc}
        if check is not None:
            out["check"] = check
        return json_reply(out)
    show_caps = request.query.get("caps") not in (None, "", "0")
    pinned = await _pinned(backend, entry.verify_cap)
    body = pages.entry_page(
        path, doc, csrf=auth.csrf, show_caps=show_caps, check=check, pinned=pinned
    )
    return html(request, entry.name or str(path), body, auth=auth, current=path.drive)


async def _pinned(backend: Application, verify_cap: str | None) -> bool | None:
    """Whether this node pins the file (None: no shares to keep, or no pins here)."""
    if not verify_cap:
        return None
    try:
        return any(p.get("verify_cap") == verify_cap for p in await backend.pin_list())
    except AppError:
        return None


async def drive_root(request: web.Request) -> web.StreamResponse:
    drive = request.match_info.get("drive", "shared")
    return see_other(f"/drive/{drive if drive in DRIVES else 'shared'}/")


async def static(request: web.Request) -> web.StreamResponse:
    item = STATIC.get(request.match_info["name"])
    if item is None:
        raise web.HTTPNotFound()
    content_type, body = item
    return web.Response(
        body=body,
        content_type=content_type,
        headers={"Cache-Control": "max-age=3600", "Content-Security-Policy": PAGE_CSP},
    )


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


def add_page_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", front)
    r.add_get("/login", login_form)
    r.add_post("/login", login_post)
    r.add_get("/login/{ticket}", login_ticket, allow_head=False)
    r.add_post("/logout", logout)
    r.add_get("/drive", drive_root)
    r.add_get("/drive/", drive_root)
    r.add_get("/drive/{drive}", drive_root)
    r.add_get("/drive/{drive}/{tail:.*}", drive)
    r.add_get("/entry/{drive}/{tail:.*}", entry_details, allow_head=False)
    r.add_get("/static/{name}", static)
    r.add_get("/favicon.ico", favicon)
    r.add_post(API_PREFIX + "/ui/login-ticket", new_ticket)
