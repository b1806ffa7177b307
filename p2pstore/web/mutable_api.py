"""HTTP routes of mutable files (docs/http-api.md, "Mutable files"; docs/mutable.md).

- ``POST /api/v1/file?mutable=true[&dir=BOOL]``: a new mutable file whose first
  version is the body (``dir=true``: a live directory's cap kinds; its body must
  be a directory encoding, checked by the vdrive when it is used);
- ``PUT /api/v1/file/<write cap>?expected_sequence=N``: the body as the next
  version (``409 mutable-conflict`` if someone else published first, or if the
  latest is not ``N``);
- ``GET``/``HEAD /api/v1/file/<read or write cap>``: the latest version's bytes
  (Range as for immutable files; ``X-P2pstore-Sequence`` names the version);
- ``GET /api/v1/info/<any mutable cap>`` and ``GET``/``POST /api/v1/check/<cap>``.

Handlers only parse, call the backend's mutable operations
(:mod:`p2pstore.app.mutable`) and shape the answer.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from p2pstore.app.contract import CheckReport
from p2pstore.app.errors import BadRequest, TooLarge
from p2pstore.app.mutable import MutableLatest, MutableResult, mutable_backend
from p2pstore.immutable import LiteralCap, ReadCap
from p2pstore.mutable import MutableCap, MutableCapError, WriteCap, parse_mutable_cap
from p2pstore.mutable import ReadCap as MutableReadCap

from .context import BACKEND, LIMITS, TRANSFERS
from .transfers import Transfer
from .uploads import body_chunks, stored_into, tag_of, while_connected

SEQUENCE_HEADER: Final = "X-P2pstore-Sequence"
#: the version a download of a mutable cap serves (``serve_cap`` sends it as a header)
SEQUENCE: Final = web.RequestKey("p2pstore-mutable-sequence", int)


def mutable_cap(text: str) -> MutableCap:
    try:
        return parse_mutable_cap(text)
    except MutableCapError as e:
        raise BadRequest(str(e), code="bad-cap") from None


def _kind(cap: MutableCap) -> str:
    if isinstance(cap, WriteCap):
        return "mut"
    return "mut-ro" if isinstance(cap, MutableReadCap) else "mut-verify"


def result_json(r: MutableResult) -> dict[str, Any]:
    rc = r.write_cap.read_cap()
    return {
        "cap": r.write_cap.to_string(),
        "write_cap": r.write_cap.to_string(),
        "read_cap": rc.to_string(),
        "verify_cap": rc.verify_cap().to_string(),
        "sequence": r.sequence,
        "size": r.size,
        "mode": "mutable",
        "directory": r.write_cap.directory,
        "details": dict(r.details),
    }


def _seq(request: web.Request) -> int | None:
    raw = request.query.get("expected_sequence")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise BadRequest("expected_sequence must be a non-negative integer")
    return int(raw)


def _checked_size(request: web.Request) -> int | None:
    size = request.content_length
    limit = request.app[LIMITS].max_upload_bytes
    if size is not None and limit is not None and size > limit:
        raise TooLarge(f"uploads are limited to {limit} bytes")
    return size


async def _publish(
    request: web.Request, cap: WriteCap | None, directory: bool, transfer: Transfer
) -> MutableResult:
    backend = mutable_backend(request.app[BACKEND])
    if "local_path" in request.query:
        raise BadRequest("a mutable file's version is sent as the request body (no local_path)")
    return await while_connected(
        request,
        backend.mutable_publish(
            body_chunks(request, transfer),
            cap=cap,
            size_hint=request.content_length,
            expected_sequence=_seq(request),
            directory=directory,
            progress=stored_into(transfer),
        ),
    )


async def create(request: web.Request, directory: bool) -> web.Response:
    """``POST /api/v1/file?mutable=true``: called by the upload handler."""
    size = _checked_size(request)
    with request.app[TRANSFERS].track("upload", size, name=None, tag=tag_of(request)) as t:
        result = await _publish(request, None, directory, t)
    return web.json_response(result_json(result), status=201)


async def publish(request: web.Request) -> web.Response:
    """``PUT /api/v1/file/<write cap>``."""
    cap = mutable_cap(request.match_info["cap"])
    if not isinstance(cap, WriteCap):
        raise BadRequest(
            "only a write cap (p2ps:mut:...) can publish a new version; this cap can "
            f"{'read' if isinstance(cap, MutableReadCap) else 'check'} the file",
            code="read-only-cap",
        )
    size = _checked_size(request)
    with request.app[TRANSFERS].track("upload", size, name=None, tag=tag_of(request)) as t:
        result = await _publish(request, cap, cap.directory, t)
    return web.json_response(result_json(result), status=201)


async def latest(request: web.Request, text: str) -> tuple[ReadCap | LiteralCap, int]:
    """The latest version's immutable read cap and its sequence (for downloads)."""
    cap = mutable_cap(text)
    if not isinstance(cap, WriteCap | MutableReadCap):
        raise BadRequest(
            "a verify cap can check a mutable file but not read it; use its read cap "
            "(p2ps:mut-ro:...)",
            code="verify-cap-cannot-read",
        )
    got = await mutable_backend(request.app[BACKEND]).mutable_latest(cap)
    assert got.version is not None
    return got.version, got.sequence


def latest_json(cap: MutableCap, got: MutableLatest) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": _kind(cap),
        "directory": cap.directory,
        "sequence": got.sequence,
        "size": got.size,
        "published_at": got.time,
        "verify_cap": cap.verify_cap().to_string(),
        "storage": dict(got.peers),
    }
    if isinstance(cap, WriteCap):
        doc["read_cap"] = cap.read_cap().to_string()
    return doc


async def info(request: web.Request, text: str) -> dict[str, Any]:
    cap = mutable_cap(text)
    got = await mutable_backend(request.app[BACKEND]).mutable_latest(cap)
    return latest_json(cap, got)


async def check(request: web.Request, text: str, *, verify: bool, repair: bool) -> CheckReport:
    cap = mutable_cap(text)
    return await mutable_backend(request.app[BACKEND]).mutable_check(
        cap, verify=verify, repair=repair
    )
