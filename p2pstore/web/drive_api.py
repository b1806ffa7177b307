"""The drive-changing calls of the HTTP API (docs/http-api.md, "Virtual drive" and
"Outcomes"): ``POST /api/v1/vdrive/{mkdir,link,unlink,rename}``, each with an
optional ``op_id``, and ``POST /api/v1/vdrive/outcome`` ``{"drive", "op_id"}``, which
tells a client that lost its answer whether the change was made."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from p2pstore.app.contract import NewEntry, vdrive_extra
from p2pstore.app.errors import BadRequest, TooLarge
from p2pstore.app.vpath import VPath, parse_vpath
from p2pstore.mutable import is_mutable_cap

from .api import _field, _json, _json_body, _read_cap, _seq, op_id_of
from .context import API_PREFIX, BACKEND
from .mutable_api import mutable_cap


async def vd_mkdir(request: web.Request) -> web.Response:
    body = await _json_body(request)
    path = parse_vpath(_field(body, "path", str))
    seq = await request.app[BACKEND].vdrive_mkdir(
        path,
        parents=_field(body, "parents", bool, False),
        expected_sequence=_seq(body.get("expected_sequence")),
        op_id=op_id_of(body.get("op_id")),
    )
    return _json({"path": str(path), "sequence": seq}, status=201)


async def vd_link(request: web.Request) -> web.Response:
    body = await _json_body(request)
    path = parse_vpath(_field(body, "path", str))
    text = _field(body, "cap", str)
    if is_mutable_cap(text):  # a mutable file or live directory: linked by its read cap
        fn = _optional(request, "vdrive_link_mutable", "link mutable files")
        seq = await fn(
            path,
            mutable_cap(text),
            replace=_field(body, "replace", bool, False),
            expected_sequence=_seq(body.get("expected_sequence")),
            op_id=op_id_of(body.get("op_id")),
        )
        return _json({"path": str(path), "sequence": seq}, status=201)
    if text.startswith("p2ps:dir:"):
        return await _link_dircap(request, body, path, text)
    cap = _read_cap(text)
    seq = await request.app[BACKEND].vdrive_link(
        path,
        cap,
        replace=_field(body, "replace", bool, False),
        expected_sequence=_seq(body.get("expected_sequence")),
        op_id=op_id_of(body.get("op_id")),
    )
    return _json({"path": str(path), "sequence": seq}, status=201)


def _optional(request: web.Request, name: str, what: str) -> Any:
    """The optional vdrive method ``name`` on the backend or on its ``vdrive``
    component (the in-memory vdrive has no directory objects: 400 there)."""
    obj = vdrive_extra(request.app[BACKEND], name)
    if obj is None:
        raise BadRequest(f"this node's vdrive cannot {what}", code="bad-cap")
    return getattr(obj, name)


async def _link_dircap(
    request: web.Request, body: Mapping[str, Any], path: VPath, text: str
) -> web.Response:
    """Link a read-only directory cap (docs/vdrive.md) if the backend's vdrive can:
    an optional ``vdrive_link_dircap(path, text, expected_sequence=)`` on the backend
    or on its ``vdrive`` component."""
    fn = _optional(request, "vdrive_link_dircap", "link directory caps")
    if _field(body, "replace", bool, False):
        raise BadRequest("a directory cap never replaces an existing name", code="bad-request")
    seq = await fn(
        path,
        text,
        expected_sequence=_seq(body.get("expected_sequence")),
        op_id=op_id_of(body.get("op_id")),
    )
    return _json({"path": str(path), "sequence": seq}, status=201)


async def vd_unlink(request: web.Request) -> web.Response:
    body = await _json_body(request)
    path = parse_vpath(_field(body, "path", str))
    seq = await request.app[BACKEND].vdrive_unlink(
        path,
        recursive=_field(body, "recursive", bool, False),
        expected_sequence=_seq(body.get("expected_sequence")),
        op_id=op_id_of(body.get("op_id")),
    )
    return _json({"path": str(path), "sequence": seq})


async def vd_rename(request: web.Request) -> web.Response:
    body = await _json_body(request)
    src = parse_vpath(_field(body, "src", str))
    dst = parse_vpath(_field(body, "dst", str))
    seq = await request.app[BACKEND].vdrive_rename(
        src,
        dst,
        replace=_field(body, "replace", bool, False),
        expected_sequence=_seq(body.get("expected_sequence")),
        op_id=op_id_of(body.get("op_id")),
    )
    return _json({"src": str(src), "dst": str(dst), "sequence": seq})


async def vd_outcome(request: web.Request) -> web.Response:
    body = await _json_body(request)
    drive = _field(body, "drive", str)
    if drive not in ("shared", "private"):
        raise BadRequest("drive must be shared or private", code="bad-path")
    op_id = op_id_of(_field(body, "op_id", str))
    assert op_id is not None
    res = await request.app[BACKEND].vdrive_outcome(drive, op_id)
    return _json({"drive": drive, "applied": res.applied, "sequence": res.sequence})


MAX_DIR_BODY: Final = 48 * 1024 * 1024
"""``POST /api/v1/dir`` may carry a whole directory's entries (a backup's folder of
thousands of files), so it reads its own body, bounded here, not by the API's
64 KiB limit on other JSON bodies."""


async def _big_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body too large (at most {limit} bytes)")
    buf = bytearray()
    async for chunk in request.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body too large (at most {limit} bytes)")
    try:
        return json.loads(buf)
    except (ValueError, RecursionError):
        raise BadRequest("the request body must be a JSON object", code="bad-json") from None


def _new_entry(row: Any) -> NewEntry:
    if not isinstance(row, dict):
        raise BadRequest("each entry must be a JSON object", code="bad-json")
    kind = _field(row, "kind", str)
    if kind not in ("file", "dir"):
        raise BadRequest("an entry's kind is file or dir", code="bad-json")
    mtime = row.get("mtime")
    if mtime is not None and (
        isinstance(mtime, bool) or not isinstance(mtime, int | float) or not math.isfinite(mtime)
    ):
        raise BadRequest("an entry's mtime must be a number", code="bad-json")
    mode = row.get("mode")
    if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int)):
        raise BadRequest("an entry's mode must be an integer", code="bad-json")
    return NewEntry(_field(row, "name", str), kind, _field(row, "cap", str), mtime, mode)


async def make_dir(request: web.Request) -> web.Response:
    """``POST /api/v1/dir`` ``{"entries": [{name, kind, cap, mtime?, mode?}]}``: store
    a whole directory object (a backup snapshot's folder), linked nowhere."""
    body = await _big_json(request, MAX_DIR_BODY)
    if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
        raise BadRequest('the body must be {"entries": [...]}', code="bad-json")
    rows = [_new_entry(r) for r in body["entries"]]
    entry = await _optional(request, "vdrive_make_dir", "make directory objects")(rows)
    return _json({"cap": entry.cap, "verify_cap": entry.verify_cap}, status=201)


def add_drive_change_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(API_PREFIX + "/vdrive/mkdir", vd_mkdir)
    r.add_post(API_PREFIX + "/vdrive/link", vd_link)
    r.add_post(API_PREFIX + "/vdrive/unlink", vd_unlink)
    r.add_post(API_PREFIX + "/vdrive/rename", vd_rename)
    r.add_post(API_PREFIX + "/vdrive/outcome", vd_outcome)
    r.add_post(API_PREFIX + "/dir", make_dir)
