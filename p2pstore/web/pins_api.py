"""The pin calls of the HTTP API (docs/http-api.md, "Pins"; docs/maintenance.md):
``GET /api/v1/pins``, ``POST /api/v1/pins`` ``{"cap", "label"?}`` and
``POST /api/v1/pins/remove`` ``{"cap"}``."""

from __future__ import annotations

from aiohttp import web

from p2pstore.app.errors import BadRequest
from p2pstore.immutable import LiteralCap, ReadCap, VerifyCap
from p2pstore.mutable import MutableCap, is_mutable_cap

from .api import _cap, _field, _json, _json_body
from .context import API_PREFIX, BACKEND, token_required
from .mutable_api import mutable_cap


def _coded_cap(text: str) -> ReadCap | VerifyCap | MutableCap:
    if is_mutable_cap(text):
        return mutable_cap(text)
    cap = _cap(text)
    if isinstance(cap, LiteralCap):
        raise BadRequest(
            "a literal file lives inside its cap: there are no shares to keep", code="bad-cap"
        )
    return cap


@token_required
async def pins(request: web.Request) -> web.Response:
    return _json({"pins": list(await request.app[BACKEND].pin_list())})


async def pin(request: web.Request) -> web.Response:
    body = await _json_body(request)
    cap = _coded_cap(_field(body, "cap", str))
    label = _field(body, "label", str, "")
    return _json(dict(await request.app[BACKEND].pin(cap, label)))


async def unpin(request: web.Request) -> web.Response:
    body = await _json_body(request)
    cap = _coded_cap(_field(body, "cap", str))
    await request.app[BACKEND].unpin(cap)
    return _json({"verify_cap": cap.verify_cap().to_string(), "unpinned": True})


def add_pin_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(API_PREFIX + "/pins", pins, allow_head=False)
    r.add_post(API_PREFIX + "/pins", pin)
    r.add_post(API_PREFIX + "/pins/remove", unpin)
