"""The web UI's forms that change a drive: upload, mkdir, link (add by cap),
rename, delete; the upload form also makes mutable files and publishes their
versions (``mutable=1``, or ``handle`` + ``expected_sequence``: :mod:`.mutable`).

Each is a ``POST /op/<name>`` taking an HTML form (``multipart/form-data`` for
upload, urlencoded for the rest), authenticated by session cookie + CSRF token
+ same-origin check (or by the API bearer token, for scripts). On success a
browser is redirected (303) to the directory page with a one-time message; a
client asking for JSON gets the API's reply shape instead.

Invariants:
- upload bodies stream from the multipart reader into ``backend.upload`` chunk
  by chunk (never read whole); the CSRF field must precede the file parts, so a
  forged request is refused before a byte of file is stored; a pause longer than
  ``ApiLimits.idle_timeout`` or more than ``max_upload_bytes`` fails the upload;
- small form fields are bounded (:data:`MAX_FIELD_BYTES`, :data:`MAX_FIELDS`);
- as in ``PUT /api/v1/vdrive/file``, the target directory is checked before
  uploading, and a link failure after a complete upload reports the uploaded
  cap (``details.uploaded_cap``) so nothing is lost;
- deleting needs an explicit ``confirm=yes`` (a form without it gets the
  confirmation page).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
from aiohttp import BodyPartReader, web

from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Forbidden,
    TooLarge,
)
from p2pstore.app.vpath import VPath, check_name, parse_vpath
from p2pstore.base.reports import helper_notes
from p2pstore.immutable import ReadCap

from ..api import _mode, _read_cap, _upload_json, check_upload_target, op_id_of
from ..context import BACKEND, LIMITS, TRANSFERS
from ..errors import (
    RequestTimeout,
)
from ..transfers import Transfer
from . import live, mutable, pages
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
from .html import dir_url, entry_url, fmt_bytes

CHUNK: Final = 256 * 1024
MAX_FIELD_BYTES: Final = 8192
MAX_FIELDS: Final = 32
_ON: Final = frozenset({"1", "on", "yes", "true"})
# What aiohttp's multipart reader raises on a malformed body.
_MALFORMED: Final = (ValueError, aiohttp.http_exceptions.HttpProcessingError)


def _flag(value: object) -> bool:
    return isinstance(value, str) and value.lower() in _ON


def _done(
    request: web.Request, auth: Auth, message: str, where: VPath, doc: Any, status: int
) -> web.Response:
    if auth.session is not None:  # shown on the next page (also after a scripted upload)
        auth.session.add_flash(message)
    if wants_json(request):
        return json_reply(doc, status=status)
    if where.is_live:  # a live directory's page, by the session's handle: no cap in a URL
        return see_other(live.url_of(auth.session, where))
    return see_other(dir_url(where))


async def _form(request: web.Request, auth: Auth) -> dict[str, str]:
    """An urlencoded form's string fields, after the CSRF/origin check."""
    fields = await read_form(request)
    check_form(request, auth, fields.get("csrf"))
    return fields


def _path_field(fields: dict[str, str], name: str) -> VPath:
    value = fields.get(name)
    if value is None:
        raise BadRequest(f"the form needs {name!r}", code="bad-path")
    return parse_vpath(value)


# -- mkdir / rename / delete -----------------------------------------------------------
@ui_route
async def op_mkdir(request: web.Request, auth: Auth) -> web.StreamResponse:
    fields = await _form(request, auth)
    parent = _path_field(fields, "dir")
    path = parent.child(fields.get("name", "").strip())
    seq = await request.app[BACKEND].vdrive_mkdir(
        path, parents=False, expected_sequence=None, op_id=op_id_of(fields.get("op_id"))
    )
    doc = {"path": str(path), "sequence": seq}
    return _done(request, auth, f"Made directory {path.name}.", parent, doc, 201)


@ui_route
async def op_link(request: web.Request, auth: Auth) -> web.StreamResponse:
    """Link a read or literal cap (pasted into the form, never in a URL) by name."""
    fields = await _form(request, auth)
    parent = _path_field(fields, "dir")
    path = parent.child(fields.get("name", "").strip())
    cap = _read_cap(fields.get("cap", "").strip())
    seq = await request.app[BACKEND].vdrive_link(
        path,
        cap,
        replace=_flag(fields.get("replace")),
        expected_sequence=None,
        op_id=op_id_of(fields.get("op_id")),
    )
    doc = {"path": str(path), "sequence": seq}
    return _done(request, auth, f"Added {path.name} ({fmt_bytes(cap.size)}).", parent, doc, 201)


async def _pin_target(request: web.Request, auth: Auth) -> tuple[VPath, ReadCap]:
    fields = await _form(request, auth)
    path = _path_field(fields, "path")
    entry = await request.app[BACKEND].vdrive_stat(path)
    cap = _read_cap(entry.cap or "") if entry.kind == "file" and entry.cap else None
    if not isinstance(cap, ReadCap):
        raise BadRequest("only a file with shares can be pinned (not a directory or a tiny file)")
    return path, cap


@ui_route
async def op_pin(request: web.Request, auth: Auth) -> web.StreamResponse:
    path, cap = await _pin_target(request, auth)
    doc = await request.app[BACKEND].pin(cap, str(path))
    msg = f"Pinned {path.name}: this node keeps it alive ({doc.get('holders')} holders renewed)."
    return _done_entry(request, auth, msg, path, dict(doc))


@ui_route
async def op_unpin(request: web.Request, auth: Auth) -> web.StreamResponse:
    path, cap = await _pin_target(request, auth)
    await request.app[BACKEND].unpin(cap)
    msg = f"Unpinned {path.name}: this node no longer renews it."
    return _done_entry(request, auth, msg, path, {"unpinned": True})


def _done_entry(
    request: web.Request, auth: Auth, message: str, path: VPath, doc: Any
) -> web.Response:
    if auth.session is not None:
        auth.session.add_flash(message)
    if wants_json(request):
        return json_reply(doc)
    if path.is_live:  # live directories have no entry pages: to the directory, by handle
        return see_other(live.url_of(auth.session, path if path.is_root else path.parent))
    return see_other(entry_url(path))


def _rename_target(src: VPath, dst: str) -> VPath:
    dst = dst.strip()
    if not dst:
        raise BadRequest("give the new name", code="bad-path")
    if src.is_live:  # within the live directory: a name, or /a/b from its root
        if src.is_root:
            raise BadRequest("a live directory's root cannot be renamed", code="bad-path")
        if dst.startswith("/"):
            return parse_vpath(f"{src.drive}{dst}")
        return parse_vpath(f"{src.drive}/" + "/".join((*src.parent.parts, dst)))
    if dst.startswith(("shared:", "private:")):
        return parse_vpath(dst)
    if dst.startswith("/"):
        return parse_vpath(f"{src.drive}:{dst}")
    if src.is_root:
        raise BadRequest("a drive's root cannot be renamed", code="bad-path")
    return parse_vpath(f"{src.drive}:/" + "/".join((*src.parent.parts, dst)))


@ui_route
async def op_rename(request: web.Request, auth: Auth) -> web.StreamResponse:
    fields = await _form(request, auth)
    src = _path_field(fields, "path")
    dst = _rename_target(src, fields.get("dst", ""))
    seq = await request.app[BACKEND].vdrive_rename(
        src,
        dst,
        replace=_flag(fields.get("replace")),
        expected_sequence=None,
        op_id=op_id_of(fields.get("op_id")),
    )
    doc = {"src": str(src), "dst": str(dst), "sequence": seq}
    to = dst.shown  # no cap on the page
    return _done(request, auth, f"Renamed {src.name} to {to}.", dst.parent, doc, 200)


@ui_route
async def op_delete(request: web.Request, auth: Auth) -> web.StreamResponse:
    fields = await _form(request, auth)
    path = _path_field(fields, "path")
    if path.is_root:
        raise BadRequest("a drive's root cannot be removed", code="bad-path")
    backend = request.app[BACKEND]
    if fields.get("confirm") != "yes":
        if wants_json(request):
            raise BadRequest("deleting needs confirm=yes", code="confirm-required")
        entry = await backend.vdrive_stat(path)
        is_dir = entry.kind == "dir"
        if path.is_live:  # links by the session's handle, never the cap
            if auth.session is None:
                raise BadRequest("deleting needs confirm=yes", code="confirm-required")
            handle = auth.session.remember_cap(path.drive)
            body = live.confirm_delete_page(handle, path, is_dir=is_dir, csrf=auth.csrf)
            return html(request, f"Delete {path.name}?", body, auth=auth, current="mutable")
        body = pages.confirm_delete_page(path, is_dir=is_dir, csrf=auth.csrf)
        return html(request, f"Delete {path.name}?", body, auth=auth, current=path.drive)
    seq = await backend.vdrive_unlink(
        path,
        recursive=_flag(fields.get("recursive")),
        expected_sequence=None,
        op_id=op_id_of(fields.get("op_id")),
    )
    doc = {"path": str(path), "sequence": seq}
    return _done(request, auth, f"Deleted {path.name}.", path.parent, doc, 200)


# -- upload ------------------------------------------------------------------------
async def _small(part: BodyPartReader) -> str:
    data = bytearray()
    while True:
        try:
            chunk = await part.read_chunk(MAX_FIELD_BYTES)
        except _MALFORMED:
            raise BadRequest("the upload is not valid multipart/form-data") from None
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise BadRequest(f"form field {part.name!r} is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"form field {part.name!r} is not UTF-8 text") from None


def upload_name(raw: str | None) -> str:
    """The entry name for an uploaded file: the last component of what the browser
    sent (some send a whole path), checked as a vdrive name. Browsers escape only
    ``"`` (as ``%22``) and line breaks in multipart file names (HTML spec)."""
    name = (raw or "").replace("%22", '"').replace("\\", "/").rsplit("/", 1)[-1].strip()
    check_name(name)
    return name


async def _part_chunks(
    request: web.Request, part: BodyPartReader, transfer: Transfer
) -> AsyncIterator[bytes]:
    limits = request.app[LIMITS]
    received = 0
    while True:
        try:
            async with asyncio.timeout(limits.idle_timeout):
                chunk = await part.read_chunk(CHUNK)
        except TimeoutError:
            raise RequestTimeout(
                f"the upload stalled (no data for {limits.idle_timeout:g} s)",
                code="upload-timeout",
            ) from None
        except (aiohttp.ClientError, ConnectionError, *_MALFORMED):
            raise BadRequest("the upload was interrupted", code="upload-aborted") from None
        if not chunk:
            return
        received += len(chunk)
        transfer.done = received
        if limits.max_upload_bytes is not None and received > limits.max_upload_bytes:
            raise TooLarge(f"uploads are limited to {limits.max_upload_bytes} bytes")
        yield chunk


async def _check_target(request: web.Request, target: VPath, replace: bool) -> None:
    await check_upload_target(
        request.app[BACKEND], target, replace, "tick 'replace' to overwrite it"
    )


def _is_mutable(fields: dict[str, str]) -> bool:
    """A new mutable file (``mutable``) or a version of one (``handle``)."""
    return _flag(fields.get("mutable")) or bool(fields.get("handle"))


async def _upload_part(
    request: web.Request, auth: Auth, part: BodyPartReader, fields: dict[str, str], name: str
) -> dict[str, Any]:
    if _is_mutable(fields):
        with request.app[TRANSFERS].track("upload", None, name=name) as transfer:
            chunks = _part_chunks(request, part, transfer)
            doc = await mutable.publish_part(request, auth, chunks, fields, name)
            transfer.size = int(doc["size"])
        return doc
    folder = _path_field(fields, "dir")
    target = folder.child(name)
    replace = _flag(fields.get("replace"))
    mode = _mode(fields.get("mode"))
    await _check_target(request, target, replace)
    backend = request.app[BACKEND]
    with request.app[TRANSFERS].track("upload", None, name=name) as transfer:
        result = await backend.upload(
            _part_chunks(request, part, transfer), size_hint=None, mode=mode
        )
        transfer.size = result.size
    try:
        seq = await backend.vdrive_link(target, result.cap, replace=replace, expected_sequence=None)
    except AppError as e:
        e.details["uploaded_cap"] = result.cap.to_string()
        raise
    doc = _upload_json(result)
    doc.update(path=str(target), sequence=seq)
    return doc


@ui_route
async def op_upload(request: web.Request, auth: Auth) -> web.StreamResponse:
    """``multipart/form-data``: csrf, dir, mode, replace, then one or more files."""
    csrf_ok = auth.session is None
    if auth.session is not None:
        header = request.headers.get("X-CSRF-Token")
        check_form(request, auth, header if header is not None else auth.session.csrf)
        csrf_ok = header is not None  # same-origin passed; the token still to come
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise BadRequest("the upload form must be sent as multipart/form-data") from None
    fields: dict[str, str] = {}
    uploaded: list[dict[str, Any]] = []
    count = 0
    while True:
        try:
            part = await reader.next()
        except _MALFORMED:
            raise BadRequest("the upload is not valid multipart/form-data") from None
        if part is None:
            break
        count += 1
        if count > MAX_FIELDS or not isinstance(part, BodyPartReader):
            raise BadRequest("too many or nested form parts")
        if part.name == "file":
            if not csrf_ok:
                raise Forbidden(
                    "the form's CSRF token must come before the file", code="csrf-token-invalid"
                )
            if not part.filename:  # an empty file input
                await part.release()
                continue
            name = upload_name(part.filename)
            try:
                uploaded.append(await _upload_part(request, auth, part, fields, name))
            except mutable.ConflictPage as e:
                return mutable.conflict_page(request, auth, e)
            continue
        value = await _small(part)
        if part.name == "csrf" and auth.session is not None:
            if not auth.session.check_csrf(value):
                raise Forbidden(
                    "the form's CSRF token is missing or stale: reload the page and try again",
                    code="csrf-token-invalid",
                )
            csrf_ok = True
        if part.name:
            fields[part.name] = value
    if not uploaded:
        raise BadRequest("choose at least one file to upload", code="no-file")
    if _is_mutable(fields):
        return _published(request, auth, fields, uploaded)
    folder = _path_field(fields, "dir")
    total = sum(int(d["size"]) for d in uploaded)
    names = ", ".join(str(d["path"]).rsplit("/", 1)[-1] for d in uploaded[:5])
    more = f" and {len(uploaded) - 5} more" if len(uploaded) > 5 else ""
    message = f"Uploaded {names}{more} ({fmt_bytes(total)})."
    notes = dict.fromkeys(note for d in uploaded for note in helper_notes(d))
    if notes:  # through an upload helper, or directly after one failed (docs/helper.md)
        said = "; ".join(notes)
        message += f" {said[:1].upper()}{said[1:]}."
    return _done(request, auth, message, folder, {"uploaded": uploaded}, 201)


def _published(
    request: web.Request, auth: Auth, fields: dict[str, str], uploaded: list[dict[str, Any]]
) -> web.Response:
    """After mutable uploads: to the (last) file's page, which shows its caps."""
    last = uploaded[-1]
    what = "Published version" if fields.get("handle") else "Made a mutable file, version"
    message = f"{what} {last['sequence']} ({fmt_bytes(last['size'])})."
    if len(uploaded) > 1:
        message += f" {len(uploaded)} mutable files were made: see Mutable files."
    if auth.session is not None:
        auth.session.add_flash(message)
    doc: dict[str, Any] = {"uploaded": uploaded}
    if "location" in last:
        doc["location"] = last["location"]
    if wants_json(request) or "location" not in last:
        return json_reply(doc, status=201)
    return see_other(str(last["location"]))


def add_op_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/op/upload", op_upload)
    r.add_post("/op/mkdir", op_mkdir)
    r.add_post("/op/link", op_link)
    r.add_post("/op/rename", op_rename)
    r.add_post("/op/delete", op_delete)
    r.add_post("/op/pin", op_pin)
    r.add_post("/op/unpin", op_unpin)
