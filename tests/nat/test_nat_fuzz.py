"""Fuzz the NAT RPC handlers' body parsing: any CBOR-shaped body gives a typed
RpcError (or a valid reply), never another exception; no dial is attempted for a
malformed body."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pstore.nat.errors import NatRemoteError
from p2pstore.nat.punch import PunchService, parse_addr
from p2pstore.nat.reachability import DialbackServer, ProbeResponder, _addr_list
from quic_transport import CallContext, RpcError
from quic_transport.identity import NodeId

from ..nat_helpers import RecordingEndpoint

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=40),
    lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=8), c, max_size=6),
    max_leaves=25,
)
bodies = st.one_of(
    values,
    st.fixed_dictionaries({"nonce": values, "addrs": values}),
    st.fixed_dictionaries({"target": values}),
    st.fixed_dictionaries({"peer": values, "addr": values}),
)
CTX = CallContext(NodeId(b"\x01" * 20), "127.0.0.1", 4000)


@settings(max_examples=300)
@given(bodies)
def test_handlers_refuse_malformed_bodies_with_rpc_errors(body: Any) -> None:
    ep: Any = RecordingEndpoint()
    dialback = DialbackServer(ep)
    probe = ProbeResponder(ep)
    punch = PunchService(ep)

    async def run() -> None:
        for handler in (probe._on_probe, punch._on_connect, punch._on_punch):
            try:
                reply = await handler(CTX, body)
            except RpcError:
                continue
            assert reply == {"ok": True}  # only a well-formed nat.punch gets here
        well_formed = (
            isinstance(body, dict)
            and isinstance(body.get("nonce"), bytes)
            and len(body["nonce"]) == 16
        )
        if not well_formed:
            with pytest.raises(RpcError):
                await dialback._on_dialback(CTX, body)
        await punch.close()

    asyncio.run(run())
    for data, addr in ep.sent:  # a punch was only ever aimed at a valid address
        assert data.startswith(b"\x00p2ps-punch")
        parse_addr([addr[0], addr[1]], "addr")


@given(values)
def test_address_parsers_raise_only_nat_remote_error(value: Any) -> None:
    for fn in (lambda v: _addr_list(v, "addrs"), lambda v: parse_addr(v, "addr")):
        with contextlib.suppress(NatRemoteError):
            fn(value)
