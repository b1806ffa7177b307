"""The web UI's routes of mutable files (docs/web-ui.md, "Mutable files"; docs/mutable.md).

- ``GET /mutable/``: open a cap, make a new file, the files this session opened;
- ``POST /op/mutable-open`` (form ``csrf``, ``cap``): keep the cap in the session
  under a random handle, 303 to ``/mutable/<handle>``;
- ``GET /mutable/<handle>``: the file's page (``?check=1[&verify=1]`` runs a check;
  ``?format=json``: the ``GET /api/v1/info/<cap>`` reply);
- ``GET``/``HEAD /mutable/<handle>/download``: the latest version's bytes
  (``X-P2pstore-Sequence``, Range, sandbox CSP: as ``GET /api/v1/file/<cap>``);
- publishing goes through ``POST /op/upload`` (:mod:`.ops`), which calls
  :func:`publish_part` for a form with ``mutable=1`` (a new file) or ``handle`` and
  ``expected_sequence`` (its next version).

The handlers call the backend's mutable operations through the API's
:mod:`p2pstore.web.mutable_api` helpers, with the API's checks and errors.

Invariants: caps travel only in form bodies and page bodies; URLs carry session
handles (:meth:`p2pstore.web.ui.session.Session.remember_cap`), which need the
session: a bearer-token script gets ``400 session-required`` and uses the JSON API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from p2pstore.app.errors import BadRequest, Conflict, NotFound
from p2pstore.app.mutable import mutable_backend
from p2pstore.mutable import ReadCap, WriteCap, is_mutable_cap

from .. import mutable_api
from ..api import DOWNLOAD_CSP, _check_json, serve_cap
from ..context import BACKEND
from . import mutable_pages
from .auth import Auth, check_form, html, json_reply, read_form, see_other, ui_route, wants_json
from .html import mutable_url
from .pages import guess_type
from .session import Session


def _session(auth: Auth) -> Session:
    if auth.session is None:
        raise BadRequest(
            "mutable-file pages keep caps in a browser session; scripts use the JSON API "
            "(GET /api/v1/info/<cap>, GET /api/v1/file/<cap>)",
            code="session-required",
        )
    return auth.session


def _opened(auth: Auth, handle: str) -> tuple[str, str, str]:
    """(handle, cap, label) of a handle of this session."""
    got = _session(auth).cap_of(handle)
    if got is None:
        raise NotFound(
            "this page's mutable file is not open in this session (pages of mutable files "
            "last as long as the login); open it again by its cap",
            code="not-open",
        )
    cap, label = got
    return handle, cap, label


def _caps(text: str) -> dict[str, str | None]:
    cap = mutable_api.mutable_cap(text)
    return {
        "write": cap.to_string() if isinstance(cap, WriteCap) else None,
        "read": cap.read_cap().to_string() if isinstance(cap, WriteCap | ReadCap) else None,
        "verify": cap.verify_cap().to_string(),
    }


@ui_route
async def index(request: web.Request, auth: Auth) -> web.StreamResponse:
    session = _session(auth)
    opened = [(h, mutable_pages.kind_of(c), label) for h, (c, label) in session.caps.items()]
    if wants_json(request):
        return json_reply({"opened": [{"kind": k, "name": n} for _, k, n in opened]})
    body = mutable_pages.index_page(reversed(opened), csrf=auth.csrf)
    return html(request, "Mutable files", body, auth=auth, current="mutable")


@ui_route
async def op_open(request: web.Request, auth: Auth) -> web.StreamResponse:
    fields = await read_form(request)
    check_form(request, auth, fields.get("csrf"))
    text = fields.get("cap", "").strip()
    if not is_mutable_cap(text):
        raise BadRequest(
            "that is not a mutable file's cap (p2ps:mut:..., p2ps:mut-ro:..., "
            "p2ps:mut-verify:...); add an immutable file to a drive with 'Add a file by "
            "its cap' on a directory page",
            code="bad-cap",
        )
    mutable_api.mutable_cap(text)  # a malformed cap: 400 bad-cap, naming the field
    handle = _session(auth).remember_cap(text)
    return see_other(mutable_url(handle))


@ui_route
async def file_page(request: web.Request, auth: Auth) -> web.StreamResponse:
    handle, cap, label = _opened(auth, request.match_info["handle"])
    doc = await mutable_api.info(request, cap)
    check = None
    if request.query.get("check"):
        verify = request.query.get("verify") not in (None, "", "0")
        check = _check_json(await mutable_api.check(request, cap, verify=verify, repair=False))
    if wants_json(request):
        return json_reply(doc if check is None else {**doc, "check": check})
    body = mutable_pages.mutable_page(
        handle, doc, label=label, caps=_caps(cap), csrf=auth.csrf, check=check
    )
    title = label or ("Live directory" if doc.get("directory") else "Mutable file")
    return html(request, title, body, auth=auth, current="mutable")


@ui_route
async def download(request: web.Request, auth: Auth) -> web.StreamResponse:
    _, cap, label = _opened(auth, request.match_info["handle"])
    version, seq = await mutable_api.latest(request, cap)
    request[mutable_api.SEQUENCE] = seq
    return await serve_cap(
        request,
        version,
        filename=label or f"mutable-version-{seq}",
        content_type=guess_type(label) if label else "application/octet-stream",
        inline=False,
        csp=DOWNLOAD_CSP,
    )


async def publish_part(
    request: web.Request,
    auth: Auth,
    chunks: AsyncIterator[bytes],
    fields: dict[str, str],
    name: str,
) -> dict[str, Any]:
    """One uploaded file as a new mutable file (``fields["mutable"]``) or the next
    version of the session's ``fields["handle"]``; the API's publish reply, plus
    ``location`` (the file's page) for a browser session."""
    cap: WriteCap | None = None
    expected = None
    handle = fields.get("handle")
    if handle:
        _, text, label = _opened(auth, handle)
        parsed = mutable_api.mutable_cap(text)
        if not isinstance(parsed, WriteCap):
            raise BadRequest("only a write cap can publish a new version", code="read-only-cap")
        cap, name = parsed, label or name
        raw = fields.get("expected_sequence", "")
        if not raw.isdigit() or len(raw) > 19:
            raise BadRequest("expected_sequence must be a non-negative integer")
        expected = int(raw)
    backend = mutable_backend(request.app[BACKEND])
    try:
        result = await backend.mutable_publish(
            chunks, cap=cap, size_hint=None, expected_sequence=expected
        )
    except Conflict as e:
        if handle and not wants_json(request):
            raise ConflictPage(handle, e) from None
        raise
    doc = mutable_api.result_json(result)
    if auth.session is not None:
        doc["location"] = mutable_url(auth.session.remember_cap(doc["write_cap"], name))
    return doc


class ConflictPage(Conflict):
    """A conflict for a browser: :mod:`.ops` shows :func:`conflict_page`, with a link
    to the latest version."""

    def __init__(self, handle: str, e: Conflict) -> None:
        super().__init__(e.message, code=e.code, details=dict(e.details))
        self.handle = handle


def conflict_page(request: web.Request, auth: Auth, e: ConflictPage) -> web.Response:
    body = mutable_pages.conflict_page(e.handle, e.message, e.details.get("sequence"))
    return html(request, "Conflict", body, auth=auth, status=409, current="mutable")


async def to_index(request: web.Request) -> web.StreamResponse:
    return see_other("/mutable/")


def add_mutable_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/mutable", to_index, allow_head=False)
    r.add_get("/mutable/", index, allow_head=False)
    r.add_get("/mutable/{handle}", file_page, allow_head=False)
    r.add_get("/mutable/{handle}/download", download)
    r.add_post("/op/mutable-open", op_open)
