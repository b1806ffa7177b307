"""DHT wire messages: round trips, limits, and decoders fuzzed with arbitrary input."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dht.contact import Contact
from dht.errors import MessageError
from dht.messages import (
    MAX_NODES,
    FindNodeRequest,
    GetRequest,
    GetResponse,
    NodesResponse,
    PingRequest,
    PingResponse,
    PutRequest,
    PutResponse,
)
from dht.records import sign_record
from quic_transport.identity import NodeId, NodeKey

KEY = NodeKey.from_seed(bytes(32))

ids = st.binary(min_size=20, max_size=20).map(NodeId)
# contacts on the wire carry IP literals only (a name is never resolved for a peer)
hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
contacts = st.builds(Contact, ids, hosts, st.integers(1, 65535))


def wire(body: Any) -> Any:
    return cbor2.loads(cbor2.dumps(body))


@given(st.lists(contacts, max_size=MAX_NODES, unique_by=lambda c: c.node_id), ids)
def test_round_trips(nodes: list[Contact], target: NodeId) -> None:
    assert FindNodeRequest.from_body(wire(FindNodeRequest(target).to_body())).target == target
    assert GetRequest.from_body(wire(GetRequest(target).to_body())).key == target
    assert NodesResponse.from_body(wire(NodesResponse(tuple(nodes)).to_body())).nodes == tuple(
        nodes
    )
    r = sign_record(KEY, b"n", 1, b"v", expires=2**33)
    got = GetResponse.from_body(wire(GetResponse(tuple(nodes), r).to_body()))
    assert got.record == r and got.nodes == tuple(nodes)
    assert GetResponse.from_body(wire(GetResponse((), None).to_body())).record is None
    assert PutRequest.from_body(wire(PutRequest(r).to_body())).record == r
    assert PutResponse.from_body(wire(PutResponse(True).to_body())).stored is True
    PingRequest.from_body(wire(PingRequest().to_body()))
    PingResponse.from_body(wire(PingResponse().to_body()))


def test_limits() -> None:
    many = [Contact(NodeId(bytes([i]) * 20), "10.0.0.1", 1).to_wire() for i in range(MAX_NODES + 1)]
    with pytest.raises(MessageError, match="limit"):
        NodesResponse.from_body({"nodes": many})
    with pytest.raises(MessageError, match="limit"):
        NodesResponse.from_body({"nodes": many[:5]}, max_nodes=4)
    dup = [many[0], many[0]]
    assert len(NodesResponse.from_body({"nodes": dup}).nodes) == 1
    for bad in (
        {"target": b"x" * 19},
        {"target": "x" * 20},
        {"target": b"x" * 20, "extra": 1},
        {},
        [],
    ):
        with pytest.raises(MessageError):
            FindNodeRequest.from_body(bad)
    for bad_contact in (
        [b"x" * 20, "h", 0],
        [b"x" * 20, "h", 65536],
        [b"x" * 20, "h", True],
        [b"x" * 20, "", 1],
        [b"x" * 20, "a b", 1],
        [b"x" * 20, "h" * 256, 1],
        [b"x" * 20, "h\x00", 1],
        [b"x" * 21, "h", 1],
        [b"x" * 20, "example.org", 1],  # a name: never resolved on a peer's word
        [b"x" * 20, "localhost", 1],
        [b"x" * 20, "h"],
    ):
        with pytest.raises(MessageError):
            NodesResponse.from_body({"nodes": [bad_contact]})
    with pytest.raises(MessageError):
        PutResponse.from_body({"stored": 1})
    with pytest.raises(MessageError, match="record"):
        GetResponse.from_body({"nodes": [], "record": {"pk": b"x"}})


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["nodes", "record", "target", "key", "stored", "pk", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)

DECODERS = [
    PingRequest.from_body,
    PingResponse.from_body,
    FindNodeRequest.from_body,
    NodesResponse.from_body,
    GetRequest.from_body,
    GetResponse.from_body,
    PutRequest.from_body,
    PutResponse.from_body,
]


@given(cbor_values)
def test_decoders_fuzz_raise_only_message_error(value: Any) -> None:
    for decode in DECODERS:
        with contextlib.suppress(MessageError):
            decode(value)


@given(st.lists(st.tuples(st.binary(max_size=24), st.text(max_size=6), st.integers()), max_size=6))
def test_nodes_fuzz(items: list[tuple[bytes, str, int]]) -> None:
    try:
        out = NodesResponse.from_body({"nodes": [list(i) for i in items]})
    except MessageError:
        return
    assert all(1 <= c.port <= 65535 and len(c.node_id.raw) == 20 for c in out.nodes)
