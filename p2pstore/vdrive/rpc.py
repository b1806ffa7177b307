"""The ``vdrive.apply`` RPC: the wire adapter over :class:`~.writer.DriveWriter`.

Server side: :func:`register_vdrive_rpc` registers one handler on anything with
``register(method, handler)`` whose handlers get ``ctx.peer_id`` (the caller's
verified node ID): ``quic_transport.Endpoint`` or ``p2pstore.testing.dht_memnet.MemoryTransport``.

Client side: :class:`RemoteWriter` turns a ``call(body) -> reply`` coroutine into
the same ``apply`` the local writer has. Any transport failure becomes
``vdrive-unavailable`` with a message saying reads still work.

Request (CBOR map, exact keys)::

    {"drive": "shared", "op": <op, docs/vdrive.md>, "expected_sequence": uint | null}

Reply (always a map; the handler never raises for a refused or failed change)::

    {"status": "ok", "sequence": n, "changed": bool, "published": bool}
    {"status": "error", "code": "<kebab>", "message": str, "sequence": current}
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from quic_transport.identity import NodeId

from .errors import VdriveError, VdriveLocalError
from .ops import Op, op_from_wire, op_to_wire
from .writer import ChangeResult, DriveWriter

log = logging.getLogger(__name__)

METHOD = "vdrive.apply"
REQUEST_KEYS = frozenset({"drive", "op", "expected_sequence"})
# Codes a remote writer may send back; anything else is reported as "refused".
KNOWN_CODES = frozenset(
    {
        "not-found",
        "exists",
        "is-a-directory",
        "not-a-directory",
        "directory-not-empty",
        "bad-path",
        "bad-request",
        "sequence-mismatch",
        "refused",
        "too-large",
        "vdrive-unavailable",
        "grid-error",
        "bad-directory",
    }
)


class _Ctx(Protocol):
    @property
    def peer_id(self) -> NodeId: ...


class _Registry(Protocol):
    def register(self, method: str, handler: Any) -> None: ...


def _expected(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
        raise VdriveLocalError("bad-request", "expected_sequence must be null or a uint")
    return v


def request_body(op: Op, expected_sequence: int | None) -> dict[str, Any]:
    return {"drive": "shared", "op": op_to_wire(op), "expected_sequence": expected_sequence}


async def handle_apply(writer: DriveWriter, peer_id: NodeId, body: Any) -> dict[str, Any]:
    try:
        if not isinstance(body, dict) or set(body) != REQUEST_KEYS or body["drive"] != "shared":
            raise VdriveLocalError("bad-request", "expected {drive: shared, op, expected_sequence}")
        op = op_from_wire(body["op"])
        res = await writer.apply(
            op, expected_sequence=_expected(body["expected_sequence"]), writer=peer_id
        )
    except VdriveError as e:
        log.info("vdrive change from %s refused: %s", peer_id.short(), e.code)
        return {
            "status": "error",
            "code": e.code,
            "message": e.message,
            "sequence": writer.head.sequence,
        }
    return {
        "status": "ok",
        "sequence": res.sequence,
        "changed": res.changed,
        "published": res.published,
    }


def register_vdrive_rpc(registry: _Registry, writer: DriveWriter) -> None:
    async def handler(ctx: _Ctx, body: Any) -> dict[str, Any]:
        return await handle_apply(writer, ctx.peer_id, body)

    registry.register(METHOD, handler)


Call = Callable[[dict[str, Any]], Awaitable[Any]]


class RemoteWriter:
    """A writer on another node (the vdrive node), reached through ``call``."""

    def __init__(self, call: Call, *, label: str = "shared") -> None:
        self.call = call
        self.label = label

    async def apply(self, op: Op, *, expected_sequence: int | None) -> ChangeResult:
        try:
            reply = await self.call(request_body(op, expected_sequence))
        except Exception as e:
            raise VdriveLocalError(
                "vdrive-unavailable",
                f"the vdrive node cannot be reached ({type(e).__name__}: {e}); "
                "reading the drive still works, changes need the vdrive node",
            ) from None
        return parse_reply(reply)


def parse_reply(reply: Any) -> ChangeResult:
    def bad() -> VdriveLocalError:
        return VdriveLocalError("vdrive-unavailable", "the vdrive node sent a malformed reply")

    if not isinstance(reply, dict):
        raise bad()
    seq = reply.get("sequence")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise bad()
    if reply.get("status") == "ok":
        return ChangeResult(seq, bool(reply.get("changed")), published=bool(reply.get("published")))
    if reply.get("status") != "error":
        raise bad()
    code, message = reply.get("code"), reply.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        raise bad()
    if code not in KNOWN_CODES:
        code = "refused"
    details = {"sequence": seq} if code == "sequence-mismatch" else None
    raise VdriveLocalError(code, message[:500], details=details)
