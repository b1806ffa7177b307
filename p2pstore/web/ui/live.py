"""The web UI's pages of live directories (docs/web-ui.md, "Live directories";
docs/mutable.md): a live directory opened by its cap at ``/mutable/`` (a session
handle, as a mutable file) is browsed at ``/mutable/<handle>/dir/<path>``.

- ``GET /mutable/<handle>/dir/<path>/``: the directory page (listing, the share
  panel, and with the write cap the upload and new-directory forms, which post to
  ``/op/upload`` and ``/op/mkdir`` like a drive's page); ``?format=json``: the
  ``GET /api/v1/vdrive/ls`` reply;
- ``GET /mutable/<handle>/dir/<path>``: a file's bytes, as an attachment;
- ``POST /op/live-new`` (form ``csrf``): a new, empty live directory (the backend's
  ``mutable_publish(directory=True)`` of an empty directory object, as ``mkdir
  --live``), kept in the session by its write cap; 303 to its directory page.

Changes (upload, mkdir, and per entry delete and rename, which :mod:`.ops` handles
with :func:`confirm_delete_page` and :func:`shown`) go through the drive operations
with the path ``CAP/path`` (docs/mutable.md), so a read cap's page has no forms and
a forged change is ``403 vdrive-refused``.

Invariants: a URL holds the session's handle, never the cap (the forms carry the cap
path in their bodies, as the share panel shows it); the write cap is shown only on a
page opened with it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from p2pstore.app.errors import BadRequest, Forbidden, NotFound
from p2pstore.app.mutable import entry_version, mutable_backend
from p2pstore.app.vpath import VPath, drive_label, parse_vpath
from p2pstore.mutable import ReadCap, WriteCap, parse_mutable_cap
from p2pstore.vdrive.dirnode import Directory

from .. import mutable_api
from ..api import DOWNLOAD_CSP, _entry_json, serve_cap
from ..context import BACKEND
from .auth import (
    Auth,
    check_form,
    html,
    json_reply,
    read_form,
    see_other,
    ui_route,
    wants_json,
)
from .html import DASH, csrf_field, esc, fmt_bytes, fmt_time, mutable_url, table
from .pages import change_forms, guess_type
from .session import Session


def live_url(handle: str, parts: tuple[str, ...], *, is_dir: bool = True) -> str:
    tail = "/".join(urllib.parse.quote(p, safe="") for p in parts)
    if is_dir and tail:
        tail += "/"
    return mutable_url(handle, "dir/" + tail)


def url_of(session: Session | None, path: VPath) -> str:
    """Where a form that changed ``path`` (a live directory) sends the browser: its
    page, by this session's handle (``/mutable/`` without a session)."""
    if session is None:
        return "/mutable/"
    return live_url(session.remember_cap(path.drive), path.parts)


def _opened(auth: Auth, handle: str) -> str:
    got = None if auth.session is None else auth.session.cap_of(handle)
    if got is None:
        raise NotFound(
            "this live directory is not open in this session; open it again by its cap "
            "at Mutable files",
            code="not-open",
        )
    cap = got[0]
    if not isinstance(parse_mutable_cap(cap), WriteCap | ReadCap) or not cap.startswith(
        "p2ps:dir:"
    ):
        raise BadRequest("this cap is not a live directory's write or read cap", code="bad-cap")
    return cap


@ui_route
async def live_page(request: web.Request, auth: Auth) -> web.StreamResponse:
    handle = request.match_info["handle"]
    cap = _opened(auth, handle)
    path = parse_vpath(f"{cap}/{request.match_info['tail']}")
    backend = request.app[BACKEND]
    entry = await backend.vdrive_stat(path)
    if entry.kind != "dir" and entry.cap is not None:
        return await serve_cap(
            request,
            await entry_version(backend, entry.cap),
            filename=entry.name,
            content_type=guess_type(entry.name),
            inline=False,
            csp=DOWNLOAD_CSP,
        )
    listing = await backend.vdrive_list(path)
    entries = [_entry_json(e) for e in listing.entries]
    if wants_json(request):
        doc = {"path": str(listing.path), "sequence": listing.sequence, "entries": entries}
        return json_reply(doc)
    body = live_dir_page(handle, path, entries, csrf=auth.csrf)
    title = path.shown
    return html(request, title, body, auth=auth, current="mutable")


def _crumbs(handle: str, path: VPath) -> str:
    items: list[tuple[str, tuple[str, ...]]] = [(f"{drive_label(path.drive)}:/", ())]
    items += [(name, path.parts[: i + 1]) for i, name in enumerate(path.parts)]
    links = [
        f'<li><a href="{esc(live_url(handle, parts))}">{esc(t)}</a></li>' for t, parts in items
    ]
    return f'<nav aria-label="Breadcrumb" class="crumbs"><ol>{"".join(links)}</ol></nav>'


def _actions(path: VPath, name: str, csrf: str) -> str:
    """A write cap's per-entry forms: delete (to the confirmation page) and rename."""
    child = esc(path.child(name))
    return (
        f'<form method="post" action="/op/delete" class="inline">{csrf_field(csrf)}'
        f'<input type="hidden" name="path" value="{child}">'
        f'<button type="submit" aria-label="delete {esc(name)}">delete</button></form> '
        f'<details class="inline"><summary aria-label="rename {esc(name)}">rename</summary>'
        f'<form method="post" action="/op/rename">{csrf_field(csrf)}'
        f'<input type="hidden" name="path" value="{child}">'
        f"<label>New name, or a path <code>/a/b</code> in this live directory "
        f'<input name="dst" value="{esc(name)}" required maxlength="4096" autocomplete="off">'
        '</label> <label><input type="checkbox" name="replace" value="1"> replace'
        "</label>"
        ' <button type="submit">Rename</button></form></details>'
    )


def _row(handle: str, path: VPath, e: Mapping[str, Any], csrf: str | None) -> list[str]:
    name = str(e.get("name", ""))
    parts = (*path.parts, name)
    if e.get("kind") == "dir":
        link = f'<a class="dir" href="{esc(live_url(handle, parts))}">{esc(name)}/</a>'
        kind = "directory"
    else:
        url = live_url(handle, parts, is_dir=False)
        link = f'<a class="file" href="{esc(url)}" download>{esc(name)}</a>'
        kind = esc(guess_type(name))
    size = e.get("size")
    size_cell = f'<span class="num">{fmt_bytes(size)}</span>' if size is not None else DASH
    row = [link, kind, size_cell, fmt_time(e.get("mtime"))]
    if csrf is not None:
        row.append(_actions(path, name, csrf))
    return row


def live_dir_page(handle: str, path: VPath, entries: list[dict[str, Any]], *, csrf: str) -> str:
    """The page of a live directory's directory ``path`` (sans-I/O)."""
    cap = parse_mutable_cap(path.drive)
    writable = isinstance(cap, WriteCap)
    entries = sorted(entries, key=lambda e: (e.get("kind") != "dir", str(e.get("name", ""))))
    out = _crumbs(handle, path)
    out += (
        "<p>A <strong>live directory</strong>: everyone with its read cap sees every change. "
        + (
            "Opened with its write cap: you can change it."
            if writable
            else "Opened with its read cap: you see every change but cannot make one."
        )
        + f' · <a href="{esc(mutable_url(handle))}">its version and health</a></p>'
    )
    if path.parts:
        up = live_url(handle, path.parts[:-1])
        out += f'<p><a href="{esc(up)}" rel="up">↑ Parent directory</a></p>'
    if entries:
        n = len(entries)
        forms = csrf if writable else None
        out += table(
            ["Name", "Type", "Size", "Modified", *(["Actions"] if writable else [])],
            [_row(handle, path, e, forms) for e in entries],
            caption=f"{n} {'entry' if n == 1 else 'entries'}",
        )
    else:
        out += "<p>This directory is empty.</p>"
    if writable:
        out += _forms(str(path), csrf)
    return out + _share(cap)


def confirm_delete_page(handle: str, path: VPath, *, is_dir: bool, csrf: str) -> str:
    """Asked before deleting ``path`` (a live directory's entry): the confirmed form,
    for a directory with the *recursive* checkbox, and a way back by handle. A read
    cap's path is refused here already (as the backend would refuse the change)."""
    if not isinstance(parse_mutable_cap(path.drive), WriteCap):
        raise Forbidden(
            "a live directory's read cap shows every change but cannot make one",
            code="vdrive-refused",
        )
    recursive = (
        '<p><input type="checkbox" id="rm-recursive" name="recursive" value="1"> '
        '<label for="rm-recursive">also everything inside it (needed if it is not '
        "empty)</label></p>"
        if is_dir
        else ""
    )
    return (
        _crumbs(handle, path)
        + f'<form method="post" action="/op/delete">{csrf_field(csrf)}'
        + f'<input type="hidden" name="path" value="{esc(path)}">'
        '<input type="hidden" name="confirm" value="yes">'
        + f"<p>Remove <code>{esc(path.shown)}</code> from this live directory? Everyone following "
        "it sees the change; a file itself stays in the grid for anyone holding its cap.</p>"
        + f'{recursive}<p><button type="submit" class="danger">Yes, delete it</button></p></form>'
        + f'<p><a href="{esc(live_url(handle, path.parts[:-1]))}">No, go back</a></p>'
    )


def _forms(here: str, csrf: str) -> str:
    """The drive page's upload and new-directory forms, posting the cap path."""
    return change_forms(here, csrf, drive_options=False)


def _share(cap: WriteCap | ReadCap | Any) -> str:
    read = cap.read_cap().to_string()
    out = (
        '<section aria-labelledby="h-share"><h2 id="h-share">Share</h2>'
        "<p>Give the <strong>read cap</strong> to let someone follow this directory "
        "(they see every change, make none):</p>"
        f'<p><code class="id" id="live-read-cap">{esc(read)}</code></p>'
    )
    if isinstance(cap, WriteCap):
        out += (
            "<p><strong>Write cap — keep it secret:</strong> whoever holds it can change "
            "this directory.</p>"
            f'<p><code class="id" id="live-write-cap">{esc(cap.to_string())}</code></p>'
        )
    return out + "</section>"


async def _empty_directory() -> AsyncIterator[bytes]:
    yield Directory().encode()


@ui_route
async def op_live_new(request: web.Request, auth: Auth) -> web.StreamResponse:
    """A new, empty live directory, opened in this session by its write cap."""
    fields = await read_form(request)
    check_form(request, auth, fields.get("csrf"))
    if auth.session is None:
        raise BadRequest(
            "live-directory pages keep caps in a browser session; scripts use "
            "POST /api/v1/file?mutable=true&dir=true",
            code="session-required",
        )
    backend = mutable_backend(request.app[BACKEND])
    empty = Directory().encode()
    result = await backend.mutable_publish(
        _empty_directory(), cap=None, size_hint=len(empty), directory=True
    )
    write = result.write_cap.to_string()
    handle = auth.session.remember_cap(write)
    auth.session.add_flash(
        f"Made a live directory ({drive_label(write)}). Share its read cap (below) to let "
        "others follow it; keep the write cap secret."
    )
    if wants_json(request):
        return json_reply(mutable_api.result_json(result), status=201)
    return see_other(live_url(handle, ()))


def add_live_routes(app: web.Application) -> None:
    app.router.add_get("/mutable/{handle}/dir/{tail:.*}", live_page, allow_head=False)
    app.router.add_post("/op/live-new", op_live_new)
