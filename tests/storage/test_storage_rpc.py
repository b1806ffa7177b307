"""The RPC adapter's schema checks and error mapping, and the client's distrust of
replies. (Behavioural equivalence with the direct server is the contract suite.)"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pstore.storage import (
    BadRequest,
    BadResponse,
    NoSuchShare,
    RpcStorageClient,
    StorageServer,
    StorageService,
    UnknownStorageError,
    bind_endpoint,
    register_storage_rpc,
)
from p2pstore.storage.config import HASH_CONCURRENCY
from p2pstore.storage.rpc import SCHEMAS, parse_body
from p2pstore.testing.fake_rpc import FakeRegistry, FakeRpcError
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
BOB = NodeId(b"B" * 20)
SI = hashlib.blake2b(b"file-1", digest_size=20).digest()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[StorageServer, FakeRegistry]]:
    server = StorageServer.open(tmp_path / "s")
    registry = FakeRegistry()
    register_storage_rpc(registry, server, error_factory=FakeRpcError)
    yield server, registry
    server.close()


def test_all_methods_registered(rig: tuple[StorageServer, FakeRegistry]) -> None:
    _, registry = rig
    assert set(registry.handlers) == set(SCHEMAS)
    assert all(m.startswith("storage.") for m in registry.handlers)


@pytest.mark.parametrize(
    ("method", "body", "why"),
    [
        ("storage.list", [], "map"),
        ("storage.list", {}, "missing field 'si'"),
        ("storage.list", {"si": SI, "extra": 1}, "unexpected field"),
        ("storage.list", {"si": "a" * 20}, "20 bytes"),
        ("storage.read", {"si": SI, "shnum": 1, "offset": 0, "length": -1}, "length"),
        ("storage.read", {"si": SI, "shnum": 1, "offset": 2**63, "length": 1}, "offset"),
        ("storage.read", {"si": SI, "shnum": 1.0, "offset": 0, "length": 1}, "shnum"),
        ("storage.allocate", {"si": SI, "shnum": 0, "size": "10"}, "size"),
        ("storage.write", {"si": SI, "shnum": 0, "offset": 0, "data": "text"}, "data"),
        ("storage.readv", {"si": SI, "shnum": 0, "ranges": [[0]]}, "ranges"),
        ("storage.readv", {"si": SI, "shnum": 0, "ranges": [[0, 1]] * 1025}, "ranges"),
        ("storage.stat", {"x": 1}, "unexpected"),
    ],
)
async def test_schema_refusals(
    rig: tuple[StorageServer, FakeRegistry], method: str, body: Any, why: str
) -> None:
    _, registry = rig
    with pytest.raises(FakeRpcError) as info:
        await registry.call(ALICE, method, body)
    assert info.value.code == "bad-request"
    assert why in info.value.message


@given(
    method=st.sampled_from(sorted(SCHEMAS)),
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary(max_size=24) | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["si", "shnum", "offset", "length", "data", "size", "ranges", "z"]),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    ),
)
def test_parse_body_fuzz_only_raises_bad_request(method: str, body: object) -> None:
    with contextlib.suppress(BadRequest):
        parse_body(method, body)


async def test_unexpected_failure_is_internal(
    rig: tuple[StorageServer, FakeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, registry = rig

    def boom() -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server, "stat", boom)
    with pytest.raises(FakeRpcError) as info:
        await registry.call(ALICE, "storage.stat", {})
    assert info.value.code == "internal"
    assert "secret" not in info.value.message


async def test_error_codes_map_back(rig: tuple[StorageServer, FakeRegistry]) -> None:
    _, registry = rig
    client = RpcStorageClient(registry.caller(ALICE), peer="peer-x")
    with pytest.raises(NoSuchShare) as info:
        await client.read(SI, 0, 0, 1)
    assert info.value.remote and info.value.peer == "peer-x"
    assert "peer-x" in str(info.value)


async def test_peer_disconnect_aborts_its_uploads(tmp_path: Path) -> None:
    server = StorageServer.open(tmp_path / "s")
    try:
        registry = FakeRegistry()
        adapter = register_storage_rpc(registry, server, error_factory=FakeRpcError)
        client = RpcStorageClient(registry.caller(ALICE))
        await client.allocate(SI, 0, 10)
        await client.allocate(SI, 1)
        assert adapter.peer_disconnected(ALICE) == 2
        assert server.stat().uploads == 0
    finally:
        server.close()


def canned(reply: Any = None, error: Exception | None = None) -> RpcStorageClient:
    async def call(method: str, body: Any) -> Any:
        cbor2.dumps(body)  # the client only sends encodable bodies
        if error is not None:
            raise error
        return reply

    return RpcStorageClient(call, peer="p")


@pytest.mark.parametrize(
    ("method", "args", "reply"),
    [
        ("read", (SI, 0, 0, 4), {"data": b"12345"}),
        ("read", (SI, 0, 0, 4), {"data": "text"}),
        ("read", (SI, 0, 0, 4), [b"1234"]),
        ("readv", (SI, 0, [(0, 1), (0, 1)]), {"data": [b"1"]}),
        ("list_shares", (SI,), {"shares": {256: 1}}),
        ("list_shares", (SI,), {"shares": {1: -1}}),
        ("list_shares", (SI,), {"shares": {True: 1}}),
        ("list_shares", (SI,), {"shares": dict.fromkeys(range(300), 1)}),
        ("add_lease", (SI,), {"expires": float("nan")}),
        ("add_lease", (SI,), {"expires": 10**400}),
        ("close_share", (SI, 0), {"size": 1}),
        ("allocate", (SI, 0, 5), {"size": 5}),
        ("allocate", (SI, 0, 5), {"size": 6, "limit": 6}),
        ("allocate", (SI, 0, 5), {"size": 5, "limit": 9}),
        ("allocate", (SI, 0, None), {"size": 5, "limit": 5}),
        ("stat", (), {"used": 1}),
        ("cancel_lease", (SI,), {"removed": "2"}),
    ],
)
async def test_client_refuses_malformed_replies(
    method: str, args: tuple[Any, ...], reply: Any
) -> None:
    client = canned(reply)
    with pytest.raises(BadResponse):
        await getattr(client, method)(*args)


async def test_client_error_translation() -> None:
    with pytest.raises(UnknownStorageError) as info:
        await canned(error=FakeRpcError("no-such-method", "nope")).stat()
    assert info.value.wire_code == "no-such-method" and info.value.remote
    with pytest.raises(TimeoutError):
        await canned(error=TimeoutError()).stat()  # transport failures pass through


replies = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**1100), 2**1100)
    | st.floats()
    | st.binary(max_size=8)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["data", "shares", "expires", "size", "limit", "removed", "used", 1]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)


@given(reply=replies, method=st.sampled_from(["read", "readv", "list_shares", "allocate", "stat"]))
async def test_client_reply_fuzz(reply: Any, method: str) -> None:
    args: dict[str, tuple[Any, ...]] = {
        "read": (SI, 0, 0, 4),
        "readv": (SI, 0, [(0, 2)]),
        "list_shares": (SI,),
        "allocate": (SI, 0, None),
        "stat": (),
    }
    with contextlib.suppress(BadResponse):
        await getattr(canned(reply), method)(*args[method])


class FakeEndpoint:
    def __init__(self, registry: FakeRegistry, me: NodeId) -> None:
        self.registry, self.me = registry, me
        self.seen: list[tuple[object, str, float]] = []

    async def call(
        self,
        peer: Any,
        method: str,
        body: Any,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> Any:
        self.seen.append((peer, method, timeout))
        return await self.registry.call(self.me, method, body)


async def test_service_and_bind_endpoint(tmp_path: Path) -> None:
    registry = FakeRegistry()
    service = await StorageService.start(
        tmp_path / "s", registry, error_factory=FakeRpcError, crawl_interval=0.01
    )
    try:
        endpoint = FakeEndpoint(registry, ALICE)
        client = RpcStorageClient(bind_endpoint(endpoint, "peer-addr", timeout=3.0))
        await client.allocate(SI, 0, 3)
        await client.write(SI, 0, 0, b"abc")
        assert (await client.close_share(SI, 0)).size == 3
        assert await client.list_shares(SI) == {0: 3}
        assert endpoint.seen[0] == ("peer-addr", "storage.allocate", 3.0)
        await client.allocate(SI, 1)
        assert service.peer_disconnected(ALICE) == 1
        for _ in range(100):
            if service.crawler.cycles:
                break
            await asyncio.sleep(0.01)
        assert service.crawler.cycles >= 1  # the crawler is running
    finally:
        await service.close()
    assert service.server.closed


async def test_a_lost_connection_drops_only_the_peers_stale_uploads(tmp_path: Path) -> None:
    """A peer that restarted dials again; when its old connection closes, the uploads
    it made there (no write for STALE_UPLOAD seconds) go, its live ones stay."""
    from p2pstore.storage.service import STALE_UPLOAD
    from p2pstore.testing.storage_grid import FakeClock

    clock = FakeClock()
    server = StorageServer.open(tmp_path / "s", clock=clock)
    try:
        server.allocate(SI, 0, ALICE, 10)
        clock.advance(STALE_UPLOAD + 1)
        server.allocate(SI, 1, ALICE, 10)  # made over the new connection: fresh
        server.allocate(SI, 2, BOB, 10)
        clock.advance(STALE_UPLOAD + 1)
        server.write(SI, 1, ALICE, 0, b"x")  # still being written
        assert server.abort_uploads_of(ALICE, STALE_UPLOAD) == 1
        assert server.stat().uploads == 2
        assert server.abort_uploads_of(ALICE) == 1  # its last connection: all of them
        assert server.stat().uploads == 1  # Bob's is not touched
    finally:
        server.close()


async def test_hashing_runs_a_few_calls_at_a_time(
    rig: tuple[StorageServer, FakeRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a peer asking for many hashes at once cannot take every worker thread
    server, registry = rig
    running, most = 0, 0
    lock = threading.Lock()

    def slow_hashv(*_: Any) -> list[bytes]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return [bytes(32)]

    monkeypatch.setattr(server, "hashv", slow_hashv)
    body = {"si": SI, "shnum": 0, "prefix": b"n", "ranges": [[0, 10]]}
    results = await asyncio.gather(
        *(registry.call(ALICE, "storage.hashv", body) for _ in range(12))
    )
    assert all(r == {"hashes": [bytes(32)]} for r in results)
    assert most == HASH_CONCURRENCY


async def test_put_stores_a_whole_share_in_one_call(
    rig: tuple[StorageServer, FakeRegistry],
) -> None:
    server, registry = rig
    client = RpcStorageClient(registry.caller(ALICE), peer="p")
    data = bytes(range(256)) * 40
    before = registry.calls
    closed = await client.put_share(SI, 3, data, 3600)
    assert registry.calls - before == 1  # one round trip
    assert closed.size == len(data) and closed.lease_expires <= server.clock() + 3600
    assert await client.list_shares(SI) == {3: len(data)}
    assert await client.read(SI, 3, 0, len(data)) == data
    assert server.stat().uploads == 0


async def test_put_falls_back_to_allocate_write_close_on_a_server_without_it(
    rig: tuple[StorageServer, FakeRegistry],
) -> None:
    """A peer running an older version answers no-such-method: the client stores the
    share the old way, and leaves nothing in progress when that fails."""
    server, registry = rig
    del registry.handlers["storage.put"]
    seen: list[str] = []

    async def call(method: str, body: Any) -> Any:
        seen.append(method)
        return await registry.call(ALICE, method, body)

    client = RpcStorageClient(call, peer="p")
    await client.put_share(SI, 1, b"x" * 5000)
    assert seen == ["storage.put", "storage.allocate", "storage.write", "storage.close"]
    assert await client.read(SI, 1, 0, 5000) == b"x" * 5000

    class Broken(Exception):
        pass

    async def breaks_on_write(method: str, body: Any) -> Any:
        if method == "storage.write":
            raise Broken
        return await call(method, body)

    with pytest.raises(Broken):
        await RpcStorageClient(breaks_on_write, peer="p").put_share(SI, 2, b"y" * 10)
    assert server.stat().uploads == 0 and 2 not in await client.list_shares(SI)


@pytest.mark.parametrize(
    ("reply", "why"),
    [({"size": 9, "lease_expires": 1.0}, "size"), ({"size": 10}, "lease_expires")],
)
async def test_client_refuses_a_put_reply_that_does_not_match(reply: Any, why: str) -> None:
    with pytest.raises(BadResponse, match=why):
        await canned(reply).put_share(SI, 0, b"z" * 10)
