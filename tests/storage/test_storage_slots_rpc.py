"""``storage.slot_read`` and ``storage.slot_write``: the schemas and the client's
checks of replies (in memory), both methods over real QUIC on 127.0.0.1, and the
test grid's slot helpers (docs/storage.md, "Slots")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import pytest

from p2pstore.storage import (
    BadRequest,
    BadResponse,
    RpcStorageClient,
    StorageServer,
    StorageService,
    bind_endpoint,
    register_storage_rpc,
)
from p2pstore.storage.errors import BadRecord
from p2pstore.storage.slots import MAX_RECORD, SlotRecord, decode_record, slot_index
from p2pstore.testing.endpoints import address_of, endpoints
from p2pstore.testing.fake_rpc import FakeRegistry, FakeRpcError
from p2pstore.testing.storage_grid import StorageGrid
from quic_transport import RpcError
from quic_transport.identity import NodeId

ALICE = NodeId(b"A" * 20)
SEED = bytes(range(32))
ONE = SlotRecord.sign(SEED, 1, b"first")
TWO = SlotRecord.sign(SEED, 2, b"second")
SI = ONE.storage_index


@pytest.mark.parametrize(
    ("method", "body", "why"),
    [
        ("storage.slot_read", {}, "missing field 'si'"),
        ("storage.slot_read", {"si": b"x" * 19}, "20 bytes"),
        ("storage.slot_write", {"si": SI}, "missing field 'record'"),
        ("storage.slot_write", {"si": SI, "record": "text"}, "record"),
        ("storage.slot_write", {"si": SI, "record": bytes(MAX_RECORD + 1)}, "record"),
        ("storage.slot_write", {"si": SI, "record": b"", "lease": -1}, "lease"),
        ("storage.slot_write", {"si": SI, "record": b"", "seq": 1}, "unexpected"),
    ],
)
async def test_schema_refusals(tmp_path: Path, method: str, body: Any, why: str) -> None:
    server = StorageServer.open(tmp_path / "s")
    try:
        registry = FakeRegistry()
        register_storage_rpc(registry, server, error_factory=FakeRpcError)
        with pytest.raises(FakeRpcError) as info:
            await registry.call(ALICE, method, body)
        assert info.value.code == "bad-request" and why in info.value.message
    finally:
        server.close()


def canned(reply: Any) -> RpcStorageClient:
    async def call(method: str, body: Any) -> Any:
        cbor2.dumps(body)
        return reply

    return RpcStorageClient(call, peer="p")


@pytest.mark.parametrize(
    ("method", "args", "reply"),
    [
        ("slot_read", (SI,), {"record": "text"}),
        ("slot_read", (SI,), {"record": bytes(MAX_RECORD + 1)}),
        ("slot_read", (SI,), [ONE.encode()]),
        ("slot_write", (SI, ONE.encode()), {"stored": 1, "record": ONE.encode()}),
        ("slot_write", (SI, ONE.encode()), {"stored": True}),
        ("slot_write", (SI, ONE.encode()), {"stored": False, "record": None}),
        ("slot_write", (SI, ONE.encode()), {"stored": True, "record": bytes(MAX_RECORD + 1)}),
    ],
)
async def test_client_refuses_malformed_replies(
    method: str, args: tuple[Any, ...], reply: Any
) -> None:
    with pytest.raises(BadResponse):
        await getattr(canned(reply), method)(*args)


async def test_client_passes_records_through_unverified() -> None:
    # the grid layer decodes what servers return; the client only checks the shape
    assert await canned({"record": b"junk"}).slot_read(SI) == b"junk"
    assert await canned({"record": None}).slot_read(SI) is None
    got = await canned({"stored": False, "record": b"junk"}).slot_write(SI, ONE.encode())
    assert got == (False, b"junk")


async def test_slots_over_quic(tmp_path: Path) -> None:
    async with endpoints(2) as (server_ep, client_ep):
        service = await StorageService.start(tmp_path / "s", server_ep, error_factory=RpcError)
        try:
            client = RpcStorageClient(bind_endpoint(client_ep, address_of(server_ep)))
            assert await client.slot_read(SI) is None
            assert await client.slot_write(SI, ONE.encode(), lease=3600) == (True, ONE.encode())
            assert await client.slot_read(SI) == ONE.encode()
            assert await client.slot_write(SI, TWO.encode()) == (True, TWO.encode())
            stored, held = await client.slot_write(SI, ONE.encode())
            assert not stored and decode_record(held) == TWO
            # the writer's lease is the caller's proven node ID
            owners = {le.owner for le in service.server.leases(SI)}
            assert owners == {client_ep.node_id.raw}
            with pytest.raises(RpcError) as raw:  # a malformed body
                await client_ep.call(
                    address_of(server_ep), "storage.slot_write", {"si": SI, "record": 5}
                )
            assert raw.value.code == "bad-request"
            with pytest.raises(BadRequest):
                await client.slot_write(b"short", ONE.encode())
            with pytest.raises(BadRecord) as info:  # a well-formed body, a bad record
                await client.slot_write(SI, b"\xa0")
            assert info.value.remote and info.value.code == "bad-record"
            other = SlotRecord.sign(bytes(32), 1, b"")
            with pytest.raises(BadRecord, match="does not match"):
                await client.slot_write(SI, other.encode())
            forged = SlotRecord(TWO.pk, 3, TWO.body, TWO.sig)
            with pytest.raises(BadRecord, match="signature"):
                await client.slot_write(SI, forged.encode())
            assert await client.slot_read(SI) == TWO.encode()
        finally:
            await service.close()


async def test_grid_helpers(tmp_path: Path) -> None:
    with StorageGrid(tmp_path, 3) as grid:
        for via_rpc in (False, True):
            client = grid[0].client(ALICE, via_rpc=via_rpc)
            assert (await client.slot_write(SI, ONE.encode()))[0]
        assert grid.slots(SI) == {0: ONE.encode()}
        await grid[1].client(ALICE).slot_write(SI, TWO.encode())
        assert grid.slots(SI) == {0: ONE.encode(), 1: TWO.encode()}
        # a stale server: serves an old record whatever it holds; writes still land
        grid[1].serve_slot(SI, ONE.encode())
        assert await grid[1].client(ALICE, via_rpc=True).slot_read(SI) == ONE.encode()
        assert grid[1].server.slot_read(SI) == TWO.encode()
        grid[1].serve_slot(SI, b"garbage")
        assert await grid[1].client(ALICE).slot_read(SI) == b"garbage"
        grid[1].serve_slots_honestly()
        assert await grid[1].client(ALICE).slot_read(SI) == TWO.encode()
        # damage on disk: the server holds no usable record any more
        grid[0].corrupt_slot(SI)
        assert await grid[0].client(ALICE).slot_read(SI) is None
        grid[1].delete_slot(SI)
        assert grid.slots(SI) == {}
        grid[2].broken()
        assert grid[2].calls["slot_read"] == 0
        with pytest.raises(Exception, match="broken"):
            await grid[2].client(ALICE).slot_read(SI)
        assert grid[2].calls["slot_read"] == 1
    assert slot_index(ONE.pk) == SI
