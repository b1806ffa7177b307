"""JSON handlers of ``/api/v1/`` (docs/http-api.md has the route table).

Each handler parses and validates its inputs (caps with
:func:`~p2pstore.immutable.parse_cap`, ranges with :mod:`.ranges`, vdrive paths
with :mod:`.vpath`, JSON bodies against their few fields), calls the backend and
shapes the answer; no business logic lives here.

Invariants:
- upload bodies are streamed into the backend chunk by chunk (never read whole);
  a pause longer than ``idle_timeout`` or a body longer than ``max_upload_bytes``
  or shorter than its Content-Length fails the upload;
- downloads stream with ``Content-Length`` and ``Accept-Ranges: bytes``; the
  backend is asked for the first chunk before the status line is sent, so "not
  found"/"unrecoverable" are real error statuses; an error later aborts the
  connection (the client sees fewer bytes than Content-Length, never wrong ones);
- download responses are ``application/octet-stream`` with
  ``Content-Security-Policy: sandbox`` so a stored HTML file never runs in the
  API's origin.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final, TypeVar

import aiohttp
from aiohttp import web

from p2pstore.app.contract import (
    UPLOAD_MODES,
    Application,
    CheckReport,
    DirEntry,
    UploadMode,
    UploadResult,
)
from p2pstore.app.errors import (
    AppError,
    BadRequest,
    Conflict,
    NotFound,
    TooLarge,
    Unavailable,
)
from p2pstore.app.mutable import entry_version
from p2pstore.app.vpath import VPath, parse_vpath
from p2pstore.immutable import CapError, LiteralCap, ReadCap, VerifyCap, parse_cap
from p2pstore.mutable import is_mutable_cap
from quic_transport.identity import b32encode

from . import local_path, mutable_api
from .context import API_PREFIX, BACKEND, BOOTSTRAP, LIMITS, TRANSFERS, token_required
from .errors import (
    ClientGone,
    RangeNotSatisfiable,
)
from .http_range import Partial, Unsatisfiable, Whole, select_range
from .transfers import Transfer
from .uploads import body_chunks, stored_into, tag_of, transfer_status, while_connected

log = logging.getLogger(__name__)
T = TypeVar("T")
API_VERSION: Final = 1
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
DOWNLOAD_CSP: Final = "sandbox; default-src 'none'"
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


# -- parsing helpers -------------------------------------------------------------
def _cap(text: str) -> ReadCap | VerifyCap | LiteralCap:
    try:
        return parse_cap(text)
    except CapError as e:
        raise BadRequest(str(e), code="bad-cap") from None


def _read_cap(text: str) -> ReadCap | LiteralCap:
    cap = _cap(text)
    if isinstance(cap, VerifyCap):
        raise BadRequest(
            "a verify cap can check a file but not read it; use the read cap (p2ps:chk:...)",
            code="verify-cap-cannot-read",
        )
    return cap


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false, got {value[:20]!r}")


def _mode(value: str | None) -> UploadMode:
    mode = value or "convergent"
    for m in UPLOAD_MODES:
        if m == mode:
            return m
    raise BadRequest(f"mode must be one of {', '.join(UPLOAD_MODES)}, got {mode[:20]!r}")


def _seq(value: object, where: str = "expected_sequence") -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 19:
            raise BadRequest(f"{where} must be a non-negative integer")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{where} must be a non-negative integer")
    return value


def op_id_of(value: object) -> bytes | None:
    """A change's ``op_id``: 16 to 64 hex digits (docs/http-api.md, "Outcomes")."""
    if value is None:
        return None
    if not isinstance(value, str) or not 16 <= len(value) <= 64 or len(value) % 2:
        raise BadRequest("op_id must be 16 to 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest("op_id must be 16 to 64 hex digits") from None


def _query_path(request: web.Request, name: str = "path") -> VPath:
    value = request.query.get(name)
    if value is None:
        raise BadRequest(f"query parameter {name!r} (a vdrive path) is required", code="bad-path")
    return parse_vpath(value)


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise BadRequest("the request body must be a JSON object", code="bad-json") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="bad-json")
    return body


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in body:
        if default is ...:
            raise BadRequest(f"the JSON body needs {name!r}", code="bad-json")
        return default
    value = body[name]
    if kind is bool and not isinstance(value, bool):
        raise BadRequest(f"{name!r} must be true or false", code="bad-json")
    if kind is str and not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string", code="bad-json")
    return value


def _transfer_name(raw: str | None) -> str | None:
    """A client's file name for the transfer list: its last component, printable, cut."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())[:200].strip()
    return name or None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# -- JSON shapes -----------------------------------------------------------------
def _cap_facts(cap: ReadCap | VerifyCap | LiteralCap) -> dict[str, Any]:
    if isinstance(cap, LiteralCap):
        return {"kind": "lit", "size": cap.size, "verify_cap": None}
    return {
        "kind": "chk" if isinstance(cap, ReadCap) else "chk-verify",
        "size": cap.size,
        "k": cap.k,
        "n": cap.n,
        "storage_index": b32encode(cap.storage_index),
        "verify_cap": cap.verify_cap().to_string(),
    }


def _upload_json(r: UploadResult) -> dict[str, Any]:
    verify = r.cap.verify_cap().to_string() if isinstance(r.cap, ReadCap) else None
    return {
        "cap": r.cap.to_string(),
        "verify_cap": verify,
        "size": r.size,
        "mode": r.mode,
        "details": dict(r.details),
    }


def _check_json(r: CheckReport) -> dict[str, Any]:
    return {
        "healthy": r.healthy,
        "recoverable": r.recoverable,
        "shares_needed": r.shares_needed,
        "shares_total": r.shares_total,
        "shares_good": r.shares_good,
        "verified": r.verified,
        "problems": list(r.problems),
        "repair_attempted": r.repair_attempted,
        "repaired": r.repaired,
        "details": dict(r.details),
    }


def _entry_json(e: DirEntry) -> dict[str, Any]:
    return {
        "name": e.name,
        "kind": e.kind,
        "size": e.size,
        "cap": e.cap,
        "verify_cap": e.verify_cap,
        "mtime": e.mtime,
        "mode": e.mode,
    }


# -- streaming -------------------------------------------------------------------
def _etag(cap: ReadCap | LiteralCap) -> str:
    # A cap names immutable content, so a hash of it is a strong validator that
    # reveals nothing about the cap.
    return '"' + hashlib.blake2b(cap.to_string().encode(), digest_size=16).hexdigest() + '"'


def _disposition(filename: str, *, inline: bool = False) -> str:
    safe = "".join(c if c.isprintable() and c not in '"\\/' else "_" for c in filename)[:200]
    ascii_name = safe.encode("ascii", "replace").decode("ascii").replace("?", "_")
    quoted = urllib.parse.quote(safe, safe="")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


async def serve_cap(
    request: web.Request,
    cap: ReadCap | LiteralCap,
    *,
    filename: str | None = None,
    content_type: str = "application/octet-stream",
    inline: bool = False,
    csp: str = DOWNLOAD_CSP,
) -> web.StreamResponse:
    """Stream ``cap``'s plaintext, honouring Range (whole / 206 / 416). The web UI
    passes the entry's guessed ``content_type``, ``inline`` for viewing, and the
    CSP for that type; the default sandbox CSP keeps any stored active content
    out of the node's origin."""
    size = cap.size
    etag = _etag(cap)
    choice = select_range(
        request.headers.get("Range"), size, if_range=request.headers.get("If-Range"), etag=etag
    )
    headers = {
        "Content-Type": content_type,
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Security-Policy": csp,
    }
    if filename:
        headers["Content-Disposition"] = _disposition(filename, inline=inline)
    if mutable_api.SEQUENCE in request:  # the latest version of a mutable file
        headers[mutable_api.SEQUENCE_HEADER] = str(request[mutable_api.SEQUENCE])
    if isinstance(choice, Unsatisfiable):
        raise RangeNotSatisfiable(
            f"the range {request.headers.get('Range', '')[:60]!r} selects no byte of a "
            f"{size}-byte file",
            size=size,
        )
    if isinstance(choice, Partial):
        status, offset, length = 206, choice.start, choice.length
        headers["Content-Range"] = choice.content_range()
    else:
        assert isinstance(choice, Whole)
        status, offset, length = 200, 0, size
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    if request.method == "HEAD" or length == 0:
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    tag = tag_of(request)
    with request.app[TRANSFERS].track("download", length, name=filename, tag=tag) as transfer:
        return await _stream(request, resp, cap, offset, length, transfer)


async def _stream(
    request: web.Request,
    resp: web.StreamResponse,
    cap: ReadCap | LiteralCap,
    offset: int,
    length: int,
    transfer: Transfer,
) -> web.StreamResponse:
    chunks = await request.app[BACKEND].download(cap, offset, length)
    try:
        first = await anext(chunks, None)  # errors here still get a proper status
        await resp.prepare(request)
        sent = 0
        chunk = first
        while chunk is not None and sent < length:
            piece = chunk[: length - sent]
            await resp.write(piece)
            sent += len(piece)
            transfer.done = sent
            chunk = await anext(chunks, None) if sent < length else None
        if sent != length:
            raise AppError(f"the backend ended after {sent} of {length} bytes")
        await resp.write_eof()
        return resp
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        return resp  # the client went away
    except Exception as e:
        if not resp.prepared:
            raise
        # The status line is gone; cut the connection so the client sees a short body
        # (a client that tagged the download asks why: GET /api/v1/transfer/TAG).
        log.warning("download aborted after the headers were sent: %s", e)
        transfer.reason = (
            e.message if isinstance(e, AppError) else "internal error (see the node's log)"
        )
        if request.transport is not None:
            request.transport.close()
        return resp
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


#: what a client may rely on beyond the first routes: "local_path" (uploads of a
#: file the node reads in place), "dir" (POST /api/v1/dir)
FEATURES: Final = ("local_path", "dir")


# -- handlers: files by cap -----------------------------------------------------
async def index(request: web.Request) -> web.Response:
    doc = {"api": "p2pstore", "version": API_VERSION, "docs": "docs/http-api.md"}
    return _json({**doc, "features": list(FEATURES)})


async def upload(request: web.Request) -> web.Response:
    if _flag(request, "mutable"):
        return await mutable_api.create(request, _flag(request, "dir"))
    mode = _mode(request.query.get("mode"))
    limits = request.app[LIMITS]
    size = request.content_length
    if size is not None and limits.max_upload_bytes is not None and size > limits.max_upload_bytes:
        raise TooLarge(f"uploads are limited to {limits.max_upload_bytes} bytes")
    name = _transfer_name(request.query.get("filename"))
    with request.app[TRANSFERS].track("upload", size, name=name, tag=tag_of(request)) as transfer:
        result = await _received(request, mode, size, transfer)
    return _json(_upload_json(result), status=201)


async def _received(
    request: web.Request, mode: UploadMode, size: int | None, transfer: Transfer
) -> UploadResult:
    """Upload the request's body, or the node-local file it names (``local_path``)."""
    local = request.query.get(local_path.QUERY)
    if local is not None:
        return await local_path.upload_local(request, local, mode, transfer)
    return await while_connected(
        request,
        request.app[BACKEND].upload(
            body_chunks(request, transfer),
            size_hint=size,
            mode=mode,
            progress=stored_into(transfer),
        ),
    )


async def download(request: web.Request) -> web.StreamResponse:
    text = request.match_info["cap"]
    if is_mutable_cap(text):
        version, seq = await mutable_api.latest(request, text)
        request[mutable_api.SEQUENCE] = seq
        return await serve_cap(request, version, filename=request.query.get("filename"))
    cap = _read_cap(text)
    return await serve_cap(request, cap, filename=request.query.get("filename"))


async def info(request: web.Request) -> web.Response:
    if is_mutable_cap(request.match_info["cap"]):
        return _json(await mutable_api.info(request, request.match_info["cap"]))
    cap = _cap(request.match_info["cap"])
    doc = _cap_facts(cap)
    doc["storage"] = (
        None if isinstance(cap, LiteralCap) else dict(await request.app[BACKEND].info(cap))
    )
    return _json(doc)


async def check(request: web.Request) -> web.Response:
    verify = _flag(request, "verify")
    repair = _flag(request, "repair", default=request.method == "POST")
    if repair and request.method != "POST":
        raise BadRequest("repair changes the grid: use POST (with the API token)")
    text = request.match_info["cap"]
    # a verify or repair can take minutes: a tagged check is followed like a transfer
    # (by its client only: it is not listed among the node's transfers)
    with request.app[TRANSFERS].track("check", None, tag=tag_of(request), listed=False):
        if is_mutable_cap(text):
            report = await mutable_api.check(request, text, verify=verify, repair=repair)
        elif isinstance(cap := _cap(text), LiteralCap):
            report = CheckReport(True, True, 1, 1, 1, verify, details={"literal": True})
        else:
            report = await request.app[BACKEND].check(cap, verify=verify, repair=repair)
    return _json(_check_json(report))


@token_required
async def status(request: web.Request) -> web.Response:
    doc = dict(await request.app[BACKEND].status())
    doc["api_version"] = API_VERSION
    doc["transfers"] = request.app[TRANSFERS].snapshot()
    doc["recent_transfers"] = request.app[TRANSFERS].recent()
    return _json(doc)


@token_required
async def peers(request: web.Request) -> web.Response:
    found = await request.app[BACKEND].peers()
    return _json(
        {
            "peers": [
                {
                    "node_id": p.node_id,
                    "address": p.address,
                    "connected": p.connected,
                    "last_seen": p.last_seen,
                    "details": dict(p.details),
                }
                for p in found
            ]
        }
    )


@token_required
async def bootstrap(request: web.Request) -> web.Response:
    provider = request.app.get(BOOTSTRAP)
    if provider is None:
        raise Unavailable("this API does not publish a bootstrap list (not served by a node)")
    return _json(dict(provider()))


# -- handlers: virtual drive -----------------------------------------------------
@token_required
async def vd_ls(request: web.Request) -> web.Response:
    path = _query_path(request)
    listing = await request.app[BACKEND].vdrive_list(path)
    return _json(
        {
            "path": str(listing.path),
            "sequence": listing.sequence,
            "entries": [_entry_json(e) for e in listing.entries],
        }
    )


@token_required
async def vd_stat(request: web.Request) -> web.Response:
    path = _query_path(request)
    entry = await request.app[BACKEND].vdrive_stat(path)
    return _json({"path": str(path), "entry": _entry_json(entry)})


@token_required
async def vd_get(request: web.Request) -> web.StreamResponse:
    path = _query_path(request)
    entry = await request.app[BACKEND].vdrive_stat(path)
    if entry.kind != "file" or entry.cap is None:
        raise Conflict(f"{path.shown} is a directory", code="is-a-directory")
    version = await entry_version(request.app[BACKEND], entry.cap)  # a mutable file: its latest
    return await serve_cap(request, version, filename=entry.name)


async def vd_put(request: web.Request) -> web.Response:
    path = _query_path(request)
    mode = _mode(request.query.get("mode"))
    replace = _flag(request, "replace", default=True)
    expected = _seq(request.query.get("expected_sequence"))
    op_id = op_id_of(request.query.get("op_id"))
    backend = request.app[BACKEND]
    if path.is_root:
        raise BadRequest("name the file: the path is a drive's root", code="bad-path")
    await check_upload_target(backend, path, replace, "replace it explicitly")
    size = request.content_length
    with request.app[TRANSFERS].track("upload", size, tag=tag_of(request)) as transfer:
        result = await _received(request, mode, size, transfer)
    if request.transport is None:
        raise ClientGone()  # gone while the upload finished: link nothing
    try:
        seq = await backend.vdrive_link(
            path, result.cap, replace=replace, expected_sequence=expected, op_id=op_id
        )
    except AppError as e:  # the upload stands: give its cap back so it is not lost
        e.details["uploaded_cap"] = result.cap.to_string()
        raise
    doc = _upload_json(result)
    doc.update(path=str(path), sequence=seq)
    return _json(doc, status=201)


async def check_upload_target(
    backend: Application, path: VPath, replace: bool, replace_hint: str
) -> None:
    """Refuse an upload to ``path`` before any byte is stored: the parent must be a
    directory, and an existing name must be a file the caller asked to replace."""
    parent = await backend.vdrive_stat(path.parent)
    if parent.kind != "dir":
        raise Conflict(f"{path.parent} is a file, not a directory", code="not-a-directory")
    try:
        existing: DirEntry | None = await backend.vdrive_stat(path)
    except NotFound:
        existing = None
    if existing is not None and existing.kind == "dir":
        raise Conflict(f"{path.shown} is a directory", code="is-a-directory")
    if existing is not None and not replace:
        raise Conflict(f"{path.shown} already exists ({replace_hint})", code="exists")


def add_routes(app: web.Application) -> None:
    p = API_PREFIX
    r = app.router
    r.add_get(p + "/", index)
    r.add_post(p + "/file", upload)
    r.add_get(p + "/file/{cap}", download)  # also HEAD
    r.add_put(p + "/file/{cap}", mutable_api.publish)  # a mutable file's next version
    r.add_get(p + "/info/{cap}", info, allow_head=False)
    r.add_get(p + "/check/{cap}", check, allow_head=False)
    r.add_post(p + "/check/{cap}", check)
    r.add_get(p + "/status", status, allow_head=False)
    r.add_get(p + "/transfer/{tag}", transfer_status, allow_head=False)
    r.add_get(p + "/peers", peers, allow_head=False)
    r.add_get(p + "/bootstrap", bootstrap, allow_head=False)
    r.add_get(p + "/vdrive/ls", vd_ls, allow_head=False)
    r.add_get(p + "/vdrive/stat", vd_stat, allow_head=False)
    r.add_get(p + "/vdrive/file", vd_get)
    r.add_put(p + "/vdrive/file", vd_put)
