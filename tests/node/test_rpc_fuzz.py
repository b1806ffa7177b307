"""Every RPC handler of a real node, fuzzed through the real dispatch path: a
GridService (introducer: vdrive writer, relay, DHT, storage, NAT services) on
127.0.0.1, and a stranger's endpoint calling each registered unary method, and
opening each stream and fetch method, with hypothesis-generated bodies. Whatever
arrives, the node answers with its own error codes, never ``internal`` (a handler
that raised something it did not mean to), and keeps serving."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pstore.node.grid_service import GridService
from p2pstore.storage.slots import SlotRecord
from quic_transport import (
    Endpoint,
    NodeKey,
    PeerAddress,
    RpcError,
    TransportConfig,
    TransportError,
    open_endpoint,
)

from .test_node_grid_service import context, make_dir

pytestmark = [
    pytest.mark.timeout(300),
    # the node's own background tasks (another thread) use the random module while
    # hypothesis draws; that is not randomness inside a strategy
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

# Field names the handlers read, so bodies often have the right keys, wrong values.
FIELDS = [
    "si", "shnum", "offset", "length", "ranges", "size", "target", "peer", "addr",
    "id", "key", "record", "op", "path", "drive", "expected_sequence", "work",
    "count", "nonce", "data", "value", "seq", "token", "node_id", "host", "port",
    "cap", "replace", "parents", "recursive", "src", "dst", "bits", "minute",
    "keys", "shares", "lease", "renew", "cancel", "owner", "k", "want", "max",
    "n", "segment_size", "prefix",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.binary(max_size=48),
    st.sampled_from([b"\0" * 20, b"\x01" * 32, "shared", "mkdir", "link"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=12,
)
_SLOT = SlotRecord.sign(bytes(32), 1, b"body")
# Valid-looking bodies of methods whose schema lives in their handler: a mutation of
# one of these (a value replaced, a key dropped or added) reaches deeper checks.
TEMPLATES: dict[str, dict[str, Any]] = {
    "vdrive.apply": {
        "drive": "shared",
        "op": {"op": "mkdir", "path": ["a"], "parents": True},
        "expected_sequence": None,
    },
    "nat.punch": {"peer": b"\x09" * 20, "addr": ["198.51.100.1", 4000]},
    "nat.connect": {"target": b"\x09" * 20},
    "nat.dialback": {"nonce": b"\x01" * 16, "addrs": [["198.51.100.1", 4000]]},
    "nat.probe": {"nonce": b"\x01" * 16},
    "relay.renew": {"id": 1},
    "relay.release": {"id": 1},
    "dht.find_node": {"target": b"\x01" * 20, "client": True, "want_anns": True},
    "dht.get": {"key": b"\x01" * 20},
    "dht.ping": {},
    "storage.readv": {"si": b"\x01" * 32, "shnum": 0, "ranges": [[0, 10]]},
    "storage.hashv": {"si": b"\x01" * 20, "shnum": 0, "prefix": b"t", "ranges": [[0, 10]]},
    "storage.slot_write": {"si": _SLOT.storage_index, "record": _SLOT.encode(), "lease": 60},
    "helper.start": {"si": b"\x01" * 20, "k": 2, "n": 4, "segment_size": 4096, "size": 100},
    "helper.finish": {"si": b"\x01" * 20},
}


@st.composite
def mutated(draw: st.DrawFn, method: str) -> Any:
    body = dict(TEMPLATES[method])
    action = draw(st.sampled_from(["replace", "drop", "add", "nested"]))
    keys = sorted(body)
    if action == "replace" and keys:
        body[draw(st.sampled_from(keys))] = draw(values)
    elif action == "drop" and keys:
        del body[draw(st.sampled_from(keys))]
    elif action == "add":
        body[draw(st.sampled_from(FIELDS))] = draw(values)
    else:
        for k, v in body.items():
            if isinstance(v, dict) and v:
                inner = dict(v)
                inner[draw(st.sampled_from(sorted(inner)))] = draw(values)
                body[k] = inner
            elif isinstance(v, list) and v:
                body[k] = [draw(values), *v[1:]]
    return body


bodies = st.one_of(values, st.dictionaries(st.sampled_from(FIELDS), values, max_size=6))


class Loop:
    """An event loop in a thread: the node runs there while hypothesis drives calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Node:
    """An introducer that is the vdrive node, and a storage node joined to it: between
    them every service a node can run. ``targets`` maps each method to the node
    serving it."""

    def __init__(self, loop: Loop, tmp: Path) -> None:
        from p2pstore.node.vdrive_wiring import grid_vdrive_factory

        self.loop = loop
        intro = GridService(
            context(make_dir(tmp, "intro", [], introducer=True)),
            vdrive_factory=grid_vdrive_factory,
        )
        loop.run(intro.start())
        intro.api_backend()  # as the runner does: builds the vdrive, registers vdrive.apply
        self.services = [intro]
        assert intro.endpoint is not None
        host, port = intro.endpoint.local_address
        from p2pstore.node.bootstrap import Seed

        seed = Seed(intro.endpoint.node_id, host, port)
        n0 = make_dir(tmp, "n0", [seed])
        with (n0 / "p2pstore.toml").open("a", encoding="utf-8") as f:
            f.write("\n[helper]\nenabled = true\n")  # serves helper.* too
        storage = GridService(context(n0), vdrive_factory=grid_vdrive_factory)
        loop.run(storage.start())
        storage.api_backend()
        self.services.append(storage)
        self.handlers: dict[str, PeerAddress] = {}
        self.streams: dict[tuple[str, str], PeerAddress] = {}
        for svc in self.services:
            ep = svc.endpoint
            assert ep is not None
            h, p = ep.local_address
            addr = PeerAddress(ep.node_id, h, p)
            for m in ep.handlers:
                self.handlers.setdefault(m, addr)
            for m in ep.stream_handlers:
                self.streams.setdefault(("up", m), addr)
            for m in ep.fetch_handlers:
                self.streams.setdefault(("down", m), addr)
        cfg = TransportConfig(connect_timeout=5.0)
        self.caller: Endpoint = loop.run(open_endpoint(NodeKey.generate(), "127.0.0.1", 0, cfg))

    def close(self) -> None:
        self.loop.run(self.caller.aclose())
        for svc in reversed(self.services):
            self.loop.run(svc.close())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    loop = Loop()
    n = Node(loop, tmp_path_factory.mktemp("rpcfuzz"))
    try:
        yield n
    finally:
        n.close()
        loop.stop()


def _check(outcome: BaseException | None, method: str, body: Any) -> None:
    if isinstance(outcome, RpcError):
        assert outcome.code != "internal", f"{method}({body!r}) -> internal: {outcome.message}"


def test_every_method_is_registered(node: Node) -> None:
    names = set(node.handlers) | {m for _, m in node.streams}
    for expected in (
        *("storage.allocate", "dht.find_node", "vdrive.apply", "relay.reserve"),
        *("helper.start", "helper.push", "helper.finish", "helper.status"),
    ):
        assert expected in names, sorted(names)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), body=bodies)
def test_unary_handlers_answer_any_body_with_their_own_errors(
    node: Node, data: st.DataObject, body: Any
) -> None:
    method = data.draw(st.sampled_from(sorted(node.handlers)))

    async def call() -> BaseException | None:
        try:
            await node.caller.call(node.handlers[method], method, body, timeout=20.0)
        except (RpcError, TransportError) as e:
            return e
        return None

    _check(node.loop.run(call()), method, body)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), header=bodies, payload=st.binary(max_size=300))
def test_stream_and_fetch_handlers_answer_any_header(
    node: Node, data: st.DataObject, header: Any, payload: bytes
) -> None:
    kind, method = data.draw(st.sampled_from(sorted(node.streams)))
    address = node.streams[(kind, method)]

    async def call() -> BaseException | None:
        try:
            if kind == "up":
                await node.caller.call_stream(
                    address, method, header, [payload] if payload else [], timeout=5.0
                )
            else:
                reader = await node.caller.fetch(address, method, header, timeout=5.0)
                async with reader:
                    async with asyncio.timeout(2.0):
                        await reader.read_all(1 << 20)
        except (RpcError, TransportError, TimeoutError) as e:
            return e
        return None

    _check(node.loop.run(call()), method, header)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_valid_bodies_get_their_own_errors(node: Node, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(sorted(m for m in TEMPLATES if m in node.handlers)))
    body = data.draw(mutated(method))

    async def call() -> BaseException | None:
        try:
            await node.caller.call(node.handlers[method], method, body, timeout=20.0)
        except (RpcError, TransportError) as e:
            return e
        return None

    _check(node.loop.run(call()), method, body)


def test_node_still_serves_after_the_fuzzing(node: Node) -> None:
    async def ping(address: PeerAddress) -> float:
        return await node.caller.ping(address)

    for address in set(node.handlers.values()):
        assert node.loop.run(ping(address)) < 5.0
