"""The invitation commands and the ``invite.redeem`` RPC (docs/bootstrap.md,
"Invitations"; the rules in :mod:`.invitations`)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from pathlib import Path
from typing import Any

from quic_transport.identity import NodeKey

from .bootstrap import MAX_TEXT_CHARS, MergeResult, parse_bootstrap
from .bootstrap_ops import add_lines, own_line
from .config import load_config
from .errors import BootstrapErrors
from .invitations import METHOD, InviteBook, InviteCode, InviteError, check_name, describe
from .nodedir import NodeDir

log = logging.getLogger(__name__)


def create_invite(root: Path, name: str, *, write: bool, ttl: float) -> str:
    """Record an invitation on the node at ``root``; returns the code to hand over."""
    nd = NodeDir(root.absolute())
    nd.require_node()
    config = load_config(nd.config_path)
    serves = config.vdrive.serve if config.vdrive.serve is not None else config.node.introducer
    if write and not serves:
        raise InviteError(
            "not-vdrive-node",
            "--write needs the node that serves the shared drive ([vdrive] serve); "
            "run `p2pstore invite --write` there",
        )
    seed_text = own_line(nd.root)  # also checks the node has a port others can dial
    seed = parse_bootstrap(seed_text).seeds[0]
    secret = InviteBook(nd.private_dir).create(
        check_name(name), write=write, ttl=ttl, now=time.time()
    )
    return InviteCode(seed.node_id, seed.address, secret).to_text()


async def _redeem(key: NodeKey, code: InviteCode, wait: float) -> dict[str, Any]:
    # the transport (aioquic, cryptography's x509) here, not at the module's import:
    # every CLI command imports this module and only `join` dials
    from quic_transport import PeerAddress, RpcError
    from quic_transport.endpoint import open_endpoint
    from quic_transport.errors import TransportError

    try:
        loopback = ipaddress.ip_address(code.address.host).is_loopback
    except ValueError:
        loopback = False
    v6 = ":" in code.address.host
    host = "127.0.0.1" if loopback and not v6 else ("::" if v6 else "0.0.0.0")
    endpoint = await open_endpoint(key, host, 0)
    try:
        peer = PeerAddress(code.inviter, code.address.host, code.address.port)
        reply = await endpoint.call(peer, METHOD, {"secret": code.secret}, timeout=wait)
    except RpcError as e:
        raise InviteError(e.code, f"the inviter refused: {e.message}") from None
    except (TransportError, OSError, TimeoutError) as e:
        raise InviteError(
            "inviter-unreachable",
            f"cannot reach the inviter at {code.address}: {e} (is its node running?)",
        ) from None
    finally:
        await endpoint.aclose()
    if not (
        isinstance(reply, dict)
        and isinstance(reply.get("bootstrap"), str)
        and len(reply["bootstrap"]) <= MAX_TEXT_CHARS
        and isinstance(reply.get("write"), bool)
        and isinstance(reply.get("name"), str)
    ):
        raise InviteError("bad-reply", "the inviter's answer is malformed")
    return reply


def join(
    root: Path, code_text: str, *, timeout: float = 20.0
) -> tuple[dict[str, Any], MergeResult]:
    """Redeem ``code_text`` for the node at ``root`` and merge the bootstrap list it
    brings into the node's list. Returns (the inviter's reply, what merged)."""
    code = InviteCode.parse(code_text)
    nd = NodeDir(root.absolute())
    nd.require_node()
    reply = asyncio.run(_redeem(nd.load_key(), code, timeout))
    try:
        merged = add_lines(root, reply["bootstrap"], source="the inviter's bootstrap list")
    except BootstrapErrors as e:
        raise InviteError("bad-reply", f"the inviter's bootstrap list is unusable: {e}") from None
    return reply, merged


def writers(root: Path) -> list[dict[str, Any]]:
    nd = NodeDir(root.absolute())
    nd.require_node()
    return [describe(i) for i in InviteBook(nd.private_dir).all()]


def revoke(root: Path, name: str) -> dict[str, Any]:
    nd = NodeDir(root.absolute())
    nd.require_node()
    return describe(InviteBook(nd.private_dir).revoke(name))
