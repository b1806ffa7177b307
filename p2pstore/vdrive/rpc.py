"""The ``vdrive.apply`` RPC: the wire adapter over :class:`~.writer.DriveWriter`.

Server side: :func:`register_vdrive_rpc` registers one handler on anything with
``register(method, handler)`` whose handlers get ``ctx.peer_id`` (the caller's
verified node ID): ``quic_transport.Endpoint`` or ``p2pstore.testing.dht_memnet.MemoryTransport``.

Client side: :class:`RemoteWriter` turns a ``call(body) -> reply`` coroutine into
the same ``apply`` the local writer has. Any transport failure becomes
``vdrive-unavailable`` with a message saying reads still work.

Request (CBOR map, exact keys)::

    {"drive": "shared", "op": <op, docs/vdrive.md>, "expected_sequence": uint | null}

    (plus an optional ``"op_id": bytes`` of 8-32 bytes: docs/vdrive.md, "Retries")

Reply (always a map; the handler never raises for a refused or failed change)::

    {"status": "ok", "sequence": n, "changed": bool, "published": bool}
    {"status": "error", "code": "<kebab>", "message": str, "sequence": current}

``vdrive.outcome`` asks what became of a change: request ``{"drive": "shared",
"op_id": bytes}``, reply ``{"status": "ok", "applied": bool, "sequence": n}`` (or
the error map). An id not made by then is marked given up: it never will be.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from quic_transport.identity import NodeId

from .errors import VdriveError, VdriveLocalError
from .ops import Op, op_from_wire, op_to_wire
from .writer import ChangeResult, DriveWriter, Outcome

log = logging.getLogger(__name__)

METHOD = "vdrive.apply"
OUTCOME_METHOD = "vdrive.outcome"
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
        "abandoned",
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


def request_body(
    op: Op, expected_sequence: int | None, op_id: bytes | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "drive": "shared",
        "op": op_to_wire(op),
        "expected_sequence": expected_sequence,
    }
    if op_id is not None:
        body["op_id"] = op_id
    return body


async def handle_apply(writer: DriveWriter, peer_id: NodeId, body: Any) -> dict[str, Any]:
    try:
        if (
            not isinstance(body, dict)
            or not REQUEST_KEYS <= set(body) <= REQUEST_KEYS | {"op_id"}
            or body["drive"] != "shared"
        ):
            raise VdriveLocalError(
                "bad-request", "expected {drive: shared, op, expected_sequence, op_id?}"
            )
        op_id = _op_id(body.get("op_id"), required=False)
        op = op_from_wire(body["op"])
        res = await writer.apply(
            op, expected_sequence=_expected(body["expected_sequence"]), writer=peer_id, op_id=op_id
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


def _op_id(v: Any, *, required: bool) -> bytes | None:
    if v is None and not required:
        return None
    if not (isinstance(v, bytes) and 8 <= len(v) <= 32):
        raise VdriveLocalError("bad-request", "op_id must be 8 to 32 bytes")
    return v


async def handle_outcome(writer: DriveWriter, peer_id: NodeId, body: Any) -> dict[str, Any]:
    try:
        if (
            not isinstance(body, dict)
            or set(body) != {"drive", "op_id"}
            or body["drive"] != "shared"
        ):
            raise VdriveLocalError("bad-request", "expected {drive: shared, op_id}")
        op_id = _op_id(body["op_id"], required=True)
        assert op_id is not None
        res = await writer.settle(op_id, writer=peer_id)
    except VdriveError as e:
        return {"status": "error", "code": e.code, "message": e.message, "sequence": 0}
    return {"status": "ok", "applied": res.applied, "sequence": res.sequence}


def register_vdrive_rpc(registry: _Registry, writer: DriveWriter) -> None:
    async def handler(ctx: _Ctx, body: Any) -> dict[str, Any]:
        return await handle_apply(writer, ctx.peer_id, body)

    async def outcome(ctx: _Ctx, body: Any) -> dict[str, Any]:
        return await handle_outcome(writer, ctx.peer_id, body)

    registry.register(METHOD, handler)
    registry.register(OUTCOME_METHOD, outcome)


Call = Callable[..., Awaitable[Any]]


class NotDelivered(ConnectionError):
    """Raised by a ``call`` when the request certainly did not reach the vdrive node
    (no connection could be made): the change was not made, nothing to ask about."""


class RemoteWriter:
    """A writer on another node (the vdrive node), reached through ``call(body)``
    (``call(body, method=OUTCOME_METHOD)`` to ask about a change)."""

    def __init__(self, call: Call, *, label: str = "shared", attempts: int = 2) -> None:
        self.call = call
        self.label = label
        self.attempts = max(1, attempts)

    async def apply(
        self, op: Op, *, expected_sequence: int | None, op_id: bytes | None = None
    ) -> ChangeResult:
        # One id for this change (the requester's, else a fresh one): if an answer is
        # lost (a timeout, a dropped connection) the request is sent again, and the
        # vdrive node answers a change it already made instead of making it twice or
        # refusing it ("exists"). If every attempt fails, ask what became of it.
        op_id = op_id or secrets.token_bytes(16)
        failure: Exception | None = None
        delivered = False  # whether any attempt may have reached the vdrive node
        for attempt in range(self.attempts):
            try:
                reply = await self.call(request_body(op, expected_sequence, op_id))
            except Exception as e:
                failure = e
                delivered = delivered or not isinstance(e, NotDelivered)
                log.info("vdrive.apply attempt %d failed: %s", attempt + 1, e)
                continue
            return parse_reply(reply)
        why = f"the vdrive node cannot be reached ({type(failure).__name__}: {failure})"
        if not delivered:
            raise VdriveLocalError(
                "vdrive-unavailable",
                f"{why}; the change was not made; reading the drive still works, "
                "changes need the vdrive node",
                details={"outcome": "not-made"},
            )
        try:
            outcome = await self.settle(op_id)
        except VdriveLocalError:
            raise VdriveLocalError(
                "vdrive-unavailable",
                f"{why}; whether the change was made is not known yet (`p2pstore ls` "
                "shows it once the vdrive node answers); reading the drive still works",
                details={"outcome": "unknown"},
            ) from None
        if outcome.applied:
            return ChangeResult(outcome.sequence, True, replayed=True)
        raise VdriveLocalError(
            "vdrive-unavailable",
            f"{why}; the change was not made; reading the drive still works",
            details={"outcome": "not-made"},
        )

    async def settle(self, op_id: bytes) -> Outcome:
        try:
            reply = await self.call({"drive": "shared", "op_id": op_id}, method=OUTCOME_METHOD)
        except Exception as e:
            raise VdriveLocalError(
                "vdrive-unavailable",
                f"the vdrive node cannot be reached ({type(e).__name__}: {e})",
                details={"outcome": "unknown"},
            ) from None
        if isinstance(reply, dict) and reply.get("status") == "ok":
            applied, seq = reply.get("applied"), reply.get("sequence")
            if isinstance(applied, bool) and type(seq) is int and seq >= 0:
                return Outcome(applied, seq)
        parse_reply(reply)  # raises the error it carries, or "malformed"
        raise VdriveLocalError("vdrive-unavailable", "the vdrive node sent a malformed reply")


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
